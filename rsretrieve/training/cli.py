"""``rsretrieve train``: LightningCLI over CrossSensorTask and CellDataModule, writing into the workspace.

    rsretrieve train --config configs/demo.yaml --workspace WS [--name NAME] [--resume] [LightningCLI options]

Checkpoints go to ``WS/checkpoints/NAME/`` (``last.ckpt`` and the best by ``val/recall@1``); at the end the model
is also written as ``WS/checkpoints/NAME/model.pt`` ({config, state_dict}, loadable with ``weights_only=True``),
which ``index`` and ``evaluate`` read. ``--resume`` continues from ``last.ckpt``; without it an existing model
of that name is never overwritten. Bad options, configs and checkpoints raise ``ValueError`` with one line.

``--resume`` continues the run as it was started. The command may be the same one, or change only what does not
change what is learned (:data:`RESUME_MAY_CHANGE`):

* the budget: ``trainer.max_time``, ``max_epochs``, ``max_steps``, ``min_epochs``, ``min_steps``, which are totals
  for the whole run (the step count, the epoch and the timer go on from the checkpoint; the learning-rate
  schedule follows the new budget);
* logging and validation: ``trainer.log_every_n_steps``, ``logger``, ``enable_progress_bar``,
  ``enable_model_summary``, ``profiler``, ``val_check_interval``, ``check_val_every_n_epoch``,
  ``limit_val_batches``, ``num_sanity_val_steps`` (these may change which epoch is ``best.ckpt``, never the weights);
* where it runs: ``trainer.accelerator``, ``benchmark``, ``deterministic``, ``data.num_workers``, and the
  workspace's path and that of ``model.pretrained`` (a moved or copied workspace: the resumed weights come from
  the checkpoint).

Every other option must be what the run was started with: each ``model.*`` and ``data.*`` option (a data split
change would put test cells into training), ``seed_everything``, ``optimizer``, ``lr_scheduler`` and the trainer
settings that change training (``precision``, ``accumulate_grad_batches``, ``gradient_clip_val``,
``limit_train_batches``, ``devices``, ``callbacks``, ...). The config file may differ as long as what it sets does
not. Otherwise the resume is refused before anything is written, naming the option, the value the run was started
with and the new one: start a new run with ``--name`` to train with other options. So the run's ``config.yaml`` is
what trained the model (with the final budget). The model and data options are compared with the checkpoint's
``hyper_parameters`` and ``datamodule_hyper_parameters``; the rest with the options recorded in the checkpoint
(``callbacks["rsretrieve_run_config"]``), which checkpoints of older versions lack: for those, only the model and
data options are compared.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentError
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from rsretrieve.data.datamodule import CellDataModule
from rsretrieve.files import run_lock, write_file_atomic
from rsretrieve.training.task import CrossSensorTask, load_error_reason

log = logging.getLogger(__name__)


#: options a ``--resume`` may change (budget, logging, validation, hardware): they do not change what is learned
RESUME_MAY_CHANGE = frozenset({
    "config", "ckpt_path", "weights_only", "data.workspace", "data.num_workers",
    # the path of the model a run extends moves with its workspace (configs/add_sensor.yaml); the resumed run's
    # weights come from the checkpoint, and a model that does not fit it is refused by check_resume
    "model.pretrained",
    "trainer.max_time", "trainer.max_epochs", "trainer.max_steps", "trainer.min_epochs", "trainer.min_steps",
    "trainer.log_every_n_steps", "trainer.logger", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.enable_autolog_hparams", "trainer.profiler", "trainer.model_registry", "trainer.default_root_dir",
    "trainer.val_check_interval", "trainer.check_val_every_n_epoch", "trainer.num_sanity_val_steps",
    "trainer.limit_val_batches", "trainer.limit_test_batches", "trainer.limit_predict_batches",
    "trainer.accelerator", "trainer.benchmark", "trainer.deterministic", "trainer.inference_mode",
    "trainer.detect_anomaly",
})
_RUN_CONFIG_KEY = "rsretrieve_run_config"  # the callback state under which checkpoints record the run's options


class TrainingInterrupted(Exception):
    """A run stopped by a signal (Ctrl-C: SIGINT, or SIGTERM) before its budget was spent; no model.pt is written.

    Attributes:
        signum: the signal.
    """

    def __init__(self, signum: int):
        super().__init__(f"training interrupted by {signal.Signals(signum).name}")
        self.signum = int(signum)


class RetrievalCLI(LightningCLI):
    """LightningCLI with the data module's sensors linked into the task; ``--ckpt_path`` keeps the run's options."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
        parser.link_arguments("data.sensors", "model.sensors")

    def parse_arguments(self, parser, args) -> None:  # noqa: ANN001 (jsonargparse parser and args)
        """Parse; with ``--ckpt_path``, refuse options that differ from the run's (:func:`check_resume_options`).

        This runs before LightningCLI puts the checkpoint's model hyper-parameters over the parsed ones, which
        would silently drop changed ``--model.*`` options.
        """
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        dumped = yaml.safe_load(parser.dump(self.config, skip_link_targets=False, skip_none=False, format="yaml"))
        self.run_config: dict[str, Any] = dumped[sub] if sub else dumped
        ckpt = self.run_config.get("ckpt_path")
        self._resume = (ckpt, read_checkpoint(ckpt)) if ckpt else None  # read once for both checks
        if self._resume:
            check_resume_options(*self._resume, self.run_config)
        check_pretrained_split(self.run_config)

    def before_instantiate_classes(self) -> None:
        """Record the options of this run in its checkpoints, for the next ``--resume`` to compare."""
        self.trainer_defaults["callbacks"] = [*self.trainer_defaults.get("callbacks", []),
                                              RecordRunConfig(self.run_config)]

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Build the Trainer (and its callbacks); Lightning's refusal of an option it cannot use
        (``--trainer.max_time notatime``, ``--trainer.accelerator gpu`` without a GPU) is a ValueError of one line
        naming the option (:func:`misconfigured_option`), not a traceback. Only the Trainer's construction is
        caught: the task's and the data module's are not, so their own errors keep their tracebacks.

        Several processes (DDP) are refused: each would re-run this command, take the name's lock and write
        checkpoints/NAME and model.pt (its children re-ran "rsretrieve" without its arguments and the run was
        killed)."""
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, TypeError, ModuleNotFoundError) as e:
            # TypeError: --trainer.devices -3; ModuleNotFoundError: --trainer.accelerator tpu without torch_xla
            raise ValueError(misconfigured_option(self.run_config, e)) from None
        if trainer.world_size > 1:
            given = self.run_config.get("trainer") or {}
            named = [f"--trainer.{k} {_show(given.get(k, 'auto' if k == 'devices' else 1))}"
                     for k in ("devices", "num_nodes") if k == "devices" or given.get(k) not in (None, 1)]
            raise ValueError(f"{' and '.join(named)}: {trainer.world_size} processes; rsretrieve train runs in one "
                             f"process on one device (one GPU, or the CPU's cores): use --trainer.devices 1"
                             + (" --trainer.num_nodes 1" if len(named) > 1 else ""))
        return trainer

    def before_fit(self) -> None:
        """With ``--ckpt_path`` (``--resume``), check that the checkpoint's weights fit the configured model."""
        if self._resume:
            check_resume(*self._resume, self.model)


class RecordRunConfig(Callback):
    """Store the run's resolved options (plain types) in every checkpoint, as the state of this callback."""

    def __init__(self, config: dict[str, Any]):
        self.config = config

    @property
    def state_key(self) -> str:
        return _RUN_CONFIG_KEY

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config}


def misconfigured_option(config: dict[str, Any], e: Exception) -> str:
    """Lightning's refusal ``e`` of the trainer options of ``config`` (a parsed ``fit`` config) as one line that starts
    with the option it is about, as given on the command line (``--trainer.max_time notatime: ...``).

    The option is ``trainer.max_time`` for the Timer's "not a valid duration"; otherwise the trainer option the
    message names first (``devices`` in "`Trainer(devices='0')` value is not a valid input using cpu accelerator"),
    or else whose value it names (``accelerator`` for "No supported gpu backend found!"). A message that names none
    is given alone.
    """
    msg = " ".join(str(e).split()) or type(e).__name__
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}

    def first(words: dict[str, str]) -> str | None:  # the option whose word comes first in the message
        found = {k: m.start() for k, w in words.items()
                 if (m := re.search(rf"(?<![\w.]){re.escape(w)}(?![\w])", msg, re.IGNORECASE))}
        return min(found, key=found.__getitem__) if found else None

    key = ("max_time" if msg.startswith("`Timer(duration=") and "max_time" in trainer else
           first({k: k for k in trainer})
           or first({k: v for k, v in trainer.items() if isinstance(v, str) and len(v) > 1})
           # a package an accelerator needs is missing (tpu: torch_xla)
           or ("accelerator" if isinstance(e, ModuleNotFoundError) and trainer.get("accelerator") not in (
               None, "auto", "cpu") else None))
    return f"--trainer.{key} {_show(trainer[key])}: {msg}" if key else msg


def read_checkpoint(path: str | Path) -> Any:
    """The Lightning checkpoint at ``path`` (weights only); ValueError ``checkpoint X cannot be read: <reason>``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (unpickling and I/O errors of every kind)
        raise ValueError(f"checkpoint {path} cannot be read: {load_error_reason(e)}") from None


def check_resume_options(path: str | Path, ckpt: Any, config: dict[str, Any]) -> None:
    """Raise ValueError (one line) when ``config`` (a parsed ``fit`` config) changes what the run of the checkpoint
    ``ckpt`` (read from ``path``) learns.

    Every option outside :data:`RESUME_MAY_CHANGE` must equal the value the checkpoint was trained with; the
    message names up to three that differ, with both values.
    """
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"checkpoint {path} does not match the config: it holds no training state (state_dict)")
    diffs = resume_differences(started_config(ckpt), config)
    if diffs:
        shown = ", ".join(f"{key} {_show(was)} (now {_show(now)})" for key, was, now in diffs[:3])
        more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        raise ValueError(f"--resume: {path} was trained with {shown}{more}; --resume keeps the model, data and "
                         "training options a run was started with (only its budget and logging may change): start "
                         "a new run with --name to use other options")


def started_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The options a Lightning checkpoint of ``rsretrieve train`` was trained with, as far as it records them.

    ``model`` and ``data`` come from the hyper-parameters the task and the data module were built with; the rest
    (``trainer``, ``seed_everything``, ...) from the options recorded by :class:`RecordRunConfig` (absent from
    checkpoints of older versions).
    """
    recorded = ((ckpt.get("callbacks") or {}).get(_RUN_CONFIG_KEY) or {}).get("config") or {}
    out = {k: v for k, v in recorded.items() if k not in ("model", "data")}
    for section, key in (("model", "hyper_parameters"), ("data", "datamodule_hyper_parameters")):
        hp = ckpt.get(key)
        if isinstance(hp, dict):
            out[section] = {k: v for k, v in hp.items() if not str(k).startswith("_")}
    return out


def resume_differences(started: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(option, started value, new value)`` for each option that differs and may not change on ``--resume``.

    Options are compared one level deep (``model.augment`` as a whole); the model, then the data options come
    first. ``model.sensors`` is left to ``data.sensors``, which sets it. An option that ``started`` does not record
    is not compared.
    """
    def flat(config: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in config.items():
            if k in ("model", "data", "trainer") and isinstance(v, dict):
                out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
            else:
                out[k] = v
        return out

    was, new = flat(started), flat(now)
    keys = [k for k in new if k in was and k not in RESUME_MAY_CHANGE and k != "model.sensors"
            and _plain(was[k]) != _plain(new[k])]
    keys.sort(key=lambda k: {"model": 0, "data": 1}.get(k.split(".")[0], 2))
    return [(k, was[k], new[k]) for k in keys]


def _plain(v: Any) -> Any:
    """``v`` with tuples as lists, for comparing a parsed value with a stored one."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _show(v: Any) -> str:
    """A value as it is written in a config or on the command line (YAML flow style)."""
    text = yaml.safe_dump(_plain(v), default_flow_style=True, width=10**9).strip()
    return text.removesuffix("...").strip()


#: data options that assign cells to the train, val and test blocks (``rsretrieve.data.datasets.spatial_split``)
SPLIT_BLOCK_KEYS = ("block", "split_seed", "fractions")


def check_pretrained_split(config: dict[str, Any]) -> None:
    """Raise ValueError (one line) when a run that extends ``model.pretrained`` (``configs/add_sensor.yaml``) cuts
    the ground into other train / val / test blocks than the run that trained that model did.

    The frozen head, metric and branches keep what they learnt on that run's training cells, and ``evaluate``
    tests the extended model on the split of its own config.yaml: with other blocks, some of those training cells
    would be its test cells. The pretrained run's options are read from the ``config.yaml`` that ``rsretrieve
    train`` writes beside its ``model.pt``; a model file without one (made elsewhere) is not checked.
    """
    pretrained = (config.get("model") or {}).get("pretrained")
    if not pretrained:
        return
    path = Path(pretrained).parent / "config.yaml"
    try:
        base = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return
    base_data = base.get("data") if isinstance(base, dict) else None
    if not isinstance(base_data, dict):
        return
    data = config.get("data") or {}
    for k in SPLIT_BLOCK_KEYS:
        if k in base_data and _plain(base_data[k]) != _plain(data.get(k)):
            raise ValueError(f"data.{k} {_show(data.get(k))} differs from the {_show(base_data[k])} of {path}, the "
                             "split the pretrained model was trained on: with other blocks, cells its frozen parts "
                             f"were trained on can be test cells of this model; give --data.{k} {_show(base_data[k])}")


def check_resume(path: str | Path, ckpt: Any, task: torch.nn.Module) -> None:
    """Raise ValueError ``checkpoint X does not match the config: <reason>`` when ``task`` cannot load the
    checkpoint ``ckpt`` (read from ``path`` by :func:`read_checkpoint`).

    Lightning would fail later with a RuntimeError listing every mismatched weight.
    """
    reason = _mismatch(ckpt, task.state_dict(), list(getattr(getattr(task, "model", None), "sensors", [])))
    if reason:
        raise ValueError(f"checkpoint {path} does not match the config: {reason}")


def _mismatch(ckpt: Any, own: dict[str, torch.Tensor], sensors: list[str]) -> str | None:
    """A short reason why ``ckpt`` does not fit the state dict ``own`` of a model of ``sensors``; None if it does."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        return "it holds no training state (state_dict)"
    theirs = ckpt["state_dict"]
    was = (ckpt.get("rsretrieve") or {}).get("sensors")
    if was is not None and sensors and sorted(was) != sorted(sensors):
        return f"it was trained on sensors {', '.join(was)}, the config has {', '.join(sensors)}"
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    if missing or unexpected:
        return (f"{len(missing)} weights of the configured model are not in it and {len(unexpected)} of its weights "
                f"are not in the model, e.g. {(missing or unexpected)[0]} (another model kind or options?)")
    for k, v in own.items():
        if tuple(theirs[k].shape) != tuple(v.shape):
            return (f"{k} has shape {tuple(theirs[k].shape)} in it and {tuple(v.shape)} in the configured model "
                    "(other model options, e.g. dim or embed_dim?)")
    return None


def run_train(config: str | Path, workspace: str | Path, name: str = "default", resume: bool = False,
              extra_args: list[str] | None = None, progress: bool = True) -> Path:
    """Fit a model as configured; returns the path of the exported ``model.pt``.

    With ``resume``, ``config`` and ``extra_args`` must give the options the run was started with, except its
    budget, logging and hardware (the rule is in this module's docstring, the list in :data:`RESUME_MAY_CHANGE`).

    Raises:
        TrainingInterrupted: Ctrl-C or SIGTERM stopped the run; ``last.ckpt`` holds its last completed epoch, if any.
        ValueError: (one line) another run of ``name`` is running (in any process); ``name`` holds a model already
            and ``resume`` is false; ``resume`` without a ``last.ckpt``; ``resume`` with a model, data or training
            option that differs from the run's; a bad config or option; a checkpoint that does not fit the config;
            bad model or data settings.
    """
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        # ``--name ../x`` wrote outside the workspace, ``--name ''`` into checkpoints/ itself, ``a/b`` a model that
        # evaluate and index (checkpoints/*/model.pt) never find
        raise ValueError(f"--name {name!r}: a model name is one folder name in {Path(workspace) / 'checkpoints'}, "
                         "not empty and without '/' (e.g. --name with_landsat8)")
    if name.partition("@")[0] in ("untrained", "band_stats") or "," in name or "@" in name:
        # evaluate's baseline rows are named untrained[@MODEL] and band_stats[@MODEL]: a model of that name was
        # replaced by its baseline in the report; --models A,B could never name a model "a,b"
        raise ValueError(f"--name {name!r}: 'untrained' and 'band_stats' name evaluate's baselines, and a model name "
                         "has no ',' or '@' (evaluate --models A,B, untrained@MODEL); give another name")
    ckdir = Path(workspace) / "checkpoints" / name
    # one run of a name at a time: two wrote into one folder, each exiting 0, leaving a model.pt of one run beside
    # the last.ckpt of the other (and both runs' best.ckpt)
    with _name_lock(ckdir):
        new = not ckdir.exists()
        try:
            return _run_train(config, workspace, name, ckdir, resume, extra_args, progress)
        except BaseException:
            # a run refused before it wrote anything (a bad option, a config that does not fit) leaves no empty
            # checkpoints/NAME folder behind; an interrupted run keeps what it wrote (logs, last.ckpt)
            if new and ckdir.is_dir() and not any(p.is_file() for p in ckdir.rglob("*")):
                shutil.rmtree(ckdir, ignore_errors=True)
            raise


@contextlib.contextmanager
def _name_lock(ckdir: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``checkpoints/.NAME.lock`` for a training run (released with its process, kill -9
    included); ValueError naming the process that holds it. The lock file is outside the run's folder, which a
    refused ``--resume`` leaves untouched."""
    ckdir.parent.mkdir(parents=True, exist_ok=True)

    def refused(pid: str) -> ValueError:
        return ValueError(f"another `rsretrieve train --name {ckdir.name}`{f' (process {pid})' if pid else ''} is "
                          f"training into {ckdir}: wait for it to finish, or train under another --name")

    with run_lock(ckdir.parent / f".{ckdir.name}.lock", refused):
        yield


def _run_train(config: str | Path, workspace: str | Path, name: str, ckdir: Path, resume: bool,
               extra_args: list[str] | None, progress: bool) -> Path:
    """The body of :func:`run_train`, run under the name's lock."""
    last = ckdir / "last.ckpt"
    if resume and not last.is_file():
        raise ValueError(f"--resume: nothing to resume in {ckdir} (no last.ckpt); run without --resume to start a "
                         "new run")
    if not resume and ((ckdir / "model.pt").exists() or last.exists()):
        raise ValueError(f"model {name} already exists in {ckdir}; use --resume to continue it or another --name")
    ckdir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(ckdir, new_run=not resume)
    args = ["fit", "--config", str(config), "--data.workspace", str(workspace),
            "--trainer.default_root_dir", str(ckdir), *(extra_args or [])]
    if resume:
        args += ["--ckpt_path", str(last)]
    # two checkpoints: the best by validation recall, and the latest after every epoch (what --resume needs: this
    # Lightning saves a ``save_last`` checkpoint only when a top-k one is saved too, so it went stale whenever the
    # validation recall did not improve, and a resumed run lost every epoch since the last improvement)
    callbacks = [ModelCheckpoint(dirpath=ckdir, filename="best", monitor="val/recall@1", mode="max"),
                 ModelCheckpoint(dirpath=ckdir, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                                 save_on_train_epoch_end=True, enable_version_counter=False)]
    argv, sys.argv = sys.argv, sys.argv[:1]  # the options are in ``args``; LightningCLI must not read them twice
    try:
        with warnings.catch_warnings():
            # the run's own logs/ (written before the checkpoint callbacks look) made Lightning warn on every new
            # run that the checkpoint directory "exists and is not empty": it is this run's folder, and a new run's
            # leftovers of an earlier one are removed above
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            cli = RetrievalCLI(CrossSensorTask, CellDataModule, args=args, run=True,
                               parser_kwargs={"exit_on_error": False, "fit": {"exit_on_error": False}},
                               save_config_kwargs={"overwrite": True, "config_filename": "config.yaml"},
                               trainer_defaults={"callbacks": callbacks, "enable_progress_bar": progress,
                                                 "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                                            "init_args": {"save_dir": str(ckdir), "name": "logs"}}})
    except ArgumentError as e:  # a bad YAML, an unknown or ill-typed option: one line, not the 88-line usage
        raise ValueError(_parser_error(config, e)) from None
    except SystemExit as e:
        # Lightning's answers to Ctrl-C (a graceful shutdown, then sys.exit(1)) and to SIGTERM (SIGTERMException, a
        # SystemExit with status 0, as if the run had finished): both stop the run before its budget is spent
        if isinstance(e, SIGTERMException):
            raise TrainingInterrupted(signal.SIGTERM) from None
        if isinstance(e.__context__, KeyboardInterrupt):
            raise TrainingInterrupted(signal.SIGINT) from None
        raise
    finally:
        sys.argv = argv
    out = ckdir / "model.pt"
    # the resolved experiment config beside the model (evaluate and index read the data split from it), then the
    # model, each through a temporary file and a rename (model.save writes atomically): a run killed here leaves
    # the previous model.pt and config.yaml (of the run that was resumed) or none, never a truncated config.yaml,
    # nor a model.pt without its config.yaml
    write_file_atomic(ckdir / "config.yaml",
                      lambda tmp: shutil.copyfile(Path(cli.trainer.log_dir) / "config.yaml", tmp))
    cli.model.model.save(out)
    log.info("wrote %s", out)
    return out


def _remove_leftovers(ckdir: Path, new_run: bool) -> None:
    """Remove what an earlier run of ``ckdir`` killed (kill -9) before it finished left there.

    The temporary files of the atomic writes of ``config.yaml`` and ``model.pt`` (:mod:`rsretrieve.files`); and for
    a new run (there is no ``last.ckpt``: the run was killed before its first epoch ended), the dead run's
    ``best*.ckpt``, which the new run would otherwise leave beside its own (``best-v1.ckpt``), ``best.ckpt`` staying a
    checkpoint of the dead run.
    """
    for p in ckdir.glob(".tmp-*"):
        p.unlink(missing_ok=True)
    if new_run:
        for p in ckdir.glob("best*.ckpt"):
            p.unlink(missing_ok=True)


def _parser_error(config: str | Path, e: ArgumentError) -> str:
    """jsonargparse's error as one line."""
    msg = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())[:600]
    if msg.startswith("Problems parsing config"):  # a YAML error: name the file
        msg = f"--config {config}: {msg}"
    return msg or f"--config {config}: invalid"

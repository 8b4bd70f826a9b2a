"""``rsretrieve train``: LightningCLI over CrossSensorTask and CellDataModule, writing into the workspace.

    rsretrieve train --config configs/demo.yaml --workspace WS [--name NAME] [--resume] [LightningCLI options]

Checkpoints go to ``WS/checkpoints/NAME/`` (``last.ckpt`` and the best by ``val/recall@1``); at the end the model
is also written as ``WS/checkpoints/NAME/model.pt`` ({config, state_dict}, loadable with ``weights_only=True``),
which ``index`` and ``evaluate`` read. ``--resume`` continues from ``last.ckpt``; without it an existing model
of that name is never overwritten. Bad options, configs and checkpoints raise ``ValueError`` with one line.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from rsretrieve.data.datamodule import CellDataModule
from rsretrieve.training.task import CrossSensorTask, load_error_reason

log = logging.getLogger(__name__)


class RetrievalCLI(LightningCLI):
    """LightningCLI with the data module's sensors linked into the task."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
        parser.link_arguments("data.sensors", "model.sensors")

    def before_fit(self) -> None:
        """With ``--ckpt_path`` (``--resume``), check that the checkpoint's weights fit the configured model."""
        ckpt = self.config_init[self.subcommand].get("ckpt_path")
        if ckpt:
            check_resume(ckpt, self.model)


def check_resume(path: str | Path, task: torch.nn.Module) -> None:
    """Raise ValueError ``checkpoint X does not match the config: <reason>`` when ``task`` cannot load ``path``.

    Lightning would fail later with a RuntimeError listing every mismatched weight.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (unpickling and I/O errors of every kind)
        raise ValueError(f"checkpoint {path} cannot be read: {load_error_reason(e)}") from None
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

    Raises:
        ValueError: (one line) ``name`` holds a model already and ``resume`` is false; ``resume`` without a
            ``last.ckpt``; a bad config or option; a checkpoint that does not fit the config; bad model or data
            settings.
    """
    ckdir = Path(workspace) / "checkpoints" / name
    last = ckdir / "last.ckpt"
    if resume and not last.is_file():
        raise ValueError(f"--resume: nothing to resume in {ckdir} (no last.ckpt); run without --resume to start a "
                         "new run")
    if not resume and ((ckdir / "model.pt").exists() or last.exists()):
        raise ValueError(f"model {name} already exists in {ckdir}; use --resume to continue it or another --name")
    ckdir.mkdir(parents=True, exist_ok=True)
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
        cli = RetrievalCLI(CrossSensorTask, CellDataModule, args=args, run=True,
                           parser_kwargs={"exit_on_error": False, "fit": {"exit_on_error": False}},
                           save_config_kwargs={"overwrite": True, "config_filename": "config.yaml"},
                           trainer_defaults={"callbacks": callbacks, "enable_progress_bar": progress,
                                             "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                                        "init_args": {"save_dir": str(ckdir), "name": "logs"}}})
    except ArgumentError as e:  # a bad YAML, an unknown or ill-typed option: one line, not the 88-line usage
        raise ValueError(_parser_error(config, e)) from None
    finally:
        sys.argv = argv
    out = ckdir / "model.pt"
    cli.model.model.save(out)
    # the resolved experiment config beside the model: evaluate and index read the data split from it
    shutil.copyfile(Path(cli.trainer.log_dir) / "config.yaml", ckdir / "config.yaml")
    log.info("wrote %s", out)
    return out


def _parser_error(config: str | Path, e: ArgumentError) -> str:
    """jsonargparse's error as one line."""
    msg = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())[:600]
    if msg.startswith("Problems parsing config"):  # a YAML error: name the file
        msg = f"--config {config}: {msg}"
    return msg or f"--config {config}: invalid"

"""``rsretrieve train``: LightningCLI over CrossSensorTask and CellDataModule, writing into the workspace.

    rsretrieve train --config configs/demo.yaml --workspace WS [--name NAME] [--resume] [LightningCLI options]

Checkpoints go to ``WS/checkpoints/NAME/`` (``last.ckpt`` and the best by ``val/recall@1``); at the end the model
is also written as ``WS/checkpoints/NAME/model.pt`` ({config, state_dict}, loadable with ``weights_only=True``),
which ``index`` and ``evaluate`` read. ``--resume`` continues from ``last.ckpt``.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from rsretrieve.data.datamodule import CellDataModule
from rsretrieve.training.task import CrossSensorTask

log = logging.getLogger(__name__)


class RetrievalCLI(LightningCLI):
    """LightningCLI with the data module's sensors linked into the task."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
        parser.link_arguments("data.sensors", "model.sensors")


def run_train(config: str | Path, workspace: str | Path, name: str = "default", resume: bool = False,
              extra_args: list[str] | None = None, progress: bool = True) -> Path:
    """Fit a model as configured; returns the path of the exported ``model.pt``."""
    ckdir = Path(workspace) / "checkpoints" / name
    ckdir.mkdir(parents=True, exist_ok=True)
    args = ["fit", "--config", str(config), "--data.workspace", str(workspace),
            "--trainer.default_root_dir", str(ckdir), *(extra_args or [])]
    last = ckdir / "last.ckpt"
    if resume and last.exists():
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
                           save_config_kwargs={"overwrite": True, "config_filename": "config.yaml"},
                           trainer_defaults={"callbacks": callbacks, "enable_progress_bar": progress,
                                             "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                                        "init_args": {"save_dir": str(ckdir), "name": "logs"}}})
    finally:
        sys.argv = argv
    out = ckdir / "model.pt"
    cli.model.model.save(out)
    # the resolved experiment config beside the model: evaluate and index read the data split from it
    shutil.copyfile(Path(cli.trainer.log_dir) / "config.yaml", ckdir / "config.yaml")
    log.info("wrote %s", out)
    return out

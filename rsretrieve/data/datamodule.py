"""LightningDataModule over a workspace catalog: co-registered cells, split by spatial blocks."""

from __future__ import annotations

import logging
import math
from functools import partial
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.datasets import (CellDataset, CellIndex, NeighbourhoodBatchSampler, TileCache, collate_cells,
                                      index_cells, spatial_split)
from rsretrieve.data.tiles import tile_px
from rsretrieve.sensors import get_sensor

log = logging.getLogger(__name__)


class CellDataModule(LightningDataModule):
    """Cells of a workspace with the tiles of ``sensors``; train/val/test by spatial blocks (see ``spatial_split``).

    Args:
        workspace: the workspace directory (``rsretrieve train --workspace`` fills it in).
        sensors: sensors whose tiles make a sample.
        batch_size: cells per batch.
        block: side of a split block in grid cells.
        split_seed: seed of the block assignment.
        fractions: train, val, test fractions of blocks.
        min_valid: a tile is used when at least this fraction of its cell is valid (data, no cloud).
        min_sensors: a cell is used when at least this many of ``sensors`` saw it.
        max_train_cells: cap on training cells (a random, seeded subset), for quick runs.
        num_workers: DataLoader workers.
        neighbourhood: when > 0, training batches are made of ``groups`` runs of cells from neighbourhoods of
            ``neighbourhood`` x ``neighbourhood`` grid cells (hard negatives, see ``NeighbourhoodBatchSampler``);
            0: cells drawn uniformly.
        groups: neighbourhood runs per training batch.
    """

    def __init__(self, workspace: str, sensors: list[str], batch_size: int = 64, block: int = 4,
                 split_seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                 min_valid: float = 0.5, min_sensors: int = 2, max_train_cells: int | None = None,
                 num_workers: int = 0, neighbourhood: int = 0, groups: int = 4):
        super().__init__()
        self.save_hyperparameters()
        _check_settings(self.hparams)
        self.workspace = Path(workspace)
        self.sensors = list(sensors)
        for s in self.sensors:
            try:
                get_sensor(s)
            except KeyError as e:  # the registry's KeyError carries the message; a ValueError is a usage error
                raise ValueError(e.args[0]) from None
        self.datasets: dict[str, CellDataset] = {}
        self.cache: TileCache | None = None

    def split_index(self, catalog: Catalog) -> dict[str, CellIndex]:
        """The cell index of each split (cells seen by at least ``min_sensors`` sensors)."""
        hp = self.hparams
        full = index_cells(catalog, self.sensors, min_valid=hp["min_valid"])
        seen = sum((full.tile_ids[s] >= 0).astype(int) for s in self.sensors)
        keep = [i for i, n in enumerate(seen) if n >= hp["min_sensors"]]
        split = spatial_split([full.cells[i] for i in keep], block=hp["block"], fractions=tuple(hp["fractions"]),
                              seed=hp["split_seed"])
        out = {}
        self.split_sizes: dict[str, int] = {}
        for name in ("train", "val", "test"):
            rows = [i for i in keep if split[full.cells[i]] == name]
            self.split_sizes[name] = len(rows)  # before any cap
            if name == "train" and hp["max_train_cells"] and len(rows) > hp["max_train_cells"]:
                rng = np.random.default_rng(hp["split_seed"])
                rows = sorted(rng.choice(rows, hp["max_train_cells"], replace=False).tolist())
            out[name] = full.subset(rows)
        # the rest of the catalog's cells, so that the counts add up to them: cells left out because they touch a
        # test cell, and cells seen by fewer sensors than a training pair needs
        self.split_sizes["buffer"] = sum(split[full.cells[i]] == "buffer" for i in keep)
        self.split_sizes["too_few_sensors"] = len(full.cells) - len(keep)
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        with Catalog(self.workspace / "catalog.sqlite") as catalog:
            tile_m = catalog.tile_m
            index = self.split_index(catalog)
            wanted = {s: np.concatenate([index[k].tile_ids[s] for k in index]) for s in self.sensors}
            self.cache = TileCache(catalog, wanted, tile_m)
        self.shapes = {s: (get_sensor(s).num_bands, tile_px(get_sensor(s), tile_m), tile_px(get_sensor(s), tile_m))
                       for s in self.sensors}
        self.datasets = {k: CellDataset(v, self.cache) for k, v in index.items()}
        log.info("cells: %s", {k: len(v) for k, v in self.datasets.items()})
        if len(self.datasets["train"]) < self.hparams["batch_size"]:
            raise ValueError(f"{self.workspace}: only {len(self.datasets['train'])} training cells seen by "
                             f">= {self.hparams['min_sensors']} of {', '.join(self.sensors)}; need at least one "
                             f"batch of {self.hparams['batch_size']} (ingest more scenes or lower data.batch_size)")
        if not len(self.datasets["val"]):
            log.warning("the validation split of %s has 0 cells (train %d, test %d): val/recall@1 is not measured, "
                        "so no best checkpoint is chosen by it; ingest more ground or use a smaller data.block",
                        self.workspace, len(self.datasets["train"]), len(self.datasets["test"]))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.hparams["batch_size"], shuffle=shuffle,
                          drop_last=shuffle, num_workers=self.hparams["num_workers"],
                          collate_fn=partial(collate_cells, shapes=self.shapes),
                          generator=torch.Generator().manual_seed(self.hparams["split_seed"]) if shuffle else None)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        if not hp["neighbourhood"]:
            return self._loader("train", True)
        sampler = NeighbourhoodBatchSampler(self.datasets["train"].index.cells, hp["batch_size"], groups=hp["groups"],
                                            neighbourhood=hp["neighbourhood"], seed=hp["split_seed"])
        return DataLoader(self.datasets["train"], batch_sampler=sampler, num_workers=hp["num_workers"],
                          collate_fn=partial(collate_cells, shapes=self.shapes))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def _check_settings(hp: dict) -> None:
    """Raise ValueError (one line naming the option) for data settings no split or batch can be made with (a
    hand-edited config.yaml or a command-line typo: ``block: 0`` divided by zero deep in the split)."""
    def whole(name: str, low: int, allow_none: bool = False) -> None:
        v = hp[name]
        if v is None and allow_none:
            return
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"data.{name} must be an integer >= {low}{' or null' if allow_none else ''}, got {v!r}")

    sensors = hp["sensors"]
    if isinstance(sensors, str) or not isinstance(sensors, (list, tuple)) or not sensors or not all(
            isinstance(s, str) and s for s in sensors):  # [] ended in a TypeError traceback, "s1" read as "s", "1"
        raise ValueError(f"data.sensors must be a list of sensor names, at least one, got {sensors!r}")
    for name, low in (("batch_size", 1), ("block", 1), ("split_seed", 0), ("min_sensors", 1), ("num_workers", 0),
                      ("neighbourhood", 0), ("groups", 1)):
        whole(name, low)
    whole("max_train_cells", 1, allow_none=True)
    mv = hp["min_valid"]
    if isinstance(mv, bool) or not isinstance(mv, (int, float)) or not 0 <= mv <= 1:
        raise ValueError(f"data.min_valid must be a number in 0..1, got {mv!r}")
    fr = hp["fractions"]
    ok = isinstance(fr, (list, tuple)) and len(fr) == 3 and all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f >= 0 for f in fr)
    if not ok or abs(sum(fr) - 1) > 1e-6 or fr[0] <= 0:
        raise ValueError(f"data.fractions must be 3 numbers >= 0 (train, val, test) summing to 1 with train > 0, "
                         f"got {list(fr) if isinstance(fr, (list, tuple)) else fr!r}")

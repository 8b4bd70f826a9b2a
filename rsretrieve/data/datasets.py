"""Co-registered training samples by ground cell, and the spatial-block split.

A sample is one grid cell with the tile of each requested sensor that covers it (the most valid one when a sensor
saw the cell several times); sensors that did not see the cell are simply absent. Batches have the form the model
expects::

    {"cell": LongTensor(B), "label": LongTensor(B) (-1 = unknown),
     "inputs": {sensor: FloatTensor(B, C, n, n)}, "present": {sensor: BoolTensor(B)}}

Land-cover labels are (scheme, class) pairs (:mod:`rsretrieve.data.labels`): each distinct pair gets its own integer
id, so class 3 of one scheme never equals class 3 of another. A cell labelled in several schemes trains with its
purest label; and since a within-sensor supervised term compares every labelled tile of a batch with every other,
:func:`collate_cells` keeps the labels of one scheme per batch (the one most of its labelled cells have) and turns
the others into "unknown" (those tiles then learn from augmented views), so labels of different schemes are never
compared, as positives or as negatives.

Why not torchgeo's ``RasterDataset`` and ``IntersectionDataset`` here: they warp every file into one CRS, which for
an archive spread over several UTM zones and both hemispheres distorts most of it; the ground grid already gives an
exact co-registration key (the cell id) and each tile's pixel window in its own scene, so tiles are read natively.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.grid import ground_neighbours, parse_cell_id
from rsretrieve.data.labels import label_key
from rsretrieve.data.tiles import read_scene_tiles, tile_px
from rsretrieve.sensors import get_sensor

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def spatial_split(cells: Iterable[str], block: int = 4, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                  seed: int = 0) -> dict[str, str]:
    """Assign cells to train/val/test by spatial blocks of ``block`` x ``block`` cells; deterministic.

    Cells of the training (and validation) split that touch a test cell, edges or corners, are left out
    (``"buffer"``), so no test tile borders a training tile. This holds on the ground across UTM zones too: the same
    ground can have cells in two zones (scenes delivered in neighbouring zones, such as Sentinel-2 tiles of the
    overlap along a zone boundary, are tiled in their own zones; a north and a south grid meet at the equator), and
    blocks are drawn per zone, so a training cell of one zone that overlaps or touches a test cell of another zone is
    left out as well.

    Returns:
        cell id -> ``"train"``, ``"val"``, ``"test"`` or ``"buffer"``.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    parsed = {c: parse_cell_id(c) for c in cells}
    out: dict[str, str] = {}
    for c, (epsg, _, row, col) in parsed.items():
        key = f"{seed}:{epsg}:{row // block}:{col // block}".encode()
        u = int.from_bytes(hashlib.sha1(key).digest()[:8], "big") / 2**64
        out[c] = "train" if u < fractions[0] else "val" if u < fractions[0] + fractions[1] else "test"
    test = {(e, r, c) for cid, (e, _, r, c) in parsed.items() if out[cid] == "test"}
    for cid, (e, _, r, c) in parsed.items():
        if out[cid] != "test" and any((e, r + dr, c + dc) in test for dr in (-1, 0, 1) for dc in (-1, 0, 1)):
            out[cid] = "buffer"
    if len({(e, t) for e, t, _, _ in parsed.values()}) > 1:  # the same ground may be in two grids
        kept = [c for c, v in out.items() if v in ("train", "val")]
        for cid in ground_neighbours(kept, [c for c, v in out.items() if v == "test"]):
            out[cid] = "buffer"
    return out


class NeighbourhoodBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches made of a few ground neighbourhoods, so that most negatives of a batch are hard ones.

    Tiles of the same area share the scene's illumination, haze, incidence angle and land-cover mix; a batch of cells
    drawn uniformly from a whole archive is separated by those scene-level cues alone, while a retrieval gallery is
    full of near neighbours. Each epoch the cells are ordered neighbourhood by neighbourhood (``neighbourhood`` x
    ``neighbourhood`` grid cells, in shuffled order, cells shuffled within), cut into runs of ``batch_size / groups``
    consecutive cells, and the runs are shuffled and joined ``groups`` at a time. Every cell is used once an epoch;
    the last incomplete batch is dropped. Deterministic for a seed and epoch.

    Args:
        cells: cell ids of the dataset, in dataset order.
        batch_size: cells per batch.
        groups: neighbourhood runs per batch (``batch_size`` must be a multiple).
        neighbourhood: side of a neighbourhood in grid cells.
        seed: base seed; epoch ``e`` uses ``seed + e``.
    """

    def __init__(self, cells: Sequence[str], batch_size: int, groups: int = 4, neighbourhood: int = 8, seed: int = 0):
        if groups < 1 or batch_size % groups:
            raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of groups ({groups})")
        if neighbourhood < 1:
            raise ValueError(f"neighbourhood must be >= 1 grid cell, got {neighbourhood}")
        self.batch_size, self.groups, self.seed, self.epoch = batch_size, groups, seed, 0
        members: dict[tuple, list[int]] = defaultdict(list)
        for i, c in enumerate(cells):
            epsg, _, row, col = parse_cell_id(c)
            members[(epsg, row // neighbourhood, col // neighbourhood)].append(i)
        self.members = [np.asarray(v) for _, v in sorted(members.items())]
        self.size = len(cells)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.batch_size

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        order = np.concatenate([rng.permutation(self.members[g]) for g in rng.permutation(len(self.members))])
        run = self.batch_size // self.groups
        runs = [order[i:i + run] for i in range(0, len(order) - run + 1, run)]
        perm = rng.permutation(len(runs))
        for b in range(len(self)):
            picked = perm[b * self.groups:(b + 1) * self.groups]
            if len(picked) < self.groups:
                return
            yield np.concatenate([runs[k] for k in picked]).tolist()


@dataclass
class CellIndex:
    """Which tile of each sensor represents each cell, and the cells' land-cover labels."""

    cells: list[str]
    labels: np.ndarray  # (N,) int64: id of the cell's training label (an index into label_keys), -1 unknown
    tile_ids: dict[str, np.ndarray]  # sensor -> (N,) int64, -1 absent
    #: label id -> (scheme, class value); ids are distinct for distinct pairs
    label_keys: list[tuple[str, int]] = field(default_factory=list)
    #: scheme -> (N,) int64 label id of each cell in that scheme, -1 where the scheme does not label the cell
    scheme_labels: dict[str, np.ndarray] = field(default_factory=dict)
    _same_ground: dict[int, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def schemes(self) -> list[str]:
        return sorted(self.scheme_labels)

    def label_scheme_ids(self) -> np.ndarray:
        """(N,) int64 index into :attr:`schemes` of each cell's training label, -1 unknown."""
        pos = {s: i for i, s in enumerate(self.schemes)}
        of_id = np.array([pos[s] for s, _ in self.label_keys] + [-1], np.int64)  # [-1] serves label -1
        return of_id[self.labels]

    def label_names(self) -> list[str]:
        """``"scheme:class"`` of each label id."""
        return [label_key(s, v) for s, v in self.label_keys]

    def class_labels(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """scheme -> label ids of ``rows`` in that scheme (-1 unlabelled there): what class metrics compare."""
        return {s: a[rows] for s, a in self.scheme_labels.items()}

    def same_ground(self) -> dict[int, np.ndarray]:
        """Row -> rows of the cells of another grid whose ground it shares (the same ground tiled in two UTM zones,
        see :func:`rsretrieve.data.grid.ground_neighbours`); rows sharing none are left out. Computed once."""
        if self._same_ground is None:
            pos = {c: i for i, c in enumerate(self.cells)}
            self._same_ground = {pos[c]: np.array([pos[o] for o in others], np.int64)
                                 for c, others in ground_neighbours(self.cells, self.cells, overlap=True,
                                                                    symmetric=True).items()}
        return self._same_ground

    def subset(self, rows: Sequence[int] | np.ndarray) -> CellIndex:
        """The index restricted to ``rows`` (label ids unchanged)."""
        rows = np.asarray(rows, np.int64)
        return CellIndex([self.cells[i] for i in rows], self.labels[rows],
                         {s: a[rows] for s, a in self.tile_ids.items()}, self.label_keys,
                         {s: a[rows] for s, a in self.scheme_labels.items()})


def index_cells(catalog: Catalog, sensors: Sequence[str], cells: Sequence[str] | None = None,
                min_valid: float = 0.5) -> CellIndex:
    """Pick, for each cell and sensor, the tile with the largest valid fraction (at least ``min_valid``).

    Labels: every (scheme, class) pair found on the indexed cells gets an id (in sorted order); a cell's training
    label is its purest one (ties: the scheme first by name), as ``Catalog.tiles`` shows it.
    """
    rows = catalog.tiles("t.valid_fraction >= ? AND t.sensor IN (%s)" % ",".join("?" * len(sensors)),
                         (min_valid, *sensors))
    best: dict[tuple[str, str], tuple[float, int]] = {}
    for t in rows:
        k = (t["cell_id"], t["sensor"])
        cand = (t["valid_fraction"], -t["tile_id"])
        if k not in best or cand > best[k]:
            best[k] = cand
    wanted = sorted({c for c, _ in best}) if cells is None else list(cells)
    tile_ids = {s: np.array([-best[(c, s)][1] if (c, s) in best else -1 for c in wanted], np.int64)
                for s in sensors}
    pos = {c: i for i, c in enumerate(wanted)}
    found = [r for r in catalog.labels() if r["cell_id"] in pos]
    keys = sorted({(r["scheme"], int(r["label"])) for r in found})
    key_id = {k: i for i, k in enumerate(keys)}
    scheme_labels = {s: np.full(len(wanted), -1, np.int64) for s in sorted({r["scheme"] for r in found})}
    labels = np.full(len(wanted), -1, np.int64)
    purest: dict[str, tuple[float, str]] = {}
    for r in found:
        i, k = pos[r["cell_id"]], (r["scheme"], int(r["label"]))
        scheme_labels[r["scheme"]][i] = key_id[k]
        rank = (-float(r["purity"]), r["scheme"])
        if r["cell_id"] not in purest or rank < purest[r["cell_id"]]:
            purest[r["cell_id"]] = rank
            labels[i] = key_id[k]
    return CellIndex(wanted, labels, tile_ids, keys, scheme_labels)


_COLLATED = "_collated"  # marks a batch that CellDataset.__getitems__ gathered and collated already


class TileCache:
    """Normalised tiles held in memory as float16, one array (N, C, n, n) per sensor, read scene by scene."""

    def __init__(self, catalog: Catalog, tile_ids: dict[str, Iterable[int]], tile_m: float):
        self.arrays: dict[str, np.ndarray] = {}
        self.rows: dict[str, dict[int, int]] = {}
        self.ids: dict[str, np.ndarray] = {}  # sensor -> cached tile ids, ascending: row i holds ids[i]
        for sensor, ids in tile_ids.items():
            ids = sorted({int(i) for i in ids if i >= 0})
            spec = get_sensor(sensor)
            n = tile_px(spec, tile_m)
            arr = np.zeros((len(ids), spec.num_bands, n, n), np.float16)
            pos = {t: i for i, t in enumerate(ids)}
            by_scene: dict[int, list[dict]] = defaultdict(list)
            for t in (catalog.tiles("t.tile_id IN (%s)" % ",".join(map(str, ids))) if ids else []):
                by_scene[t["scene_id"]].append(t)
            for sid, tiles in by_scene.items():
                for tid, a in read_scene_tiles(catalog.scene(sid), tiles, tile_m):
                    arr[pos[tid]] = np.clip(a, -60000, 60000)
            self.arrays[sensor], self.rows[sensor] = arr, pos
            self.ids[sensor] = np.asarray(ids, dtype=np.int64)
            log.info("cached %d %s tiles (%.0f MB)", len(ids), sensor, arr.nbytes / 1e6)

    def get(self, sensor: str, tile_id: int) -> np.ndarray:
        return self.arrays[sensor][self.rows[sensor][int(tile_id)]]

    def get_many(self, sensor: str, tile_ids: np.ndarray) -> np.ndarray:
        """Tiles ``(len(tile_ids), C, n, n)`` float32 of cached tile ids, in the given order."""
        ids = self.ids[sensor]
        at = np.searchsorted(ids, tile_ids)
        if len(tile_ids) and (at.max() >= len(ids) or not np.array_equal(ids[at], tile_ids)):
            raise KeyError(f"{sensor}: tiles not in the cache")
        return self.arrays[sensor][at].astype(np.float32)


class CellDataset(Dataset):
    """Samples by ground cell over a :class:`CellIndex`, tiles served from a :class:`TileCache`."""

    def __init__(self, index: CellIndex, cache: TileCache):
        self.index, self.cache = index, cache
        self.sensors = list(index.tile_ids)
        self.label_scheme = index.label_scheme_ids()

    def __len__(self) -> int:
        return len(self.index.cells)

    def __getitem__(self, i: int) -> dict:
        inputs, present = {}, {}
        for s in self.sensors:
            tid = int(self.index.tile_ids[s][i])
            present[s] = tid >= 0
            if tid >= 0:
                inputs[s] = torch.from_numpy(self.cache.get(s, tid).astype(np.float32))
        return {"cell": i, "label": int(self.index.labels[i]), "scheme": int(self.label_scheme[i]),
                "inputs": inputs, "present": present}

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """A whole batch gathered at once (what DataLoader asks a map-style dataset for when it can): one array
        copy per sensor instead of one per tile. Returns a one-element list holding the collated batch, which
        :func:`collate_cells` passes through."""
        idx = np.asarray(indices, dtype=np.int64)
        labels = one_scheme_labels(self.index.labels[idx].astype(int).tolist(), self.label_scheme[idx].tolist())
        batch = {"cell": torch.from_numpy(idx.copy()), "label": torch.tensor(labels, dtype=torch.long),
                 "inputs": {}, "present": {}, _COLLATED: True}
        for s in self.sensors:
            tids = np.asarray(self.index.tile_ids[s])[idx].astype(np.int64)
            present = tids >= 0
            if present.all():
                x = self.cache.get_many(s, tids)
            else:
                shape = self.cache.arrays[s].shape[1:]
                x = np.zeros((len(idx), *shape), np.float32)
                x[present] = self.cache.get_many(s, tids[present])
            batch["inputs"][s] = torch.from_numpy(x)
            batch["present"][s] = torch.from_numpy(present)
        return [batch]


def one_scheme_labels(labels: Sequence[int], schemes: Sequence[int]) -> list[int]:
    """Labels of a batch with only one scheme's kept: the scheme most labelled cells have (ties: the lowest index);
    the others become -1 (unknown), so no two labels of different schemes are ever compared."""
    counts: dict[int, int] = defaultdict(int)
    for lab, sch in zip(labels, schemes):
        if lab >= 0:
            counts[sch] += 1
    if len(counts) <= 1:
        return list(labels)
    keep = max(sorted(counts), key=lambda k: counts[k])
    return [lab if sch == keep else -1 for lab, sch in zip(labels, schemes)]


def collate_cells(samples: list[dict], shapes: dict[str, tuple[int, ...]]) -> dict:
    """Stack samples into the batch format; absent sensors get zeros and ``present = False``; labels of one
    scheme per batch (:func:`one_scheme_labels`). A batch :meth:`CellDataset.__getitems__` collated already
    passes through."""
    if len(samples) == 1 and samples[0].get(_COLLATED):
        batch = dict(samples[0])
        del batch[_COLLATED]
        return batch
    labels = [s["label"] for s in samples]
    if any("scheme" in s for s in samples):
        labels = one_scheme_labels(labels, [s.get("scheme", -1) for s in samples])
    batch = {"cell": torch.tensor([s["cell"] for s in samples], dtype=torch.long),
             "label": torch.tensor(labels, dtype=torch.long), "inputs": {}, "present": {}}
    for sensor, shape in shapes.items():
        batch["present"][sensor] = torch.tensor([s["present"][sensor] for s in samples], dtype=torch.bool)
        batch["inputs"][sensor] = torch.stack([s["inputs"].get(sensor, torch.zeros(shape)) for s in samples])
    return batch

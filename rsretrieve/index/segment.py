"""One immutable index segment on disk: columns and vectors sorted by Hilbert key, memory-mapped; atomic file writes.

A segment directory holds (see :mod:`rsretrieve.index.store` for the index layout around it)::

    seg-<time>-<id>/
      vectors.npy              (n, d) float32, L2-normalised, inner product similarity
      hkey.npy tile_id.npy lon.npy lat.npy time.npy sensor.npy cell.npy cells.npy scene_id.npy
      ann.faiss, ann.json      optional ANN index over the rows (ids are row numbers), see :mod:`rsretrieve.index.ann`
      deleted-<id>.npy         optional rows removed by ``IndexStore.remove_scenes`` (named in the manifest)
"""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

#: value of ``time`` for a tile whose acquisition time is unknown (never matches a time filter)
TIME_UNKNOWN = int(np.iinfo(np.int64).min)
_CHUNK = 1 << 18


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames inside it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename, fsync directory."""
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class Segment:
    """One immutable, memory-mapped segment: vectors and columns sorted by Hilbert key, optional ANN index.

    Attributes:
        vectors: (n, d) float32.
        hkey, tile_id, time, scene_id: (n,) int64; lon, lat: (n,) float64 degrees; sensor: (n,) int16 positions in
            the manifest's sensor table; cell: (n,) int32 positions in ``cell_names`` (str).
        ann: FAISS index whose ids are row numbers, or None; ``ann_info`` says how to search it.
    """

    def __init__(self, name: str, vectors: np.ndarray, cols: dict[str, np.ndarray], deleted: np.ndarray | None,
                 ann: faiss.Index | None, ann_info: dict | None) -> None:
        self.name = name
        self.vectors = vectors
        self.hkey, self.tile_id, self.lon, self.lat = cols["hkey"], cols["tile_id"], cols["lon"], cols["lat"]
        self.time, self.sensor, self.cell, self.scene_id = cols["time"], cols["sensor"], cols["cell"], cols["scene_id"]
        self.cell_names = cols["cells"]
        self.n = int(self.tile_id.size)
        self._alive: np.ndarray | None = None
        if deleted is not None and deleted.size:
            self._alive = np.ones(self.n, dtype=bool)
            self._alive[deleted] = False
        self._alive_rows: np.ndarray | None = None
        self.n_alive = self.n if self._alive is None else int(self._alive.sum())
        self.ann, self.ann_info = ann, ann_info
        self.path: Path | None = None
        self.deleted_file: str | None = None
        self._sample: Segment | None = None

    @classmethod
    def load(cls, path: Path, entry: dict, dim: int, base: Segment | None = None) -> Segment:
        """Memory-map the segment at ``path`` as its manifest ``entry`` describes it; with ``base`` (the same
        segment loaded before) only the file of removed rows is read."""
        if base is None:
            cols = {k: np.asarray(np.load(path / f"{k}.npy", mmap_mode="r"))
                    for k in ("hkey", "tile_id", "lon", "lat", "time", "sensor", "cell", "scene_id", "cells")}
            vectors = np.asarray(np.load(path / "vectors.npy", mmap_mode="r"))
            if vectors.shape != (cols["tile_id"].size, dim):
                raise ValueError(f"segment {path} holds vectors of shape {vectors.shape}, manifest says dim {dim}")
            info = entry.get("ann")
            ann = faiss.read_index(str(path / info["file"])) if info else None
        else:
            cols = {k: getattr(base, k) for k in ("hkey", "tile_id", "lon", "lat", "time", "sensor", "cell",
                                                   "scene_id")}
            cols["cells"], vectors, ann, info = base.cell_names, base.vectors, base.ann, base.ann_info
        deleted = np.load(path / entry["deleted"]) if entry.get("deleted") else None
        seg = cls(path.name, vectors, cols, deleted, ann, info)
        seg.path, seg.deleted_file = path, entry.get("deleted")
        return seg

    @staticmethod
    def read_entry(path: Path) -> dict:
        """Manifest fields of a freshly written segment directory."""
        info = path / "ann.json"
        return {"ann": json.loads(info.read_text()) if info.exists() else None, "deleted": None}

    def alive_mask(self) -> np.ndarray:
        """(n,) bool, False for removed rows."""
        return np.ones(self.n, dtype=bool) if self._alive is None else self._alive

    @property
    def has_deleted(self) -> bool:
        """Whether some rows were removed."""
        return self._alive is not None

    def alive_rows(self) -> np.ndarray:
        """Row numbers (int64, ascending) not removed."""
        if self._alive_rows is None:
            self._alive_rows = np.arange(self.n) if self._alive is None else np.flatnonzero(self._alive)
        return self._alive_rows

    def sample(self, size: int = 1024) -> Segment:
        """A fixed random sample of ``size`` rows as a small in-memory segment without vectors (for estimates)."""
        if self._sample is None:
            rows = np.sort(np.random.default_rng(0).choice(self.n, min(size, self.n), replace=False))
            cols = {k: np.ascontiguousarray(getattr(self, k)[rows]) for k in
                    ("hkey", "tile_id", "lon", "lat", "time", "sensor", "cell", "scene_id")}
            cols["cells"] = self.cell_names
            dead = np.flatnonzero(~self._alive[rows]) if self._alive is not None else None
            self._sample = Segment(self.name, self.vectors[:0], cols, dead, None, None)
        return self._sample

    def write_deleted(self, rows: np.ndarray) -> str:
        """Write the full set of removed rows as a new file in the segment directory; returns its name."""
        name = f"deleted-{uuid.uuid4().hex[:8]}.npy"
        buf = io.BytesIO()
        np.save(buf, np.asarray(rows, dtype=np.int64), allow_pickle=False)
        write_atomic(self.path / name, buf.getvalue())
        return name


def write_segment_files(seg_dir: Path, cols: dict[str, np.ndarray], vectors: np.ndarray) -> None:
    """Write columns and vectors sorted by ``cols["hkey"]`` into ``seg_dir``, each file fsynced.

    ``cols`` holds hkey, tile_id, lon, lat, time, sensor (int16 codes), cell_ids (str), scene_id, all (n,).
    """
    order = np.argsort(cols["hkey"], kind="stable")
    cells, codes = np.unique(cols["cell_ids"], return_inverse=True)
    out = {k: cols[k][order] for k in ("hkey", "tile_id", "lon", "lat", "time", "sensor", "scene_id")}
    out["cell"], out["cells"] = codes.astype(np.int32)[order], cells
    for k, v in out.items():
        with open(seg_dir / f"{k}.npy", "wb") as f:
            np.save(f, v, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
    n, d = vectors.shape
    dst = np.lib.format.open_memmap(seg_dir / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for i in range(0, n, _CHUNK):
        dst[i:i + _CHUNK] = vectors[order[i:i + _CHUNK]]
    norms = np.linalg.norm(dst[:4096], axis=1)
    if norms.size and np.abs(norms - 1).max() > 1e-3:
        log.warning("vectors are not L2-normalised (norms %.3f..%.3f): inner products are not cosines",
                    norms.min(), norms.max())
    dst.flush()
    del dst
    fd = os.open(seg_dir / "vectors.npy", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

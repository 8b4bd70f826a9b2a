"""One immutable index segment on disk: columns and vectors sorted by Hilbert key, memory-mapped; atomic file writes.

A segment directory holds (see :mod:`rsretrieve.index.store` for the index layout around it)::

    seg-<time>-<id>/
      vectors.npy              (n, d) float32, L2-normalised, inner product similarity
      codes.npy, codes_params.npy  the vectors as (n, d) uint8 scalar codes and their (3, d) float64 per-dimension
                               offset, step and largest rounding error: what exact scans read first (a quarter of
                               the bytes), see :func:`write_codes`
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

from rsretrieve.files import fsync_path, write_atomic

log = logging.getLogger(__name__)

#: value of ``time`` for a tile whose acquisition time is unknown (never matches a time filter)
TIME_UNKNOWN = int(np.iinfo(np.int64).min)
_CHUNK = 1 << 18


class Segment:
    """One immutable, memory-mapped segment: vectors and columns sorted by Hilbert key, optional ANN index.

    Attributes:
        vectors: (n, d) float32.
        hkey, tile_id, time, scene_id: (n,) int64; lon, lat: (n,) float64 degrees; sensor: (n,) int16 positions in
            the manifest's sensor table; cell: (n,) int32 positions in ``cell_names`` (str).
        ann: FAISS index whose ids are row numbers, or None; ``ann_info`` says how to search it.
        codes, code_params: the scalar codes of the vectors and their parameters (see :func:`write_codes`), or
            None (a segment written before them).
    """

    def __init__(self, name: str, vectors: np.ndarray, cols: dict[str, np.ndarray], deleted: np.ndarray | None,
                 ann: faiss.Index | None, ann_info: dict | None,
                 codes: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.name = name
        self.vectors = vectors
        self.codes, self.code_params = codes if codes is not None else (None, None)
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
            from rsretrieve.index.ann import read_ann  # ann imports this module

            cols = {k: np.asarray(np.load(path / f"{k}.npy", mmap_mode="r"))
                    for k in ("hkey", "tile_id", "lon", "lat", "time", "sensor", "cell", "scene_id", "cells")}
            vectors = np.asarray(np.load(path / "vectors.npy", mmap_mode="r"))
            if vectors.shape != (cols["tile_id"].size, dim):
                raise ValueError(f"segment {path} holds vectors of shape {vectors.shape}, manifest says dim {dim}")
            info = entry.get("ann")
            ann = read_ann(path / info["file"]) if info else None
            codes = _load_codes(path, vectors.shape)
        else:
            cols = {k: getattr(base, k) for k in ("hkey", "tile_id", "lon", "lat", "time", "sensor", "cell",
                                                   "scene_id")}
            cols["cells"], vectors, ann, info = base.cell_names, base.vectors, base.ann, base.ann_info
            codes = (base.codes, base.code_params) if base.codes is not None else None
        deleted = np.load(path / entry["deleted"]) if entry.get("deleted") else None
        seg = cls(path.name, vectors, cols, deleted, ann, info, codes)
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
        _save_npy(seg_dir / f"{k}.npy", v)
    n, d = vectors.shape
    dst = np.lib.format.open_memmap(seg_dir / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for i in range(0, n, _CHUNK):
        dst[i:i + _CHUNK] = vectors[order[i:i + _CHUNK]]
    norms = np.linalg.norm(dst[:4096], axis=1)
    if norms.size and np.abs(norms - 1).max() > 1e-3:
        log.warning("vectors are not L2-normalised (norms %.3f..%.3f): inner products are not cosines",
                    norms.min(), norms.max())
    dst.flush()
    write_codes(seg_dir, dst)
    del dst
    fsync_path(seg_dir / "vectors.npy")


def write_codes(seg_dir: Path, vectors: np.ndarray) -> None:
    """Write ``codes.npy``: each component of ``vectors`` as a uint8 step of a per-dimension grid from the
    segment's minimum to its maximum, and ``codes_params.npy``: (3, d) float64 offset, step and the largest error
    of the codes in each dimension (measured, in float64).

    Exact scans score rows from the codes first (a quarter of the bytes of the float32 vectors) and re-score from
    the vectors only the rows whose score could still reach the top-k: for a query ``q`` the code's score is within
    ``sum(|q_j| * error_j)`` of the vector's (:func:`rsretrieve.index.kernels.scan_topk`), so the answer is exactly
    the float32 one.
    """
    n, d = vectors.shape
    lo, step = _code_grid(vectors)
    err = np.zeros(d)
    codes = np.lib.format.open_memmap(seg_dir / "codes.npy", mode="w+", dtype=np.uint8, shape=(n, d))
    for i in range(0, n, _CHUNK):
        codes[i:i + _CHUNK], e = _encode(vectors[i:i + _CHUNK], lo, step)
        err = np.maximum(err, e)
    codes.flush()
    del codes
    fsync_path(seg_dir / "codes.npy")
    _save_npy(seg_dir / "codes_params.npy", np.stack([lo, step, err]))


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path``, fsynced."""
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def encode(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The codes and parameters :func:`write_codes` writes, in memory: ((n, d) uint8, (3, d) float64)."""
    lo, step = _code_grid(vectors)
    codes, err = _encode(vectors, lo, step)
    return codes, np.stack([lo, step, err])


def _code_grid(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension offset (the minimum) and step (range / 255; 1 where constant), float64, in chunks."""
    n, d = vectors.shape
    lo, hi = np.zeros(d), np.zeros(d)
    for i in range(0, n, _CHUNK):
        part = np.asarray(vectors[i:i + _CHUNK], dtype=np.float64)
        lo, hi = (part.min(0), part.max(0)) if i == 0 else (np.minimum(lo, part.min(0)), np.maximum(hi, part.max(0)))
    return lo, np.where(hi > lo, (hi - lo) / 255.0, 1.0)


def _encode(part: np.ndarray, lo: np.ndarray, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of ``part`` on the grid and the largest error per dimension (in float64)."""
    x = np.asarray(part, dtype=np.float64)
    c = np.clip(np.rint((x - lo) / step), 0, 255)
    err = np.abs(x - (lo + step * c)).max(0) if x.shape[0] else np.zeros(x.shape[1])
    return c.astype(np.uint8), err


def _load_codes(path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """The segment's codes and their parameters when it has them (segments written before them have not)."""
    if not (path / "codes.npy").exists():
        return None
    codes = np.asarray(np.load(path / "codes.npy", mmap_mode="r"))
    params = np.load(path / "codes_params.npy")
    if codes.shape != shape or params.shape != (3, shape[1]):
        raise ValueError(f"segment {path} holds codes of shape {codes.shape} for vectors of shape {shape}")
    return codes, params

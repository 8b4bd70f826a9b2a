"""Persistent vector index: immutable segments sorted along a Hilbert curve, a manifest, atomic generations.

Layout of an index directory::

    INDEX/
      current                      name of the generation readers open (replaced atomically)
      .lock                        writers hold an exclusive flock on it
      gen-<time>-<id>/
        manifest.json              model checksum, dimension, sensor table, segments (replaced atomically)
        seg-<time>-<id>/           one immutable segment, rows sorted by Hilbert key of (lon, lat)
          vectors.npy              (n, d) float32, L2-normalised, inner product similarity
          hkey.npy tile_id.npy lon.npy lat.npy time.npy sensor.npy cell.npy cells.npy scene_id.npy
          ann.faiss                optional ANN index over the rows (ids are row numbers)
          deleted-<id>.npy         optional rows removed by ``remove_scenes`` (named in the manifest)

Every file is written to a temporary name in the same directory, fsynced and renamed, and the directory is fsynced;
a segment is built in a ``.tmp-*`` directory renamed into place only when complete, and becomes visible only when the
manifest naming it replaces the previous one. A writer killed at any moment therefore leaves the previous manifest and
every segment it names intact; the next writer removes the leftovers. A new model builds a new generation beside the
current one (``open_for_update``) and ``publish`` switches ``current``; stores opened before keep their snapshot.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from rsretrieve.index.hilbert import HILBERT_ORDER, hilbert_key

log = logging.getLogger(__name__)

#: version of the manifest format written by this module
FORMAT_VERSION = 1
#: value of ``time`` for a tile whose acquisition time is unknown (never matches a time filter)
TIME_UNKNOWN = int(np.iinfo(np.int64).min)
#: segments with at least this many rows get an ANN index under ``factory="auto"``
ANN_MIN_ROWS = 1_000_000
#: recall@10 the search width of a segment's ANN index is calibrated to when it is built
TARGET_RECALL = 0.97
_CHUNK = 1 << 18


class IndexMismatchError(RuntimeError):
    """The index was built with another model (checksum) or embedding dimension than the caller's."""


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


def _new_name(prefix: str) -> str:
    return f"{prefix}-{time.time_ns():x}-{uuid.uuid4().hex[:6]}"


class IndexStore:
    """One generation of an index directory, as a snapshot; writers update it under a file lock.

    Use :meth:`create`, :meth:`open` or :meth:`open_for_update` rather than the constructor.
    """

    def __init__(self, root: Path, generation: str, manifest: dict, segments: list[Segment]) -> None:
        self.root = root
        self.generation = generation
        self.manifest = manifest
        self.segments = segments

    # ----------------------------------------------------------------------------------------------- opening
    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.manifest["dim"])

    @property
    def model_checksum(self) -> str:
        """Checksum of the model whose embeddings this generation holds."""
        return str(self.manifest["model_checksum"])

    @property
    def sensors(self) -> list[str]:
        """Sensor name table: the ``sensor`` column of every segment holds positions in it."""
        return list(self.manifest["sensors"])

    @property
    def ntotal(self) -> int:
        """Number of indexed (not removed) tiles."""
        return sum(s.n_alive for s in self.segments)

    @property
    def published(self) -> bool:
        """Whether this generation is the one ``current`` names (read now from disk)."""
        return _read_current(self.root) == self.generation

    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        """Whether ``path`` holds a published index."""
        return _read_current(Path(path)) is not None

    @classmethod
    def create(cls, path: str | os.PathLike, dim: int, model_checksum: str, *,
               publish: bool | None = None) -> IndexStore:
        """Create an empty generation in ``path`` (created if missing).

        Args:
            path: index directory.
            dim: embedding dimension.
            model_checksum: identifies the model whose embeddings go in.
            publish: make it current now; default: only when ``path`` has no current generation yet, so that an
                existing index keeps serving until :meth:`publish`.
        """
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        with _locked(root):
            generation = _new_name("gen")
            tmp = root / f".tmp-{generation}"
            tmp.mkdir()
            manifest = {"format": FORMAT_VERSION, "generation": generation, "model_checksum": str(model_checksum),
                        "dim": int(dim), "metric": "inner_product", "hilbert_order": HILBERT_ORDER,
                        "created": time.time(), "version": 0, "sensors": [], "segments": []}
            write_atomic(tmp / "manifest.json", json.dumps(manifest, indent=1).encode())
            os.rename(tmp, root / generation)
            fsync_dir(root)
            if publish or (publish is None and _read_current(root) is None):
                write_atomic(root / "current", generation.encode())
        log.info("created index generation %s in %s (dim %d, model %s)", generation, root, dim, model_checksum)
        return cls(root, generation, manifest, [])

    @classmethod
    def open(cls, path: str | os.PathLike, expect_model_checksum: str | None = None, expect_dim: int | None = None,
             *, generation: str | None = None) -> IndexStore:
        """Open the current generation (or ``generation``) of an index read-only, as a snapshot.

        Raises:
            FileNotFoundError: no index at ``path``.
            IndexMismatchError: built with another model checksum or dimension than expected.
        """
        root = Path(path)
        for attempt in range(5):
            gen = generation or _read_current(root)
            if gen is None:
                raise FileNotFoundError(f"no index at {root}: run `rsretrieve index` first")
            manifest = _read_manifest(root / gen)
            _check_model(root, manifest, expect_model_checksum, expect_dim)
            try:
                segments = _load_segments(root / gen, manifest)
            except FileNotFoundError:  # a writer compacted between reading the manifest and the segments
                if attempt == 4:
                    raise
                continue
            return cls(root, gen, manifest, segments)
        raise AssertionError("unreachable")

    @classmethod
    def open_for_update(cls, path: str | os.PathLike, dim: int, model_checksum: str) -> IndexStore:
        """The generation an index update with this model writes to.

        The current generation when it holds this model; else an unpublished generation of this model left by an
        earlier (interrupted) run; else a new unpublished one. Call :meth:`publish` when the update is complete.
        """
        root = Path(path)
        current = _read_current(root)
        if current is not None:
            man = _read_manifest(root / current)
            if man["model_checksum"] == str(model_checksum) and int(man["dim"]) == dim:
                return cls.open(root, generation=current)
        for gen in sorted((p.name for p in root.glob("gen-*") if p.is_dir()), reverse=True):
            man = _read_manifest(root / gen)
            if gen != current and man["model_checksum"] == str(model_checksum) and int(man["dim"]) == dim:
                log.info("resuming unpublished generation %s", gen)
                return cls.open(root, generation=gen)
        return cls.create(root, dim, model_checksum)

    def publish(self) -> None:
        """Make this generation the one readers open (atomic switch of ``current``)."""
        with _locked(self.root):
            write_atomic(self.root / "current", self.generation.encode())
        log.info("published index generation %s", self.generation)

    @staticmethod
    def prune(path: str | os.PathLike, keep: int = 1) -> list[str]:
        """Delete all generations but the current one and the ``keep`` newest others; returns deleted names.

        Stores already open on a deleted generation keep working (their files are memory-mapped) but cannot write.
        """
        root = Path(path)
        with _locked(root):
            current = _read_current(root)
            others = sorted((p.name for p in root.glob("gen-*") if p.is_dir() and p.name != current), reverse=True)
            doomed = others[keep:]
            for gen in doomed:
                shutil.rmtree(root / gen)
            for tmp in root.glob(".tmp-*"):
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        return doomed

    # ----------------------------------------------------------------------------------------------- writing
    def add_segment(self, vectors: np.ndarray, tile_ids: Sequence[int] | np.ndarray, lon: np.ndarray,
                    lat: np.ndarray, time: np.ndarray, sensor_names: Sequence[str] | np.ndarray,
                    cell_ids: Sequence[str] | np.ndarray, scene_ids: Sequence[int] | np.ndarray, *,
                    factory: str | None = "auto") -> str | None:
        """Add tiles as one new immutable segment; returns its name (None when there are no rows).

        Args:
            vectors: (n, d) float32 embeddings, L2-normalised; may be a memory-mapped array.
            tile_ids: (n,) int64 tile ids, none of them indexed already.
            lon, lat: (n,) float64 tile centroids in degrees, EPSG:4326.
            time: (n,) int64 acquisition time in unix seconds, ``TIME_UNKNOWN`` when unknown.
            sensor_names: (n,) sensor name of each tile.
            cell_ids: (n,) ground grid cell id of each tile (str).
            scene_ids: (n,) int64 scene id of each tile.
            factory: FAISS index factory string of the segment's ANN index, ``"auto"`` (none below
                ``ANN_MIN_ROWS`` rows, IVF above) or None for exact search only.
        """
        n = len(tile_ids)
        vectors = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (n, self.dim):
            raise ValueError(f"vectors must have shape ({n}, {self.dim}), got {vectors.shape}")
        cols = _prepare_columns(n, tile_ids, lon, lat, time, sensor_names, cell_ids, scene_ids)
        if n == 0:
            return None
        with self._writing() as man:
            present = np.concatenate([s.tile_id[s.alive_rows()] for s in self.segments] or [np.empty(0, np.int64)])
            dup = cols["tile_id"][np.isin(cols["tile_id"], present)]
            if dup.size:
                raise ValueError(f"{dup.size} tile ids are indexed already (e.g. {int(dup[0])}); "
                                 "remove their scenes first")
            names = cols.pop("sensor_names")
            table = list(man["sensors"])
            table += [s for s in np.unique(names).tolist() if s not in table]
            lookup = {s: i for i, s in enumerate(table)}
            uniq, inv = np.unique(names, return_inverse=True)
            cols["sensor"] = np.array([lookup[s] for s in uniq.tolist()], dtype=np.int16)[inv]
            name = self._write_segment(cols, vectors, factory)
            man["sensors"] = table
            man["segments"].append({"name": name, "rows": n, **Segment.read_entry(self._gen_dir / name)})
        log.info("added segment %s (%d rows) to %s", name, n, self._gen_dir)
        return name

    def remove_scenes(self, scene_ids: Sequence[int] | np.ndarray) -> int:
        """Remove every tile of these scenes; returns the number of rows removed. Searches never return them again."""
        ids = np.unique(np.asarray(scene_ids, dtype=np.int64))
        removed = 0
        with self._writing() as man:
            entries = []
            for seg, entry in zip(self.segments, man["segments"]):
                hit = np.isin(seg.scene_id, ids) & seg.alive_mask()
                count = int(hit.sum())
                if count:
                    removed += count
                    dead = np.flatnonzero(~(seg.alive_mask() & ~hit))
                    if dead.size == seg.n:
                        continue  # nothing left: drop the segment, its directory is cleaned up below
                    entry = {**entry, "deleted": seg.write_deleted(dead)}
                entries.append(entry)
            man["segments"] = entries
        log.info("removed %d rows of %d scenes", removed, ids.size)
        return removed

    def compact(self, factory: str | None = "auto") -> str | None:
        """Rewrite all segments as one (removed rows dropped, re-sorted, ANN index per ``factory``)."""
        with self._writing() as man:
            n = self.ntotal
            if n == 0:
                man["segments"] = []
                return None
            tmp = self._gen_dir / f".tmp-{_new_name('merge')}"
            tmp.mkdir()
            vec = np.lib.format.open_memmap(tmp / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, self.dim))
            cols: dict[str, list[np.ndarray]] = {k: [] for k in ("tile_id", "lon", "lat", "time", "sensor",
                                                               "cell_ids", "scene_id")}
            at = 0
            for seg in self.segments:
                rows = seg.alive_rows()
                for i in range(0, rows.size, 1 << 18):
                    part = rows[i:i + (1 << 18)]
                    vec[at:at + part.size] = seg.vectors[part]
                    at += part.size
                for k in cols:
                    cols[k].append(seg.cell_names[seg.cell[rows]] if k == "cell_ids" else getattr(seg, k)[rows])
            merged = {k: np.concatenate(v) for k, v in cols.items()}
            merged["hkey"] = hilbert_key(merged["lon"], merged["lat"])
            name = self._write_segment(merged, vec, factory)
            del vec
            shutil.rmtree(tmp)
            man["segments"] = [{"name": name, "rows": n, **Segment.read_entry(self._gen_dir / name)}]
        log.info("compacted %s into segment %s (%d rows)", self._gen_dir, name, n)
        return name

    # ----------------------------------------------------------------------------------------------- reading
    def indexed_tile_ids(self) -> np.ndarray:
        """int64 ids of all indexed tiles, in storage order."""
        parts = [s.tile_id[s.alive_rows()] for s in self.segments]
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def load_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All indexed tiles as ``(tile_ids (n,) int64, vectors (n, d) float32)``, e.g. for export."""
        rows = [s.alive_rows() for s in self.segments]
        vecs = [np.asarray(s.vectors[r]) for s, r in zip(self.segments, rows)]
        return self.indexed_tile_ids(), (np.concatenate(vecs) if vecs else np.empty((0, self.dim), np.float32))

    def get_vectors(self, tile_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored vectors of these tiles, (n, d) float32, in the order asked.

        Raises:
            KeyError: a tile is not indexed.
        """
        want = np.asarray(tile_ids, dtype=np.int64)
        out = np.full((want.size, self.dim), np.nan, dtype=np.float32)
        found = np.zeros(want.size, dtype=bool)
        for seg in self.segments:
            rows = seg.alive_rows()
            order = np.argsort(seg.tile_id[rows])
            pos = np.searchsorted(seg.tile_id[rows], want, sorter=order)
            pos = np.minimum(pos, max(rows.size - 1, 0))
            hit = (rows.size > 0) & (seg.tile_id[rows][order][pos] == want) if rows.size else np.zeros_like(found)
            out[hit] = seg.vectors[rows[order[pos[hit]]]]
            found |= hit
        if not found.all():
            raise KeyError(f"tile {int(want[~found][0])} is not in the index at {self.root}")
        return out

    # ----------------------------------------------------------------------------------------------- internals
    @property
    def _gen_dir(self) -> Path:
        return self.root / self.generation

    @contextmanager
    def _writing(self) -> Iterator[dict]:
        """Lock, refresh the snapshot from disk, yield a manifest copy to edit, then swap it in and clean up."""
        with _locked(self.root):
            self._refresh()
            man = json.loads(json.dumps(self.manifest))
            yield man
            man["version"] = int(man["version"]) + 1
            write_atomic(self._gen_dir / "manifest.json", json.dumps(man, indent=1).encode())
            self._refresh()
            self._collect_garbage()

    def _refresh(self) -> None:
        """Re-read the manifest; segments already loaded are reused (only their removed rows are re-read)."""
        self.manifest = _read_manifest(self._gen_dir)
        self.segments = _load_segments(self._gen_dir, self.manifest, {s.name: s for s in self.segments})

    def _write_segment(self, cols: dict[str, np.ndarray], vectors: np.ndarray, factory: str | None) -> str:
        name = _new_name("seg")
        tmp = self._gen_dir / f".tmp-{name}"
        tmp.mkdir()
        write_segment_files(tmp, cols, vectors)
        seg_vectors = np.load(tmp / "vectors.npy", mmap_mode="r")
        if factory == "auto":
            factory = auto_factory(len(cols["tile_id"]), self.dim)
        if factory:
            build_ann(tmp, np.asarray(seg_vectors), factory)
        fsync_dir(tmp)
        os.rename(tmp, self._gen_dir / name)
        fsync_dir(self._gen_dir)
        return name

    def _collect_garbage(self) -> None:
        live = {e["name"]: e for e in self.manifest["segments"]}
        for p in self._gen_dir.iterdir():
            if p.name.startswith(".tmp-") or (p.name.startswith("seg-") and p.name not in live):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            elif p.name in live:
                for f in p.glob("deleted-*.npy"):
                    if f.name != live[p.name].get("deleted"):
                        f.unlink()




def auto_factory(n: int, dim: int) -> str | None:
    """The FAISS factory ``factory="auto"`` uses for a segment of ``n`` rows: exact below ``ANN_MIN_ROWS``,
    IVF-Flat up to 4M rows, IVF-PQ (re-ranked exactly from the raw vectors) above."""
    if n < ANN_MIN_ROWS:
        return None
    nlist = int(min(4096, 2 ** round(np.log2(4 * np.sqrt(n)))))
    return f"IVF{nlist},Flat" if n < 4_000_000 else f"IVF{nlist},PQ{dim // 4 if dim % 4 == 0 else dim}"


def _prepare_columns(n: int, tile_ids, lon, lat, time, sensor_names, cell_ids, scene_ids) -> dict[str, np.ndarray]:
    cols = {"tile_id": np.asarray(tile_ids, dtype=np.int64), "lon": np.asarray(lon, dtype=np.float64),
            "lat": np.asarray(lat, dtype=np.float64), "time": np.asarray(time, dtype=np.int64),
            "sensor_names": np.asarray(sensor_names, dtype=str), "cell_ids": np.asarray(cell_ids, dtype=str),
            "scene_id": np.asarray(scene_ids, dtype=np.int64)}
    for k, v in cols.items():
        if v.shape != (n,):
            raise ValueError(f"{k} must have shape ({n},), got {v.shape}")
    if np.unique(cols["tile_id"]).size != n:
        raise ValueError("tile_ids must be unique")
    if not (np.all(np.abs(cols["lon"]) <= 180) and np.all(np.abs(cols["lat"]) <= 90)):
        raise ValueError("lon must be in [-180, 180] and lat in [-90, 90] degrees (EPSG:4326), finite")
    cols["hkey"] = hilbert_key(cols["lon"], cols["lat"])
    return cols


def _load_segments(gen_dir: Path, manifest: dict, loaded: dict[str, Segment] | None = None) -> list[Segment]:
    """The segments a manifest names; those in ``loaded`` with unchanged removed rows are reused as they are."""
    out = []
    for entry in manifest["segments"]:
        base = (loaded or {}).get(entry["name"])
        if base is not None and base.deleted_file == entry.get("deleted"):
            out.append(base)
        else:
            out.append(Segment.load(gen_dir / entry["name"], entry, int(manifest["dim"]), base))
    return out


def _read_current(root: Path) -> str | None:
    try:
        name = (root / "current").read_text().strip()
    except FileNotFoundError:
        return None
    return name or None


def _read_manifest(gen_dir: Path) -> dict:
    try:
        return json.loads((gen_dir / "manifest.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"index generation {gen_dir} has no manifest.json") from None


def _check_model(root: Path, manifest: dict, checksum: str | None, dim: int | None) -> None:
    have_sum, have_dim = manifest["model_checksum"], int(manifest["dim"])
    if (checksum is not None and str(checksum) != have_sum) or (dim is not None and int(dim) != have_dim):
        raise IndexMismatchError(
            f"index at {root} was built with model {have_sum} (dim {have_dim}); this model is "
            f"{checksum if checksum is not None else have_sum} (dim {dim if dim is not None else have_dim}): "
            "re-run `rsretrieve index`")


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    with open(root / ".lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


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


def build_ann(seg_dir: Path, vectors: np.ndarray, factory: str, seed: int = 0) -> dict:
    """Train and fill a FAISS index over ``vectors`` (ids = row numbers), calibrate its search width to
    ``TARGET_RECALL`` recall@10 on a sample of the rows, and write ``ann.faiss`` and ``ann.json``."""
    n, d = vectors.shape
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    for part in (index, faiss.try_extract_index_ivf(index)):
        part = faiss.downcast_index(part) if part is not None else None
        if hasattr(part, "do_polysemous_training"):
            part.do_polysemous_training = False  # only useful for Hamming-distance search, and slow to train
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        ntrain = min(n, 64 * ivf.nlist if ivf is not None else 100_000, 500_000)
        index.train(np.ascontiguousarray(vectors[np.sort(rng.choice(n, ntrain, replace=False))]))
    for i in range(0, n, _CHUNK):
        index.add(np.ascontiguousarray(vectors[i:i + _CHUNK], dtype=np.float32))
    tail = factory.split(",")[-1].strip()
    exact_codes = tail == "Flat" or ("," not in factory and factory.startswith("HNSW"))
    info = {"file": "ann.faiss", "factory": factory, "rerank": 1 if exact_codes else 8,
            "param": "nprobe" if faiss.try_extract_index_ivf(index) is not None else
            "efSearch" if "HNSW" in factory else None, "width": 0}
    info.update(_calibrate(index, info, vectors, rng))
    info["build_s"] = round(time.perf_counter() - t0, 3)
    faiss.write_index(index, str(seg_dir / "ann.faiss"))
    with open(seg_dir / "ann.faiss", "rb+") as f:
        os.fsync(f.fileno())
    write_atomic(seg_dir / "ann.json", json.dumps(info).encode())
    log.info("built %s over %d rows in %.1f s: %s=%s gives recall@10 %.3f", factory, n, info["build_s"],
             info["param"], info["width"], info["recall"])
    return info


def ann_params(info: dict, width: int, sel: faiss.IDSelector | None = None) -> faiss.SearchParameters:
    """FAISS search parameters for a segment's ANN index at search width ``width`` with optional selector."""
    if info["param"] == "nprobe":
        return faiss.SearchParametersIVF(nprobe=int(width), sel=sel)
    if info["param"] == "efSearch":
        return faiss.SearchParametersHNSW(efSearch=int(width), sel=sel)
    return faiss.SearchParameters(sel=sel)


def ann_search(index: faiss.Index, info: dict, vectors: np.ndarray, q: np.ndarray, k: int,
               width: int, sel: faiss.IDSelector | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Search an ANN index; approximate codes are re-ranked exactly with the stored vectors.

    Args:
        q: (nq, d) float32 queries. k: results wanted per query. width: nprobe / efSearch.

    Returns:
        (scores, rows), each (nq, k): inner products (descending) and row numbers (-1 where fewer results).
    """
    rerank = int(info["rerank"])
    D, I = index.search(q, k * rerank, params=ann_params(info, max(width, k) if info["param"] == "efSearch"
                                                            else width, sel))
    if rerank == 1:
        return D, I
    valid = I >= 0
    exact = np.einsum("qkd,qd->qk", vectors[np.where(valid, I, 0)], q)
    exact[~valid] = -np.inf
    top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(exact, top, 1)
    rows = np.where(np.isfinite(scores), np.take_along_axis(I, top, 1), -1)
    return scores, rows


def _calibrate(index: faiss.Index, info: dict, vectors: np.ndarray, rng: np.random.Generator,
               k: int = 10, nq: int = 64) -> dict:
    """Smallest search width reaching ``TARGET_RECALL`` recall@k on sample rows used as queries (self excluded)."""
    n = vectors.shape[0]
    if info["param"] is None:
        return {"width": 0, "recall": None}
    qrows = rng.choice(n, min(nq, n), replace=False)
    q = np.ascontiguousarray(vectors[qrows])
    _, gt = faiss.knn(q, np.ascontiguousarray(vectors), k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    truth = [set(g[g != r][:k].tolist()) for g, r in zip(gt, qrows)]
    limit = faiss.extract_index_ivf(index).nlist if info["param"] == "nprobe" else 4096
    width, recall = 1 if info["param"] == "nprobe" else 16, 0.0
    while True:
        _, got = ann_search(index, info, vectors, q, k + 1, width)
        recall = float(np.mean([len(t & set(g[g != r][:k].tolist())) / k for t, g, r in zip(truth, got, qrows)]))
        if recall >= TARGET_RECALL or width >= limit:
            return {"width": int(width), "recall": round(recall, 4)}
        width = min(2 * width, limit)

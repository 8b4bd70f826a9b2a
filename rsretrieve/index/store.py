"""Persistent vector index: immutable segments sorted along a Hilbert curve, a manifest, atomic generations.

Layout of an index directory::

    INDEX/
      current                      name of the generation readers open (replaced atomically)
      .lock                        writers hold an exclusive flock on it for each step (a segment, a switch)
      .update.lock                 an update run (``rsretrieve index``) holds an exclusive flock on it throughout,
                                   and writes its process id in it (:func:`update_lock`)
      gen-<time>-<id>/
        manifest.json              model checksum, dimension, sensor table, segments (replaced atomically); the
                                   model's name and per-sensor fingerprints (what a later model reuses by)
        seg-<time>-<id>/           one immutable segment, rows sorted by Hilbert key of (lon, lat)
          vectors.npy              (n, d) float32, L2-normalised, inner product similarity
          codes.npy codes_params.npy  (n, d) uint8 scalar codes of the vectors, read first by exact scans
          hkey.npy tile_id.npy lon.npy lat.npy time.npy sensor.npy cell.npy cells.npy scene_id.npy
          ann.faiss ann.json       optional ANN index over the rows (ids are row numbers)
          deleted-<id>.npy         optional rows removed by ``remove_scenes`` (named in the manifest)

This module keeps the manifest, the generations and the writers' lock; :mod:`rsretrieve.index.segment` the format of
one segment and the atomic file writes, :mod:`rsretrieve.index.ann` the ANN index of a segment.

Every file is written to a temporary name in the same directory, fsynced and renamed, and the directory is fsynced;
a segment is built in a ``.tmp-*`` directory renamed into place only when complete, and becomes visible only when the
manifest naming it replaces the previous one. A writer killed at any moment therefore leaves the previous manifest and
every segment it names intact; the next writer removes the leftovers. A new model builds a new generation beside the
current one (``open_for_update``) and ``publish`` switches ``current``; stores opened before keep their snapshot.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from rsretrieve.files import fsync_path, run_lock, write_atomic
from rsretrieve.index.ann import auto_factory, build_ann, check_factory, read_trained
from rsretrieve.index.hilbert import HILBERT_ORDER, hilbert_key
from rsretrieve.index.segment import Segment, write_segment_files

log = logging.getLogger(__name__)

#: version of the manifest format written by this module
FORMAT_VERSION = 1
#: size-tiered merging after an update (:func:`merge_plan`): a segment is left as it is while it holds at least this
#: many times the rows of all smaller segments together. An index of N rows then keeps O(log N) segments, and a row
#: is rewritten O(log N) times over its life instead of at every update (a scene added to a 10M-row index rewrote,
#: re-sorted and re-trained all 10M rows)
MERGE_RATIO = 4
#: a segment with more than this share of its rows removed is rewritten (without them) by the next merge
MAX_DEAD_SHARE = 0.25


class IndexMismatchError(RuntimeError):
    """The index was built with another model (checksum) or embedding dimension than the caller's."""


class IndexBusyError(RuntimeError):
    """Another process is running an index update on the same index (it holds :func:`update_lock`)."""


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
    def current_generation(path: str | os.PathLike) -> str | None:
        """The name of the generation readers open now (``None``: nothing published)."""
        return _read_current(Path(path))

    @staticmethod
    def manifest_of(path: str | os.PathLike, generation: str) -> dict:
        """The manifest of generation ``generation`` of the index at ``path`` (FileNotFoundError once pruned)."""
        return _read_manifest(Path(path) / generation)

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
            fsync_path(root)
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
                if any(p.is_dir() for p in root.glob("gen-*")):
                    raise FileNotFoundError(f"no index at {root} yet: the first `rsretrieve index` has not finished "
                                            f"(still running, or interrupted: run it again to complete it)")
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
        earlier (interrupted) run; else a new unpublished one. Call :meth:`publish` when the update is complete:
        a first index is not published before then either, so an interrupted first run never serves a partial index.
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
        return cls.create(root, dim, model_checksum, publish=False)

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
                # renamed first: a prune killed inside rmtree leaves a .tmp-* folder (removed below by the next
                # one), not a gen-* folder without its manifest that stopped every later update
                os.rename(root / gen, root / f".tmp-{gen}")
                shutil.rmtree(root / f".tmp-{gen}")
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

    @property
    def factory(self) -> str | None:
        """The FAISS factory an update builds this generation's ANN indexes with when given none (``"auto"``: by
        segment size); None where no update has recorded one."""
        return self.manifest.get("factory")

    def set_factory(self, factory: str) -> None:
        """Record ``factory`` as :attr:`factory`."""
        with self._writing() as man:
            man["factory"] = factory

    @property
    def model_name(self) -> str | None:
        """The name (``WS/checkpoints/NAME``) of the model an update last recorded (None: none recorded)."""
        return self.manifest.get("model_name")

    @property
    def sensor_fingerprints(self) -> dict[str, str]:
        """Sensor -> fingerprint of what its vectors were embedded with (``CrossSensorEncoder.embedding_fingerprints``);
        empty where no update recorded them (an older index, another model kind)."""
        return dict(self.manifest.get("sensor_fingerprints") or {})

    @property
    def model_sensors(self) -> list[str] | None:
        """The sensors the model an update last recorded has branches for (None: none recorded, an older index)."""
        sensors = self.manifest.get("model_sensors")
        return None if sensors is None else list(sensors)

    def set_model_info(self, model_name: str, fingerprints: dict[str, str],
                       sensors: Collection[str] | None = None) -> None:
        """Record the model's name, per-sensor fingerprints and sensors as :attr:`model_name`,
        :attr:`sensor_fingerprints` and :attr:`model_sensors`."""
        with self._writing() as man:
            man["model_name"] = str(model_name)
            man["sensor_fingerprints"] = {str(k): str(v) for k, v in fingerprints.items()}
            if sensors is not None:
                man["model_sensors"] = [str(s) for s in sensors]

    def compact(self, factory: str | None = "auto", names: Collection[str] | None = None) -> str | None:
        """Rewrite segments as one (removed rows dropped, re-sorted, ANN index per ``factory``): all of them, or
        those named in ``names`` (the others stay as they are; see :func:`merge_plan`)."""
        with self._writing() as man:
            merging = [s for s in self.segments if names is None or s.name in names]
            kept = [e for e in man["segments"] if names is not None and e["name"] not in names]
            n = sum(s.n_alive for s in merging)
            if n == 0:
                man["segments"] = kept
                return None
            tmp = self._gen_dir / f".tmp-{_new_name('merge')}"
            tmp.mkdir()
            vec = np.lib.format.open_memmap(tmp / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, self.dim))
            cols: dict[str, list[np.ndarray]] = {k: [] for k in ("tile_id", "lon", "lat", "time", "sensor",
                                                               "cell_ids", "scene_id")}
            at = 0
            for seg in merging:
                rows = seg.alive_rows()
                for i in range(0, rows.size, 1 << 18):
                    part = rows[i:i + (1 << 18)]
                    vec[at:at + part.size] = seg.vectors[part]
                    at += part.size
                for k in cols:
                    cols[k].append(seg.cell_names[seg.cell[rows]] if k == "cell_ids" else getattr(seg, k)[rows])
            merged = {k: np.concatenate(v) for k, v in cols.items()}
            merged["hkey"] = hilbert_key(merged["lon"], merged["lat"])
            name = self._write_segment(merged, vec, factory, replacing={s.name for s in merging})
            del vec
            shutil.rmtree(tmp)
            man["segments"] = kept + [{"name": name, "rows": n, **Segment.read_entry(self._gen_dir / name)}]
        log.info("merged %d segments of %s into segment %s (%d rows)", len(merging), self._gen_dir, name, n)
        return name

    def merge_small(self, factory: str | None = "auto") -> str | None:
        """Merge the segments :func:`merge_plan` picks into one (:meth:`compact`); None when it picks none."""
        plan = merge_plan([s.n_alive for s in self.segments], [s.n - s.n_alive for s in self.segments])
        return self.compact(factory, {self.segments[i].name for i in plan}) if plan else None

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

    def _write_segment(self, cols: dict[str, np.ndarray], vectors: np.ndarray, factory: str | None,
                       replacing: Collection[str] = ()) -> str:
        """Write a segment directory (its ANN index per ``factory``); returns its name. ``replacing``: segments it
        replaces (a merge), whose IVF lists it does not borrow (:meth:`_trained_ann`)."""
        name = _new_name("seg")
        tmp = self._gen_dir / f".tmp-{name}"
        tmp.mkdir()
        write_segment_files(tmp, cols, vectors)
        seg_vectors = np.load(tmp / "vectors.npy", mmap_mode="r")
        n = len(cols["tile_id"])
        small = factory == "auto" and auto_factory(n, self.dim) is None or factory not in (None, "auto") and n < \
            check_factory(factory, self.dim)
        trained = self._trained_ann(factory, replacing) if small else None  # it reads the lender's index file
        if trained is not None:
            # beside a larger segment with an IVF index, a smaller one gets its own on that one's lists (without
            # training, at the cost of assigning its rows): scanned exactly instead, each unfiltered query would
            # scan all its rows (a 50,000-row segment beside 1M: 2.7 ms against 0.13 ms)
            factory, trained = trained[0], trained[1:]
        else:
            if factory == "auto":
                factory = auto_factory(n, self.dim)
            need = check_factory(factory, self.dim) if factory else 0
            if n < need:
                # a segment too small to train the index (fewer rows than its lists) is scanned exactly instead
                log.warning("segment of %d rows is too small to train %s (needs %d): searched exactly", n, factory,
                            need)
                factory = None
        if factory:
            build_ann(tmp, np.asarray(seg_vectors), factory, trained=trained)
        fsync_path(tmp)
        os.rename(tmp, self._gen_dir / name)
        fsync_path(self._gen_dir)
        return name

    def _trained_ann(self, factory: str | None, replacing: Collection[str] = ()
                     ) -> tuple[str, faiss.Index, dict] | None:
        """(factory, index, info) of the largest segment of this generation, not in ``replacing``, whose ANN index is
        an IVF one that a segment asked to have ``factory`` may be filled on (``"auto"``: any; another: that one);
        None when there is none. ``index`` is a copy of it read again with empty lists (:func:`read_trained`)."""
        if factory is None:
            return None
        best = None
        for seg in self.segments:
            if seg.name in replacing:
                continue
            info = seg.ann_info or {}
            if seg.ann is not None and info.get("param") == "nprobe" and factory in ("auto", info.get("factory")):
                if best is None or seg.n > best.n:
                    best = seg
        if best is None:
            return None
        return best.ann_info["factory"], read_trained(best.path / best.ann_info["file"]), {
            **best.ann_info, "lists_of": best.ann_info.get("lists_of", best.name)}

    def _collect_garbage(self) -> None:
        live = {e["name"]: e for e in self.manifest["segments"]}
        for p in self._gen_dir.iterdir():
            if p.name.startswith(".tmp-") or (p.name.startswith("seg-") and p.name not in live):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            elif p.name in live:
                for f in p.glob("deleted-*.npy"):
                    if f.name != live[p.name].get("deleted"):
                        f.unlink()


def merge_plan(alive: Sequence[int], dead: Sequence[int]) -> list[int]:
    """Which segments an update merges into one (size-tiered), as positions in ``alive`` (rows alive per segment)
    and ``dead`` (rows removed per segment): the smallest segments, from the smallest up, until the next one holds at
    least ``MERGE_RATIO`` times their rows together, and every segment with more than ``MAX_DEAD_SHARE`` of its rows
    removed. Empty when that leaves a single segment with few removed rows (rewriting it gains nothing)."""
    heavy = {i for i in range(len(alive)) if dead[i] > MAX_DEAD_SHARE * (alive[i] + dead[i])}
    pick, total = [], 0
    for i in sorted(range(len(alive)), key=lambda i: alive[i]):
        if pick and alive[i] >= MERGE_RATIO * total:
            break
        pick.append(i)
        total += alive[i]
    pick = sorted(set(pick) | heavy)
    return pick if len(pick) > 1 or heavy else []


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
        # the name tells a user who queried with the default model after indexing another (e.g. one that added a
        # sensor) which --model the index answers to, rather than only to re-index (which re-embeds everything)
        named = f" (dim {have_dim}, indexed as --model {manifest['model_name']})" if manifest.get("model_name") \
            else f" (dim {have_dim})"
        raise IndexMismatchError(
            f"index at {root} was built with model {have_sum}{named}; this model is "
            f"{checksum if checksum is not None else have_sum} (dim {dim if dim is not None else have_dim}): "
            "re-run `rsretrieve index`")


@contextmanager
def update_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the update lock of the index at ``path`` (created if missing) for a whole update run.

    The per-step lock (``.lock``) keeps each manifest write whole, but not a run: two runs at once embedded the same
    tiles twice and the slower one failed on "tile ids indexed already", and a run that ended pruned the unpublished
    generation another run (of another model) was still writing. The lock is an flock, so a run killed at any moment
    (kill -9 included) releases it with its process.

    Raises:
        IndexBusyError: another process holds it; the message names its process id.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)

    def refused(pid: str) -> IndexBusyError:
        who = f"another `rsretrieve index` (process {pid})" if pid else "another `rsretrieve index`"
        return IndexBusyError(f"{who} is updating the index in {root}: wait for it to finish, then run this command "
                              "again (queries keep answering from the published index meanwhile)")

    with run_lock(root / ".update.lock", refused):
        yield


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    with open(root / ".lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)

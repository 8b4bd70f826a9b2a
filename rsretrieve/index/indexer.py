"""``rsretrieve index``: embed every catalog tile not yet in the index and add it, resumably.

Tiles are embedded scene by scene (each scene read once) in batches, and written as immutable segments of at most
``segment_rows`` rows; a segment is the unit of progress, so a run killed at any moment loses at most the segment
being built and the next run picks up from there. Vectors of scenes that left the catalog (removed, or re-ingested
under new tile ids) are removed first. A model other than the index's builds a new generation beside the current
one, published only when complete: queries keep working on the old one meanwhile. When a run changed anything, its
new segments are merged at the end (atomically) with the smaller existing ones, size-tiered
(:func:`~rsretrieve.index.store.merge_plan`): queries pay for a few segments, a large segment gets an ANN index
(``--factory``, or IVF above 1M vectors), and a few new scenes do not rewrite a large index. A new model that embeds
some sensors exactly as the index's model did (same per-sensor fingerprint: a model that added a sensor with
``configs/add_sensor.yaml`` keeps every other sensor's head, metric and branch) takes those sensors' vectors from the
published generation instead of re-embedding them: only the new sensor's tiles go through the model. One run updates
an index at a time: a second one is refused (:class:`~rsretrieve.index.store.IndexBusyError`) rather than
duplicating or pruning the first one's work.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.tiles import read_scene_tiles
from rsretrieve.files import gone
from rsretrieve.index.ann import check_factory
from rsretrieve.index.search import Searcher
from rsretrieve.index.segment import TIME_UNKNOWN, Segment
from rsretrieve.index.store import IndexStore, update_lock
from rsretrieve.model.checkpoint import load_model

log = logging.getLogger(__name__)


def model_checksum(path: str | Path) -> str:
    """SHA-256 (first 16 hex digits) of a model file: the identity an index is tied to."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def model_path(workspace: Path, name: str = "default") -> Path:
    """``WS/checkpoints/NAME/model.pt``, which must exist."""
    p = Path(workspace) / "checkpoints" / name / "model.pt"
    if not p.is_file():
        raise FileNotFoundError(f"no trained model {name!r} in {Path(workspace) / 'checkpoints'}: "
                                "run `rsretrieve train` first")
    return p


def _current_factory(root: Path) -> str | None:
    """The factory recorded in the published generation of the index at ``root`` (None: none recorded)."""
    try:
        return IndexStore.open(root).factory
    except FileNotFoundError:
        return None


@torch.no_grad()
def embed_tiles(model: torch.nn.Module, sensor: str, tiles: list[np.ndarray], batch: int = 256) -> np.ndarray:
    """(N, E) float32 exported vectors of normalised tiles of one sensor."""
    out = []
    for i in range(0, len(tiles), batch):
        x = torch.from_numpy(np.stack(tiles[i:i + batch]).astype(np.float32))
        out.append(model.embed(sensor, x).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.embed_dim), np.float32)


def index_workspace(workspace: str | Path, model_name: str = "default", factory: str | None = None,
                    segment_rows: int = 50_000, batch: int = 256,
                    progress: Callable[[int, int, str], None] | None = None, compact: bool = False) -> dict:
    """Bring the workspace index up to date with its catalog and model; returns a summary.

    Args:
        factory: FAISS factory string of the ANN index (``"auto"``: none below ``ANN_MIN_ROWS`` rows per segment,
            IVF above); None: the one the index was last given (``"auto"`` at first). A factory other than the
            index's rebuilds it with that one even when no tile changed, and is kept for later updates.
        compact: merge every segment into one at the end, even when nothing changed (else only the new segments
            with the smaller existing ones, :func:`~rsretrieve.index.store.merge_plan`).

    The summary's ``catalog_changed`` says that an ingest changed the catalog while this run read it: scenes it
    added or replaced are not indexed (and their replaced versions not removed) until the next run. ``added``
    counts the tiles embedded; ``reused`` (per sensor: ``reused_sensors``) the vectors a new model's generation
    took from the published one instead, for sensors this model embeds exactly as that one's did.

    Raises:
        IndexBusyError: another run is updating this workspace's index (:func:`~rsretrieve.index.store.update_lock`).
    """
    ws = Path(workspace)
    if segment_rows < 1:
        raise ValueError(f"--segment-rows must be a positive number of rows, got {segment_rows}")
    mpath = model_path(ws, model_name)
    checksum = model_checksum(mpath)
    model = load_model(mpath).eval()
    if factory not in (None, "auto"):
        check_factory(factory, model.embed_dim)  # before anything is embedded or written
    # one run at a time (IndexBusyError otherwise): a second run would embed the same tiles into the same
    # generation, or prune the unpublished generation of a run of another model when it ends
    with update_lock(ws / "index"):
        return _update(ws, model_name, model, checksum, factory, segment_rows, batch, progress, compact)


def _update(ws: Path, model_name: str, model: torch.nn.Module, checksum: str, factory: str | None,
            segment_rows: int, batch: int, progress: Callable[[int, int, str], None] | None,
            compact: bool = False) -> dict:
    """The body of :func:`index_workspace`, run under the index's update lock."""
    store = IndexStore.open_for_update(ws / "index", dim=model.embed_dim, model_checksum=checksum)
    built = store.factory
    if built is None and not store.published and IndexStore.exists(ws / "index"):  # a new model's generation:
        built = _current_factory(ws / "index")  # the factory the index of the previous model was given
        if built is not None:
            store.set_factory(built)
    built = built or "auto"
    factory = factory or built
    summary = {"model": model_name, "model_checksum": checksum, "generation": store.generation,
               "removed": 0, "added": 0, "reused": 0, "reused_sensors": {}, "skipped_sensors": {},
               "factory": factory, "catalog_changed": False}
    fingerprints = _fingerprints(model)
    if store.model_name != model_name or store.sensor_fingerprints != fingerprints \
            or store.model_sensors != list(model.sensors):  # what a later model's update compares its own with
        store.set_model_info(model_name, fingerprints, model.sensors)
    with Catalog(ws / "catalog.sqlite") as catalog:
        # the columns used here and by read_scene_tiles (every column of a million tiles took 1.3 GB)
        tiles = catalog.tiles(columns=("tile_id", "scene_id", "sensor", "acquired_ts", "lon", "lat", "cell_id",
                                       "col_off", "row_off", "width", "height"))
        stale_scenes = set()
        live = _LiveTiles(tiles)
        for seg in store.segments:
            # a vector is stale when its tile left the catalog or when the catalog's tile of that id is not the one
            # embedded (other scene, date or place: a catalog written before ids were kept unique re-used the ids
            # of a replaced scene)
            rows = seg.alive_rows()
            stale_scenes.update(seg.scene_id[rows][~live.matches(seg, rows)].tolist())
        if stale_scenes:
            summary["removed"] = store.remove_scenes(sorted(stale_scenes))
        if not store.published:  # a new model's generation: copy what the published one holds of unchanged sensors
            _reuse_vectors(ws, store, fingerprints, live, model.sensors, factory, segment_rows, summary)
        indexed = set(store.indexed_tile_ids().tolist())
        by_scene: dict[int, list[dict]] = defaultdict(list)
        for t in tiles:
            if t["tile_id"] in indexed:
                continue
            if t["sensor"] not in model.sensors:
                summary["skipped_sensors"][t["sensor"]] = summary["skipped_sensors"].get(t["sensor"], 0) + 1
                continue
            by_scene[t["scene_id"]].append(t)
        todo = sum(len(v) for v in by_scene.values())
        buf = _SegmentBuffer(store, factory, segment_rows)
        done = 0
        for sid, rows in sorted(by_scene.items()):
            try:
                scene = catalog.scene(sid)
            except KeyError:  # replaced or removed by an ingest since the tiles were listed: its tiles are stale
                continue  # already (the catalog check below reports the change)
            for f in sorted(set(scene["files"].values())):
                if (state := gone(f)) is True:
                    raise FileNotFoundError(f"{f}: No such file or directory: the scene {scene['key']} is catalogued "
                                            "but its file is gone (deleted or moved): put it back, or take such scenes "
                                            f"out with `rsretrieve ingest ARCHIVE --workspace {ws} --prune`")
                if state:  # there, maybe, but not to be looked at now: not a case for --prune
                    raise OSError(None, f"{state}: the file of the scene {scene['key']} cannot be looked at now (not "
                                        "a case for --prune): run `rsretrieve index` again once it can be read", f)
            arrays = dict(read_scene_tiles(scene, rows, catalog.tile_m))
            vecs = embed_tiles(model, scene["sensor"], [arrays[t["tile_id"]] for t in rows], batch)
            buf.add(vecs, [t["tile_id"] for t in rows], [t["lon"] for t in rows], [t["lat"] for t in rows],
                    [TIME_UNKNOWN if t["acquired_ts"] is None else t["acquired_ts"] for t in rows],
                    [t["sensor"] for t in rows], [t["cell_id"] for t in rows], [sid] * len(rows))
            summary["added"] += len(rows)
            done += len(rows)
            if progress:
                progress(done, todo, scene["key"])
        buf.flush()
        # an ingest that ran meanwhile added, replaced or removed scenes this run did not see (or saw half): the
        # index is behind the catalog, and the next run catches up
        listed = np.array(sorted(t["tile_id"] for t in tiles), np.int64)
        now = np.array([r[0] for r in catalog.conn.execute("SELECT tile_id FROM tiles ORDER BY tile_id")], np.int64)
        summary["catalog_changed"] = not np.array_equal(listed, now)
    if store.segments and (factory != built or compact and (len(store.segments) > 1 or store.segments[0].has_deleted)):
        # segments built with another factory than the one asked for are rebuilt with it, as one; --compact: one
        store.compact(factory)
        summary["compacted"] = True
    elif summary["added"] or summary["removed"] or summary["reused"]:
        # the small segments merged, size-tiered (store.merge_plan): each extra segment costs every filtered query
        # a fixed amount and only a large segment gets an ANN index, but rewriting a large one for a few new rows
        # costs the whole index; the merge is atomic like every other write
        summary["compacted"] = store.merge_small(factory) is not None
    if factory != built:
        store.set_factory(factory)
    if not store.published:
        store.publish()
    summary["pruned_generations"] = IndexStore.prune(ws / "index", keep=0)
    current = IndexStore.open(ws / "index")
    summary["total"] = current.ntotal
    summary["segments"] = len(current.segments)
    # the first filtered query after an install would otherwise compile the search kernels (seconds, once)
    summary["warm_up_s"] = round(Searcher(current).warm_up(), 2)
    return summary


class _SegmentBuffer:
    """Rows gathered for ``store``'s next segment: written as one (``add_segment``) once ``rows`` of them are there,
    and by :meth:`flush` at the end."""

    _KEYS = ("vectors", "tile_ids", "lon", "lat", "time", "sensor_names", "cell_ids", "scene_ids")

    def __init__(self, store: IndexStore, factory: str, rows: int) -> None:
        self.store, self.factory, self.rows = store, factory, rows
        self.parts: dict[str, list[np.ndarray]] = defaultdict(list)
        self.n = 0

    def add(self, *columns: Sequence) -> None:
        """Add rows: vectors (n, d), then tile ids, lon, lat, time, sensor names, cell ids and scene ids, (n,) each
        (the arguments of ``IndexStore.add_segment``)."""
        for key, values in zip(self._KEYS, columns, strict=True):
            self.parts[key].append(np.asarray(values))
        self.n += len(columns[1])
        if self.n >= self.rows:
            self.flush()

    def flush(self) -> None:
        """Write the rows gathered so far as one segment (nothing when there are none)."""
        if self.n:
            self.store.add_segment(**{k: np.concatenate(v) for k, v in self.parts.items()}, factory=self.factory)
            self.parts.clear()
            self.n = 0


def _fingerprints(model: torch.nn.Module) -> dict[str, str]:
    """The model's per-sensor embedding fingerprints (empty for a model kind without them: nothing is reused)."""
    fn = getattr(model, "embedding_fingerprints", None)
    return fn() if callable(fn) else {}


class _LiveTiles:
    """The catalog's tiles as sorted arrays, to tell which indexed rows still are the catalog's tiles."""

    def __init__(self, tiles: list[dict]) -> None:
        ids = np.array([t["tile_id"] for t in tiles], np.int64)
        order = np.argsort(ids)
        self.ids = ids[order]
        self.scene = np.array([tiles[i]["scene_id"] for i in order], np.int64)
        self.time = np.array([TIME_UNKNOWN if tiles[i]["acquired_ts"] is None else tiles[i]["acquired_ts"]
                              for i in order], np.int64)
        self.lon = np.array([tiles[i]["lon"] for i in order], np.float64)
        self.lat = np.array([tiles[i]["lat"] for i in order], np.float64)

    def matches(self, seg: Segment, rows: np.ndarray) -> np.ndarray:
        """Boolean mask over ``rows`` of ``seg``: the catalog holds the same tile (id, scene, time and place)."""
        if not self.ids.size:
            return np.zeros(rows.size, dtype=bool)
        ids = seg.tile_id[rows]
        at = np.minimum(np.searchsorted(self.ids, ids), self.ids.size - 1)
        return ((self.ids[at] == ids) & (self.scene[at] == seg.scene_id[rows]) & (self.time[at] == seg.time[rows])
                & (self.lon[at] == seg.lon[rows]) & (self.lat[at] == seg.lat[rows]))


def _published_fingerprints(ws: Path, current: IndexStore) -> dict[str, str]:
    """The per-sensor fingerprints of the published generation's model: from its manifest, or (an index written
    before they were recorded) from the workspace's model file whose checksum it names; empty when neither."""
    if current.sensor_fingerprints:
        return current.sensor_fingerprints
    for p in sorted((ws / "checkpoints").glob("*/model.pt")):
        try:
            if model_checksum(p) == current.model_checksum:
                return _fingerprints(load_model(p))
        except (OSError, ValueError, KeyError):  # a damaged or foreign file is not the index's model
            log.debug("cannot read %s for its fingerprints", p, exc_info=True)
    return {}


def _reuse_vectors(ws: Path, store: IndexStore, fingerprints: dict[str, str], live: _LiveTiles, sensors: list[str],
                   factory: str, segment_rows: int, summary: dict) -> None:
    """Copy into ``store`` (an unpublished generation of a new model) the published generation's vectors of every
    sensor the new model embeds exactly as the published one's did (equal fingerprints), for tiles that are still
    the catalog's and not in ``store`` yet; counts them in ``summary["reused"]`` and ``summary["reused_sensors"]``.

    The copied vectors are bit-identical to what embedding those tiles again would give, at a fraction of the cost.
    """
    try:
        current = IndexStore.open(ws / "index")
    except FileNotFoundError:
        return
    if current.generation == store.generation or current.dim != store.dim:
        return
    before = _published_fingerprints(ws, current)
    same = sorted(s for s in sensors if s in fingerprints and before.get(s) == fingerprints[s])
    if not same:
        return
    have = store.indexed_tile_ids()
    table = np.array(current.sensors)
    buf = _SegmentBuffer(store, factory, segment_rows)
    for seg in current.segments:
        rows = seg.alive_rows()
        names = table[seg.sensor[rows]] if rows.size else np.empty(0, str)
        keep = np.isin(names, same) & live.matches(seg, rows) & ~np.isin(seg.tile_id[rows], have)
        for part in np.array_split(rows[keep], max(1, -(-int(keep.sum()) // segment_rows))):
            if not part.size:
                continue
            sensor = table[seg.sensor[part]]
            buf.add(np.asarray(seg.vectors[part]), seg.tile_id[part], seg.lon[part], seg.lat[part], seg.time[part],
                    sensor, seg.cell_names[seg.cell[part]], seg.scene_id[part])
            summary["reused"] += int(part.size)
            for name, count in zip(*np.unique(sensor, return_counts=True)):
                summary["reused_sensors"][str(name)] = summary["reused_sensors"].get(str(name), 0) + int(count)
    buf.flush()
    if summary["reused"]:
        log.info("reused %d vectors of %s from generation %s (model %s): embedded exactly as by this model",
                 summary["reused"], ", ".join(sorted(summary["reused_sensors"])), current.generation,
                 current.model_checksum)

"""A workspace: one directory holding the catalog, checkpoints and index. Nothing outside it is written."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Mapping
from datetime import date
from pathlib import Path

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.grid import DEFAULT_TILE_M

log = logging.getLogger(__name__)


class WorkspaceError(Exception):
    """A workspace that is missing or unusable; the message says which and why."""


class Workspace:
    """Paths and handles of a workspace directory.

    Layout::

        WS/catalog.sqlite      scenes, tiles, labels (SQLite, WAL)
        WS/checkpoints/        model checkpoints
        WS/index/              vector index segments and manifests
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # query engines per thread: an engine's catalog is an SQLite connection, usable only by the thread that
        # opened it (another thread's query failed with sqlite3.ProgrammingError)
        self._local = threading.local()

    @property
    def catalog_path(self) -> Path:
        return self.path / "catalog.sqlite"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def index_dir(self) -> Path:
        return self.path / "index"

    @classmethod
    def create(cls, path: str | Path, tile_m: float | None = None) -> Workspace:
        """Open a workspace, creating it (with a grid of ``tile_m`` metres, default 480) if it does not exist."""
        ws = cls(path)
        if ws.path.exists() and not ws.path.is_dir():
            raise WorkspaceError(f"{ws.path}: exists and is not a directory")
        ws.path.mkdir(parents=True, exist_ok=True)
        new = not ws.catalog_path.exists()
        Catalog(ws.catalog_path, tile_m=(tile_m or DEFAULT_TILE_M) if new else tile_m).close()  # creates / checks
        return ws

    @classmethod
    def open(cls, path: str | Path) -> Workspace:
        """Open an existing workspace.

        Raises:
            WorkspaceError: if ``path`` holds no catalog.
        """
        ws = cls(path)
        if not ws.catalog_path.is_file():
            raise WorkspaceError(f"{ws.path}: not a workspace (no catalog.sqlite); run `rsretrieve ingest` first")
        if _foreign_database(ws.catalog_path):  # opening it wrote rsretrieve's tables into it, then a traceback
            raise WorkspaceError(f"{ws.catalog_path} is not an rsretrieve catalog: an empty file or another "
                                 "program's SQLite database (it has no meta table); run `rsretrieve ingest` into a "
                                 "new workspace")
        return ws

    def trained_models(self) -> dict[str, Path]:
        """name -> model.pt of every trained model in ``WS/checkpoints``."""
        return {p.parent.name: p for p in sorted((self.path / "checkpoints").glob("*/model.pt"))}

    def catalog(self) -> Catalog:
        """A new connection to the catalog (close it, or use it in a ``with`` block)."""
        return Catalog(self.catalog_path)

    def indexed_model(self, unknown: str | None = "default") -> str | None:
        """The name of the model the published index was built with (``rsretrieve index --model NAME``): the model
        queries use when none is named. ``unknown`` (``"default"``) where no index is published, it recorded no name
        (an index of an earlier version), or its manifest cannot be read (a generation pruned between reading the
        pointer and its manifest, as a concurrent ``rsretrieve index`` does; or damaged): a long-lived caller that
        follows the index passes ``None`` and keeps its model then."""
        from rsretrieve.index.store import IndexStore

        generation = IndexStore.current_generation(self.index_dir)
        if generation is None:
            return unknown
        try:
            return IndexStore.manifest_of(self.index_dir, generation).get("model_name") or unknown
        except (OSError, ValueError, KeyError):  # the engine will say what is wrong
            return unknown

    def engine(self, model: str | None = None):  # noqa: ANN201 (QueryEngine, imported lazily: torch is heavy)
        """The query engine of ``model`` (default: :meth:`indexed_model`; model and index loaded once per thread and
        kept; a workspace may be queried from several threads, each with its own engine).

        An engine follows every ``rsretrieve index`` run of its own model (:meth:`QueryEngine.refresh`). When
        ``rsretrieve train`` has since replaced the model file and ``rsretrieve index`` has published the index of
        the new model, the next call loads both, so a long-lived workspace (the service) answers with the new model
        and its index, never the new model with the old index; until then it keeps the old pair.
        """
        from rsretrieve.index.query import QueryEngine
        from rsretrieve.index.store import IndexMismatchError

        model = model or self.indexed_model()
        engines = self._thread_state("engines")
        if model not in engines:
            try:
                engines[model] = QueryEngine(self.path, model)
            except IndexMismatchError as e:
                if model == self.indexed_model():  # retrained since: a bare `rsretrieve index` re-indexes with it
                    raise
                # its hint, a bare `rsretrieve index`, would index with the index's own model again
                raise IndexMismatchError(str(e).replace(
                    ": re-run `rsretrieve index`", f": `rsretrieve index --workspace {self.path} --model {model}` "
                    f"indexes with model {model!r} (an index holds one model's vectors)")) from None
        elif self._retrained(engines[model], model):
            try:
                new = QueryEngine(self.path, model)
            except Exception as e:  # noqa: BLE001 (the file changed again meanwhile): keep answering as before
                log.warning("model %s was retrained and re-indexed, but cannot be loaded (%s); still answering with "
                            "model %s", model, str(e).splitlines()[0] if str(e) else type(e).__name__,
                            engines[model].store.model_checksum)
            else:
                # the old engine is not closed: a caller may still hold it (its catalog connection goes with it)
                log.info("model %s was retrained and re-indexed: now answering with model %s, index generation %s "
                         "(%d tiles)", model, new.store.model_checksum, new.store.generation, new.store.ntotal)
                engines[model] = new
        return engines[model]

    def _thread_state(self, name: str) -> dict:
        """This thread's dict ``name`` (``engines``: model name -> engine; ``looked``: what :meth:`_replaced` saw)."""
        state = getattr(self._local, name, None)
        if state is None:
            state = {}
            setattr(self._local, name, state)
        return state

    def _retrained(self, engine: object, model: str) -> bool:
        """Whether ``model``'s file is no longer the one ``engine`` loaded and the published index holds its vectors.

        Otherwise the engine takes up what ``rsretrieve index`` published for its own model (its refresh). Cheap when
        nothing changed: a small read and a stat or two; the model file is hashed only when it or the published
        generation changed since the last look.
        """
        from rsretrieve.index.store import IndexStore

        generation = IndexStore.current_generation(self.index_dir)
        if generation is not None and generation != engine.store.generation and self._replaced(engine, model,
                                                                                                generation):
            return True
        engine.refresh()  # after the look: first, it would warn of an index of another model about to be taken up
        return False

    def _replaced(self, engine: object, model: str, generation: str) -> bool:
        """Whether the model file's checksum is now the published ``generation``'s and not ``engine``'s."""
        from rsretrieve.index.indexer import model_checksum, model_path
        from rsretrieve.index.store import IndexStore

        try:
            path = model_path(self.path, model)
            st = path.stat()
        except OSError:  # the model was deleted: keep the one loaded
            return False
        key = (generation, st.st_ino, st.st_mtime_ns, st.st_size)
        looked = self._thread_state("looked")
        if looked.get(model) == key:
            return False
        looked[model] = key
        try:
            published = IndexStore.manifest_of(self.index_dir, generation)["model_checksum"]
            return model_checksum(path) == str(published) != engine.store.model_checksum
        except (OSError, ValueError, KeyError, TypeError):  # pruned or being replaced meanwhile: look again next time
            looked.pop(model, None)
            return False

    def query(self, tile: str | Path | None = None, tile_id: int | None = None, *, sensor: str | None = None,
              point: tuple[float, float] | None = None, window: tuple[int, int, int, int] | None = None,
              bbox: tuple[float, float, float, float] | str | None = None, within: str | Path | object = None,
              start: object = None, end: object = None, target_sensors: list[str] | None = None, k: int = 10,
              exclude_own_scene: bool = False, exclude_own_cell: bool = False, one_per_cell: bool = False,
              model: str | None = None):  # noqa: ANN201
        """Find tiles like an example tile, under region / time / sensor filters.

        Args:
            tile: a raster file (any registered sensor and CRS) to cut the query from; or
            tile_id: a tile of the catalog.
            sensor: the sensor of ``tile`` when it cannot be recognised.
            point: (lon, lat): query with the grid cell of ``tile`` containing this point.
            window: (col, row, width, height): query with this pixel window of ``tile``.
            bbox: (W, S, E, N) degrees, or ``"W,S,E,N"``; W > E crosses the antimeridian.
            within: a GeoJSON file, a GeoJSON object (a dict, as the service takes it), or a shapely Polygon /
                MultiPolygon, in EPSG:4326; checked alike (a ring edge over 180 degrees of longitude is refused:
                split a shape crossing the antimeridian).
            start, end: inclusive time range (dates, datetimes or ISO strings); naive times are UTC.
            target_sensors: sensors the results may come from (a list, set or tuple; None: every sensor).
            k: number of results.
            exclude_own_scene, exclude_own_cell: leave out the query's own scene / ground cell (with a cell of
                another UTM zone covering most of its ground: the same ground tiled in two zones).
            one_per_cell: at most one result per ground cell (its best tile; a cell of another UTM zone covering
                most of a cell's ground counts as that cell).
            model: the trained model (``WS/checkpoints/NAME``); default: the one the index was built with
                (:meth:`indexed_model`).

        Returns:
            :class:`rsretrieve.index.query.QueryResult` with ``query``, ``hits`` (best first) and ``plan``.

        Raises:
            rsretrieve.index.query.QueryError: (a ValueError) with a one-line reason for any bad input.
            rsretrieve.index.store.IndexMismatchError: the index holds the vectors of another model than ``model``.
        """
        import numpy as np

        from rsretrieve.index.query import QueryError, run_query

        if model is None:
            model = self.indexed_model()
        elif not isinstance(model, str) or not model:  # a path object: a TypeError deep in the path join
            raise QueryError(f"model must be the name of a trained model (WS/checkpoints/NAME), got {model!r}")
        within, target_sensors = _region(within), _sensors(target_sensors)
        for name, value in (("start", start), ("end", end)):
            if value is not None and not isinstance(value, (str, date)):  # (a datetime is a date)
                raise QueryError(f"{name} must be a date, a datetime or an ISO date-time string, got {value!r}")
        if isinstance(tile_id, (int, np.integer)) and not isinstance(tile_id, (bool, np.bool_)) and not (
                0 <= tile_id < 2**63):  # SQLite's integers are 64-bit: an OverflowError in the lookup otherwise
            raise QueryError(f"no tile with id {tile_id} in the catalog")
        try:
            engine = self.engine(model)
        except FileNotFoundError as e:  # no such trained model
            raise QueryError(str(e).splitlines()[0]) from None
        return run_query(engine, tile=tile, tile_id=tile_id, sensor=sensor, point=point,
                         window=window, bbox=bbox, within=within, start=start, end=end,
                         target_sensors=target_sensors, k=k, exclude_own_scene=exclude_own_scene,
                         exclude_own_cell=exclude_own_cell, one_per_cell=one_per_cell)

    def close(self) -> None:
        """Close the query engines this thread opened (those of other threads close when their thread ends)."""
        for e in self._thread_state("engines").values():
            e.close()
        self._local.engines = {}


def _region(within: object) -> object:
    """``within`` of :meth:`Workspace.query` as the query layer takes it: a path as it is (read there), and a GeoJSON
    object or a geometry (anything with ``__geo_interface__``, as shapely's) through the parser of GeoJSON files and
    of the service, so that each is checked alike (a shapely polygon with an edge across the antimeridian would
    otherwise be searched the long way round the globe)."""
    from rsretrieve.index.filters import region_from_geojson
    from rsretrieve.index.query import QueryError

    if within is None or isinstance(within, (str, os.PathLike)):
        return within
    doc = within if isinstance(within, Mapping) else getattr(within, "__geo_interface__", None)
    if not isinstance(doc, Mapping):
        raise QueryError(f"within must be a GeoJSON file, a GeoJSON object or a shapely Polygon / MultiPolygon "
                         f"(EPSG:4326), got {type(within).__name__}")
    try:
        return region_from_geojson(dict(doc), "within")
    except ValueError as e:
        raise QueryError(str(e).splitlines()[0]) from None


def _sensors(target_sensors: object) -> object:
    """``target_sensors`` of :meth:`Workspace.query`; an empty one is refused rather than read as every sensor."""
    from rsretrieve.index.query import QueryError

    if target_sensors is None:
        return None
    names = target_sensors.split(",") if isinstance(target_sensors, str) else target_sensors
    try:
        names = [s for s in names if s != ""]
    except TypeError:  # not a collection
        names = [target_sensors]
    if not names:
        raise QueryError(f"target_sensors must name at least one sensor (None: every sensor), got {target_sensors!r}")
    if not all(isinstance(s, str) for s in names):  # the filter would take 1 for the name '1'
        raise QueryError(f"target_sensors must be sensor names (strings), got {target_sensors!r}")
    return names


def _foreign_database(path: Path) -> bool:
    """Whether ``path`` reads as an SQLite database without rsretrieve's ``meta`` table (a 0-byte file is one); a
    file that does not read (damaged, locked by another process's exclusive mode) is left to the catalog's own
    error."""
    try:  # not mode=ro: a read-only connection to a WAL catalog left its -wal and -shm files behind
        con = sqlite3.connect(path)
        try:
            names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return "meta" not in names

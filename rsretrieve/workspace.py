"""A workspace: one directory holding the catalog, checkpoints and index. Nothing outside it is written."""

from __future__ import annotations

from pathlib import Path

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.grid import DEFAULT_TILE_M


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
        return ws

    def catalog(self) -> Catalog:
        """A new connection to the catalog (close it, or use it in a ``with`` block)."""
        return Catalog(self.catalog_path)

    def engine(self, model: str = "default"):  # noqa: ANN201 (QueryEngine, imported lazily: torch is heavy)
        """The query engine of ``model`` (model and index loaded once and kept)."""
        from rsretrieve.index.query import QueryEngine

        engines = self.__dict__.setdefault("_engines", {})
        if model not in engines:
            engines[model] = QueryEngine(self.path, model)
        return engines[model]

    def query(self, tile: str | Path | None = None, tile_id: int | None = None, *, sensor: str | None = None,
              point: tuple[float, float] | None = None, window: tuple[int, int, int, int] | None = None,
              bbox: tuple[float, float, float, float] | str | None = None, within: str | Path | object = None,
              start: object = None, end: object = None, target_sensors: list[str] | None = None, k: int = 10,
              exclude_own_scene: bool = False, exclude_own_cell: bool = False, one_per_cell: bool = False,
              model: str = "default"):  # noqa: ANN201
        """Find tiles like an example tile, under region / time / sensor filters.

        Args:
            tile: a raster file (any registered sensor and CRS) to cut the query from; or
            tile_id: a tile of the catalog.
            sensor: the sensor of ``tile`` when it cannot be recognised.
            point: (lon, lat): query with the grid cell of ``tile`` containing this point.
            window: (col, row, width, height): query with this pixel window of ``tile``.
            bbox: (W, S, E, N) degrees, or ``"W,S,E,N"``; W > E crosses the antimeridian.
            within: a GeoJSON file, or a shapely Polygon / MultiPolygon, in EPSG:4326.
            start, end: inclusive time range (dates, datetimes or ISO strings).
            target_sensors: sensors the results may come from.
            k: number of results.
            exclude_own_scene, exclude_own_cell: leave out the query's own scene / ground cell.
            one_per_cell: at most one result per ground cell (its best tile).
            model: the trained model (``WS/checkpoints/NAME``).

        Returns:
            :class:`rsretrieve.index.query.QueryResult` with ``query``, ``hits`` (best first) and ``plan``.

        Raises:
            rsretrieve.index.query.QueryError: (a ValueError) with a one-line reason for any bad input.
        """
        from rsretrieve.index.query import QueryError, run_query

        if not isinstance(model, str) or not model:  # None or a path object: a TypeError deep in the path join
            raise QueryError(f"model must be the name of a trained model (WS/checkpoints/NAME), got {model!r}")
        try:
            engine = self.engine(model)
        except FileNotFoundError as e:  # no such trained model
            raise QueryError(str(e).splitlines()[0]) from None
        return run_query(engine, tile=tile, tile_id=tile_id, sensor=sensor, point=point,
                         window=window, bbox=bbox, within=within, start=start, end=end,
                         target_sensors=target_sensors, k=k, exclude_own_scene=exclude_own_scene,
                         exclude_own_cell=exclude_own_cell, one_per_cell=one_per_cell)

    def close(self) -> None:
        for e in self.__dict__.pop("_engines", {}).values():
            e.close()

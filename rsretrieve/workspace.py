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
        with Catalog(ws.catalog_path, tile_m=(tile_m or DEFAULT_TILE_M) if new else tile_m):
            pass
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

"""The query engine on one dedicated thread: loaded once, used by every request in turn.

The engine's catalog is an SQLite connection, which may only be used by the thread that opened it, and the model
and the index are not meant for concurrent calls; so the engine is created, used and closed on a single worker
thread, and requests queue for it (``await worker.run(fn, ...)`` does not block the event loop meanwhile).
Each request takes the engine anew (:meth:`EngineWorker.current`), so a model retrained and re-indexed while the
service runs is picked up, and one request never mixes two models.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from rsretrieve.workspace import Workspace

log = logging.getLogger(__name__)
T = TypeVar("T")


class EngineWorker:
    """A workspace's query engine for ``model``, owned by one thread.

    Args:
        workspace: the workspace folder.
        model: the model name (``WS/checkpoints/NAME``).
        follow: answer with the model the published index was built with, whichever it is now
            (:meth:`rsretrieve.workspace.Workspace.indexed_model`): ``rsretrieve index --model OTHER`` switches the
            service to ``OTHER`` (what ``serve`` without ``--model`` does); ``False``: always ``model``.

    Raises:
        rsretrieve.workspace.WorkspaceError: not a workspace.
        FileNotFoundError: no such model.
        rsretrieve.index.query.QueryError: no index yet.
        rsretrieve.index.store.IndexMismatchError: the index was built with another model.
    """

    def __init__(self, workspace: str | Path, model: str = "default", follow: bool = False):
        self.model_name = model
        self.follow = follow
        self._refused: tuple | None = None  # (model, _stamp) of the index's model that could not be loaded
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1,
                                                                   thread_name_prefix="rsretrieve-engine")
        try:
            self.workspace = self.call(Workspace.open, workspace)
            self.engine = self.call(self.workspace.engine, model)
            # compile (or load from numba's cache) the search kernels before the first request, not during it
            self.warm_up_s = self.call(self.engine.searcher.warm_up)
        except BaseException:
            self._pool.shutdown(wait=True)
            self._pool = None
            raise

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            raise RuntimeError("the query engine is closed")
        return self._pool

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the engine thread and wait for it (for use outside the event loop)."""
        return self._executor().submit(fn, *args).result()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the engine thread without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)

    def current(self) -> Any:
        """The engine to answer with now (on the engine thread): the workspace's engine of the model, reloaded when
        the model was retrained and its index published since (:meth:`rsretrieve.workspace.Workspace.engine`)."""
        # (an index folder removed, or a generation pruned as it is opened, leaves the engine on its snapshot:
        # QueryEngine.refresh)
        name = self.workspace.indexed_model(unknown=None) if self.follow else None  # None: not known for sure
        if name is not None and name != self.model_name and self._refused != (name, stamp := self._stamp(name)):
            try:  # the index is now of another model (`rsretrieve index --model NAME`): answer with that one
                self.engine = self.workspace.engine(name)
            except Exception as e:  # noqa: BLE001 (its file gone or unreadable): keep answering as before
                # tried again only once the index or the model file changes, not at every request
                self._refused = (name, stamp)
                log.warning("the index is now of model %s, which cannot be loaded (%s); still answering with model "
                            "%s", name, str(e).splitlines()[0] if str(e) else type(e).__name__, self.model_name)
            else:
                log.info("the index is now of model %s (%s, %d tiles): answering with it instead of model %s", name,
                         self.engine.store.model_checksum, self.engine.store.ntotal, self.model_name)
                self.model_name = name
                return self.engine
        self.engine = self.workspace.engine(self.model_name)
        return self.engine

    def _stamp(self, name: str) -> tuple:
        """What changes when loading model ``name`` with the index may turn out otherwise: the published generation
        and the model file."""
        from rsretrieve.index.store import IndexStore

        path = self.workspace.path / "checkpoints" / name / "model.pt"
        try:
            st = path.stat()
            model = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)  # ctime: a chmod that lets it be read
        except OSError:
            model = None
        return IndexStore.current_generation(self.workspace.index_dir), model

    async def run_engine(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(engine, *args)`` on the engine thread with :meth:`current`'s engine, taken once per call."""
        return await self.run(lambda: fn(self.current(), *args))

    def close(self) -> None:
        """Close the engine on its thread and stop the thread; idempotent."""
        if self._pool is None:
            return
        try:
            self.call(self.workspace.close)
        finally:
            self._pool.shutdown(wait=True)
            self._pool = None
            log.info("engine for model %s closed", self.model_name)

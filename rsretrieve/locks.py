"""Locks held by a whole command run (``rsretrieve index`` on a workspace, ``rsretrieve train`` of one name)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def run_lock(path: str | os.PathLike, refused: Callable[[str], Exception]) -> Iterator[None]:
    """Hold an exclusive flock on the file ``path`` (created if missing) for a run, with this process's id in it.

    An flock goes with its process, so a run killed at any moment (kill -9 included) releases it: there is no stale
    lock to clean up. ``refused(pid)`` builds the exception raised when another process holds it (``pid``: the id
    written by that process, or "" when there is none yet).
    """
    with open(Path(path), "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            raise refused(holder if holder.isdigit() else "") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)

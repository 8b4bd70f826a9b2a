"""Durable file writes and run locks, shared by the index, training, the model files and the query outputs.

- :func:`write_atomic` / :func:`write_file_atomic`: a file replaced whole or not at all (temporary file in the same
  folder, fsync, rename, fsync of the folder): a reader sees the old file or the new one, and a process killed
  meanwhile leaves the old one (and a ``.tmp-*`` file, which the next run of the writer may remove).
- :func:`run_lock`: a lock held by a whole command run (``rsretrieve index`` on a workspace, ``rsretrieve train`` of
  one name).
- :func:`gone`: whether an archive file is gone (deleted or moved), told from one that cannot be looked at now.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def gone(path: str | os.PathLike) -> bool | str:
    """Whether ``path`` is gone: True only where the system says it does not exist (it, or a folder on its way);
    a reason (str) where it cannot be looked at (permission denied, an I/O error, a stale network handle)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError as e:
        return e.strerror or str(e)
    return False


def fsync_path(path: Path) -> None:
    """fsync a directory (so that renames inside it survive a crash) or a file written through a memory map."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replaced_file(path: Path) -> Path:
    """The file :func:`write_file_atomic` replaces for ``path``: ``path``, or for a link the file it points to.

    Raises:
        OSError: naming ``path``, for a cycle of links, and for a path under ``/dev`` or ``/proc`` that leads to a
            regular file (``/dev/stdout`` redirected to a file: replacing that file lost what the process had
            written to it, and what it would still write).
    """
    path = Path(path)
    if not path.is_symlink():
        return path
    real = Path(os.path.realpath(path))
    if real.is_symlink():  # realpath stops in a cycle
        raise OSError(errno.ELOOP, "too many levels of symbolic links (a cycle of links)", os.fspath(path))
    if str(path.absolute()).startswith(("/dev/", "/proc/")):
        raise OSError(errno.EINVAL, f"a link to the file {real} (a redirected standard stream?); name that file "
                                    "instead", os.fspath(path))
    return real


def write_file_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Replace ``path`` atomically by the file ``write(tmp)`` makes at a temporary path in the same folder: fsync,
    rename, fsync of the folder. The temporary file is removed when ``write`` fails.

    A link is followed: the file it points to is replaced (or made, for a link to a missing file) and the link kept
    (a rename over the link replaced the link itself). Where ``path`` is no regular file (a FIFO, a terminal, a
    device), there is nothing to replace: ``write`` writes straight into it (a rename put a regular file in its
    place). Links :func:`replaced_file` refuses raise its OSError. A missing folder is made (for a link: that of the
    file it points to). An OSError of the temporary file names ``path`` instead."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        write(path)
        return
    path = replaced_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is not None and os.fspath(e.filename) == os.fspath(tmp):
            raise type(e)(e.errno, e.strerror, os.fspath(path)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`write_file_atomic`)."""
    write_file_atomic(path, lambda tmp: tmp.write_bytes(data))


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

"""One process at a time per folder: a batch per output folder, a server per jobs folder, a training
run per out_dir.

A POSIX advisory lock on a file in the folder, released by the system when the process dies, so a
crash never leaves a stale lock (except on a network file system whose lock service keeps the lock of
a crashed machine: the busy message of a caller says how to free it). A process forked while the lock
is held (a DataLoader worker) closes its copy of the lock file at once, so it never keeps the folder
after its parent has gone. Windows has no such lock: there the folder is not guarded.
:func:`waiting_folder_lock` waits for the other process instead (a cache that one process writes for all).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from vibe_blender.core.errors import VibeError


class _LockFile:
    """The descriptor of an open lock file, closed once (in this process, or in a forked child)."""

    def __init__(self, fd: int):
        self.fd: int | None = fd

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


_HELD: set[_LockFile] = set()  # the lock files this process has open


def _close_in_forked_child() -> None:
    """A lock belongs to the open file, which a fork shares: the child closes its copy (never unlocks,
    which would free the parent's lock too), so the lock ends with the parent."""
    for lock in list(_HELD):
        lock.close()
    _HELD.clear()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork (and no lock)
    os.register_at_fork(after_in_child=_close_in_forked_child)


@contextlib.contextmanager
def _open_lock_file(path: Path) -> Iterator[int]:
    """The lock file ``path`` open for the block (made when missing; its descriptor is closed in forked
    children, see :func:`_close_in_forked_child`)."""
    try:  # never through a link, never truncated: the lock file's content is not ours to destroy
        lock = _LockFile(os.open(path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o600))
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise VibeError(f"'{path}' is a symbolic link; delete it (a lock file is made there) and run again.") from err
    _HELD.add(lock)
    try:
        yield lock.fd
    finally:
        _HELD.discard(lock)
        lock.close()


@contextlib.contextmanager
def folder_lock(
    folder: Path, lock_name: str, busy: str, *, unguarded: Callable[[str], None] | None = None
) -> Iterator[bool]:
    """Hold ``folder/lock_name`` for the block; VibeError ``busy`` when another process holds it.

    Yields whether the folder is guarded: False on Windows, and on a file system without locks (NFS
    without its lock service, Lustre mounted without flock, some FUSE file systems) when the caller
    may run unguarded: ``unguarded(problem)`` is then called once, ``problem`` saying which file
    could not be locked and why (a clause without a full stop, for the caller's warning). Without
    ``unguarded`` such a file system is a VibeError."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl  # optional dependency: POSIX only (fcntl is not on Windows)
    except ImportError:  # Windows: no advisory locks; documented
        yield False
        return
    path = folder / lock_name
    with _open_lock_file(path) as fd:
        guarded = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:  # held by another process
            raise VibeError(busy) from err
        except OSError as err:  # no locks on this file system (NFS without lockd, ...): say so, not "busy"
            problem = f"Cannot lock '{path}' ({err.strerror or err}): its file system has no file locks"
            if unguarded is None:
                raise VibeError(f"{problem}, which keep two runs apart; choose a folder on a local disk.") from err
            unguarded(problem)
            guarded = False
        yield guarded


@contextlib.contextmanager
def waiting_folder_lock(folder: Path, lock_name: str, waiting: Callable[[], None]) -> Iterator[None]:
    """Hold ``folder/lock_name`` for the block, waiting as long as another process holds it (``waiting()``
    is called first, to say so). Only for work that is also correct unguarded, just wasteful: where there
    are no locks (Windows, a file system without them) the block runs unguarded."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl  # optional dependency: POSIX only (fcntl is not on Windows)
    except ImportError:  # Windows: no advisory locks; documented
        yield
        return
    with _open_lock_file(folder / lock_name) as fd:
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held by another process
                waiting()
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no locks on this file system (NFS without lockd, ...): unguarded, as on Windows
            pass
        yield

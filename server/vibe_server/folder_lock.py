"""One process at a time per folder: a batch per output folder, a server per jobs folder.

A POSIX advisory lock on a file in the folder, released by the system when the process dies, so a
crash never leaves a stale lock. Windows has no such lock: there the folder is not guarded.
:func:`waiting_folder_lock` waits for the other process instead (a cache that one process writes for all).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from vibe_blender.core.errors import VibeError


def _open_lock_file(path: Path) -> int:
    try:  # never through a link, never truncated: the lock file's content is not ours to destroy
        return os.open(path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise VibeError(f"'{path}' is a symbolic link; delete it (a lock file is made there) and run again.") from err


@contextlib.contextmanager
def folder_lock(folder: Path, lock_name: str, busy: str) -> Iterator[None]:
    """Hold ``folder/lock_name`` for the block; VibeError ``busy`` when another process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl  # optional dependency: POSIX only (fcntl is not on Windows)
    except ImportError:  # Windows: no advisory locks; documented
        yield
        return
    path = folder / lock_name
    fd = _open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:  # held by another process
            raise VibeError(busy) from err
        except OSError as err:  # no locks on this file system (NFS without lockd, ...): say so, not "busy"
            raise VibeError(
                f"Cannot lock '{path}' ({err.strerror or err}): its file system does not support the locks "
                "that keep two runs apart; choose a folder on a local disk."
            ) from err
        yield
    finally:
        os.close(fd)


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
    fd = _open_lock_file(folder / lock_name)
    try:
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held by another process
                waiting()
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no locks on this file system (NFS without lockd, ...): unguarded, as on Windows
            pass
        yield
    finally:
        os.close(fd)

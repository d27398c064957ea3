"""Opening a file a user chose, or that another file names, only when it is a regular file.

A plain ``open()`` of a FIFO blocks until a writer comes (in Blender: the whole UI), and a link to a
device such as ``/dev/zero`` reads without end. :func:`open_regular_file` opens without blocking and
checks the open descriptor, so the file checked is the file read. Standard library only: the token
reader (``user_dirs``) uses it too.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import VibeError

NOT_REGULAR = "is not a regular file (a device, FIFO or socket)"


class NotRegularFileError(ValueError):
    """The path is a device, FIFO or socket, not a file with a size."""


def open_regular_file(path: str | Path, *, follow_symlink: bool = True) -> BinaryIO:
    """Open a regular file for reading; OSError when it cannot be opened (IsADirectoryError for a
    folder, as ``open()`` raises), NotRegularFileError when it is a device, FIFO or socket. O_NONBLOCK
    keeps a FIFO from blocking the open, and is cleared once the file is known to be regular; the check
    on the open descriptor (not the name) cannot be raced by swapping the file."""
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    if not follow_symlink:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
            raise NotRegularFileError(NOT_REGULAR)
        try:
            import fcntl  # POSIX only, as O_NONBLOCK is
        except ImportError:
            pass
        else:  # opened: its reads block as a plain open()'s do (a file on a slow network mount waits, never fails)
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_user_file(path: str | Path, what: str, advice: str) -> BinaryIO:
    """:func:`open_regular_file`, each failure one VibeError naming ``what`` (e.g. "the bone map") and
    the path, followed by ``advice`` (what to choose instead): it does not exist, it is not a regular
    file, or it cannot be read and why."""
    named = f"{what} '{path}'"
    subject = named[:1].upper() + named[1:]
    try:
        return open_regular_file(path)
    except NotRegularFileError:
        raise VibeError(f"{subject} {NOT_REGULAR}, so it was not read. {advice}") from None
    except FileNotFoundError:
        raise VibeError(f"{subject} does not exist. {advice}") from None
    except OSError as err:
        raise VibeError(f"Cannot read {named}: {err.strerror or err}. {advice}") from None

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
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # POSIX only
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | nonblocking
    if not follow_symlink:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
            raise NotRegularFileError(NOT_REGULAR)
        if nonblocking:  # opened: its reads block as a plain open()'s do (a slow network mount waits, never fails)
            os.set_blocking(fd, True)
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
    except BlockingIOError:  # O_NONBLOCK: another program holds a lease on it (a file share's client)
        raise VibeError(
            f"{subject} is in use by another program (a file share holds it), so it was not read; "
            f"try again in a moment. {advice}"
        ) from None
    except OSError as err:
        if isinstance(err, IsADirectoryError) or os.path.isdir(path):  # Windows says "Permission denied"
            raise VibeError(f"{subject} is a folder, not a file. {advice}") from None
        raise VibeError(f"Cannot read {named}: {err.strerror or err}. {advice}") from None

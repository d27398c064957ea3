"""Frame counts found by decoding a whole video (a container that states none), kept by file identity.

The server checks a video before it answers POST /jobs, and its job then opens the same file: without
this, a long .mkv or .webm (OBS and browsers write no count) was decoded twice just to count its
frames, minutes for a long recording. The file is told by the one the reader holds open (not by a
path that may name another file by then); one that changed since is counted again, and a count
that was stopped or failed is never kept.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable

COUNTS_KEPT = 64  # the newest files counted (each entry is a few dozen bytes)

FileIdentity = tuple[int, int, int, int, int]
_counts: OrderedDict[FileIdentity, int] = OrderedDict()
_lock = threading.Lock()


def file_identity(name: str) -> FileIdentity | None:
    """What tells the file ``name`` (a path, or /proc/self/fd/N for a file held open) from another and
    from its own earlier content: device, inode, size, modification and change times. None when it
    cannot be read."""
    try:
        st = os.stat(name)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def counted_frames(identity: FileIdentity | None, count: Callable[[], int]) -> int:
    """The frame count of the file ``identity`` names: the one ``count()`` found for it before, else
    ``count()`` now (its exceptions pass through, and nothing is kept). Take ``identity`` before the
    file is opened to be counted (a file written meanwhile is then not matched later)."""
    if identity is not None:
        with _lock:
            if identity in _counts:
                _counts.move_to_end(identity)
                return _counts[identity]
    frames = count()
    if identity is not None:
        with _lock:
            _counts[identity] = frames
            while len(_counts) > COUNTS_KEPT:
                _counts.popitem(last=False)
    return frames


def forget_counts() -> None:
    """Drop every kept count (tests that time or stop the decode itself)."""
    with _lock:
        _counts.clear()

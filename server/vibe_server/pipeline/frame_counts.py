"""Frame counts found by decoding a whole video (a container that states none), kept by file identity.

The server checks a video before it answers POST /jobs, and its job then opens the same file: without
this, a long .mkv or .webm (OBS and browsers write no count) was decoded twice just to count its
frames, minutes for a long recording. A file that changed since (size, modification time, inode) is
counted again; a count that was stopped or failed is never kept.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

COUNTS_KEPT = 64  # the newest files counted (each entry is a few dozen bytes)

_counts: OrderedDict[tuple[int, int, int, int], int] = OrderedDict()
_lock = threading.Lock()


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def counted_frames(path: Path, count: Callable[[], int]) -> int:
    """The frame count of ``path``: the one ``count()`` found for the same unchanged file, else
    ``count()`` now (its exceptions pass through, and nothing is kept)."""
    identity = _identity(path)  # taken before the count: a file written meanwhile is not matched later
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

"""Blender's progress counter (shown on the mouse cursor) for long work on the UI thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import bpy


@contextmanager
def progress_counter(steps: int) -> Iterator[Callable[[float], None]]:
    """The counter over ``steps``; yields ``step(done)``. Nothing is shown where there is no window
    manager (a background run)."""
    window_manager = _window_manager()
    if window_manager is None:
        yield lambda done: None
        return
    window_manager.progress_begin(0, steps)
    try:
        yield window_manager.progress_update
    finally:
        window_manager.progress_end()


def _window_manager():
    return getattr(bpy.context, "window_manager", None)

"""Work the add-on must do before it goes: when Blender quits, and when the add-on is disabled or
reloaded (*Reload Scripts*). Blender disables its add-ons as it quits, which unregisters them; Python's
``atexit`` covers the ways out that skip that (the ``bpy`` module build, a quit without a context), so
each piece of work runs once whichever way comes first. Standard library only: at exit, Blender's data
may already be gone, so the work must not need it."""

from __future__ import annotations

import atexit
from collections.abc import Callable


def run_at_exit(work: Callable[[], None]) -> None:
    """From the add-on's register: ``work`` runs when Python exits, unless :func:`run_now` ran it first."""
    atexit.register(work)


def run_now(work: Callable[[], None]) -> None:
    """From the add-on's unregister: ``work`` runs now, and no longer at exit."""
    atexit.unregister(work)
    work()

"""Undo steps for what the add-on changes outside an operator (a timer's import, a live character):
Blender records a step only when an operator ends, so without one the next Ctrl+Z would take these
changes away together with the user's next action."""

from __future__ import annotations

import bpy


def push_undo_step(what: str) -> None:
    """Record the scene as it is now as one undo step named ``what``."""
    try:
        bpy.ops.ed.undo_push(message=f"VIBE Mocap: {what}")
    except RuntimeError:  # no undo history in this context (Blender run without one): nothing to record into
        pass

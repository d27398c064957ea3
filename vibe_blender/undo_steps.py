"""Undo for what Blender's own undo does not cover: steps for what the add-on changes outside an
operator (a timer's import, a live character: Blender records a step only when an operator ends, so
without one the next Ctrl+Z would take these changes away together with the user's next action), and
the removal of what a failed import had made."""

from __future__ import annotations

from contextlib import contextmanager

import bpy


def push_undo_step(what: str) -> None:
    """Record the scene as it is now as one undo step named ``what``."""
    try:
        bpy.ops.ed.undo_push(message=f"VIBE Mocap: {what}")
    except RuntimeError:  # no undo history in this context (Blender run without one): nothing to record into
        pass


# The kinds of data-block an import makes (a Key goes with its mesh, but is its own data-block).
_IMPORTED_KINDS = ("objects", "meshes", "shape_keys", "armatures", "actions", "cameras", "collections", "movieclips")


@contextmanager
def new_data_removed_on_failure():
    """Inside the block, make data-blocks freely: when it raises, every one it made is removed again,
    so a failed import leaves the file as it was (Blender keeps no undo step of a cancelled operator)."""
    before = {kind: {block.as_pointer() for block in getattr(bpy.data, kind)} for kind in _IMPORTED_KINDS}
    try:
        yield
    except BaseException:
        made = [
            block
            for kind in _IMPORTED_KINDS
            for block in getattr(bpy.data, kind)
            if block.as_pointer() not in before[kind]
        ]
        bpy.data.batch_remove(made)
        raise

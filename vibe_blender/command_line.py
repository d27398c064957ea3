"""What the add-on's command-line tools (``python -m vibe_blender.batch`` and ``.export``) share: one
line, not a traceback, when the Python running them has no Blender module (bpy) or one that cannot load."""

from __future__ import annotations

import sys


def import_bpy(command: str):
    """The bpy module, or None once the error is printed (the caller exits with status 2)."""
    try:
        import bpy
    except ImportError as err:  # no bpy at all, or one that fails while loading: say which
        missing = isinstance(err, ModuleNotFoundError) and err.name == "bpy"
        print(no_bpy(command) if missing else bpy_broken(err), file=sys.stderr)
        return None
    return bpy


def no_bpy(command: str) -> str:
    return (
        "error: this command runs Blender as a Python module (bpy), which this Python does not have. Set it "
        "up with 'bash scripts/setup_blender.sh' and run the command with that Python, for example "
        f"'.venv-bpy-5.0/bin/python -m {command} ...'."
    )


def bpy_broken(err: ImportError) -> str:
    """The one-line error for a bpy that is there but does not load (a system library it needs is missing)."""
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return (
        f"error: this Python has Blender as a Python module (bpy), but it cannot be loaded ({reason}). Install "
        "what the message names (a system library Blender needs, for example), or set bpy up again with "
        "'bash scripts/setup_blender.sh' and run the command with that Python."
    )

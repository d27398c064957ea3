"""Blender extension entry point (the extension root is the repository root): see vibe_blender/."""

if __package__:  # Blender imports this file as the package bl_ext.<repo>.vibe_mocap
    from .vibe_blender import register, unregister
else:  # imported as a plain file (test collection): no parent package
    from vibe_blender import register, unregister

__all__ = ["register", "unregister"]

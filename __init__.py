"""Blender extension entry point (the extension root is the repository root): see vibe_blender/."""
from .vibe_blender import register, unregister

__all__ = ["register", "unregister"]

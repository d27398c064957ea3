"""VIBE Mocap for Blender: capture people from video through the VIBE server, or import SMPL motion
files, as rigged, skinned, shape-keyed and keyframed characters.

Layout: ``core/`` is pure Python + numpy (formats, maths, HTTP client; no bpy anywhere in it);
the modules beside it use bpy: ``rig_builder`` (character), ``animation`` + ``keyframes`` (motion),
``importer`` (scene), ``jobs`` (capture thread <-> UI timer), ``live`` (live stream <-> UI timer,
with ``live_operators`` and ``live_panels``), ``operators``, ``panels``,
``preferences``; ``retarget``, ``cleanup_ops`` and ``export`` with their UI split the same way into
``retarget_settings`` (scene properties), ``retarget_operators`` and ``retarget_panels``; every
operator reports errors through ``operator_errors``;
``batch`` and ``export`` are command lines (``python -m vibe_blender.batch`` / ``.export``).
This module imports no bpy at import time: Blender calls :func:`register`.
"""

_MODULES = (
    "preferences",
    "server_control",  # before jobs: unregistered after it, so a capture is cancelled before its server stops
    "jobs",
    "operators",
    "server_operators",
    "panels",
    "server_panels",
    "retarget_settings",
    "retarget_operators",
    "retarget_panels",
    "live",
    "live_operators",
    "live_panels",
)


def _modules():
    import importlib

    return [importlib.import_module(f".{name}", __package__) for name in _MODULES]


def register():
    for module in _modules():
        module.register()


def unregister():
    for module in reversed(_modules()):
        module.unregister()

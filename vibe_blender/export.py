"""Export the imported characters with Blender's own FBX exporter, with settings that keep the motion."""
from __future__ import annotations

from pathlib import Path

import bpy

from .core.errors import VibeError


def export_fbx(path: str | Path) -> Path:
    """Every armature and mesh of the scene -> one FBX (all keys kept, no leaf bones, metres)."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    result = bpy.ops.export_scene.fbx(
        filepath=str(path), use_selection=False, object_types={"ARMATURE", "MESH"},
        add_leaf_bones=False,                 # no extra "_end" bones
        bake_anim=True, bake_anim_use_all_actions=False, bake_anim_use_nla_strips=False,
        bake_anim_simplify_factor=0.0,        # keep every key (the default thins them lossily)
        use_armature_deform_only=True, mesh_smooth_type="OFF", apply_scale_options="FBX_SCALE_NONE")
    if "FINISHED" not in result or not path.is_file():
        raise VibeError(f"Blender's FBX exporter could not write '{path}'.")
    return path

"""Read back what Blender evaluates: world-space vertices of a mesh, world-space joint positions."""

from __future__ import annotations

import bpy
import numpy as np

from vibe_blender.core.smpl_model import JOINT_NAMES


def evaluated_vertices(mesh_obj) -> np.ndarray:
    """(V, 3) world space, after shape keys, drivers and the armature modifier."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = mesh_obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    co = np.empty(3 * len(mesh.vertices), dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    matrix = np.array(evaluated.matrix_world)
    evaluated.to_mesh_clear()
    return co.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]


def evaluated_joints(armature_obj) -> np.ndarray:
    """(24, 3) world-space bone heads = SMPL's joints."""
    matrix = np.array(armature_obj.matrix_world)
    heads = np.array([armature_obj.pose.bones[n].head for n in JOINT_NAMES])
    return heads @ matrix[:3, :3].T + matrix[:3, 3]

"""Build one SMPL character in the scene: armature at J(betas) + skinned mesh + shape keys.

The rest pose is SMPL's T-pose. Bones are named after SMPL's joints (``left_hip``...), which
Blender's mirror tools flip (``bpy.utils.flip_name``). The mesh carries 10 beta shape keys
``Shape000..009`` (slider range ±10) set to the track's shape and, when asked for, the 207 pose
correctives ``Pose000..206``, driven live from the bones ("drivers") or keyed per frame ("baked").
The armature stores J_template and J_dirs so that :func:`refit_bones` can move the bones when the
shape keys change without the body model at hand.
"""

from __future__ import annotations

from contextlib import contextmanager

import bpy
import numpy as np

from .core.errors import VibeError
from .core.rotations import rotmat_to_quat
from .core.shown_text import MAX_NAME_BYTES
from .core.skeleton import SMPL_TO_BLENDER, bone_layout, bone_to_smpl_rotations, corrective_driver_expression
from .core.smpl_model import JOINT_NAMES, NUM_BETAS, BodyModel

CORRECTIVE_MODES = ("off", "drivers", "baked")
NUM_CORRECTIVES = 207


def shape_key_name(i: int) -> str:
    return f"Shape{i:03d}"


def corrective_key_name(k: int) -> str:
    return f"Pose{k:03d}"


def rest_quats(armature_obj) -> np.ndarray:
    """-> (24, 4) wxyz rest rotation of each bone in armature space (Bone.matrix_local)."""
    bones = armature_obj.data.bones
    return rotmat_to_quat(np.array([np.array(bones[n].matrix_local.to_3x3()) for n in JOINT_NAMES]))


def joints_for_betas(armature_obj, betas: np.ndarray) -> np.ndarray:
    """J(betas) (24, 3), SMPL frame, from the J_template/J_dirs stored on the armature."""
    data = armature_obj.data
    J_template = np.array(data["vibe_J_template"], dtype=np.float64).reshape(24, 3)
    J_dirs = np.array(data["vibe_J_dirs"], dtype=np.float64).reshape(24, 3, NUM_BETAS)
    return J_template + J_dirs @ np.asarray(betas, dtype=np.float64)


@contextmanager
def object_mode():
    """Object Mode inside the block; afterwards the active object and its mode are as they were (a
    refit from Pose Mode stays there; a live character appearing leaves the user in Edit Mode)."""
    view_layer = bpy.context.view_layer
    previous = view_layer.objects.active
    previous_mode = "OBJECT" if previous is None else previous.mode
    if previous_mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    try:
        yield
    finally:
        view_layer.objects.active = previous
        # a hidden object cannot go back to Edit (or Pose) Mode: it stays in Object Mode, as Blender leaves it
        if previous is not None and previous.mode != previous_mode and bpy.ops.object.mode_set.poll():
            bpy.ops.object.mode_set(mode=previous_mode)


def place_bones(armature_obj, J: np.ndarray) -> None:
    """Edit-mode pass: create (or move) the 24 bones to the rest joints J (24, 3), SMPL frame; the
    active object and its mode are then as they were."""
    heads, tails = bone_layout(J)
    with object_mode():
        bpy.context.view_layer.objects.active = armature_obj
        bpy.ops.object.mode_set(mode="EDIT")
        edit_bones = armature_obj.data.edit_bones
        for j, name in enumerate(JOINT_NAMES):
            bone = edit_bones.get(name) or edit_bones.new(name)
            bone.head, bone.tail, bone.roll = heads[j].tolist(), tails[j].tolist(), 0.0
            bone.use_connect = False
        for j, name in enumerate(JOINT_NAMES[1:], start=1):
            edit_bones[name].parent = edit_bones[JOINT_NAMES[int(armature_obj.data["vibe_parents"][j])]]
        bpy.ops.object.mode_set(mode="OBJECT")


def fitted_name(name: str, suffix: str = "") -> str:
    """``name + suffix`` in MAX_NAME_BYTES of UTF-8: the name is cut (never inside a character), so
    that Blender, which would cut the end, keeps the suffix ("_body" tells the mesh from its armature)."""
    room = MAX_NAME_BYTES - len(suffix.encode())
    return name.encode()[:room].decode("utf-8", "ignore") + suffix


def build_character(model: BodyModel, betas: np.ndarray, name: str, *, correctives: str = "off", collection=None):
    """-> (armature_obj, mesh_obj) for one person with shape ``betas`` (10,); the active object and
    its mode are then as they were."""
    if correctives not in CORRECTIVE_MODES:
        raise VibeError(f"Pose correctives must be one of {', '.join(CORRECTIVE_MODES)}; got '{correctives}'.")
    with object_mode():
        return _build_character(model, np.asarray(betas, dtype=np.float64)[:NUM_BETAS], name, correctives, collection)


def _build_character(model: BodyModel, betas: np.ndarray, name: str, correctives: str, collection):
    collection = collection or bpy.context.scene.collection

    # 1. Armature at J(betas), remembering how joints follow betas.
    name = fitted_name(name)
    armature = bpy.data.armatures.new(name)
    armature["vibe_J_template"] = (model.J_regressor @ model.v_template).ravel().tolist()
    armature["vibe_J_dirs"] = (
        np.einsum("jv,vkl->jkl", model.J_regressor, model.shapedirs[:, :, :NUM_BETAS]).ravel().tolist()
    )
    armature["vibe_parents"] = model.parents.tolist()
    armature_obj = bpy.data.objects.new(name, armature)
    collection.objects.link(armature_obj)
    place_bones(armature_obj, joints_for_betas(armature_obj, betas))
    for pose_bone in armature_obj.pose.bones:
        pose_bone.rotation_mode = "QUATERNION"

    # 2. Mesh: the template in Blender's frame, skinned to the armature (plain LBS).
    mesh = bpy.data.meshes.new(fitted_name(name, "_body"))
    v_template_bl = model.v_template @ SMPL_TO_BLENDER.T
    mesh.from_pydata(v_template_bl.tolist(), [], model.faces.tolist())
    mesh_obj = bpy.data.objects.new(fitted_name(name, "_body"), mesh)
    collection.objects.link(mesh_obj)
    mesh_obj.parent = armature_obj
    for j, joint in enumerate(JOINT_NAMES):
        group = mesh_obj.vertex_groups.new(name=joint)
        column = model.lbs_weights[:, j]
        nonzero = np.flatnonzero(column > 0)
        weights, inverse = np.unique(column[nonzero], return_inverse=True)
        for w_index, weight in enumerate(weights):  # one call per distinct weight value
            group.add(nonzero[inverse == w_index].tolist(), float(weight), "REPLACE")
    modifier = mesh_obj.modifiers.new("Armature", "ARMATURE")
    modifier.object = armature_obj
    modifier.use_deform_preserve_volume = False

    # 3. Shape keys: Basis = template, Shape00i = template + shapedirs_i (applied before skinning).
    mesh_obj.shape_key_add(name="Basis", from_mix=False)
    for i in range(NUM_BETAS):
        _add_key(
            mesh_obj,
            shape_key_name(i),
            v_template_bl + model.shapedirs[:, :, i] @ SMPL_TO_BLENDER.T,
            value=float(betas[i]),
        )
    if correctives != "off":
        posedirs_bl = np.einsum("vkp,lk->vlp", model.posedirs, SMPL_TO_BLENDER)
        for k in range(NUM_CORRECTIVES):
            _add_key(mesh_obj, corrective_key_name(k), v_template_bl + posedirs_bl[:, :, k], value=0.0)
        if correctives == "drivers":
            add_corrective_drivers(armature_obj, mesh_obj)
    armature_obj["vibe_correctives"] = correctives
    armature_obj["vibe_mesh"] = mesh_obj.name
    return armature_obj, mesh_obj


def _add_key(mesh_obj, name: str, coords: np.ndarray, value: float):
    key = mesh_obj.shape_key_add(name=name, from_mix=False)
    key.data.foreach_set("co", coords.astype(np.float32).ravel())
    key.slider_min, key.slider_max = -10.0, 10.0  # the default 0..1 would clamp negative values
    key.value = value
    return key


def add_corrective_drivers(armature_obj, mesh_obj) -> None:
    """Drive Pose000..206 from the bones' local quaternions (simple expressions: no Python)."""
    M = bone_to_smpl_rotations(rest_quats(armature_obj))
    key_blocks = mesh_obj.data.shape_keys.key_blocks
    for j in range(1, 24):
        for r in range(3):
            for c in range(3):
                key_block = key_blocks[corrective_key_name(9 * (j - 1) + 3 * r + c)]
                key_block.driver_remove("value")
                driver = key_block.driver_add("value").driver
                driver.type = "SCRIPTED"
                for component in "wxyz":
                    var = driver.variables.new()
                    var.name, var.type = component, "TRANSFORMS"
                    target = var.targets[0]
                    target.id, target.bone_target = armature_obj, JOINT_NAMES[j]
                    target.transform_type = f"ROT_{component.upper()}"
                    target.rotation_mode, target.transform_space = "QUATERNION", "LOCAL_SPACE"
                driver.expression = corrective_driver_expression(M[j], r, c)


def find_character_mesh(armature_obj):
    """The character's body: the child mesh with shape keys whose Armature modifier deforms it by
    ``armature_obj`` (so renaming or duplicating the body keeps the link), else the mesh named when
    it was built unless another armature deforms that one; None when there is none."""
    bodies = [
        child
        for child in armature_obj.children
        if child.type == "MESH" and child.data.shape_keys is not None and _deforming_armature(child) == armature_obj
    ]
    if bodies:
        named = [b for b in bodies if b.name == armature_obj.get("vibe_mesh")]
        return (named or bodies)[0]
    mesh_obj = bpy.data.objects.get(armature_obj.get("vibe_mesh", ""))
    if mesh_obj is None or mesh_obj.type != "MESH" or _deforming_armature(mesh_obj) not in (None, armature_obj):
        return None
    return mesh_obj


def character_of(obj):
    """The armature of the character ``obj`` belongs to: itself, or the armature a mesh (its body)
    is parented to or deformed by; None for anything else."""
    if obj is None or obj.type == "ARMATURE":
        return obj
    if obj.type != "MESH":
        return None
    if obj.parent is not None and obj.parent.type == "ARMATURE":
        return obj.parent
    return _deforming_armature(obj)


def _deforming_armature(mesh_obj):
    return next((m.object for m in mesh_obj.modifiers if m.type == "ARMATURE" and m.object is not None), None)


def character_mesh(armature_obj):
    """The character's body (see :func:`find_character_mesh`); VibeError when it has none."""
    mesh_obj = find_character_mesh(armature_obj)
    if mesh_obj is None:
        raise VibeError(f"'{armature_obj.name}' has lost its body mesh; import the character again.")
    return mesh_obj


def current_betas(armature_obj) -> np.ndarray:
    """The betas (10,) the character's Shape keys are set to now."""
    key_blocks = character_mesh(armature_obj).data.shape_keys.key_blocks
    return np.array([key_blocks[shape_key_name(i)].value for i in range(NUM_BETAS)])


def is_character(obj) -> bool:
    return obj is not None and obj.type == "ARMATURE" and "vibe_J_template" in obj.data

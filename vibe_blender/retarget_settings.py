"""Scene settings of the Retarget, Clean Up and Export panels (``scene.vibe_retarget``): the source
and target, the bone-map rows, and the options the operators read."""

from __future__ import annotations

import bpy

from .core.retarget_map import PRESET_LABELS, PRESETS
from .core.smpl_model import JOINT_NAMES
from .editable import linked_without_override
from .export import FBX_PRESET_NAMES

PRESET_ITEMS = [("AUTO", "Automatic", "Detect a preset from the bone names, else match names")] + [
    (key, PRESET_LABELS[key], f"Bone names of the {PRESET_LABELS[key]} rig") for key in PRESETS
]
GROUP_ITEMS = [
    ("ALL", "Whole body", ""),
    ("LEGS", "Legs and hips", ""),
    ("SPINE", "Spine and head", ""),
    ("ARMS", "Arms", ""),
]
FBX_ITEMS = [(key, name, use) for key, (name, use) in FBX_PRESET_NAMES.items()]
FORMAT_ITEMS = [("fbx", "FBX", ""), ("bvh", "BVH", "One armature; Z up (Blender axes)"), ("glb", "glTF (.glb)", "")]


def _is_armature(_self, obj):
    return obj.type == "ARMATURE"


def _is_target_rig(_self, obj):
    """An armature that can keep a new action: not linked from another file without an override."""
    return obj.type == "ARMATURE" and not linked_without_override(obj)


def _forget_map_summary(settings, _context):
    """Another target: how complete the map was for the last one no longer holds (Fill or Load says
    it again)."""
    settings.map_summary = settings.map_missing = ""


class VIBE_BoneMapRow(bpy.types.PropertyGroup):
    joint: bpy.props.StringProperty(name="SMPL joint")
    bone: bpy.props.StringProperty(name="Target bone", description="Bone of the target that follows this joint")


class VIBE_RetargetSettings(bpy.types.PropertyGroup):
    source: bpy.props.PointerProperty(
        name="Source", type=bpy.types.Object, poll=_is_armature, description="The animated SMPL character"
    )
    target: bpy.props.PointerProperty(
        name="Target",
        type=bpy.types.Object,
        poll=_is_target_rig,
        description="The rig to animate (a linked rig needs a library override first)",
        update=_forget_map_summary,
    )
    preset: bpy.props.EnumProperty(name="Preset", items=PRESET_ITEMS, default="AUTO")
    rows: bpy.props.CollectionProperty(type=VIBE_BoneMapRow)
    active_row: bpy.props.IntProperty()
    map_summary: bpy.props.StringProperty(name="Bone map", description="How complete the last filled map is")
    map_missing: bpy.props.StringProperty(name="Missing joints", description="Body joints the map has no bone for")
    scale_root: bpy.props.BoolProperty(name="Scale root motion by leg length", default=True)
    lock_target_feet: bpy.props.BoolProperty(
        name="Lock feet on the target",
        default=True,
        description="Hold the target's ankles still wherever the source's feet are planted (leg IK), so that "
        "other foot proportions do not slide",
    )
    # clean-up
    strength: bpy.props.FloatProperty(
        name="Smoothing",
        min=0.0,
        max=1.0,
        default=0.5,
        description="0 keeps the motion, 1 smooths over about ±4 frames",
    )
    bone_group: bpy.props.EnumProperty(name="Bones", items=GROUP_ITEMS, default="ALL")
    lock_feet: bpy.props.BoolProperty(name="Lock feet", default=True)
    snap_to_ground: bpy.props.BoolProperty(name="Snap to ground", default=True)
    slide_before_mm: bpy.props.FloatProperty(name="Slide before", default=-1.0)
    slide_after_mm: bpy.props.FloatProperty(name="Slide after", default=-1.0)
    jitter_before: bpy.props.FloatProperty(name="Jitter before", default=-1.0)
    jitter_after: bpy.props.FloatProperty(name="Jitter after", default=-1.0)
    trim: bpy.props.BoolProperty(
        name="Trim", default=False, description="Keep only the keys from Start to End (off: Offset moves them all)"
    )
    trim_start: bpy.props.IntProperty(name="Start", default=1, description="First frame kept, with Trim on")
    trim_end: bpy.props.IntProperty(
        name="End", default=0, min=0, description="Last frame kept, with Trim on; 0 keeps every key to the last one"
    )
    frame_offset: bpy.props.IntProperty(name="Offset", default=0)
    merge_from: bpy.props.PointerProperty(
        name="Merge from",
        type=bpy.types.Object,
        poll=_is_armature,
        description="Another track of the same person, removed after merging",
    )
    # export
    export_format: bpy.props.EnumProperty(name="Format", items=FORMAT_ITEMS, default="fbx")
    fbx_preset: bpy.props.EnumProperty(name="FBX for", items=FBX_ITEMS, default="DEFAULT")


def settings(context) -> VIBE_RetargetSettings:
    return context.scene.vibe_retarget


def current_map(context) -> dict[str, str]:
    return {row.joint: row.bone for row in settings(context).rows if row.bone}


def fill_rows(context, mapping: dict[str, str]) -> None:
    rows = settings(context).rows
    rows.clear()
    for joint in JOINT_NAMES:
        row = rows.add()
        row.joint, row.bone = joint, mapping.get(joint, "")


classes = (VIBE_BoneMapRow, VIBE_RetargetSettings)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register():
    _register_classes()
    bpy.types.Scene.vibe_retarget = bpy.props.PointerProperty(type=VIBE_RetargetSettings)


def unregister():
    del bpy.types.Scene.vibe_retarget
    _unregister_classes()

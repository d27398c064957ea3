"""Retarget, Clean Up and Export panels in the sidebar's "Mocap" tab, their operators, the bone-map
list and the scene settings (``scene.vibe_retarget``). Operators are thin: read properties, call one
function of retarget / cleanup_ops / export, report the one VibeError."""
from __future__ import annotations

import bpy
from bpy_extras.io_utils import ExportHelper, ImportHelper

from .core.errors import VibeError
from .core.retarget_map import PRESET_LABELS, PRESETS, auto_map, load_map, preset_map, save_map
from .core.smpl_model import JOINT_NAMES

_PRESET_ITEMS = [("AUTO", "Automatic", "Detect a preset from the bone names, else match names")] + [
    (key, PRESET_LABELS[key], f"Bone names of the {PRESET_LABELS[key]} rig") for key in PRESETS]
_GROUP_ITEMS = [("ALL", "Whole body", ""), ("LEGS", "Legs and hips", ""), ("SPINE", "Spine and head", ""),
                ("ARMS", "Arms", "")]
_FBX_ITEMS = [("DEFAULT", "Blender", "Metres, Blender's FBX axes"),
              ("UNITY", "Unity", "Metres, Y up, -Z forward, scale applied as FBX units"),
              ("UNREAL", "Unreal", "Centimetres via FBX units, Z up, X forward")]
_FORMAT_ITEMS = [("fbx", "FBX", ""), ("bvh", "BVH", "One armature; Z up (Blender axes)"), ("glb", "glTF (.glb)", "")]


def _is_armature(_self, obj):
    return obj.type == "ARMATURE"


class VIBE_BoneMapRow(bpy.types.PropertyGroup):
    joint: bpy.props.StringProperty(name="SMPL joint")
    bone: bpy.props.StringProperty(name="Target bone", description="Bone of the target that follows this joint")


class VIBE_RetargetSettings(bpy.types.PropertyGroup):
    source: bpy.props.PointerProperty(name="Source", type=bpy.types.Object, poll=_is_armature,
                                      description="The animated SMPL character")
    target: bpy.props.PointerProperty(name="Target", type=bpy.types.Object, poll=_is_armature,
                                      description="The rig to animate")
    preset: bpy.props.EnumProperty(name="Preset", items=_PRESET_ITEMS, default="AUTO")
    rows: bpy.props.CollectionProperty(type=VIBE_BoneMapRow)
    active_row: bpy.props.IntProperty()
    scale_root: bpy.props.BoolProperty(name="Scale root motion by leg length", default=True)
    # clean-up
    strength: bpy.props.FloatProperty(name="Smoothing", min=0.0, max=1.0, default=0.5,
                                      description="0 keeps the motion, 1 smooths over about ±4 frames")
    bone_group: bpy.props.EnumProperty(name="Bones", items=_GROUP_ITEMS, default="ALL")
    lock_feet: bpy.props.BoolProperty(name="Lock feet", default=True)
    snap_to_ground: bpy.props.BoolProperty(name="Snap to ground", default=True)
    slide_before_mm: bpy.props.FloatProperty(name="Slide before", default=-1.0)
    slide_after_mm: bpy.props.FloatProperty(name="Slide after", default=-1.0)
    jitter_before: bpy.props.FloatProperty(name="Jitter before", default=-1.0)
    jitter_after: bpy.props.FloatProperty(name="Jitter after", default=-1.0)
    trim_start: bpy.props.IntProperty(name="Start", default=1)
    trim_end: bpy.props.IntProperty(name="End", default=250)
    frame_offset: bpy.props.IntProperty(name="Offset", default=0)
    merge_from: bpy.props.PointerProperty(name="Merge from", type=bpy.types.Object, poll=_is_armature,
                                          description="Another track of the same person, removed after merging")
    # export
    export_format: bpy.props.EnumProperty(name="Format", items=_FORMAT_ITEMS, default="fbx")
    fbx_preset: bpy.props.EnumProperty(name="FBX for", items=_FBX_ITEMS, default="DEFAULT")


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


def _run(operator, call):
    try:
        return call()
    except VibeError as err:
        operator.report({"ERROR"}, str(err))
        return None


def _characters(context):
    """Selected SMPL characters (the tracks to work on), else the active object."""
    chosen = [o for o in context.selected_objects if o.type == "ARMATURE"]
    return chosen or ([context.object] if context.object and context.object.type == "ARMATURE" else [])


# ---------------------------------------------------------------- retarget
class VIBE_OT_fill_bone_map(bpy.types.Operator):
    """Fill the bone map from the preset (or by matching names) for the target rig"""
    bl_idname = "vibe_mocap.fill_bone_map"
    bl_label = "Fill Bone Map"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = settings(context)
        if s.target is None:
            self.report({"ERROR"}, "Pick the target armature first.")
            return {"CANCELLED"}
        bones = s.target.data.bones
        names = [b.name for b in bones]
        if s.preset == "AUTO":
            mapping = auto_map(names, {b.name: b.parent.name if b.parent else None for b in bones})
        else:
            mapping = preset_map(s.preset, names)
        fill_rows(context, mapping)
        found = sum(1 for b in mapping.values() if b in names)
        self.report({"INFO"}, f"Mapped {found} of {len(JOINT_NAMES)} SMPL joints to '{s.target.name}'.")
        return {"FINISHED"}


class VIBE_OT_retarget(bpy.types.Operator):
    """Bake the source character's motion onto the target rig's own keys"""
    bl_idname = "vibe_mocap.retarget"
    bl_label = "Retarget"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        from .retarget import retarget
        s = settings(context)
        if s.source is None or s.target is None:
            self.report({"ERROR"}, "Pick the source character and the target armature first.")
            return {"CANCELLED"}
        report = _run(self, lambda: retarget(s.source, s.target, current_map(context), scale_root=s.scale_root))
        if report is None:
            return {"CANCELLED"}
        self.report({"INFO"}, f"Retargeted {report['bones']} bones over {report['frames']} frames "
                              f"(root motion x{report['root_scale']:.3f}).")
        return {"FINISHED"}


class VIBE_OT_save_bone_map(bpy.types.Operator, ExportHelper):
    """Save the bone map as a JSON preset"""
    bl_idname = "vibe_mocap.save_bone_map"
    bl_label = "Save Bone Map"
    filename_ext = ".json"
    filter_glob: bpy.props.StringProperty(default="*.json", options={"HIDDEN"})

    def execute(self, context):
        path = _run(self, lambda: save_map(self.filepath, current_map(context)))
        return {"FINISHED"} if path else {"CANCELLED"}


class VIBE_OT_load_bone_map(bpy.types.Operator, ImportHelper):
    """Load a bone map saved as a JSON preset"""
    bl_idname = "vibe_mocap.load_bone_map"
    bl_label = "Load Bone Map"
    bl_options = {"REGISTER", "UNDO"}
    filter_glob: bpy.props.StringProperty(default="*.json", options={"HIDDEN"})

    def execute(self, context):
        loaded = _run(self, lambda: load_map(self.filepath))
        if loaded is None:
            return {"CANCELLED"}
        fill_rows(context, loaded[1])
        self.report({"INFO"}, f"Loaded bone map '{loaded[0]}'.")
        return {"FINISHED"}


# ---------------------------------------------------------------- clean-up
class VIBE_OT_measure_motion(bpy.types.Operator):
    """Measure jitter and foot slide of the active character"""
    bl_idname = "vibe_mocap.measure_motion"
    bl_label = "Measure"

    def execute(self, context):
        from .cleanup_ops import measure_character
        chars = _characters(context)
        if not chars:
            self.report({"ERROR"}, "Select an imported character.")
            return {"CANCELLED"}
        figures = _run(self, lambda: measure_character(chars[0]))
        if figures is None:
            return {"CANCELLED"}
        s = settings(context)
        s.slide_before_mm, s.jitter_before = figures["slide_mm"], figures["jitter"]
        s.slide_after_mm = s.jitter_after = -1.0
        self.report({"INFO"}, f"Foot slide {figures['slide_mm']:.1f} mm per contact frame, "
                              f"jitter {figures['jitter']:.2f} m/s².")
        return {"FINISHED"}


class VIBE_OT_clean_up(bpy.types.Operator):
    """Smooth, lock planted feet and snap to the ground, on the selected characters"""
    bl_idname = "vibe_mocap.clean_up"
    bl_label = "Clean Up"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        from .cleanup_ops import clean_up_character
        s = settings(context)
        chars = _characters(context)
        if not chars:
            self.report({"ERROR"}, "Select the imported characters (tracks) to clean up.")
            return {"CANCELLED"}
        for obj in chars:
            report = _run(self, lambda: clean_up_character(obj, strength=s.strength, bone_group=s.bone_group,
                                                           lock_feet=s.lock_feet, snap_to_ground=s.snap_to_ground))
            if report is None:
                return {"CANCELLED"}
        s.slide_before_mm, s.slide_after_mm = report["slide_before_mm"], report["slide_after_mm"]
        s.jitter_before, s.jitter_after = report["jitter_before"], report["jitter_after"]
        self.report({"INFO"}, f"Cleaned {len(chars)} character(s): foot slide {report['slide_before_mm']:.1f} -> "
                              f"{report['slide_after_mm']:.1f} mm, jitter {report['jitter_before']:.2f} -> "
                              f"{report['jitter_after']:.2f} m/s².")
        return {"FINISHED"}


class VIBE_OT_trim_offset(bpy.types.Operator):
    """Keep the keys between Start and End and move them by Offset frames"""
    bl_idname = "vibe_mocap.trim_offset"
    bl_label = "Trim / Offset"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        from .cleanup_ops import trim_and_offset
        s = settings(context)
        for obj in _characters(context):
            if _run(self, lambda: trim_and_offset(obj, start=s.trim_start, end=s.trim_end, offset=s.frame_offset)) is None:
                return {"CANCELLED"}
        return {"FINISHED"}


class VIBE_OT_merge_tracks(bpy.types.Operator):
    """Merge another track of the same person into the active character (the other one is removed)"""
    bl_idname = "vibe_mocap.merge_tracks"
    bl_label = "Merge Tracks"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        from .cleanup_ops import merge_characters
        s = settings(context)
        if context.object is None or s.merge_from is None:
            self.report({"ERROR"}, "Make the character to keep active and pick the track to merge from.")
            return {"CANCELLED"}
        frames = _run(self, lambda: merge_characters(context.object, s.merge_from))
        if frames is None:
            return {"CANCELLED"}
        self.report({"INFO"}, f"Merged: {frames} frames.")
        return {"FINISHED"}


# ---------------------------------------------------------------- export
class VIBE_OT_export(bpy.types.Operator, ExportHelper):
    """Export the selected characters (all when none is selected) as FBX, BVH or glTF"""
    bl_idname = "vibe_mocap.export"
    bl_label = "Export"
    filename_ext = ""
    export_format: bpy.props.EnumProperty(name="Format", items=_FORMAT_ITEMS, default="fbx")
    fbx_preset: bpy.props.EnumProperty(name="FBX for", items=_FBX_ITEMS, default="DEFAULT")

    def invoke(self, context, event):
        s = settings(context)
        self.export_format, self.fbx_preset = s.export_format, s.fbx_preset
        self.filename_ext = "." + self.export_format
        return super().invoke(context, event)

    def execute(self, context):
        from .export import export
        objects = [o for o in context.selected_objects if o.type == "ARMATURE"] or None
        path = _run(self, lambda: export(bpy.path.ensure_ext(self.filepath, "." + self.export_format),
                                         self.export_format, objects, preset=self.fbx_preset))
        if path is None:
            return {"CANCELLED"}
        self.report({"INFO"}, f"Wrote {path}")
        return {"FINISHED"}


# ---------------------------------------------------------------- UI
class VIBE_UL_bone_map(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        target = settings(context).target
        row = layout.row(align=True)
        row.label(text=item.joint)
        if target is not None:
            row.prop_search(item, "bone", target.data, "bones", text="")
        else:
            row.prop(item, "bone", text="")


class _MocapPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Mocap"
    bl_options = {"DEFAULT_CLOSED"}


class VIEW3D_PT_vibe_retarget(_MocapPanel, bpy.types.Panel):
    bl_label = "Retarget"

    def draw(self, context):
        s, layout = settings(context), self.layout
        layout.prop(s, "source")
        layout.prop(s, "target")
        row = layout.row(align=True)
        row.prop(s, "preset", text="")
        row.operator(VIBE_OT_fill_bone_map.bl_idname, text="Fill", icon="BONE_DATA")
        layout.template_list("VIBE_UL_bone_map", "", s, "rows", s, "active_row", rows=6)
        row = layout.row(align=True)
        row.operator(VIBE_OT_load_bone_map.bl_idname, text="Load", icon="FILEBROWSER")
        row.operator(VIBE_OT_save_bone_map.bl_idname, text="Save", icon="FILE_TICK")
        layout.prop(s, "scale_root")
        layout.operator(VIBE_OT_retarget.bl_idname, icon="ARMATURE_DATA")


class VIEW3D_PT_vibe_cleanup(_MocapPanel, bpy.types.Panel):
    bl_label = "Clean Up"

    def draw(self, context):
        s, layout = settings(context), self.layout
        col = layout.column(align=True)
        col.prop(s, "strength", slider=True)
        col.prop(s, "bone_group")
        row = layout.row(align=True)
        row.prop(s, "lock_feet", toggle=True)
        row.prop(s, "snap_to_ground", toggle=True)
        row = layout.row(align=True)
        row.operator(VIBE_OT_measure_motion.bl_idname, icon="DRIVER_DISTANCE")
        row.operator(VIBE_OT_clean_up.bl_idname, icon="MOD_SMOOTH")
        if s.slide_before_mm >= 0:
            box = layout.box()
            after = f" -> {s.slide_after_mm:.1f}" if s.slide_after_mm >= 0 else ""
            box.label(text=f"Foot slide: {s.slide_before_mm:.1f}{after} mm / contact frame")
            after = f" -> {s.jitter_after:.2f}" if s.jitter_after >= 0 else ""
            box.label(text=f"Jitter: {s.jitter_before:.2f}{after} m/s²")
        col = layout.column(align=True)
        row = col.row(align=True)
        row.prop(s, "trim_start")
        row.prop(s, "trim_end")
        row.prop(s, "frame_offset")
        col.operator(VIBE_OT_trim_offset.bl_idname, icon="SEQ_STRIP_DUPLICATE")
        row = layout.row(align=True)
        row.prop(s, "merge_from", text="")
        row.operator(VIBE_OT_merge_tracks.bl_idname, text="Merge", icon="AUTOMERGE_ON")


class VIEW3D_PT_vibe_export(_MocapPanel, bpy.types.Panel):
    bl_label = "Export"

    def draw(self, context):
        s, layout = settings(context), self.layout
        layout.prop(s, "export_format")
        if s.export_format == "fbx":
            layout.prop(s, "fbx_preset")
        layout.operator(VIBE_OT_export.bl_idname, icon="EXPORT")


classes = (VIBE_BoneMapRow, VIBE_RetargetSettings, VIBE_OT_fill_bone_map, VIBE_OT_retarget, VIBE_OT_save_bone_map,
           VIBE_OT_load_bone_map, VIBE_OT_measure_motion, VIBE_OT_clean_up, VIBE_OT_trim_offset,
           VIBE_OT_merge_tracks, VIBE_OT_export, VIBE_UL_bone_map, VIEW3D_PT_vibe_retarget, VIEW3D_PT_vibe_cleanup,
           VIEW3D_PT_vibe_export)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.vibe_retarget = bpy.props.PointerProperty(type=VIBE_RetargetSettings)


def unregister():
    del bpy.types.Scene.vibe_retarget
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)

"""Operators of the Retarget, Clean Up and Export panels. Each is thin: read the scene settings
(:mod:`retarget_settings`), call one function of retarget / cleanup_ops / export, and report a
VibeError the one way every operator of the add-on does (:func:`operator_errors.reports_errors`)."""

from __future__ import annotations

from functools import partial

import bpy
from bpy_extras.io_utils import ExportHelper, ImportHelper

from .core.errors import VibeError
from .core.retarget_map import auto_map_report, load_map, map_report, preset_report, save_map
from .operator_errors import reports_errors
from .retarget_settings import FBX_ITEMS, FORMAT_ITEMS, current_map, fill_rows, settings
from .rig_builder import character_of, is_character


def _armatures(objects) -> list:
    """The armatures of ``objects``, once each (a selected body stands for its armature)."""
    return list(dict.fromkeys(a for a in map(character_of, objects) if a is not None))


def _characters(context):
    """Selected SMPL characters (the tracks to work on), else the active one. Other rigs selected
    beside them are left out, so that selecting everything works on every character."""
    chosen = _armatures(context.selected_objects)
    chosen = [a for a in chosen if is_character(a)] or chosen  # only other rigs: the operator says why not
    active = character_of(context.object)
    return chosen or ([active] if active is not None else [])


def _characters_or_error(context, what: str):
    chars = _characters(context)
    if not chars:
        raise VibeError(f"Select the imported characters (tracks) to {what}.")
    return chars


# ---------------------------------------------------------------- retarget
class VIBE_OT_fill_bone_map(bpy.types.Operator):
    """Fill the bone map from the preset (or by matching names) for the target rig"""

    bl_idname = "vibe_mocap.fill_bone_map"
    bl_label = "Fill Bone Map"
    bl_options = {"REGISTER", "UNDO"}

    @reports_errors
    def execute(self, context):
        s = settings(context)
        if s.target is None:
            raise VibeError("Pick the target armature first.")
        from .retarget import bones_as_edited

        bones = bones_as_edited(s.target)
        names = [b.name for b in bones]
        if s.preset == "AUTO":
            report = auto_map_report(names, {b.name: b.parent.name if b.parent else None for b in bones})
        else:
            report = preset_report(s.preset, names)
        fill_rows(context, report.mapping)
        s.map_summary = report.summary()
        s.map_missing = ", ".join(report.missing)
        self.report({"INFO"} if report.complete else {"WARNING"}, f"'{s.target.name}': {report.summary()}")
        return {"FINISHED"}


class VIBE_OT_retarget(bpy.types.Operator):
    """Bake the source character's motion onto the target rig's own keys"""

    bl_idname = "vibe_mocap.retarget"
    bl_label = "Retarget"
    bl_options = {"REGISTER", "UNDO"}

    @reports_errors
    def execute(self, context):
        from .retarget import retarget

        s = settings(context)
        if s.source is None or s.target is None:
            raise VibeError("Pick the source character and the target armature first.")
        report = retarget(
            s.source, s.target, current_map(context), scale_root=s.scale_root, lock_feet=s.lock_target_feet
        )
        # What the user must do to play the result (overridden bones, unsettled parents, IK/FK) comes
        # with the summary, and makes it a warning.
        self.report(
            {"WARNING"} if report["warnings"] else {"INFO"},
            f"Retargeted {report['bones']} bones over {report['frames']} frames "
            f"(root motion x{report['root_scale']:.3f}, {report['contact_frames']} foot-contact "
            "frames locked)."
            + (f" The rig's previous action '{report['kept_action']}' is kept." if report["kept_action"] else "")
            + "".join(f" {warning}" for warning in report["warnings"]),
        )
        return {"FINISHED"}


class VIBE_OT_save_bone_map(bpy.types.Operator, ExportHelper):
    """Save the bone map as a JSON preset"""

    bl_idname = "vibe_mocap.save_bone_map"
    bl_label = "Save Bone Map"
    filename_ext = ".json"
    filter_glob: bpy.props.StringProperty(default="*.json", options={"HIDDEN"})

    @reports_errors
    def execute(self, context):
        save_map(self.filepath, current_map(context))
        return {"FINISHED"}


class VIBE_OT_load_bone_map(bpy.types.Operator, ImportHelper):
    """Load a bone map saved as a JSON preset"""

    bl_idname = "vibe_mocap.load_bone_map"
    bl_label = "Load Bone Map"
    bl_options = {"REGISTER", "UNDO"}
    filter_glob: bpy.props.StringProperty(default="*.json", options={"HIDDEN"})

    @reports_errors
    def execute(self, context):
        name, mapping = load_map(self.filepath)
        fill_rows(context, mapping)
        s = settings(context)
        if s.target is None:  # (the summary of an earlier map no longer holds)
            s.map_summary = s.map_missing = ""
            self.report({"INFO"}, f"Loaded bone map '{name}'; pick the target to see how much of it the rig has.")
            return {"FINISHED"}
        from .retarget import bones_as_edited

        report = map_report(mapping, [b.name for b in bones_as_edited(s.target)], f"the saved map '{name}'")
        s.map_summary, s.map_missing = report.summary(), ", ".join(report.missing)
        self.report({"INFO"} if report.complete else {"WARNING"}, f"'{s.target.name}': {report.summary()}")
        return {"FINISHED"}


# ---------------------------------------------------------------- clean-up
class VIBE_OT_measure_motion(bpy.types.Operator):
    """Measure jitter and foot slide of the active character"""

    bl_idname = "vibe_mocap.measure_motion"
    bl_label = "Measure"

    @reports_errors
    def execute(self, context):
        from .cleanup_ops import measure_character

        character = character_of(context.object)
        if character is None:
            raise VibeError("Make an imported character (or its body) the active object.")
        figures = measure_character(character)
        s = settings(context)
        s.slide_before_mm, s.jitter_before = figures["slide_mm"], figures["jitter"]
        s.slide_after_mm = s.jitter_after = -1.0
        self.report(
            {"INFO"},
            f"'{character.name}': foot slide {figures['slide_mm']:.1f} mm per contact frame, jitter "
            f"{figures['jitter']:.2f} m/s².",
        )
        return {"FINISHED"}


class VIBE_OT_clean_up(bpy.types.Operator):
    """Smooth, lock planted feet and snap to the ground, on the selected characters"""

    bl_idname = "vibe_mocap.clean_up"
    bl_label = "Clean Up"
    bl_options = {"REGISTER", "UNDO"}

    @reports_errors
    def execute(self, context):
        from .cleanup_ops import clean_up_characters

        s = settings(context)
        chars = _characters_or_error(context, "clean up")
        reports = clean_up_characters(
            chars,
            strength=s.strength,
            bone_group=s.bone_group,
            lock_feet=s.lock_feet,
            snap_to_ground=s.snap_to_ground,
            warn=partial(self.report, {"WARNING"}),
        )
        # The panel shows the active character's figures (the first one's when it was not cleaned).
        active = character_of(context.object)
        report = reports[chars.index(active) if active in chars else 0]
        s.slide_before_mm, s.slide_after_mm = report["slide_before_mm"], report["slide_after_mm"]
        s.jitter_before, s.jitter_after = report["jitter_before"], report["jitter_after"]
        figures = "; ".join(
            f"'{obj.name}': foot slide {r['slide_before_mm']:.1f} -> {r['slide_after_mm']:.1f} mm, jitter "
            f"{r['jitter_before']:.2f} -> {r['jitter_after']:.2f} m/s²"
            for obj, r in zip(chars, reports)
        )
        self.report({"INFO"}, f"Cleaned {len(chars)} character(s): {figures}.")
        return {"FINISHED"}


class VIBE_OT_trim_offset(bpy.types.Operator):
    """Move the keys by Offset frames; with Trim ticked, keep only those between Start and End first"""

    bl_idname = "vibe_mocap.trim_offset"
    bl_label = "Trim / Offset"
    bl_options = {"REGISTER", "UNDO"}

    @reports_errors
    def execute(self, context):
        from .cleanup_ops import frame_count, trim_and_offset_characters

        s = settings(context)
        chars = _characters_or_error(context, "trim")
        before = [frame_count(obj) for obj in chars]
        kept = trim_and_offset_characters(
            chars,
            start=s.trim_start if s.trim else None,
            end=(s.trim_end or None) if s.trim else None,  # 0: to the last key
            offset=s.frame_offset,
            warn=partial(self.report, {"WARNING"}),
        )
        if kept != before:  # frames were cut: say how many are left, so none go silently
            self.report(
                {"INFO"},
                "Trimmed: "
                + ", ".join(f"'{obj.name}' keeps {k} of {n} frames" for obj, k, n in zip(chars, kept, before))
                + ".",
            )
        return {"FINISHED"}


class VIBE_OT_merge_tracks(bpy.types.Operator):
    """Merge another track of the same person into the active character (the other one is removed)"""

    bl_idname = "vibe_mocap.merge_tracks"
    bl_label = "Merge Tracks"
    bl_options = {"REGISTER", "UNDO"}

    @reports_errors
    def execute(self, context):
        from .cleanup_ops import merge_characters

        s = settings(context)
        keep = character_of(context.object)
        if keep is None or s.merge_from is None:
            raise VibeError("Make the character to keep (or its body) active and pick the track to merge from.")
        frames = merge_characters(keep, s.merge_from, warn=partial(self.report, {"WARNING"}))
        self.report({"INFO"}, f"Merged: {frames} frames.")
        return {"FINISHED"}


# ---------------------------------------------------------------- export
class VIBE_OT_export(bpy.types.Operator, ExportHelper):
    """Export the selected characters (all when none is selected) as FBX, BVH or glTF"""

    bl_idname = "vibe_mocap.export"
    bl_label = "Export"
    filename_ext = ""
    export_format: bpy.props.EnumProperty(name="Format", items=FORMAT_ITEMS, default="fbx")
    fbx_preset: bpy.props.EnumProperty(name="FBX for", items=FBX_ITEMS, default="DEFAULT")

    def invoke(self, context, event):
        s = settings(context)
        self.export_format, self.fbx_preset = s.export_format, s.fbx_preset
        self.filename_ext = "." + self.export_format
        return super().invoke(context, event)

    def check(self, context):
        # The file browser calls this on every change, and ExportHelper gives the path filename_ext:
        # follow a Format switched in the browser, or the path keeps the first format's extension.
        self.filename_ext = "." + self.export_format
        return ExportHelper.check(self, context)

    @reports_errors
    def execute(self, context):
        from .export import export, with_format_suffix

        objects = _armatures(context.selected_objects) or None
        path = export(
            with_format_suffix(self.filepath, self.export_format),
            self.export_format,
            objects,
            preset=self.fbx_preset,
            report=lambda msg: self.report({"WARNING"}, msg),
        )
        self.report({"INFO"}, f"Wrote {path}")
        return {"FINISHED"}


classes = (
    VIBE_OT_fill_bone_map,
    VIBE_OT_retarget,
    VIBE_OT_save_bone_map,
    VIBE_OT_load_bone_map,
    VIBE_OT_measure_motion,
    VIBE_OT_clean_up,
    VIBE_OT_trim_offset,
    VIBE_OT_merge_tracks,
    VIBE_OT_export,
)

register, unregister = bpy.utils.register_classes_factory(classes)

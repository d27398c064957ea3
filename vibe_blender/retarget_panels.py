"""The Retarget, Clean Up and Export panels of the sidebar's "Mocap" tab and the bone-map list."""

from __future__ import annotations

import bpy

from .retarget_settings import settings


class VIBE_UL_bone_map(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        target = settings(context).target
        row = layout.row(align=True)
        row.label(text=item.joint, icon="BLANK1" if item.bone else "ERROR")
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
        row.operator("vibe_mocap.fill_bone_map", text="Fill", icon="BONE_DATA")
        if s.map_summary:
            box = layout.box()
            box.label(text=s.map_summary.split(";")[0], icon="ERROR" if s.map_missing else "CHECKMARK")
            if s.map_missing:
                box.label(text=f"Missing: {s.map_missing}")
        layout.template_list("VIBE_UL_bone_map", "", s, "rows", s, "active_row", rows=6)
        row = layout.row(align=True)
        row.operator("vibe_mocap.load_bone_map", text="Load", icon="FILEBROWSER")
        row.operator("vibe_mocap.save_bone_map", text="Save", icon="FILE_TICK")
        layout.prop(s, "scale_root")
        layout.prop(s, "lock_target_feet")
        layout.operator("vibe_mocap.retarget", icon="ARMATURE_DATA")


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
        row.operator("vibe_mocap.measure_motion", icon="DRIVER_DISTANCE")
        row.operator("vibe_mocap.clean_up", icon="MOD_SMOOTH")
        if s.slide_before_mm >= 0:
            box = layout.box()
            after = f" -> {s.slide_after_mm:.1f}" if s.slide_after_mm >= 0 else ""
            box.label(text=f"Foot slide: {s.slide_before_mm:.1f}{after} mm / contact frame")
            after = f" -> {s.jitter_after:.2f}" if s.jitter_after >= 0 else ""
            box.label(text=f"Jitter: {s.jitter_before:.2f}{after} m/s²")
        col = layout.column(align=True)
        row = col.row(align=True)
        row.prop(s, "trim")
        frames = row.row(align=True)
        frames.active = s.trim  # shown, greyed out: Offset alone moves every key
        frames.prop(s, "trim_start")
        frames.prop(s, "trim_end")
        col.prop(s, "frame_offset")
        col.operator("vibe_mocap.trim_offset", icon="SEQ_STRIP_DUPLICATE")
        row = layout.row(align=True)
        row.prop(s, "merge_from", text="")
        row.operator("vibe_mocap.merge_tracks", text="Merge", icon="AUTOMERGE_ON")


class VIEW3D_PT_vibe_export(_MocapPanel, bpy.types.Panel):
    bl_label = "Export"

    def draw(self, context):
        s, layout = settings(context), self.layout
        layout.prop(s, "export_format")
        if s.export_format == "fbx":
            layout.prop(s, "fbx_preset")
        layout.operator("vibe_mocap.export", icon="EXPORT")


classes = (VIBE_UL_bone_map, VIEW3D_PT_vibe_retarget, VIEW3D_PT_vibe_cleanup, VIEW3D_PT_vibe_export)

register, unregister = bpy.utils.register_classes_factory(classes)

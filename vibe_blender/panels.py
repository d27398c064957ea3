"""The "Mocap" tab of the 3D View sidebar: capture, import, and the selected character's shape."""

import bpy

from .core.capture import FINAL_STATES
from .core.local_server import same_local_server
from .wrapped_labels import label_lines


class VIEW3D_PT_vibe_mocap(bpy.types.Panel):
    bl_label = "VIBE Mocap"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Mocap"

    def draw(self, context):
        from . import jobs, server_control
        from .preferences import get_preferences

        layout = self.layout
        settings = context.scene.vibe_mocap

        box = layout.box()
        box.label(text="Capture from video", icon="SEQUENCE")
        box.prop(settings, "video_path", text="")
        box.label(text=f"Server: {get_preferences(context).server_url}")
        own = server_control.server_status()
        if own.state == "ready" and not same_local_server(get_preferences(context).server_url, own.url):
            box.label(text=f"(when no server answers there: the add-on's, at {own.url})")
        job = jobs.current_job()
        status = job.snapshot() if job is not None else None
        if status is not None and status.state not in FINAL_STATES:
            text = status.message + (f" (about {status.eta_s:.0f} s left)" if status.eta_s else "")
            box.progress(factor=status.progress, type="BAR", text=text)
            box.operator("vibe_mocap.cancel_capture", icon="CANCEL")
        else:
            box.operator("vibe_mocap.capture", icon="REC")
            if status is not None:
                warned = status.state == "failed" or jobs.last_error() or jobs.last_warnings()
                label_lines(box, jobs.last_outcome() or status.message, icon="ERROR" if warned else "INFO")

        box = layout.box()
        box.label(text="Character", icon="ARMATURE_DATA")
        box.prop(settings, "correctives")
        box.prop(settings, "root_motion")
        box.prop(settings, "add_camera")
        op = box.operator("vibe_mocap.import_motion", icon="IMPORT")
        op.correctives, op.root_motion, op.add_camera = settings.correctives, settings.root_motion, settings.add_camera
        op.capture_video_path = settings.video_path  # shown only behind a result captured from it

        from .rig_builder import find_character_mesh, is_character, shape_key_name

        obj = context.active_object
        if is_character(obj):
            box = layout.box()
            box.label(text=f"Shape of {obj.name}", icon="SHAPEKEY_DATA")
            mesh = find_character_mesh(obj)
            if mesh is not None and mesh.data.shape_keys is not None:
                col = box.column(align=True)
                for i in range(10):
                    key_block = mesh.data.shape_keys.key_blocks.get(shape_key_name(i))
                    if key_block is not None:
                        col.prop(key_block, "value", text=f"Beta {i}")
            box.operator("vibe_mocap.refit_bones", icon="BONE_DATA")


classes = (VIEW3D_PT_vibe_mocap,)


register, unregister = bpy.utils.register_classes_factory(classes)

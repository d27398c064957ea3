"""The "Live" panel of the Mocap tab: follow a camera, stream or video live, and record it."""

import bpy

from .core.live_client import dropped_people_note
from .wrapped_labels import label_lines

_STATE_ICONS = {"connecting": "SORTTIME", "streaming": "PLAY", "ended": "INFO", "lost": "ERROR", "failed": "ERROR"}


class VIEW3D_PT_vibe_live(bpy.types.Panel):
    bl_label = "Live"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Mocap"
    bl_parent_id = "VIEW3D_PT_vibe_mocap"

    def draw(self, context):
        from . import live

        layout = self.layout
        settings = context.scene.vibe_live
        session = live.current_session()
        running = session is not None and session.state not in live.FINAL_STATES

        col = layout.column()
        col.enabled = not running
        col.prop(settings, "source")
        col.prop(settings, "detector")
        row = col.row(align=True)
        row.prop(settings, "detection_stride")
        row.prop(settings, "max_people")
        col.prop(settings, "smoothing")

        row = layout.row(align=True)
        if running:
            row.operator("vibe_mocap.live_stop", icon="PAUSE")
        else:
            row.operator("vibe_mocap.live_start", icon="PLAY")
        if session is not None and session.recording:
            row.operator("vibe_mocap.live_record_stop", icon="SNAP_FACE")
        else:
            row.operator("vibe_mocap.live_record", icon="REC")  # greyed out by its poll while it cannot record

        if session is not None:
            label_lines(layout, session.message, icon=_STATE_ICONS.get(session.state, "INFO"))
            connection = session.connection
            if connection is not None and connection.bad_messages:
                label_lines(
                    layout,
                    f"Skipped {connection.bad_messages} malformed message(s) from the server; if this keeps "
                    "growing, update the server.",
                    icon="ERROR",
                )
            if connection is not None and connection.people_dropped:
                label_lines(layout, dropped_people_note(connection.people_dropped), icon="ERROR")
            if connection is not None and connection.clock_jumps:
                label_lines(
                    layout,
                    f"The server's frame times jumped {connection.clock_jumps} time(s) (more than a minute ahead, "
                    "or back: the server stalled or its clock broke); a recording has a minute's gap at each.",
                    icon="ERROR",
                )
            if session.unsaved_take is not None:
                label_lines(layout, live.UNSAVED_TAKE, icon="ERROR")
                layout.operator("vibe_mocap.live_discard_take", icon="TRASH")
            elif session.recording and not running:
                label_lines(layout, live.TAKE_AFTER_END, icon="REC")
            elif session.connection is not None and session.connection.recording_full:
                label_lines(layout, live.RECORDING_FULL, icon="ERROR")
            elif session.recording:
                layout.label(text="Recording…", icon="REC")
            if session.last_result_path is not None:
                label_lines(layout, f"Last recording: {session.last_result_path.name}", icon="FILE")
        notice = live.takes_saved_on_exit_notice()
        if notice is not None:
            label_lines(layout, notice, icon="FILE")
            layout.operator("vibe_mocap.live_dismiss_saved_takes", icon="CHECKMARK")


classes = (VIEW3D_PT_vibe_live,)

register, unregister = bpy.utils.register_classes_factory(classes)

"""The Live panel's settings (``scene.vibe_live``) and operators: connect and start, stop, record.
Each operator calls one function of :mod:`.live` (which keeps the network off the main thread) and
reports errors through :func:`operator_errors.reports_errors`, as every operator of the add-on."""

import bpy

from .operator_errors import reports_errors
from .operators import _options

_DETECTOR_ITEMS = [
    ("auto", "Auto", "YOLO when its weights are installed, else the built-in HOG detector"),
    ("yolo", "YOLO", "The official detector (needs yolov3.weights)"),
    ("hog", "HOG", "OpenCV's people detector: no extra files, less accurate"),
]


# The live options of the server (server/vibe_server/pipeline/live_options.py: LiveOptions), which the
# add-on cannot import (it ships without the server): the same defaults and bounds, kept equal by
# tests/server/test_live.py.
class VIBE_LiveSettings(bpy.types.PropertyGroup):
    source: bpy.props.StringProperty(
        name="Source",
        default="0",
        description="A camera number on the server's machine (0: the first camera), a stream URL there, or a "
        "video file path (played at its own speed)",
    )
    detector: bpy.props.EnumProperty(name="Detector", items=_DETECTOR_ITEMS, default="auto")
    detection_stride: bpy.props.IntProperty(
        name="Detect every",
        default=8,
        min=1,
        max=1000,
        description="Look for people every Nth processed frame (the tracker carries the boxes in between)",
    )
    smoothing: bpy.props.FloatProperty(
        name="Smoothing", default=0.0, min=0.0, max=1.0, description="Causal smoothing of the motion, 0 (off) to 1"
    )
    max_people: bpy.props.IntProperty(
        name="People", default=4, min=1, max=32, description="Follow at most this many people"
    )

    def params(self) -> dict:
        return {
            "detector": self.detector,
            "detection_stride": self.detection_stride,
            "smoothing": self.smoothing,
            "max_people": self.max_people,
        }


def _allowed(operator_class, refusal: str | None) -> bool:
    """An operator's poll: greyed out with ``refusal`` as its tooltip's reason, when there is one."""
    if refusal is not None:
        operator_class.poll_message_set(refusal)
    return refusal is None


class VIBE_OT_live_start(bpy.types.Operator):
    """Connect to the server (starting one on this machine if none runs) and follow the live source"""

    bl_idname = "vibe_mocap.live_start"
    bl_label = "Start Live"

    @reports_errors
    def execute(self, context):
        from . import live

        settings = context.scene.vibe_live
        live.start_live(
            bpy.path.abspath(settings.source) if settings.source.startswith("//") else settings.source,
            settings.params(),
        )
        return {"FINISHED"}


class VIBE_OT_live_stop(bpy.types.Operator):
    """Stop the live session (the characters and any recording stay)"""

    bl_idname = "vibe_mocap.live_stop"
    bl_label = "Stop Live"

    @reports_errors
    def execute(self, context):
        from . import live

        live.stop_live()
        return {"FINISHED"}


class VIBE_OT_live_record(bpy.types.Operator):
    """Start recording the live motion"""

    bl_idname = "vibe_mocap.live_record"
    bl_label = "Record"

    @classmethod
    def poll(cls, context):
        from . import live

        return _allowed(cls, live.record_refusal())

    @reports_errors
    def execute(self, context):
        from . import live

        live.start_recording()
        return {"FINISHED"}


class VIBE_OT_live_record_stop(bpy.types.Operator):
    """Stop recording and key the recorded motion on a new character, at real speed in the scene's frame rate"""

    bl_idname = "vibe_mocap.live_record_stop"
    bl_label = "Stop Recording"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        from . import live

        return _allowed(cls, live.stop_recording_refusal())

    @reports_errors
    def execute(self, context):
        from . import live

        characters = live.stop_recording(_options(context.scene.vibe_mocap))
        self.report({"INFO"}, f"Recorded {len(characters)} character(s): {', '.join(a.name for a, _ in characters)}")
        return {"FINISHED"}


class VIBE_OT_live_discard_take(bpy.types.Operator):
    """Throw away the recording that Stop Recording has not saved (it cannot be undone)"""

    bl_idname = "vibe_mocap.live_discard_take"
    bl_label = "Discard Recording"

    @reports_errors
    def execute(self, context):
        from . import live

        live.discard_take()
        self.report({"INFO"}, "The unsaved recording was thrown away.")
        return {"FINISHED"}

    def invoke(self, context, event):  # from the panel: asks before throwing motion away
        return context.window_manager.invoke_confirm(self, event)


class VIBE_OT_live_dismiss_saved_takes(bpy.types.Operator):
    """Hide the notice of the recordings saved as Blender quit or the add-on was disabled (the files stay)"""

    bl_idname = "vibe_mocap.live_dismiss_saved_takes"
    bl_label = "OK"

    @reports_errors
    def execute(self, context):
        from . import live

        live.dismiss_takes_saved_on_exit()
        return {"FINISHED"}


classes = (
    VIBE_LiveSettings,
    VIBE_OT_live_start,
    VIBE_OT_live_stop,
    VIBE_OT_live_record,
    VIBE_OT_live_record_stop,
    VIBE_OT_live_discard_take,
    VIBE_OT_live_dismiss_saved_takes,
)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.vibe_live = bpy.props.PointerProperty(type=VIBE_LiveSettings)


def unregister():
    del bpy.types.Scene.vibe_live
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)

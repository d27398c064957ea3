"""Operators: each reads its properties, calls one function and reports the one VibeError
(through :func:`operator_errors.reports_errors`, as every operator of the add-on)."""

import bpy
from bpy_extras.io_utils import ImportHelper

from .core.errors import VibeError
from .core.motion import MAX_CHARACTERS
from .core.result_file import FPS_RANGE
from .importer import ImportOptions
from .operator_errors import reports_errors
from .rig_builder import is_character

_CORRECTIVE_ITEMS = [
    ("off", "Off", "Plain skinning (fastest playback)"),
    ("drivers", "Drivers", "207 pose-corrective shape keys driven live by the bones"),
    ("baked", "Baked", "207 pose-corrective shape keys keyed per frame from the motion"),
]
_ROOT_ITEMS = [
    ("full", "From video", "Move the body through the scene as the camera saw it"),
    ("in_place", "In place", "Keep the body over the origin (height still follows the motion)"),
]


class VIBE_SceneSettings(bpy.types.PropertyGroup):
    video_path: bpy.props.StringProperty(name="Video", subtype="FILE_PATH", description="The video to capture")
    correctives: bpy.props.EnumProperty(name="Pose correctives", items=_CORRECTIVE_ITEMS, default="off")
    root_motion: bpy.props.EnumProperty(name="Root motion", items=_ROOT_ITEMS, default="full")
    add_camera: bpy.props.BoolProperty(
        name="Camera with video",
        default=True,
        description="Add a camera matching the video, with the video as background",
    )


def _options(settings, **extra) -> ImportOptions:
    return ImportOptions(
        correctives=settings.correctives, root_motion=settings.root_motion, add_camera=settings.add_camera, **extra
    )


class VIBE_OT_import_motion(bpy.types.Operator, ImportHelper):
    """Import a VIBE Mocap result (.npz), an official VIBE vibe_output.pkl or AMASS motion (.npz)"""

    bl_idname = "vibe_mocap.import_motion"
    bl_label = "Import Motion File"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: bpy.props.StringProperty(default="*.npz;*.pkl", options={"HIDDEN"})
    correctives: bpy.props.EnumProperty(name="Pose correctives", items=_CORRECTIVE_ITEMS, default="off")
    root_motion: bpy.props.EnumProperty(name="Root motion", items=_ROOT_ITEMS, default="full")
    add_camera: bpy.props.BoolProperty(name="Camera", default=True)
    video_path: bpy.props.StringProperty(  # never remembered: a video belongs to the one file it was picked for
        name="Video",
        subtype="FILE_PATH",
        default="",
        description="Optional: the video, shown behind the camera",
        options={"SKIP_SAVE"},
    )
    capture_video_path: bpy.props.StringProperty(  # set by the panel's button: see ImportOptions
        name="Capture video", subtype="FILE_PATH", default="", options={"HIDDEN", "SKIP_SAVE"}
    )
    fps: bpy.props.FloatProperty(
        name="Frame rate",
        default=30.0,
        min=1.0,
        max=FPS_RANGE[1],
        description="Used only for files that store no frame rate (vibe_output.pkl)",
    )
    max_characters: bpy.props.IntProperty(
        name="Max characters",
        default=MAX_CHARACTERS,
        min=1,
        soft_max=200,
        description="A file with more people imports those seen in the most frames",
    )
    body_model_path: bpy.props.StringProperty(
        name="Body model",
        subtype="FILE_PATH",
        default="",
        description="Optional: the body model (.npz) written with the result, or an SMPL .pkl. Empty: the "
        "model-data folder of the preferences, else RESULT_body_model.npz beside the file, else the one the "
        "server sent last",
        options={"SKIP_SAVE"},
    )
    set_scene: bpy.props.BoolProperty(
        name="Set scene frame rate and range",
        default=True,
        description="Take the frame rate and frame range from the file. With characters in the scene "
        "already, the range only grows and their frame rate stays",
    )

    @reports_errors
    def execute(self, context):
        from .core.model_data import read_body_model
        from .importer import import_motion_file  # lazy: registration stays cheap
        from .preferences import resolve_body_model

        options = ImportOptions(
            correctives=self.correctives,
            root_motion=self.root_motion,
            add_camera=self.add_camera,
            video_path=bpy.path.abspath(self.video_path) if self.video_path else "",
            capture_video_path=bpy.path.abspath(self.capture_video_path) if self.capture_video_path else "",
            fps=self.fps,
            max_characters=self.max_characters,
            set_scene=self.set_scene,
        )

        def warn(msg):
            self.report({"WARNING"}, msg)

        if self.body_model_path:
            body_model = read_body_model(bpy.path.abspath(self.body_model_path))
        else:
            body_model = resolve_body_model(context, warn=warn, result_path=self.filepath)
        import_motion_file(
            self.filepath,
            body_model,
            options,
            report=lambda msg: self.report({"INFO"}, msg),
            warn=warn,
        )
        return {"FINISHED"}


class VIBE_OT_capture(bpy.types.Operator):
    """Send the video to the VIBE Mocap server and import the people it finds"""

    bl_idname = "vibe_mocap.capture"
    bl_label = "Capture"

    @reports_errors
    def execute(self, context):
        from . import jobs

        settings = context.scene.vibe_mocap
        if not settings.video_path:
            raise VibeError("Choose a video first.")
        earlier = jobs.import_finished_capture()  # its line would be gone with the next capture
        if earlier is not None:
            self.report({"INFO"} if jobs.last_import() else {"WARNING"}, earlier)
        jobs.start_capture(settings.video_path, _options(settings))
        return {"FINISHED"}


class VIBE_OT_cancel_capture(bpy.types.Operator):
    """Stop the running capture (the server job is cancelled too)"""

    bl_idname = "vibe_mocap.cancel_capture"
    bl_label = "Cancel"

    @reports_errors
    def execute(self, context):
        from . import jobs

        jobs.cancel_capture()
        return {"FINISHED"}


class VIBE_OT_refit_bones(bpy.types.Operator):
    """Move the bones to the body's current shape (Shape000..009), keeping the animation"""

    bl_idname = "vibe_mocap.refit_bones"
    bl_label = "Refit Bones to Shape"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return is_character(context.active_object)

    @reports_errors
    def execute(self, context):
        from .animation import refit_bones

        refit_bones(context.active_object)
        return {"FINISHED"}


def _menu_import(self, context):
    self.layout.operator(VIBE_OT_import_motion.bl_idname, text="VIBE Mocap / SMPL motion (.npz, .pkl)")


classes = (VIBE_SceneSettings, VIBE_OT_import_motion, VIBE_OT_capture, VIBE_OT_cancel_capture, VIBE_OT_refit_bones)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.vibe_mocap = bpy.props.PointerProperty(type=VIBE_SceneSettings)
    bpy.types.TOPBAR_MT_file_import.append(_menu_import)


def unregister():
    bpy.types.TOPBAR_MT_file_import.remove(_menu_import)
    del bpy.types.Scene.vibe_mocap
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)

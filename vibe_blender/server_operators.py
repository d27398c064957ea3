"""Operators for the add-on's local server and the model data: each calls one function of
``server_control`` (which does the work off the main thread) and reports the one VibeError."""
import bpy
from bpy_extras.io_utils import ImportHelper

from .core.errors import VibeError


def _report_error(operator, call) -> set:
    try:
        call()
    except VibeError as err:
        operator.report({"ERROR"}, str(err))
        return {"CANCELLED"}
    return {"FINISHED"}


class VIBE_OT_server_start(bpy.types.Operator):
    """Start the VIBE Mocap server on this machine (127.0.0.1, a free port, a fresh token)"""
    bl_idname = "vibe_mocap.server_start"
    bl_label = "Start Server"

    def execute(self, context):
        from . import server_control
        return _report_error(self, server_control.start_server)


class VIBE_OT_server_stop(bpy.types.Operator):
    """Stop the server this add-on started"""
    bl_idname = "vibe_mocap.server_stop"
    bl_label = "Stop Server"

    def execute(self, context):
        from . import server_control
        return _report_error(self, server_control.stop_server)


class VIBE_OT_find_program(bpy.types.Operator):
    """Look for the vibe-mocap program again (the preferences' path, the repository's .venv, PATH)"""
    bl_idname = "vibe_mocap.find_program"
    bl_label = "Find vibe-mocap"

    def execute(self, context):
        from . import server_control
        return _report_error(self, server_control.look_for_program)


class VIBE_OT_model_data_check(bpy.types.Operator):
    """Check which model files are present, missing or invalid"""
    bl_idname = "vibe_mocap.model_data_check"
    bl_label = "Check Model Data"

    def execute(self, context):
        from . import server_control
        return _report_error(self, server_control.check_model_data)


class VIBE_OT_model_data_install(bpy.types.Operator, ImportHelper):
    """Install the official model data: vibe_data.zip, a folder holding the files, or one file (yolov3.weights)"""
    bl_idname = "vibe_mocap.model_data_install"
    bl_label = "Install Model Data…"

    filter_glob: bpy.props.StringProperty(default="*.zip;*.weights;*.pkl;*.npy;*.npz;*.tar", options={"HIDDEN"})

    def execute(self, context):
        from . import server_control
        source = bpy.path.abspath(self.filepath)
        return _report_error(self, lambda: server_control.install_model_data(source))


classes = (VIBE_OT_server_start, VIBE_OT_server_stop, VIBE_OT_find_program, VIBE_OT_model_data_check,
           VIBE_OT_model_data_install)

register, unregister = bpy.utils.register_classes_factory(classes)

"""Operators for the add-on's local server and the model data: each calls one function of
``server_control`` (which does the work off the main thread); errors are reported through
:func:`operator_errors.reports_errors`, as every operator of the add-on."""

import bpy
from bpy_extras.io_utils import ImportHelper

from .operator_errors import reports_errors


class VIBE_OT_server_start(bpy.types.Operator):
    """Start the VIBE Mocap server on this machine (127.0.0.1, a free port, a fresh token)"""

    bl_idname = "vibe_mocap.server_start"
    bl_label = "Start Server"

    @reports_errors
    def execute(self, context):
        from . import server_control

        server_control.start_server()
        return {"FINISHED"}


class VIBE_OT_server_stop(bpy.types.Operator):
    """Stop the server this add-on started"""

    bl_idname = "vibe_mocap.server_stop"
    bl_label = "Stop Server"
    bl_description = (
        "Stop the server this add-on started. After a start that failed on a server an earlier session kept "
        "running, which does not answer: stop that one and forget it, so that Start Server starts a new one"
    )

    @reports_errors
    def execute(self, context):
        from . import server_control

        server_control.stop_server()
        return {"FINISHED"}


class VIBE_OT_server_restart(bpy.types.Operator):
    """Restart the server this add-on started (it then uses the model data installed since it started)"""

    bl_idname = "vibe_mocap.server_restart"
    bl_label = "Restart Server"

    @reports_errors
    def execute(self, context):
        from . import server_control

        server_control.restart_server()
        return {"FINISHED"}


class VIBE_OT_find_program(bpy.types.Operator):
    """Look for the vibe-mocap program again (the preferences' path, the repository's .venv, PATH)"""

    bl_idname = "vibe_mocap.find_program"
    bl_label = "Find vibe-mocap"

    @reports_errors
    def execute(self, context):
        from . import server_control

        server_control.look_for_program()
        return {"FINISHED"}


class VIBE_OT_model_data_check(bpy.types.Operator):
    """Check which model files are present, missing or invalid"""

    bl_idname = "vibe_mocap.model_data_check"
    bl_label = "Check Model Data"

    @reports_errors
    def execute(self, context):
        from . import server_control

        server_control.check_model_data()
        return {"FINISHED"}


class VIBE_OT_model_data_install(bpy.types.Operator, ImportHelper):
    """Install the official model data: vibe_data.zip, a folder holding the files, or one file (yolov3.weights)"""

    bl_idname = "vibe_mocap.model_data_install"
    bl_label = "Install Model Data…"

    filter_glob: bpy.props.StringProperty(default="*.zip;*.weights;*.pkl;*.npy;*.npz;*.tar", options={"HIDDEN"})

    @reports_errors
    def execute(self, context):
        from . import server_control

        server_control.install_model_data(bpy.path.abspath(self.filepath))
        return {"FINISHED"}


classes = (
    VIBE_OT_server_start,
    VIBE_OT_server_stop,
    VIBE_OT_server_restart,
    VIBE_OT_find_program,
    VIBE_OT_model_data_check,
    VIBE_OT_model_data_install,
)

register, unregister = bpy.utils.register_classes_factory(classes)

"""The "Server & Model Data" panel of the Mocap tab: the local server and the model files."""

import bpy

from .core.model_data import NO_MODEL_PREFIX, PLACEHOLDER_MODEL, runs_no_model
from .wrapped_labels import label_lines

_FILE_ICONS = {"present": "CHECKMARK", "missing": "X", "invalid": "ERROR"}


class VIEW3D_PT_vibe_server(bpy.types.Panel):
    bl_label = "Server & Model Data"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Mocap"
    bl_parent_id = "VIEW3D_PT_vibe_mocap"

    def draw(self, context):
        from . import server_control

        layout = self.layout

        box = layout.box()
        status = server_control.server_status()
        if status.state == "ready":
            box.label(text=f"Running at {status.url}", icon="CHECKMARK" if not runs_no_model(status.model) else "ERROR")
            if server_control.restart_for_installed_data():
                label_lines(
                    box,
                    "The model data was installed after this server started, on the "
                    + ("placeholder model" if status.model == PLACEHOLDER_MODEL else "no model")
                    + ". It restarts on the data once no capture or live session runs; or restart it now.",
                    icon="ERROR",
                )
                box.operator("vibe_mocap.server_restart", icon="FILE_REFRESH")
            elif runs_no_model(status.model):
                label_lines(
                    box,
                    f"The server loaded no model ({status.model[len(NO_MODEL_PREFIX) : -1]}): every capture fails. "
                    "Install the model data (below), or see the server's log; then restart it.",
                    icon="ERROR",
                )
                box.operator("vibe_mocap.server_restart", icon="FILE_REFRESH")
            elif status.model == PLACEHOLDER_MODEL:
                label_lines(
                    box,
                    "Placeholder model: the motion will be random until the model data is installed (below).",
                    icon="ERROR",
                )
            box.operator("vibe_mocap.server_stop", icon="PAUSE")
        elif status.state == "starting":
            box.progress(
                factor=min(status.elapsed_s / 30.0, 0.95),
                type="BAR",
                text=f"Starting the server… {status.elapsed_s:.0f} s",
            )
            box.operator("vibe_mocap.server_stop", icon="CANCEL")
        else:
            if status.state in ("failed", "exited"):
                label_lines(box, status.message, icon="ERROR")
                log = box.column(align=True)
                for line in status.log_tail[-6:]:
                    log.label(text=line[:90])
                if status.blocking_record is not None:  # a kept server that does not answer: end it here
                    box.operator("vibe_mocap.server_stop", text="Stop Kept Server", icon="CANCEL")
            else:
                if status.message:  # what the last stop did
                    label_lines(box, status.message)
                box.label(text="Capture starts the server when none is running.", icon="INFO")
            box.operator("vibe_mocap.server_start", icon="PLAY")

        program, error, looking = server_control.program_state()
        if looking:
            box.label(text="Looking for vibe-mocap…", icon="VIEWZOOM")
        elif program is not None:
            box.label(text=f"{program.version} ({program.found_in})", icon="CONSOLE")
        elif error:
            label_lines(box, error, icon="ERROR")

        box = layout.box()
        box.label(text="Model data", icon="FILE_FOLDER")
        data_dir, files, data_error = server_control.model_data_state()
        if data_dir:
            label_lines(box, data_dir, icon="BLANK1")
        col = box.column(align=True)
        for state in files:
            if _optional_and_missing(state):  # (shown once installed)
                continue
            col.label(text=f"{state.name}: {state.status}", icon=_FILE_ICONS.get(state.status, "QUESTION"))
        if data_error:
            label_lines(box, data_error, icon="ERROR")
        install = server_control.current_install()
        if install is not None and not install.finished:
            box.label(text=(install.lines[-1] if install.lines else "Installing…")[:90], icon="SORTTIME")
        elif install is not None and install.returncode == 0 and any(_still_needed(state) for state in files):
            label_lines(box, "Installed. The files marked missing or invalid above are still needed.", icon="INFO")
        elif install is not None and install.returncode:
            label_lines(box, "The install failed: " + (install.lines[-1] if install.lines else ""), icon="ERROR")
        row = box.row(align=True)
        row.operator("vibe_mocap.model_data_check", icon="FILE_REFRESH")
        row.operator("vibe_mocap.model_data_install", icon="IMPORT")


def _optional_and_missing(state) -> bool:
    return state.detail == "optional" and state.status == "missing"


def _still_needed(state) -> bool:
    """A required model file that is not there yet (an optional one may stay missing)."""
    return state.status != "present" and not _optional_and_missing(state)


def capture_or_live_running() -> bool:
    """Whether a capture or a live session uses the server now (the add-on's server is restarted on
    newly installed model data only when none does)."""
    from . import jobs, live

    job = jobs.current_job()
    if job is not None and not job.snapshot().finished:
        return True
    session = live.current_session()
    return session is not None and session.state not in live.FINAL_STATES


classes = (VIEW3D_PT_vibe_server,)

_register_classes, unregister = bpy.utils.register_classes_factory(classes)


def register():
    from . import server_control

    _register_classes()
    server_control.set_activity_probe(capture_or_live_running)

"""Add-on preferences (server URL, token, model-data folder) and where the add-on may write files."""

from pathlib import Path

import bpy

from . import server_state
from .core.client import DEFAULT_URL, server_url_warning
from .core.errors import VibeError
from .core.model_data import body_model_beside, cached_body_model_note, read_body_model, read_cached_body_model
from .core.smpl_model import BodyModel
from .wrapped_labels import label_lines

# Blender registers the extension as bl_ext.<repo>.<id>; this package is then "<that>.vibe_blender".
# Run from a source tree (tests, batch), this package is the top level itself.
_parent = __package__.rpartition(".")[0]
ADDON_PACKAGE = _parent if _parent.startswith("bl_ext.") else __package__
BODY_MODEL_CACHE = "body_model.npz"


class VIBE_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    server_url: bpy.props.StringProperty(
        name="Server URL",
        default=DEFAULT_URL,
        description="Address of the VIBE Mocap server (start it with 'vibe-mocap serve')",
    )
    token: bpy.props.StringProperty(
        name="Token",
        subtype="PASSWORD",
        default="",
        description="Access token of the server. Leave empty to use the one 'vibe-mocap serve' keeps in this "
        "user's config folder (or $VIBE_MOCAP_TOKEN); type the one a server on another machine printed",
    )
    model_data_dir: bpy.props.StringProperty(
        name="Model data folder",
        subtype="DIR_PATH",
        default="",
        description="Folder with SMPL_NEUTRAL.pkl, to import motion files without a server",
    )
    server_program: bpy.props.StringProperty(
        name="vibe-mocap program",
        subtype="FILE_PATH",
        default="",
        description="The vibe-mocap program the add-on starts; empty: the repository's .venv, then PATH",
        update=lambda self, context: server_state.program_picked(),
    )
    keep_server_running: bpy.props.BoolProperty(
        name="Keep the server running when Blender quits",
        default=False,
        description="Leave the server the add-on starts running after Blender quits; the next Blender "
        "session uses it again (from the next start of the server)",
        update=lambda self, context: server_state.set_keep_server(self.keep_server_running),
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "server_url")
        url_warning = server_url_warning(self.server_url)
        if url_warning:
            label_lines(layout, url_warning, icon="ERROR")
        layout.prop(self, "token")
        layout.prop(self, "model_data_dir")
        layout.prop(self, "server_program")
        self._draw_program(layout)
        layout.prop(self, "keep_server_running")
        if not bpy.app.online_access:
            layout.label(text="Online access is off: only a server on this machine can be used.", icon="INFO")

    @staticmethod
    def _draw_program(layout):
        program, error, looking = server_state.program_state()
        row = layout.row()
        if looking:
            row.label(text="Looking for vibe-mocap…", icon="VIEWZOOM")
        elif program is not None:
            row.label(text=f"Found {program.version} in {program.found_in}: {program.path}", icon="CHECKMARK")
        else:
            row.label(text=error or "Not looked for yet.", icon="ERROR" if error else "INFO")
        row.operator("vibe_mocap.find_program", text="", icon="FILE_REFRESH")


class _Defaults:
    server_url, token, model_data_dir = DEFAULT_URL, "", ""
    server_program, keep_server_running = "", False


def get_preferences(context=None):
    """The add-on preferences, or the defaults when the add-on runs outside Blender's add-on list."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon is not None else _Defaults()


def _user_path(subfolder: str, create: bool) -> str:
    """Blender's path for the add-on's ``subfolder``; with ``create``, made first ("" when it cannot be)."""
    try:
        return bpy.utils.extension_path_user(ADDON_PACKAGE, path=subfolder, create=create)
    except ValueError:  # not installed as an extension (source tree, tests)
        return bpy.utils.user_resource("CONFIG", path=f"vibe_mocap/{subfolder}", create=create)


def user_dir(subfolder: str) -> Path:
    """A folder the add-on may write to: the extension's user folder (never the add-on folder).
    VibeError naming it when it cannot be made (Blender then answers "": the files would land in
    Blender's working folder)."""
    folder = _user_path(subfolder, create=True)
    if folder and Path(folder).is_dir():
        return Path(folder)
    raise VibeError(
        f"The add-on cannot make its folder '{_user_path(subfolder, create=False)}': a file may be in its "
        "place, or the folder above it cannot be written. Move that file away or make the folder writable, "
        "then try again."
    )


def resolve_body_model(context=None, warn=None, result_path: str = "") -> BodyModel:
    """The body model for importing files: the model-data folder, else the body model written beside
    the result ``result_path`` (``vibe-mocap infer``'s NAME_body_model.npz), else the one the server
    sent (with one ``warn`` when that was the placeholder's stick figure)."""
    prefs = get_preferences(context)
    folder = bpy.path.abspath(prefs.model_data_dir) if prefs.model_data_dir else ""
    if folder:
        return read_body_model(folder)
    beside = body_model_beside(result_path) if result_path else None
    if beside is not None and beside.is_file():
        return read_body_model(beside)
    path = user_dir("cache") / BODY_MODEL_CACHE
    cached = read_cached_body_model(path)  # unreadable: deleted, VibeError
    if cached is not None:
        note = cached_body_model_note(path)
        if warn is not None and note is not None and note.placeholder:
            warn(
                "The body model is the stick figure of a server without model data (the one it sent last). "
                "Set the model-data folder in the add-on preferences, or install the model data and capture once."
            )
        return cached
    raise VibeError(
        "No body model to build the character from. Pick the body model (.npz) written with the result in "
        "the import's Body model option, set the model-data folder (with SMPL_NEUTRAL.pkl) in the add-on "
        "preferences, or capture once through the server."
    )


classes = (VIBE_AddonPreferences,)


register, unregister = bpy.utils.register_classes_factory(classes)

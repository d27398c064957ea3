"""Outputs of the commands that read the installed model data (infer, live, batch, evaluate, extract-features)
stay out of that folder: a result, report or feature file written over a checkpoint, a regressor or
SMPL_NEUTRAL.pkl would destroy the installed model (105 MB to download again, or the licensed body
model to fetch again), and `vibe-mocap data` manages that folder's files. ``check_output_file`` adds
the checks of one output file of infer or live: its suffix, and no file of another kind replaced."""

from __future__ import annotations

import os
from pathlib import Path

from vibe_blender.core.errors import VibeError
from vibe_blender.core.output_paths import check_output_path
from vibe_blender.core.regular_file import NotRegularFileError, open_regular_file

from ..data.loading import OPTIONAL_FILES, REQUIRED_FILES, resolve_data_dir


def check_output_outside_model_data(
    path: str | Path, what: str, data_dir_flag: str | None, inputs: dict[str, str | Path | None]
) -> Path:
    """``path`` as the place of the output ``what``: VibeError when it lies inside the model-data folder
    of ``data_dir_flag`` (symbolic links resolved), then every check of :func:`check_output_path`
    against ``inputs`` and that folder's model files (a hard link to one may lie elsewhere)."""
    data_dir = refuse_inside_model_data(path, what, data_dir_flag)
    model_files = {f"the model file {name}": data_dir / name for name in REQUIRED_FILES + OPTIONAL_FILES}
    return check_output_path(path, what, {**inputs, **model_files})


def refuse_inside_model_data(path: str | Path, what: str, data_dir_flag: str | None) -> Path:
    """The model-data folder of ``data_dir_flag``; VibeError when ``path`` (a file or a folder of
    outputs) is that folder or lies inside it, symbolic links resolved."""
    data_dir = resolve_data_dir(data_dir_flag)
    if Path(os.path.realpath(path)).is_relative_to(os.path.realpath(data_dir)):
        raise VibeError(
            f"{what[0].upper()}{what[1:]} '{path}' is inside the model-data folder '{data_dir}', whose files this "
            "command reads and 'vibe-mocap data' manages: writing there could destroy the installed model. "
            "Choose a path outside that folder."
        )
    return data_dir


# the first bytes of each kind of output file: a zip archive (numpy's .npz), a pickle (protocol 2 or later)
FILE_MAGIC = {".npz": b"PK", ".pkl": b"\x80"}


def check_output_file(
    named: str | None,
    default: Path | None,
    what: str,
    flag: str,
    data_dir_flag: str | None,
    others: dict[str, Path | None],
    *,
    suffix: str,
    value_optional: bool = False,
) -> Path:
    """The place of the output ``what``: ``named`` (the value of ``flag``), else ``default`` (None: the
    flag has none, and is given), after every check of :func:`check_output_outside_model_data` against
    ``others``. VibeError unless its name ends in ``suffix``, when a file is already at the default (the
    user did not name it: another video of the same name made it, say), and when a file of another kind
    is there (a video: writing would destroy it). ``value_optional``: ``flag [PATH]`` takes whatever
    follows it, a shell glob's first video too."""
    path = check_output_outside_model_data(Path(named) if named else default, what, data_dir_flag, others)
    if path.suffix != suffix:
        hint = (
            f" ({flag} takes the argument after it as its path: give a {suffix} path, or put {flag} after the video)"
            if value_optional
            else ""
        )
        raise VibeError(f"{what[0].upper()}{what[1:]} must end in {suffix}; got '{path}'{hint}.")
    if not named and os.path.lexists(path):
        raise VibeError(
            f"{what[0].upper()}{what[1:]} '{path}' (the default name) already exists, and infer replaces a file "
            f"only when you name it. To keep that file, name this output ({flag} PATH) or move the file away; "
            f"to replace it, give {flag} '{path}'."
        )
    if not _holds_nothing_else(path, FILE_MAGIC[suffix]):
        raise VibeError(
            f"{what[0].upper()}{what[1:]} '{path}' already exists and is not a {suffix} file: writing it would "
            "destroy that file. Choose another name, or move the file away."
        )
    return path


def _holds_nothing_else(path: Path, magic: bytes) -> bool:
    """Whether no regular file is at ``path``, or one that is empty or starts with ``magic`` (a pipe or a
    device is not read: reading one could block; the file checked is the file read)."""
    try:
        with open_regular_file(path) as f:
            return f.read(len(magic)) in (b"", magic)
    except (FileNotFoundError, NotRegularFileError):
        return True

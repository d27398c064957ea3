"""Outputs of the commands that read the installed model data (infer, live, batch, evaluate, extract-features)
stay out of that folder: a result, report or feature file written over a checkpoint, a regressor or
SMPL_NEUTRAL.pkl would destroy the installed model (105 MB to download again, or the licensed body
model to fetch again), and `vibe-mocap data` manages that folder's files."""

from __future__ import annotations

import os
from pathlib import Path

from vibe_blender.core.errors import VibeError
from vibe_blender.core.output_paths import check_output_path

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

"""Find and read the body model the character is built from: a file or the model-data folder."""

from __future__ import annotations

from pathlib import Path

from .errors import VibeError
from .smpl_model import BodyModel, load_body_model, load_smpl_pkl

SMPL_FILE = "SMPL_NEUTRAL.pkl"
BODY_MODEL_NPZ = "body_model.npz"


def read_body_model(path: str | Path) -> BodyModel:
    """A body-model ``.npz`` (from the server), an SMPL ``.pkl``, or a model-data folder holding
    SMPL_NEUTRAL.pkl (or body_model.npz) -> BodyModel."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in (SMPL_FILE, BODY_MODEL_NPZ):
            if (path / name).is_file():
                return read_body_model(path / name)
        raise VibeError(
            f"The model-data folder '{path}' has no {SMPL_FILE}. Install the model data with "
            "'vibe-mocap data install', or point the add-on preferences at the right folder."
        )
    if not path.is_file():
        raise VibeError(
            f"The body model '{path}' does not exist. Give an SMPL_NEUTRAL.pkl, a body-model .npz "
            "or the model-data folder."
        )
    if path.suffix.lower() == ".pkl":
        return load_smpl_pkl(path)
    return load_body_model(path)

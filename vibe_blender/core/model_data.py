"""Find and read the body model the character is built from: a file, the model-data folder, or the
one the server sent, cached on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import VibeError
from .smpl_model import BodyModel, load_body_model, load_smpl_pkl

if TYPE_CHECKING:
    from .client import ServerClient, Stop

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


def read_cached_body_model(path: str | Path) -> BodyModel | None:
    """The body model the server sent, cached at ``path``; None when none is cached. A cached file that
    does not read is deleted, so that the next capture or live session downloads it again, and one
    VibeError says so."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return load_body_model(path)
    except VibeError as err:
        try:
            path.unlink(missing_ok=True)
        except OSError as unlink_err:
            raise VibeError(
                f"The body model cached from the server, '{path}', cannot be read ({err}) nor deleted "
                f"({unlink_err.strerror or unlink_err}); delete it, then capture again."
            ) from err
        raise VibeError(
            f"The body model cached from the server was unreadable and was deleted ({err}). Capture once "
            "through the server to download it again, or set the model-data folder in the add-on preferences."
        ) from err


def ensure_body_model(client: ServerClient, path: str | Path, *, should_stop: Stop | None = None) -> Path:
    """``path`` holding a readable body model: the one cached there, else (none cached, or the cached
    one does not read and was deleted) the server's, downloaded once and checked before it is cached."""
    path = Path(path)
    try:
        if read_cached_body_model(path) is not None:
            return path
    except VibeError:
        pass  # unreadable: downloaded again, once (the download replaces it only with a readable one)
    return client.download_body_model(path, should_stop=should_stop)

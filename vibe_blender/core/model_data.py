"""Find and read the body model the character is built from: a file, the model-data folder, or the
one the server sent, cached on this machine.

The cached one is tied to the server's model: beside it, ``body_model.json`` notes the fingerprint
the server's ``/health`` gave for it (``body_model``) and whether it was the synthetic placeholder's;
a server whose fingerprint differs (model data installed since, another server) sends it again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import safe_json
from .errors import VibeError
from .regular_file import open_regular_file
from .smpl_model import BodyModel, load_body_model, load_smpl_pkl
from .user_dirs import write_private_file

if TYPE_CHECKING:
    from .client import ServerClient, Stop

# the official model data's files, as the server's model-data folder holds them ('vibe-mocap data
# install'); the add-on reads the body model (SMPL_FILE) from there too
SMPL_FILE = "SMPL_NEUTRAL.pkl"
EXTRA_REGRESSOR = "J_regressor_extra.npy"
H36M_REGRESSOR = "J_regressor_h36m.npy"
MEAN_PARAMS = "smpl_mean_params.npz"
SPIN_CHECKPOINT = "spin_model_checkpoint.pth.tar"
VIBE_CHECKPOINT = "vibe_model_wo_3dpw.pth.tar"
VIBE_CHECKPOINT_3DPW = "vibe_model_w_3dpw.pth.tar"
YOLO_WEIGHTS = "yolov3.weights"
# what only the server reads: a folder holding none of them holds body models only
SERVER_FILES = (
    EXTRA_REGRESSOR,
    H36M_REGRESSOR,
    MEAN_PARAMS,
    SPIN_CHECKPOINT,
    VIBE_CHECKPOINT,
    VIBE_CHECKPOINT_3DPW,
    YOLO_WEIGHTS,
)
BODY_MODEL_NPZ = "body_model.npz"
PLACEHOLDER_MODEL = "synthetic placeholder"  # the model name of a server without model data (--synthetic)
NO_MODEL_PREFIX = "none ("  # /health's model of a server that loaded none: "none (model data missing)"


def runs_no_model(model: str) -> bool:
    """Whether /health's ``model`` says the server loaded none (every job would be refused)."""
    return model.startswith(NO_MODEL_PREFIX)


FINGERPRINT_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class ServedBodyModel:
    """What a server's /health says of the body model it sends."""

    fingerprint: str | None  # None: the server does not say (servers before the fingerprint)
    placeholder: bool  # the server runs the synthetic placeholder: its body model is the stick figure

    @classmethod
    def from_health(cls, health: dict) -> ServedBodyModel:
        """From a /health answer; a fingerprint of another shape counts as none."""
        fingerprint = health.get("body_model")
        if not (isinstance(fingerprint, str) and FINGERPRINT_PATTERN.fullmatch(fingerprint)):
            fingerprint = None
        return cls(fingerprint, health.get("model") == PLACEHOLDER_MODEL)


def body_model_beside(result_path: str | Path) -> Path:
    """RESULT_body_model.npz beside RESULT.npz: where ``vibe-mocap infer --body-model`` writes a result's
    body model by default, and where an import looks for it."""
    result_path = Path(result_path)
    return result_path.with_name(result_path.stem + "_body_model.npz")


def read_body_model(path: str | Path) -> BodyModel:
    """A body-model ``.npz`` (from the server), an SMPL ``.pkl``, or a model-data folder holding
    SMPL_NEUTRAL.pkl (or body_model.npz) -> BodyModel."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in (SMPL_FILE, BODY_MODEL_NPZ):
            if (path / name).exists() and not (path / name).is_dir():  # a FIFO or device: its reader says so
                return read_body_model(path / name)
        raise VibeError(
            f"The model-data folder '{path}' has no {SMPL_FILE}. Install the model data with "
            "'vibe-mocap data install', or give the folder that holds it (the add-on's Model data folder "
            "preference; --model-dir on the command line)."
        )
    if not path.exists():
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


def body_model_note_path(path: str | Path) -> Path:
    """The note beside a cached body model: what the server said of it (``body_model.json``)."""
    return Path(path).with_suffix(".json")


def cached_body_model_note(path: str | Path) -> ServedBodyModel | None:
    """What the server said of the body model cached at ``path`` when it sent it; None when nothing
    was noted (cached by an earlier version) or the note does not read."""
    try:
        with open_regular_file(body_model_note_path(path)) as file:
            note = safe_json.loads(file.read(4096))
        fingerprint, placeholder = note["fingerprint"], note["placeholder"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(placeholder, bool):
        return None
    if not (isinstance(fingerprint, str) and FINGERPRINT_PATTERN.fullmatch(fingerprint)):
        fingerprint = None
    return ServedBodyModel(fingerprint, placeholder)


def _still_the_servers(note: ServedBodyModel | None, served: ServedBodyModel) -> bool:
    """Whether the cached body model (``note``: what was said of it) is the one the server sends now."""
    if served.fingerprint is not None:
        return note is not None and note.fingerprint == served.fingerprint
    # a server that does not say: the cached one is kept, unless it came from the placeholder and the
    # server runs the real model now (or the other way round)
    return note is None or note.placeholder == served.placeholder


def load_served_body_model(client: ServerClient, path: str | Path, *, should_stop: Stop | None = None) -> BodyModel:
    """The body model the server sends, cached at ``path``: the one cached there when the server's
    /health gives the fingerprint noted beside it (or gives none: a server before the fingerprint),
    else the server's, downloaded and checked before it replaces the cached one. A cached one that does
    not read was deleted and is downloaded again, once. The file returned is read once: the cached one
    by the check that it reads, a download by the download's own check (a cached one the server no
    longer sends is read too, before it is replaced). :func:`cached_body_model_note` says afterwards
    whether it is the synthetic placeholder's."""
    path = Path(path)
    served = ServedBodyModel.from_health(client.health(should_stop=should_stop))
    try:
        cached = read_cached_body_model(path)
    except VibeError:
        cached = None  # unreadable and deleted: downloaded again (only a readable one replaces it)
    noted = cached_body_model_note(path) if cached is not None else None
    if cached is not None and _still_the_servers(noted, served):
        if noted is not None and noted.placeholder != served.placeholder:
            # the same body model, from a server that runs the placeholder now and did not then (or the
            # other way round): the note says what this server runs
            _note_served(path, served)
        return cached
    body_model_note_path(path).unlink(missing_ok=True)  # never a note about another file than the one beside it
    downloaded = client.download_body_model(path, should_stop=should_stop)
    _note_served(path, served)
    return downloaded


def _note_served(path: Path, served: ServedBodyModel) -> None:
    """Note beside the body model cached at ``path`` what the server said of it (``served``)."""
    fields = {"fingerprint": served.fingerprint, "placeholder": served.placeholder}
    try:
        write_private_file(body_model_note_path(path), json.dumps(fields).encode())
    except OSError:
        pass  # no note: the next capture downloads it again

"""Loading the model data, in one place: where the folder is, which files it must hold, reading each
with one clear error, and building the VIBE network from them with the official checkpoints.

    resolve_data_dir(flag)            -> the folder: flag > $VIBE_DATA_DIR > the user-data folder
    load_model(folder, device=)       -> VIBE in eval mode: SMPL, the extra-joint and H36M
                                         regressors, the mean parameters, SPIN's backbone and VIBE's
                                         encoder + regressor (its embedded SMPL copy takes precedence
                                         over SMPL_NEUTRAL.pkl, as in the original)
    load_for_inference(folder, ...)   -> the same, or, when asked, the clearly labelled synthetic
                                         placeholder (random weights, model name "synthetic placeholder")

``model/`` holds only the ``nn.Module``s and gets arrays from here, never paths; ``pipeline/``
receives the loaded model; ``data/bundle.py`` installs and checks the folder with these readers.
"""

from __future__ import annotations

import os
import re
import shlex
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vibe_blender.core.errors import VibeError
from vibe_blender.core.model_data import (
    EXTRA_REGRESSOR,
    H36M_REGRESSOR,
    MEAN_PARAMS,
    SMPL_FILE,
    SPIN_CHECKPOINT,
    VIBE_CHECKPOINT,
    VIBE_CHECKPOINT_3DPW,
    YOLO_WEIGHTS,
)
from vibe_blender.core.safe_npz import read_npy, read_npz
from vibe_blender.core.smpl_model import load_smpl_pkl
from vibe_blender.core.user_dirs import user_dir

from . import synthetic

if TYPE_CHECKING:
    import torch

    from ..model.vibe import VIBE

# torch and the network are imported inside the functions that build it: every `vibe-mocap` command
# imports this module (through data/bundle.py) and most of them never need torch.

ENV_VAR = "VIBE_DATA_DIR"
YOLO_FLOAT_COUNT = 62_001_757  # YOLOv3-416's parameters, float32, after the Darknet header
YOLO_WEIGHTS_BYTES = 20 + 4 * YOLO_FLOAT_COUNT  # 248,007,048: the official file, format 0.2 (the longest header)
YOLO_FORMAT = (0, 2)  # the header's major, minor
YOLO_FORMATS = ((0, 1), YOLO_FORMAT)  # 0.1: the same parameters after a 4-byte seen counter
MODEL_FILES = (SMPL_FILE, EXTRA_REGRESSOR, MEAN_PARAMS)  # + the two checkpoints
NETWORK_FILES = MODEL_FILES + (SPIN_CHECKPOINT, VIBE_CHECKPOINT)  # what load_model reads from the folder
REQUIRED_FILES = (
    SMPL_FILE,
    EXTRA_REGRESSOR,
    H36M_REGRESSOR,
    MEAN_PARAMS,
    SPIN_CHECKPOINT,
    VIBE_CHECKPOINT,
    YOLO_WEIGHTS,
)
OPTIONAL_FILES = (VIBE_CHECKPOINT_3DPW,)
INSTALL_COMMAND = "vibe-mocap data install PATH_OR_URL"
INSTALL_HINT = (
    "Get the official model data (vibe_data.zip from the VIBE project's prepare_data script, "
    f"with yolov3.weights) and run '{INSTALL_COMMAND}'."
)
SYNTHETIC_MODEL_NAME = "synthetic placeholder"
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")  # what every --device takes (auto: a GPU when there is one)


# --------------------------------------------------------------------------------------------
# The folder
# --------------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """The platform's per-user data folder for VIBE Mocap."""
    return user_dir("data")


def install_command(data_dir: Path) -> str:
    """INSTALL_COMMAND for ``data_dir``: it names the folder unless it is the one the command finds by
    itself (it would install into that one instead)."""
    if Path(data_dir) == resolve_data_dir():
        return INSTALL_COMMAND
    return f"{INSTALL_COMMAND} --data-dir {shlex.quote(str(data_dir))}"


def install_hint(data_dir: Path) -> str:
    """INSTALL_HINT for ``data_dir`` (see :func:`install_command`)."""
    return INSTALL_HINT.replace(INSTALL_COMMAND, install_command(data_dir))


def resolve_data_dir(flag: str | os.PathLike | None = None) -> Path:
    """flag > $VIBE_DATA_DIR > :func:`default_data_dir`."""
    if flag:
        return Path(flag).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return default_data_dir()


def named_data_dir_error(flag: str | os.PathLike | None, data_dir: Path) -> VibeError | None:
    """For a folder without model data (see :func:`model_data_problem`): the VibeError to raise when the
    user named it (``flag`` or $VIBE_DATA_DIR), None for the default folder, where the synthetic
    placeholder may stand in."""
    source = "--data-dir" if flag else f"${ENV_VAR}" if os.environ.get(ENV_VAR) else None
    if source is None:
        return None
    if not data_dir.exists():
        state = "does not exist; check the path, or install the model data there"
    elif not data_dir.is_dir():
        state = "is a file, not a folder; check the path"
    else:
        state = "holds none of the model files; install them there"
    return VibeError(
        f"The model-data folder '{data_dir}' (from {source}) {state}: "
        f"vibe-mocap data install PATH_OR_URL --data-dir '{data_dir}' (PATH_OR_URL: the official vibe_data.zip "
        "with yolov3.weights). The synthetic placeholder model stands in only for the default folder, with "
        f"neither --data-dir nor ${ENV_VAR} set."
    )


def checked_data_dir(flag: str | os.PathLike | None) -> Path:
    """The model-data folder for ``flag`` (see :func:`resolve_data_dir`); VibeError when the user named a
    folder (``flag`` or $VIBE_DATA_DIR) that holds no model data, where a command would otherwise run
    the synthetic placeholder without being asked to."""
    data_dir = resolve_data_dir(flag)
    if model_data_problem(data_dir) is not None:
        named = named_data_dir_error(flag, data_dir)
        if named is not None:
            raise named
    return data_dir


def missing_files(data_dir: Path, names: Iterable[str]) -> list[str]:
    """The ``names`` that are not regular files in data_dir."""
    return [n for n in names if not (data_dir / n).is_file()]


def darknet_header_bytes(major: int, minor: int) -> int:
    """The length of a Darknet weights file's header: int32 major, minor and revision, then a ``seen``
    counter of 8 bytes when ``major*10 + minor >= 2`` and both < 1000, else 4 (Darknet's own rule)."""
    wide_seen = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    return 12 + (8 if wide_seen else 4)


def yolo_weights_problem(header: bytes, size: int) -> str | None:
    """None when a file of ``size`` bytes beginning with ``header`` (its first 8 bytes or more) is laid
    out as the official yolov3.weights: a Darknet header of a format YOLOv3 is written in, then exactly
    YOLOv3-416's parameters; else why it is not. The one rule of ``data check`` and the detector."""
    if len(header) < 8 or size < 8:
        return f"{size:,} bytes, too short to be Darknet weights"
    major, minor = struct.unpack("<ii", header[:8])
    if (major, minor) not in YOLO_FORMATS:
        return (
            f"its header says Darknet format {major}.{minor}, where the official yolov3.weights has "
            f"{YOLO_FORMAT[0]}.{YOLO_FORMAT[1]}: it is damaged, or the weights of another model"
        )
    expected = darknet_header_bytes(major, minor) + 4 * YOLO_FLOAT_COUNT
    if size == expected:
        return None
    hint = (
        "it is truncated (an interrupted download?)"
        if size < expected
        else "it holds more parameters than YOLOv3-416 (a different Darknet model?)"
    )
    return (
        f"{size:,} bytes, where YOLOv3's official weights in Darknet format {major}.{minor} have {expected:,}: {hint}"
    )


def require_files(
    data_dir: Path, names: Iterable[str], extra_paths: Iterable[str | os.PathLike] = (), flag: str = "--data-dir"
) -> None:
    """Raise one VibeError listing every missing file (``names`` in data_dir, plus ``extra_paths``);
    ``flag``: the command's option that names the folder."""
    missing = [str(data_dir / n) for n in missing_files(data_dir, names)]
    missing += [str(p) for p in extra_paths if not Path(p).is_file()]
    if missing:
        raise VibeError(
            f"Model data missing: {', '.join(missing)}. {install_hint(data_dir)} "
            f"(Data folder: {data_dir}; change it with {flag} or ${ENV_VAR}.)"
        )


def model_data_problem(data_dir: Path) -> str | None:
    """None when the files the network needs are there; when the folder holds none of the model files
    (nothing installed yet), the sentence saying how to install them, for the caller to raise or to
    run the placeholder on. Some model files but not all is an unfinished or damaged install, never a
    reason for the placeholder: VibeError naming each missing file."""
    try:
        require_files(data_dir, NETWORK_FILES)
    except VibeError as err:
        if any(os.path.lexists(data_dir / name) for name in REQUIRED_FILES + OPTIONAL_FILES):
            raise _incomplete_data_error(data_dir) from None
        return str(err)
    return None


def placeholder_note(data_dir: Path) -> str | None:
    """What a command that may run the placeholder says before it starts (None when the model data is
    installed in ``data_dir``)."""
    if model_data_problem(data_dir) is None:
        return None
    return (
        f"NOTE: the official model data is not installed in {data_dir}, so this run uses a SYNTHETIC "
        "PLACEHOLDER model with random weights: the motion is meaningless, and people are found with OpenCV's "
        f"HOG detector, which also finds people who are not there. {install_hint(data_dir)}"
    )


def _incomplete_data_error(data_dir: Path) -> VibeError:
    missing = "\n".join(
        f"  {name}: " + ("not a regular file" if os.path.lexists(data_dir / name) else "missing")
        for name in missing_files(data_dir, REQUIRED_FILES)
    )
    return VibeError(
        f"The model data in {data_dir} is incomplete:\n{missing}\nInstall the official files "
        f"(vibe_data.zip, with yolov3.weights) with 'vibe-mocap data install PATH_OR_URL --data-dir {data_dir}' "
        f"and see each file's state with 'vibe-mocap data check --data-dir {data_dir}'. (The synthetic "
        "placeholder model stands in only when none of the model files are installed.)"
    )


def synthetic_cache_dir() -> Path:
    """Where the synthetic placeholder bundle is written once (user cache folder)."""
    return user_dir("cache") / "synthetic-placeholder"


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda:0' when CUDA is available, else 'cpu'; other values are checked."""
    import torch  # start-up: see the note at the top

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if not DEVICE_NAME.fullmatch(device):
        raise VibeError(f"Unknown device '{device}'; use auto, cpu or cuda[:N].")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VibeError(
            f"Device '{device}' was asked for but this PyTorch build sees no CUDA GPU; use the CPU: --device cpu "
            "(device='cpu' from Python)."
        )
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise VibeError(
            f"Device '{device}' was asked for but only {count} CUDA GPU(s) are visible "
            f"(cuda:0 to cuda:{count - 1}); pick one of those."
        )
    return device


# --------------------------------------------------------------------------------------------
# Reading the files
# --------------------------------------------------------------------------------------------


def load_mean_params(path: str | Path, *, hint: str = "") -> dict[str, np.ndarray]:
    """``smpl_mean_params.npz`` -> {'pose': (144,), 'shape': (10,), 'cam': (3,)} float32 (bounded read);
    ``hint`` ends each refusal (:func:`install_hint`)."""
    advice = f" {hint}" if hint else ""
    arrays = read_npz(
        path, names=("pose", "shape", "cam"), label=f"'{path}' (smpl_mean_params.npz)", hint=hint, allow_text=False
    )
    for k, n in (("pose", 144), ("shape", 10), ("cam", 3)):
        if k not in arrays:
            raise VibeError(f"'{path}' is not a valid smpl_mean_params.npz: it has no '{k}'.{advice}")
        problem = _array_problem(arrays[k], (n,))
        if problem:
            raise VibeError(f"'{path}': '{k}' {problem}.{advice}")
    return {k: a.astype(np.float32) for k, a in arrays.items()}


def load_joint_regressor(path: str | Path, num_joints: int, *, hint: str = "") -> np.ndarray:
    """A (num_joints, 6890) joint regressor ``.npy`` -> float32, with a clear error when it is not one
    (bounded read); ``hint`` ends each refusal (:func:`install_hint`)."""
    reg = read_npy(path, label=f"the joint regressor '{path}'", hint=hint)
    problem = _array_problem(reg, (num_joints, 6890))
    if problem:
        advice = f" {hint}" if hint else ""
        raise VibeError(f"'{path}' {problem}.{advice}")
    return reg.astype(np.float32)


def _array_problem(array: np.ndarray, shape: tuple[int, ...]) -> str | None:
    """None for an array of ``shape`` and finite numbers, else what is wrong with it."""
    if array.shape != shape:
        return f"has shape {array.shape}, expected {shape}"
    if not np.all(np.isfinite(array)):
        return "holds values that are not finite numbers (NaN or infinite): it is damaged"
    return None


# --------------------------------------------------------------------------------------------
# Building the network
# --------------------------------------------------------------------------------------------


def build_model(data_dir: str | Path) -> VIBE:
    """The VIBE architecture with SMPL, extra-joint regressor and mean parameters from ``data_dir``
    (random network weights)."""
    from ..model.smpl import NUM_EXTRA_JOINTS  # start-up: see the note at the top
    from ..model.vibe import VIBE  # start-up: see the note at the top

    data_dir = Path(data_dir)
    hint = install_hint(data_dir)
    return VIBE(
        load_smpl_pkl(data_dir / SMPL_FILE, hint=hint),
        load_joint_regressor(data_dir / EXTRA_REGRESSOR, NUM_EXTRA_JOINTS, hint=hint),
        load_mean_params(data_dir / MEAN_PARAMS, hint=hint),
    )


def load_model(
    data_dir: str | os.PathLike | None = None,
    *,
    vibe_checkpoint: str | os.PathLike | None = None,
    spin_checkpoint: str | os.PathLike | None = None,
    device: str = "cpu",
) -> VIBE:
    """The VIBE network in eval mode with the official checkpoints loaded unchanged (see the module
    docstring). data_dir None: $VIBE_DATA_DIR, then the platform default; the checkpoint paths
    override the files in data_dir."""
    import torch  # start-up: see the note at the top

    from .. import checkpoints  # start-up: imports torch

    device = resolve_device(device)  # checked first: a GPU that is not there is one message, not torch's assert
    data_dir = resolve_data_dir(data_dir)
    vibe_checkpoint = Path(vibe_checkpoint) if vibe_checkpoint else data_dir / VIBE_CHECKPOINT
    spin_checkpoint = Path(spin_checkpoint) if spin_checkpoint else data_dir / SPIN_CHECKPOINT
    require_files(data_dir, MODEL_FILES, extra_paths=(vibe_checkpoint, spin_checkpoint))

    model = build_model(data_dir)
    checkpoints.load_spin_into(model, checkpoints.load_spin_checkpoint(spin_checkpoint), source=spin_checkpoint)
    vibe = checkpoints.load_vibe_checkpoint(vibe_checkpoint)
    checkpoints.load_vibe_into(model, vibe["gen_state_dict"], source=vibe_checkpoint)
    model.model_name = vibe_checkpoint.name.removesuffix(".pth.tar")
    model.performance = vibe.get("performance")
    h36m = data_dir / H36M_REGRESSOR
    model.register_buffer(
        "j_regressor_h36m",
        torch.from_numpy(load_joint_regressor(h36m, 17, hint=install_hint(data_dir))) if h36m.exists() else None,
        persistent=False,
    )
    return model.to(device).eval()


def load_training_model(
    data_dir: str | os.PathLike | None = None,
    *,
    init_from_spin: bool = False,
    vibe_checkpoint: str | os.PathLike | None = None,
) -> VIBE:
    """VIBE for training and evaluation (its backbone unused: they run on precomputed features) with SMPL
    from the model-data folder; the regressor head from SPIN's checkpoint (as the original's
    ``PRETRAINED_REGRESSOR``) and/or the encoder and regressor from a VIBE checkpoint."""
    from .. import checkpoints  # start-up: imports torch

    data_dir = resolve_data_dir(data_dir)
    require_files(data_dir, MODEL_FILES)
    model = build_model(data_dir)
    if init_from_spin:
        spin_path = data_dir / SPIN_CHECKPOINT
        spin_state = checkpoints.load_spin_checkpoint(spin_path)
        checkpoints.check_spin_head(spin_state, spin_path)
        # SPIN's head (fc1, fc2, dec*, init_*) has the regressor's own key names
        model.regressor.load_state_dict({k: spin_state[k] for k in checkpoints.SPIN_HEAD_KEYS}, strict=False)
    if vibe_checkpoint:
        state = checkpoints.load_vibe_checkpoint(vibe_checkpoint)["gen_state_dict"]
        checkpoints.load_vibe_into(model, state, source=vibe_checkpoint)
    return model


def load_h36m_regressor(data_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """(17, 6890) ``J_regressor_h36m.npy`` of the model-data folder: the 14 evaluation joints."""
    import torch  # start-up: see the note at the top

    data_dir = resolve_data_dir(data_dir)
    require_files(data_dir, (H36M_REGRESSOR,))
    return torch.from_numpy(load_joint_regressor(data_dir / H36M_REGRESSOR, 17, hint=install_hint(data_dir)))


@dataclass
class LoadedModel:
    """What inference needs from loading: the network on its device and where its data came from."""

    model: VIBE
    model_name: str  # the checkpoint's name, or SYNTHETIC_MODEL_NAME
    data_dir: Path  # the folder the model came from (the detectors' weights too)
    device: str  # resolved: 'cpu' or 'cuda:N'


def load_for_inference(
    data_dir: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    allow_synthetic: bool = False,
    synthetic_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> LoadedModel:
    """The model for the data in ``data_dir`` (flag > $VIBE_DATA_DIR > platform default).

    When no model file is installed: VibeError saying how to install them, or, with
    ``allow_synthetic``, the clearly labelled random-weight placeholder (written once to
    ``synthetic_dir``) whose results carry ``model_name == "synthetic placeholder"``. When only some
    are (see :func:`model_data_problem`): VibeError naming each missing or invalid file.
    """
    device = resolve_device(device)
    data_dir = resolve_data_dir(data_dir)
    problem = model_data_problem(data_dir)
    if problem is None:
        model = load_model(data_dir, device=device)
        # the placeholder's own folder named as the model data: its results are labelled all the same
        name = SYNTHETIC_MODEL_NAME if synthetic.is_placeholder_folder(data_dir) else model.model_name
        return LoadedModel(model=model, model_name=name, data_dir=data_dir, device=device)
    if not allow_synthetic:
        raise VibeError(problem)
    data_dir = Path(synthetic_dir or synthetic_cache_dir())
    model = _load_placeholder(data_dir, device, log)
    return LoadedModel(model=model, model_name=SYNTHETIC_MODEL_NAME, data_dir=data_dir, device=device)


def _load_placeholder(folder: Path, device: str, log: Callable[[str], None] | None) -> VIBE:
    """The placeholder in ``folder``, installed whole first when it is not there. Ours, not the user's
    data: one that does not load, or that an older version wrote, is written again, once, instead of
    asking the user to download it."""
    identity = _ensure_placeholder(folder, log)
    try:
        model = load_model(folder, device=device)
        if not synthetic.repeats_a_face(model.regressor.smpl.faces_tensor.cpu().numpy()):
            return model
        problem = "from an older version (its body repeats faces, which Blender deletes)"
    except VibeError:
        problem = "damaged"
    if log:
        log(f"The synthetic placeholder model in {folder} is {problem}; writing it again.")
    synthetic.discard_synthetic_bundle(folder, identity, log=log)  # unless replaced meanwhile
    _ensure_placeholder(folder, log)
    try:
        return load_model(folder, device=device)
    except VibeError as err:
        raise VibeError(
            f"The synthetic placeholder model, written again to '{folder}', still cannot be loaded "
            f"(a failing disk, or a bug to report): {err}"
        ) from err


def _ensure_placeholder(folder: Path, log: Callable[[str], None] | None) -> str | None:
    """Install the placeholder in ``folder`` unless all its files are there (an incomplete one, left by
    an older version cut short, is discarded first; one that another process installs meanwhile is
    kept); its :func:`synthetic.folder_identity`."""
    identity = synthetic.folder_identity(folder)  # before the check: only what was checked is discarded
    if missing_files(folder, NETWORK_FILES):
        if identity is not None:
            synthetic.discard_synthetic_bundle(folder, identity, log=log)
        synthetic.install_synthetic_bundle(folder, log=log)
        identity = synthetic.folder_identity(folder)
    return identity

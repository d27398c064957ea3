"""The model-data bundle: installing and checking it. Where it lives, its file names and reading the
files are :mod:`vibe_server.data.loading`'s (re-exported here under the same names).

The files are licensed to each user (SMPL) or large (weights), so they never ship with VIBE Mocap:
``vibe-mocap data install SOURCE`` copies them from the official ``vibe_data.zip``, a folder or a
URL into the data folder, and ``vibe-mocap data check`` says, file by file, what is present,
missing or invalid. The folder is chosen by: command-line flag > ``$VIBE_DATA_DIR`` > the
platform's user-data folder (see :func:`default_data_dir`).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from vibe_blender.core.errors import VibeError
from vibe_blender.core.smpl_model import load_smpl_pkl

# The folder, the file names and the readers are the loader's; install and check use the same ones.
from .loading import (  # noqa: F401 - re-exported: `bundle.X` is the install/check side's name for them
    ENV_VAR,
    EXTRA_REGRESSOR,
    H36M_REGRESSOR,
    INSTALL_HINT,
    MEAN_PARAMS,
    MODEL_FILES,
    OPTIONAL_FILES,
    REQUIRED_FILES,
    SMPL_PKL,
    SPIN_CHECKPOINT,
    VIBE_CHECKPOINT,
    VIBE_CHECKPOINT_3DPW,
    YOLO_WEIGHTS,
    YOLO_WEIGHTS_BYTES,
    default_data_dir,
    load_joint_regressor,
    load_mean_params,
    require_files,
    resolve_data_dir,
)

# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------

@dataclass
class FileStatus:
    name: str
    status: str          # "present" | "missing" | "invalid"
    detail: str = ""


def _check_smpl(path: Path) -> str:
    model = load_smpl_pkl(path)
    if model.num_vertices != 6890:
        raise VibeError(f"{model.num_vertices} vertices, expected 6890 (SMPL)")
    return f"SMPL, {model.num_vertices} vertices, {model.faces.shape[0]} faces"


def _check_regressor(num_joints: int) -> Callable[[Path], str]:
    def check(path: Path) -> str:
        load_joint_regressor(path, num_joints)
        return f"({num_joints}, 6890)"
    return check


def _check_mean_params(path: Path) -> str:
    load_mean_params(path)
    return "pose, shape, cam"


def _check_spin(path: Path) -> str:
    from .. import checkpoints  # start-up: torch loads only when a checkpoint is checked
    from ..model.backbone import ResNet50Features

    state = checkpoints.load_spin_checkpoint(path)
    checkpoints.load_spin_into(SimpleNamespace(backbone=ResNet50Features()), state, source=path)
    return f"{len(state)} tensors"


def _check_vibe(path: Path) -> str:
    from .. import checkpoints  # start-up: torch loads only when a checkpoint is checked

    ckpt = checkpoints.load_vibe_checkpoint(path)
    checkpoints.check_generator_keys(ckpt["gen_state_dict"], source=path)
    perf = ckpt.get("performance")
    return f"{len(ckpt['gen_state_dict'])} tensors" + (f", PA-MPJPE {float(perf):.2f}" if perf is not None else "")


def _check_yolo(path: Path) -> str:
    size = path.stat().st_size
    if size != YOLO_WEIGHTS_BYTES:
        raise VibeError(f"{size:,} bytes, expected {YOLO_WEIGHTS_BYTES:,} (the official YOLOv3-416 COCO weights)")
    return "Darknet YOLOv3, size OK"


CHECKS: dict[str, Callable[[Path], str]] = {
    SMPL_PKL: _check_smpl, EXTRA_REGRESSOR: _check_regressor(9), H36M_REGRESSOR: _check_regressor(17),
    MEAN_PARAMS: _check_mean_params, SPIN_CHECKPOINT: _check_spin, VIBE_CHECKPOINT: _check_vibe,
    VIBE_CHECKPOINT_3DPW: _check_vibe, YOLO_WEIGHTS: _check_yolo,
}


def check_bundle(data_dir: Path, names=REQUIRED_FILES + OPTIONAL_FILES) -> list[FileStatus]:
    """Each file's status; 'invalid' carries the reason."""
    statuses = []
    for name in names:
        path = data_dir / name
        if not path.is_file():
            statuses.append(FileStatus(name, "missing", "optional" if name in OPTIONAL_FILES else ""))
            continue
        try:
            statuses.append(FileStatus(name, "present", CHECKS[name](path)))
        except VibeError as err:
            statuses.append(FileStatus(name, "invalid", str(err)))
    return statuses


def bundle_ok(statuses: list[FileStatus]) -> bool:
    return all(s.status == "present" for s in statuses if s.name in REQUIRED_FILES)


# --------------------------------------------------------------------------------------------
# Installing
# --------------------------------------------------------------------------------------------

KNOWN_FILES = REQUIRED_FILES + OPTIONAL_FILES


def _download(url: str, dest_dir: Path) -> Path:
    from tqdm import tqdm  # start-up: only a download shows a progress bar

    target = dest_dir / (Path(urllib.request.urlparse(url).path).name or "download.zip")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {target.name}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as err:
        raise VibeError(f"Could not download '{url}': {err}. Download it in a browser and install "
                        "the file with 'vibe-mocap data install FILE'.") from err
    return target


def _copy_atomic(read: Callable, dest: Path) -> None:
    """Write through a temp file in the same folder, so an interrupted install never leaves half a file."""
    tmp = dest.with_name(dest.name + ".partial")
    with read() as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, length=1 << 20)
    os.replace(tmp, dest)


def install(source: str, data_dir: Path, log: Callable[[str], None] = print) -> list[str]:
    """Copy the known model files from ``source`` (zip, folder, single file or http(s) URL) into
    ``data_dir``. Returns the names installed; raises VibeError when nothing usable was found."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".download-") as tmp:
        if source.startswith(("http://", "https://")):
            path = _download(source, Path(tmp))
        else:
            path = Path(source).expanduser()
            if not path.exists():
                raise VibeError(f"'{source}' does not exist. Give the path of vibe_data.zip, of a folder "
                                "holding the model files, or a URL.")
        installed: list[str] = []
        if path.is_dir():
            for name in KNOWN_FILES:
                found = sorted(path.rglob(name))
                if found:
                    _copy_atomic(lambda f=found[0]: open(f, "rb"), data_dir / name)
                    installed.append(name)
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    name = Path(info.filename).name
                    if name in KNOWN_FILES and name not in installed and not info.is_dir():
                        _copy_atomic(lambda i=info: archive.open(i), data_dir / name)
                        installed.append(name)
        elif path.name in KNOWN_FILES:
            _copy_atomic(lambda: open(path, "rb"), data_dir / path.name)
            installed.append(path.name)
        else:
            raise VibeError(f"'{source}' is neither a zip archive, a folder nor one of the model files "
                            f"({', '.join(KNOWN_FILES)}).")
    if not installed:
        raise VibeError(f"'{source}' holds none of the model files ({', '.join(KNOWN_FILES)}).")
    for name in installed:
        log(f"installed {name}")
    return installed

"""AMASS-style motion ``.npz``: ``poses`` (T, 72 | 156 | 165), ``trans`` (T, 3), ``betas`` (>= 10 or
fewer), ``mocap_framerate`` (AMASS) or ``mocap_frame_rate`` (SMPL-X exports); Z-up world, metres.

SMPL-H/SMPL-X pose vectors start with the same 22 body joints as SMPL; SMPL's two hand joints
(22, 23) are taken from the file when it has exactly 72 values and left at rest otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import VibeError
from ..motion import MotionSet, TrackMotion
from ..result_file import FPS_RANGE, check_motion_values, check_range
from ..safe_npz import read_npz
from ..skeleton import ZUP_TO_BLENDER

_NAMES = ("poses", "trans", "betas", "mocap_framerate", "mocap_frame_rate")


def read_amass_npz(path: str | Path, *, fps: float | None = None) -> MotionSet:
    """AMASS-style .npz -> MotionSet with one track (root in the Z-up world). fps: the frame rate
    when the file stores none (its own wins).

    Read through :mod:`..safe_npz` (bounded sizes, plain numbers only); values are checked like a
    result file's (finite, betas within ±10, a frame rate in range).
    """
    path = Path(path)
    arrays = read_npz(path, names=_NAMES, label=f"'{path.name}' as AMASS motion", allow_text=False)
    for key in ("poses", "trans"):
        if key not in arrays:
            raise VibeError(f"'{path.name}' has no '{key}' array; AMASS motion needs poses, trans and betas.")
    poses, trans = arrays["poses"].astype(np.float64), arrays["trans"].astype(np.float64)
    if poses.ndim != 2 or poses.shape[1] < 66 or trans.shape != (len(poses), 3):
        raise VibeError(
            f"'{path.name}': poses {poses.shape} and trans {trans.shape} are not AMASS motion "
            "(expected (T, 72 or more) and (T, 3))."
        )
    betas = np.zeros(10)
    if "betas" in arrays:
        b = arrays["betas"].astype(np.float64).reshape(-1)[:10]
        betas[: len(b)] = b
    frame_ids = np.arange(len(poses), dtype=np.int64)
    check_motion_values(f"'{path.name}'", frame_ids, {"betas": betas}, poses=poses, trans=trans)
    pose = np.zeros((len(poses), 72))
    pose[:, : 72 if poses.shape[1] == 72 else 66] = poses[:, : 72 if poses.shape[1] == 72 else 66]
    stored = arrays.get("mocap_framerate", arrays.get("mocap_frame_rate"))
    has_rate = stored is not None and stored.size == 1
    if not has_rate and fps is None:
        raise VibeError(f"'{path.name}' stores no frame rate (mocap_framerate); give one with the fps option.")
    rate = check_range(f"'{path.name}'", "the frame rate", stored.reshape(-1)[0] if has_rate else fps, *FPS_RANGE)
    track = TrackMotion(
        name=path.stem,
        frame_ids=frame_ids,
        pose=pose,
        trans_m=trans,
        betas=betas,
        source_to_blender=ZUP_TO_BLENDER.copy(),
    )
    return MotionSet(tracks=[track], fps=rate, frame_count=len(pose), source_name=path.stem)

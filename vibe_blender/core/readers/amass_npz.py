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
from ..skeleton import ZUP_TO_BLENDER


def read_amass_npz(path: str | Path, *, fps: float | None = None) -> MotionSet:
    """AMASS-style .npz -> MotionSet with one track (root in the Z-up world)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k in ("poses", "trans", "betas", "mocap_framerate", "mocap_frame_rate")}
    except (OSError, ValueError) as err:
        raise VibeError(f"Cannot read '{path.name}' as AMASS motion: {err}.") from err
    for key in ("poses", "trans"):
        if key not in arrays:
            raise VibeError(f"'{path.name}' has no '{key}' array; AMASS motion needs poses, trans and betas.")
    poses = np.asarray(arrays["poses"], dtype=np.float64)
    trans = np.asarray(arrays["trans"], dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] < 66 or trans.shape != (len(poses), 3):
        raise VibeError(f"'{path.name}': poses {poses.shape} and trans {trans.shape} are not AMASS motion "
                        "(expected (T, 72 or more) and (T, 3)).")
    pose = np.zeros((len(poses), 72))
    pose[:, :72 if poses.shape[1] == 72 else 66] = poses[:, :72 if poses.shape[1] == 72 else 66]
    betas = np.zeros(10)
    if "betas" in arrays:
        b = np.asarray(arrays["betas"], dtype=np.float64).reshape(-1)[:10]
        betas[:len(b)] = b
    rate = arrays.get("mocap_framerate", arrays.get("mocap_frame_rate"))
    rate = float(fps or (rate if rate is not None else 0) or 0)
    if rate <= 0:
        raise VibeError(f"'{path.name}' stores no frame rate (mocap_framerate); give one with the fps option.")
    track = TrackMotion(name=path.stem, frame_ids=np.arange(len(pose), dtype=np.int64), pose=pose,
                        trans_m=trans, betas=betas, source_to_blender=ZUP_TO_BLENDER.copy())
    return MotionSet(tracks=[track], fps=rate, frame_count=len(pose), source_name=path.stem)

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


def read_amass_npz(path: str | Path, *, fps: float | None = None, max_frames: int | None = None) -> MotionSet:
    """AMASS-style .npz -> MotionSet with one track (root in the Z-up world). fps: the frame rate
    when the file stores none (its own wins). max_frames: the most frames the caller takes (an import's
    limit), refused before the stored arrays are converted (float64 is 4 times a stored float16).

    Read through :mod:`..safe_npz` (bounded sizes, plain numbers only); values are checked like a
    result file's (floating-point, finite, rotations within ±1000 rad, translations within ±10 km, betas
    within ±10, a frame rate that is a number in range).
    """
    path = Path(path)
    arrays = read_npz(
        path,
        names=_NAMES,
        label=f"the AMASS motion file '{path.name}'",
        hint="Choose an AMASS-style .npz (poses, trans, betas).",
        allow_text=False,
    )
    for key in ("poses", "trans"):
        if key not in arrays:
            raise VibeError(f"'{path.name}' has no '{key}' array; AMASS motion needs poses, trans and betas.")
    poses, trans = arrays["poses"], arrays["trans"]
    if poses.ndim != 2 or poses.shape[1] < 66 or trans.shape != (len(poses), 3):
        raise VibeError(
            f"'{path.name}': poses {poses.shape} and trans {trans.shape} are not AMASS motion "
            "(expected (T, 72 or more) and (T, 3))."
        )
    if max_frames is not None and len(poses) > max_frames:
        raise VibeError(
            f"'{path.name}' holds {len(poses):,} frames of motion, more than the {max_frames:,} an import takes; "
            "import a shorter capture."
        )
    stored_betas = arrays.get("betas", np.zeros(10)).reshape(-1)[:10]
    frame_ids = np.arange(len(poses), dtype=np.int64)
    # kinds, finiteness and bounds checked on the stored arrays, before any conversion
    check_motion_values(f"'{path.name}'", frame_ids, {"betas": stored_betas}, poses=poses, trans=trans)
    betas = np.zeros(10)
    betas[: len(stored_betas)] = stored_betas
    body = 72 if poses.shape[1] == 72 else 66  # SMPL's hands when the file holds SMPL's 24 joints
    pose = np.zeros((len(poses), 72))
    pose[:, :body] = poses[:, :body]  # converted as copied: only the columns used, never the whole array
    trans = trans.astype(np.float64)
    stored = arrays.get("mocap_framerate", arrays.get("mocap_frame_rate"))
    has_rate = stored is not None and stored.size == 1
    if has_rate and stored.dtype.kind not in "iuf":  # a bool would read as 1 fps
        raise VibeError(f"'{path.name}': the frame rate is stored as {stored.dtype}, not a number; it is damaged.")
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
    return MotionSet(tracks=[track], fps=rate, frame_count=len(pose), source_name=path.stem, fps_stored=has_rate)

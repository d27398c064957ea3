"""Per-track post-processing: raw network output -> ``vibe_blender.core.result_file.Track``, and the
official ``vibe_output.pkl`` export.

Cameras. VIBE predicts a weak-perspective camera ``pred_cam = [s, tx, ty]`` of the 224 px crop
(normalised crop coordinates u = s * (X + tx), in [-1, 1]). The crop covered a square of side
``b = BBOX_SCALE * h`` pixels around the box centre (cx, cy), h = box side. With that side,

    orig_cam = [sx, sy, tx', ty'],  sx = s*b/W,  sy = s*b/H,
               tx' = (cx - W/2) / (W/2) / sx + tx,  ty' = (cy - H/2) / (H/2) / sy + ty.

The official demo un-crops with b = h although it cropped 1.1*h, so its meshes come out 1/1.1 too
small (issue #182). We use b = 1.1*h by default; ``official_uncrop=True`` gives the official numbers.

Root translation. A pinhole camera of focal ``focal_px`` at the image centre sees the point
X + T at x = W/2 + focal_px * (X + Tx) / Tz. Matching it to the un-cropped weak-perspective camera,
x = cx + (b/2) * s * (X + tx), gives

    trans_cam_m = [tx', ty', 2 * focal_px / (s * b)]  =  [tx', ty', 2 * focal_px / (sx * W)]

in VIBE's camera frame (x right, y down, z forward, metres): vertices_cam = SMPL(pose, betas) +
trans_cam_m. With the crop's own camera (focal 5000 px on a 224 px crop) this is exactly the
official depth 2 * 5000 / (224 * s). Depth is only as good as the assumed focal length.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vibe_blender.core.atomic_file import atomic_write
from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import MocapResult, Track, check_motion_values
from vibe_server.geometry import convert_crop_cam_to_orig_img, convert_crop_coords_to_orig_img, projection

BBOX_SCALE = 1.1  # the crop covers 1.1 x the tracker's (square) box (official demo)
CROP_SIZE_PX = 224
UNCROP_META_KEY = "uncrop"
UNCROP_OFFICIAL, UNCROP_CORRECTED = "official 1.0x box", "corrected 1.1x box"

# (pose (T, 72), betas (T, 10)) -> (verts (T, 6890, 3), joints (T, 49, 3)), metres, camera frame.
SmplFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def default_focal_length_px(width: int, height: int) -> float:
    """The assumed focal length when none is given: the longer image side (about 53° across it)."""
    return float(max(width, height))


def crop_cam_to_orig_cam(
    pred_cam: np.ndarray, bboxes: np.ndarray, width: int, height: int, *, official_uncrop: bool = False
) -> np.ndarray:
    """pred_cam (T, 3) [s, tx, ty], bboxes (T, 4) [cx, cy, w, h] -> orig_cam (T, 4) [sx, sy, tx, ty]. A
    camera scale of 0 gives infinite values, which a result leaves out (:func:`refused_rows`)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return convert_crop_cam_to_orig_img(
            np.asarray(pred_cam, np.float64),
            np.asarray(bboxes, np.float64),
            width,
            height,
            bbox_scale=1.0 if official_uncrop else BBOX_SCALE,
        )


def crop_coords_to_image_px(kp_2d: np.ndarray, bboxes: np.ndarray, *, official_uncrop: bool = False) -> np.ndarray:
    """kp_2d (T, J, 2) normalised crop coords in [-1, 1] -> (T, J, 2) image pixels."""
    return convert_crop_coords_to_orig_img(
        np.asarray(bboxes, np.float64),
        np.asarray(kp_2d),
        CROP_SIZE_PX,
        bbox_scale=1.0 if official_uncrop else BBOX_SCALE,
    )


def trans_cam_from_orig_cam(orig_cam: np.ndarray, width: int, focal_px: float) -> np.ndarray:
    """orig_cam (T, 4) -> trans_cam_m (T, 3) = [tx', ty', 2 * focal_px / (sx * W)] (see module doc)."""
    orig_cam = np.asarray(orig_cam, np.float64)
    sx = np.maximum(orig_cam[:, 0], 1e-9)
    return np.stack([orig_cam[:, 2], orig_cam[:, 3], 2.0 * focal_px / (sx * width)], axis=1)


def robust_betas(betas: np.ndarray) -> np.ndarray:
    """betas (T, 10) -> (10,) per-track shape: the per-component median, robust to bad frames."""
    return np.median(np.asarray(betas, np.float32), axis=0).astype(np.float32)


def build_track(
    track_id: int,
    frame_ids: np.ndarray,
    theta: np.ndarray,
    joints3d: np.ndarray,
    bboxes: np.ndarray,
    *,
    width: int,
    height: int,
    focal_px: float,
    official_uncrop: bool = False,
) -> Track | None:
    """theta (T, 85) [cam | pose | betas], joints3d (T, 49, 3), bboxes (T, 4) -> Track, without the rows
    a result file cannot hold (:func:`refused_rows`; the caller counts them): None when that is all."""
    theta = np.asarray(theta, np.float32)
    frame_ids = np.asarray(frame_ids, np.int64)
    pred_cam, betas = theta[:, :3], theta[:, 75:85]
    orig_cam = crop_cam_to_orig_cam(pred_cam, bboxes, width, height, official_uncrop=official_uncrop)
    arrays = {
        "pose": theta[:, 3:75],
        "pred_cam": pred_cam,
        "orig_cam": orig_cam,
        "bboxes": np.asarray(bboxes, np.float32),
        "joints3d": np.asarray(joints3d, np.float32),
        "trans_cam_m": trans_cam_from_orig_cam(orig_cam, width, focal_px),
    }
    refused = refused_rows(frame_ids, betas, **arrays)
    if refused.all():
        return None
    if refused.any():
        kept = ~refused
        frame_ids, betas = frame_ids[kept], betas[kept]
        arrays = {name: array[kept] for name, array in arrays.items()}
    return Track(track_id=int(track_id), frame_ids=frame_ids, betas=betas, betas_track=robust_betas(betas), **arrays)


# What a row left out held, for the warnings that count them
REFUSED_VALUES = (
    "values a result file cannot hold (NaN or infinite, or beyond its limits: a translation beyond ±10 km comes "
    "from a camera scale of 0 or less, which the model predicts on a crop of no person)"
)


def refused_rows_warning(rows: int) -> str:
    """The warning of a result whose tracks left out ``rows`` rows (:func:`build_track`)."""
    return f"{rows:,} person-frame(s) held {REFUSED_VALUES} and were left out; the rest of each track is kept."


def refused_rows(frame_ids: np.ndarray, betas: np.ndarray, **arrays: np.ndarray) -> np.ndarray:
    """(T,) bool: the rows (person-frames) the result file's reader would refuse, by its own check
    (``check_motion_values``) on the values as they are saved (float32), so that what is written always
    opens. ``arrays``: the track's other (T, ...) arrays by their names in a Track. All rows are checked
    at once; only a range that fails is halved, down to the rows at fault."""
    with np.errstate(over="ignore"):  # a float64 beyond float32's range is saved as infinite: refused
        saved = {name: np.asarray(array, np.float32) for name, array in arrays.items()}
        saved_betas = np.asarray(betas, np.float32)
    refused = np.zeros(len(frame_ids), bool)
    ranges = [(0, len(frame_ids))]
    while ranges:
        start, stop = ranges.pop()
        rows = slice(start, stop)
        try:
            check_motion_values(
                "", frame_ids[rows], {"betas": saved_betas[rows]}, **{n: a[rows] for n, a in saved.items()}
            )
        except VibeError:
            if stop - start == 1:
                refused[start] = True
            else:
                middle = (start + stop) // 2
                ranges += [(start, middle), (middle, stop)]
    return refused


# ---------------------------------------------------------------------------------------------
# The official vibe_output.pkl


def official_output(result: MocapResult, smpl_fn: SmplFn) -> dict[int, dict]:
    """The official demo's output dict ``{track_id: {pred_cam, orig_cam, verts, pose, betas, joints3d,
    joints2d (None), joints2d_img_coord, bboxes, frame_ids}}`` from a result; vertices come from
    ``smpl_fn`` and the 2D joints from projecting joints3d with the crop camera (as the model does)."""
    official_uncrop = result.meta.get(UNCROP_META_KEY, UNCROP_CORRECTED) == UNCROP_OFFICIAL
    out = {}
    for track in result.tracks:
        verts, _ = smpl_fn(track.pose, track.betas)
        with torch.no_grad():
            kp_2d = projection(
                torch.as_tensor(track.joints3d, dtype=torch.float32),
                torch.as_tensor(track.pred_cam, dtype=torch.float32),
            ).numpy()
        out[track.track_id] = {
            "pred_cam": track.pred_cam.astype(np.float32),
            "orig_cam": track.orig_cam.astype(np.float64),
            "verts": np.asarray(verts, np.float32),
            "pose": track.pose.astype(np.float32),
            "betas": track.betas.astype(np.float32),
            "joints3d": track.joints3d.astype(np.float32),
            "joints2d": None,
            "joints2d_img_coord": crop_coords_to_image_px(kp_2d, track.bboxes, official_uncrop=official_uncrop),
            "bboxes": track.bboxes.astype(np.float32),
            "frame_ids": track.frame_ids.astype(np.int64),
        }
    return out


def write_official_pkl(path: str | Path, output: dict[int, dict], *, make_folder: bool = True) -> None:
    """Write the official layout with joblib when it is installed (as the demo does), else as a plain
    pickle of numpy arrays (``joblib.load`` reads both). ``make_folder``: as in ``atomic_save``. A
    failed write is the OSError itself, naming ``path``: its caller says what it means (a full disk
    is no folder to change)."""
    try:
        import joblib  # optional dependency (the train extra); without it a plain pickle is written
    except ImportError:
        joblib = None
    if joblib is not None:
        atomic_write(path, lambda f: joblib.dump(output, f), make_folder=make_folder)
    else:
        atomic_write(path, lambda f: pickle.dump(output, f, protocol=4), make_folder=make_folder)

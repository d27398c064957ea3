"""Backbone features for new footage, in the database-file layout that training reads.

For each frame with a box: the person crop (side `scale` x box, 224 x 224, ImageNet-normalised),
then the frozen ResNet-50 of the VIBE model (`model.extract_features`) -> (2048,) per frame. The
original extracted its training features at scale 1.3 (MPI-INF-3DHP, PennAction, PoseTrack) and
1.2 (3DPW); the demo crops at 1.1.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vibe_blender.core.atomic_file import atomic_write
from vibe_blender.core.errors import VibeError
from vibe_blender.core.safe_npz import read_npy

from ..pipeline.crop import crop_person, normalize_crops
from ..pipeline.video import MAX_FRAME_SIDE

BOX_ROWS = "rows of cx,cy,w,h (frames 0, 1, 2, ...) or frame,cx,cy,w,h"
MAX_FRAME_NUMBER = 2**31 - 1  # past any video's length; keeps the float -> int conversion exact
# a box coordinate or size beyond ten times the largest frame side read is no box of a person in a
# frame (1e308 overflowed the crop's float32 maths and was stored in the training file)
MAX_BOX_PX = 10 * MAX_FRAME_SIDE


def read_bboxes(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A .npy or .csv/.txt of (N, 4) [cx, cy, w, h] (one row per frame from 0) or (N, 5)
    [frame, cx, cy, w, h] -> (frame_ids (N,) int, bboxes (N, 4) float64)."""
    path = Path(path)
    if not path.is_file():
        raise VibeError(f"Box file {path} not found.")
    boxes = _read_box_numbers(path)
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 5) or len(boxes) == 0:
        raise VibeError(
            f"{path} holds an array of shape {boxes.shape}; expected (N, 4) [cx, cy, w, h] "
            "or (N, 5) [frame, cx, cy, w, h]."
        )
    # NaN would pass the checks below and be written into the training file
    _refuse_rows(path, boxes, ~np.isfinite(boxes).all(axis=1), "holds a value that is not a finite number")
    too_far = (np.abs(boxes[:, -4:]) > MAX_BOX_PX).any(axis=1)
    _refuse_rows(path, boxes, too_far, f"holds a box value beyond {MAX_BOX_PX:,} pixels, far past any frame")
    frame_ids = _frame_numbers(path, boxes[:, 0]) if boxes.shape[1] == 5 else np.arange(len(boxes))
    boxes = boxes[:, -4:]
    if np.any(np.diff(frame_ids) <= 0):
        raise VibeError(f"{path}: frame numbers must be increasing.")
    if np.any(boxes[:, 2:] <= 0):
        raise VibeError(f"{path}: box widths and heights must be positive.")
    return frame_ids, boxes


def _refuse_rows(path: Path, boxes: np.ndarray, bad: np.ndarray, problem: str) -> None:
    """VibeError naming the first of the ``bad`` rows of ``boxes`` and how many there are, if any."""
    bad_rows = np.flatnonzero(bad)
    if len(bad_rows):
        row = bad_rows[0]
        raise VibeError(
            f"{path}: row {row + 1} ({', '.join(f'{v:g}' for v in boxes[row])}) {problem} "
            f"({len(bad_rows)} such row(s)); fix or remove those rows."
        )


def _read_box_numbers(path: Path) -> np.ndarray:
    """The numbers of a box file as float64, or one VibeError naming the file."""
    hint = f"Expected {BOX_ROWS}."
    if path.suffix.lower() == ".npy":
        # bounded: the header's shape must match the bytes the file holds; plain bool/int/float only
        boxes = read_npy(path, label=f"boxes from {path}", hint=hint)
        if boxes.dtype.kind not in "iuf":
            raise VibeError(f"Cannot read boxes from {path}: it holds {boxes.dtype} values, not numbers. {hint}")
        return boxes.astype(np.float64)
    try:
        with warnings.catch_warnings():  # an empty file: numpy's own warning, before our one message
            warnings.simplefilter("ignore", UserWarning)
            boxes = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as err:  # text that is not numbers, or not UTF-8
        raise VibeError(f"Cannot read boxes from {path} ({err}). {hint}") from None
    if boxes.size == 0:
        raise VibeError(f"{path} holds no boxes (no rows of numbers). {hint}")
    return boxes


def _frame_numbers(path: Path, column: np.ndarray) -> np.ndarray:
    """The frame column (finite floats) -> int64 frame numbers; VibeError unless each is whole and in range."""
    bad_rows = np.flatnonzero((column != np.floor(column)) | (column < 0) | (column > MAX_FRAME_NUMBER))
    if len(bad_rows):  # 0.9 and 1.2 would silently become frames 0 and 1
        row = bad_rows[0]
        raise VibeError(
            f"{path}: row {row + 1} has frame number {column[row]:g}; frame numbers must be whole numbers from 0 "
            f"to {MAX_FRAME_NUMBER} ({len(bad_rows)} such row(s)). Fix or remove those rows."
        )
    return column.astype(np.int64)


def require_joblib() -> None:
    """VibeError unless joblib (the train extra), which writes the feature file, can be imported."""
    try:
        import joblib  # noqa: F401  # optional dependency (the train extra)
    except ImportError:
        raise VibeError(
            "extract-features writes its .pt file with joblib, which is not installed. Install the training "
            'extras with: pip install -e ".[train]" (or: pip install joblib).'
        ) from None


def check_crop_scale(scale: float) -> None:
    """VibeError unless ``scale`` (crop side / box side) is a finite number more than 0."""
    if not (np.isfinite(scale) and scale > 0):
        raise VibeError(
            "The crop scale (--scale) must be a number more than 0, e.g. 1.3 as in the original training; "
            f"got {scale:g}."
        )


@torch.no_grad()
def extract_video_features(
    model: torch.nn.Module,
    frames_rgb: Iterable[np.ndarray],
    frame_ids: np.ndarray,
    bboxes: np.ndarray,
    scale: float = 1.3,
    batch_size: int = 200,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """frames_rgb: iterable of (H, W, 3) uint8 frames from frame 0; frame_ids (N,), bboxes (N, 4) ->
    features (N, 2048) float32. Frames are cropped as they stream by; memory stays bounded.
    progress: a bar on stderr counting the boxed frames cropped."""
    check_crop_scale(scale)
    wanted = {int(f): i for i, f in enumerate(frame_ids)}
    features = np.zeros((len(frame_ids), 2048), dtype=np.float32)
    pending_crops, pending_rows, done = [], [], 0

    def flush():
        images = normalize_crops(np.stack(pending_crops), device=device)  # (B, 3, 224, 224)
        features[pending_rows] = model.extract_features(images[None]).reshape(-1, 2048).float().cpu().numpy()
        pending_crops.clear()
        pending_rows.clear()

    bar = tqdm(total=len(frame_ids), desc="features", unit="frame", file=sys.stderr, disable=not progress)
    with bar:
        for index, frame in enumerate(frames_rgb):
            if index in wanted:
                row = wanted[index]
                pending_crops.append(crop_person(frame, bboxes[row], scale=scale))  # (224, 224, 3) uint8
                pending_rows.append(row)
                done += 1
                bar.update(1)
                if len(pending_crops) == batch_size:
                    flush()
            if done == len(frame_ids):
                break
        if pending_crops:
            flush()
    if done < len(frame_ids):
        raise VibeError(f"The video has fewer frames than the boxes ask for (frame {int(frame_ids[done])} is missing).")
    return features


def write_feature_db(
    path: str | Path, features: np.ndarray, frame_ids: np.ndarray, bboxes: np.ndarray, vid_name: str
) -> None:
    """-> a joblib `.pt` with `features`, `bbox`, `frame_id`, `vid_name` (the database-file layout)."""
    import joblib  # optional dependency (the train extra)

    db = {
        "features": features,
        "bbox": bboxes,
        "frame_id": frame_ids,
        "vid_name": np.array([vid_name] * len(frame_ids)),
    }
    atomic_write(path, lambda f: joblib.dump(db, f))

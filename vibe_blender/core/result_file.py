"""The result file: the one contract between the inference server and the add-on.

A single ``.npz`` readable with ``numpy.load(allow_pickle=False)``. Scalars and strings are 0-d
arrays; each track's arrays are stored under ``track_<id>/<name>``. Everything is written and read
here, so the server (which imports this module) and the add-on can never disagree.

Conventions (also in docs/result_format.md):
- ``pose`` is SMPL's θ, axis-angle, 24 joints in SMPL order; the root (global orientation) is in
  VIBE's camera frame: x right, y down, z forward (an upright person facing the camera has a root
  rotation of about 180° about x).
- ``trans_cam_m`` is SMPL's ``transl`` in that same camera frame, metres: vertices_cam =
  SMPL(pose, betas) + trans_cam_m, with a pinhole camera of ``focal_length_px`` at the image centre.
- ``frame_ids`` index the video's frames (0-based); a track may skip frames (gaps stay gaps).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .errors import VibeError

FORMAT_NAME = "vibe-mocap-result"
FORMAT_VERSION = 1
CAMERA_CONVENTION = "opencv: x right, y down, z forward; metres"


@dataclass
class Track:
    """One person. T rows, one per frame in ``frame_ids``."""

    track_id: int
    frame_ids: np.ndarray        # (T,) int64, video frame index of each row
    pose: np.ndarray             # (T, 72) float32 axis-angle, SMPL joint order
    betas: np.ndarray            # (T, 10) float32 per-frame shape
    betas_track: np.ndarray      # (10,) float32 robust per-track shape (median over frames)
    pred_cam: np.ndarray         # (T, 3) [s, tx, ty] weak-perspective camera of the 224 px crop
    orig_cam: np.ndarray         # (T, 4) [sx, sy, tx, ty] camera of the whole image
    bboxes: np.ndarray           # (T, 4) [cx, cy, w, h] pixels
    joints3d: np.ndarray         # (T, 49, 3) metres, camera frame, not root-centred
    trans_cam_m: np.ndarray      # (T, 3) SMPL transl in the camera frame, metres

    def __post_init__(self):
        T = len(self.frame_ids)
        expected = {"pose": (T, 72), "betas": (T, 10), "betas_track": (10,), "pred_cam": (T, 3),
                    "orig_cam": (T, 4), "bboxes": (T, 4), "trans_cam_m": (T, 3)}
        for name, shape in expected.items():
            if np.shape(getattr(self, name)) != shape:
                raise VibeError(f"track {self.track_id}: '{name}' has shape {np.shape(getattr(self, name))}, "
                                f"expected {shape}; the result file is damaged.")
        if np.ndim(self.joints3d) != 3 or np.shape(self.joints3d)[0] != T:
            raise VibeError(f"track {self.track_id}: 'joints3d' has shape {np.shape(self.joints3d)}, expected ({T}, J, 3).")
        if T and np.any(np.diff(self.frame_ids) <= 0):
            raise VibeError(f"track {self.track_id}: frame ids are not increasing; the result file is damaged.")

    @property
    def num_frames(self) -> int:
        return len(self.frame_ids)


_TRACK_ARRAYS = [f.name for f in fields(Track) if f.name != "track_id"]
_INT_ARRAYS = {"frame_ids"}


@dataclass
class VideoInfo:
    name: str
    fps: float
    width: int
    height: int
    frame_count: int


@dataclass
class MocapResult:
    video: VideoInfo
    tracks: list[Track]
    model_name: str                      # e.g. "vibe_model_wo_3dpw", or "synthetic placeholder"
    focal_length_px: float
    camera_convention: str = CAMERA_CONVENTION
    meta: dict[str, str] = field(default_factory=dict)   # free-form strings (versions, settings)

    def track(self, track_id: int) -> Track:
        for t in self.tracks:
            if t.track_id == track_id:
                return t
        raise VibeError(f"The result has no track {track_id}; it has {[t.track_id for t in self.tracks]}.")


def save_result(path_or_file, result: MocapResult) -> None:
    """Write ``result`` as a compressed npz (no pickles)."""
    arrays = {
        "format": np.array(FORMAT_NAME), "format_version": np.array(FORMAT_VERSION),
        "video_name": np.array(result.video.name), "video_fps": np.array(float(result.video.fps)),
        "video_width": np.array(int(result.video.width)), "video_height": np.array(int(result.video.height)),
        "video_frame_count": np.array(int(result.video.frame_count)),
        "model_name": np.array(result.model_name), "focal_length_px": np.array(float(result.focal_length_px)),
        "camera_convention": np.array(result.camera_convention),
        "track_ids": np.array([t.track_id for t in result.tracks], dtype=np.int64),
        "meta_keys": np.array(list(result.meta.keys()), dtype=str),
        "meta_values": np.array([str(v) for v in result.meta.values()], dtype=str),
    }
    for t in result.tracks:
        for name in _TRACK_ARRAYS:
            dtype = np.int64 if name in _INT_ARRAYS else np.float32
            arrays[f"track_{t.track_id}/{name}"] = np.asarray(getattr(t, name), dtype=dtype)
    np.savez_compressed(path_or_file, **arrays)


def load_result(path_or_file) -> MocapResult:
    """Read a result file; any problem becomes one VibeError that names the file."""
    label = str(path_or_file) if isinstance(path_or_file, (str, Path)) else "the result file"
    try:
        z = np.load(path_or_file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise VibeError(f"Cannot read {label}: it is not a VIBE Mocap result (.npz) file ({err}).") from err
    with z:
        if "format" not in z.files or str(z["format"]) != FORMAT_NAME:
            raise VibeError(f"{label} is an .npz file but not a VIBE Mocap result "
                            "(for AMASS motion use the AMASS importer).")
        version = int(z["format_version"])
        if version > FORMAT_VERSION:
            raise VibeError(f"{label} has result format version {version}; this version reads up to "
                            f"{FORMAT_VERSION}. Update VIBE Mocap.")
        try:
            tracks = [
                Track(track_id=int(tid), **{n: z[f"track_{int(tid)}/{n}"] for n in _TRACK_ARRAYS})
                for tid in z["track_ids"]
            ]
            return MocapResult(
                video=VideoInfo(name=str(z["video_name"]), fps=float(z["video_fps"]),
                                width=int(z["video_width"]), height=int(z["video_height"]),
                                frame_count=int(z["video_frame_count"])),
                tracks=tracks, model_name=str(z["model_name"]),
                focal_length_px=float(z["focal_length_px"]), camera_convention=str(z["camera_convention"]),
                meta=dict(zip(z["meta_keys"].tolist(), z["meta_values"].tolist())),
            )
        except KeyError as err:
            raise VibeError(f"{label} is incomplete: {err} is missing. Run the capture again.") from err

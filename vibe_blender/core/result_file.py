"""The result file: the one contract between the inference server and the add-on.

A single ``.npz`` readable with ``numpy.load(allow_pickle=False)``. Scalars and strings are 0-d
arrays; each track's arrays are stored under ``track_<id>/<name>``. Everything is written and read
here, so the server (which imports this module) and the add-on can never disagree.

Conventions (also in docs/server.md, "Result file conventions"):
- ``pose`` is SMPL's θ, axis-angle, 24 joints in SMPL order; the root (global orientation) is in
  VIBE's camera frame: x right, y down, z forward (an upright person facing the camera has a root
  rotation of about 180° about x).
- ``trans_cam_m`` is SMPL's ``transl`` in that same camera frame, metres: vertices_cam =
  SMPL(pose, betas) + trans_cam_m, with a pinhole camera of ``focal_length_px`` at the image centre.
- ``frame_ids`` index the video's frames (0-based); a track may skip frames (gaps stay gaps).

Reading (:func:`load_result`) goes through :mod:`.safe_npz` (bounded sizes, plain dtypes only),
checks each track's shapes before converting its frame ids, and refuses values no capture produces:
text stored as bytes rather than numpy's unicode, motion arrays that are not floating-point (a bool
pose would animate as 0/1 rad) or frame ids that are not integers, NaN or infinite numbers, joint rotations
beyond ±1000 rad, translations beyond ±10 km, betas beyond ±10 (Blender's shape-key range), frame ids
outside 0..10 000 000, frame counts beyond 2^31 - 1, frame rates outside 0.01..32767, focal lengths
outside 1..10^6 px, image sides outside 1..65 536 px.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .errors import VibeError
from .safe_npz import read_npz

FORMAT_NAME = "vibe-mocap-result"
FORMAT_VERSION = 1
CAMERA_CONVENTION = "opencv: x right, y down, z forward; metres"

# Values beyond these are damaged or hostile files, not captures (shared with the other motion readers).
MAX_FRAME_ID = 10_000_000  # 3.8 days of video at 30 fps
MAX_VIDEO_FRAMES = 2**31 - 1  # a container's own (possibly loose) count, as the server accepts it
BETA_LIMIT = 10.0  # Blender's shape-key slider range
FPS_RANGE = (0.01, 32767.0)  # Blender's frame-rate field stops at 32767
FOCAL_RANGE_PX = (1.0, 1e6)
MAX_IMAGE_SIDE_PX = 65_536  # Blender's render resolution stops there
MAX_TRANSLATION_M = 10_000.0  # a person 10 km from the camera (or the world origin) is no capture
TRANSLATIONS = ("trans", "trans_cam_m")  # the arrays of metres among the motion arrays
MAX_POSE_RAD = 1_000.0  # |axis-angle| bound: far beyond any capture, small enough for exact quaternions
POSES = ("pose", "poses")  # the axis-angle arrays among the motion arrays
# A result file holds 9 arrays a track, and the readers take at most safe_npz.MAX_MEMBERS members:
# a run, a live take or a recording keeps this many tracks at most (the longest).
MAX_TRACKS = 10_000
# A result's meta holds a few dozen texts (versions, settings, warnings); a bound keeps a small file
# from unpacking into millions of Python strings.
MAX_META_ENTRIES = 1_000


def check_range(label: str, name: str, value, low: float, high: float) -> float:
    """A number from a file -> float(value) when it is finite and within [low, high]; else VibeError."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = float("nan")
    if not (np.isfinite(number) and low <= number <= high):
        raise VibeError(f"{label}: {name} is {value!r:.40}, outside {low:g}..{high:g}; the file is damaged.")
    return number


def check_motion_values(label: str, frame_ids: np.ndarray, betas: dict[str, np.ndarray], **arrays: np.ndarray) -> None:
    """frame_ids (T,) integers in 0..MAX_FRAME_ID; each of ``betas`` (name -> (..., B)) within ±BETA_LIMIT;
    ``betas`` and ``arrays`` floating-point (checked before any conversion: bool or int motion is no
    capture) and finite; poses (``POSES``) within ±MAX_POSE_RAD; translations (``TRANSLATIONS``) within
    ±MAX_TRANSLATION_M."""
    if (
        frame_ids.ndim != 1
        or frame_ids.dtype.kind not in "iu"
        or (frame_ids.size and (frame_ids.min() < 0 or frame_ids.max() > MAX_FRAME_ID))
    ):
        raise VibeError(f"{label}: frame ids must be a list of integers in 0..{MAX_FRAME_ID}; the file is damaged.")
    for name, array in {**betas, **arrays}.items():
        if array.dtype.kind != "f":
            raise VibeError(
                f"{label}: '{name}' holds {array.dtype} values where a capture stores floating-point "
                "numbers; the file is damaged."
            )
        if not np.all(np.isfinite(array)):
            raise VibeError(f"{label}: '{name}' holds NaN or infinite values; the file is damaged.")
    bounds = ((TRANSLATIONS, MAX_TRANSLATION_M, "a translation", "m"), (POSES, MAX_POSE_RAD, "a joint rotation", "rad"))
    for names, limit, what, unit in bounds:
        for name, array in arrays.items():
            if name in names and array.size and np.max(np.abs(array)) > limit:
                raise VibeError(
                    f"{label}: {what} in '{name}' is {float(np.max(np.abs(array))):.3g} {unit}, beyond "
                    f"±{limit:g} {unit}; the file is damaged."
                )
    for name, array in betas.items():
        if array.size and np.max(np.abs(array)) > BETA_LIMIT:
            raise VibeError(
                f"{label}: a shape coefficient in '{name}' is {float(np.max(np.abs(array))):.3g}, beyond "
                f"±{BETA_LIMIT:g}; the file is damaged."
            )


# a meta value for what a result does not know (a live take: its video size and focal length)
META_UNKNOWN = "unknown"
# the meta key of what the run said the user should know (one per line), e.g. the video broke off
WARNINGS_META_KEY = "warnings"


def longest_track_ids(frames_per_track: dict[int, int], limit: int) -> tuple[list[int], list[str]]:
    """{track id: frames} -> (the ids of the ``limit`` tracks with the most frames, ties to the earlier in
    the dict, in id order; a warning when that leaves tracks out: for the result's warnings)."""
    ranked = sorted(frames_per_track, key=lambda track_id: -frames_per_track[track_id])  # stable: ties keep order
    if len(ranked) <= limit:
        return sorted(ranked), []
    return sorted(ranked[:limit]), [
        f"{len(ranked):,} people were tracked; the result keeps the {limit:,} tracked longest, the most a result "
        "file holds."
    ]


@dataclass
class Track:
    """One person. T rows, one per frame in ``frame_ids``."""

    track_id: int
    frame_ids: np.ndarray  # (T,) int64, video frame index of each row
    pose: np.ndarray  # (T, 72) float32 axis-angle, SMPL joint order
    betas: np.ndarray  # (T, 10) float32 per-frame shape
    betas_track: np.ndarray  # (10,) float32 robust per-track shape (median over frames)
    pred_cam: np.ndarray  # (T, 3) [s, tx, ty] weak-perspective camera of the 224 px crop
    orig_cam: np.ndarray  # (T, 4) [sx, sy, tx, ty] camera of the whole image
    bboxes: np.ndarray  # (T, 4) [cx, cy, w, h] pixels
    joints3d: np.ndarray  # (T, 49, 3) metres, camera frame, not root-centred
    trans_cam_m: np.ndarray  # (T, 3) SMPL transl in the camera frame, metres

    def __post_init__(self):
        check_track_shapes(self.track_id, {name: getattr(self, name) for name in _TRACK_ARRAYS})
        if len(self.frame_ids) and np.any(np.diff(self.frame_ids) <= 0):
            raise VibeError(f"track {self.track_id}: frame ids are not increasing; the result file is damaged.")

    @property
    def num_frames(self) -> int:
        return len(self.frame_ids)


_TRACK_ARRAYS = [f.name for f in fields(Track) if f.name != "track_id"]
_INT_ARRAYS = {"frame_ids"}


def check_track_shapes(track_id: int, arrays: dict) -> None:
    """VibeError unless a track's arrays (name -> array) have T rows each, T = len(frame_ids), and their
    widths. A reader checks them on the arrays as stored, before converting any: as int64, a stored
    uint8 array takes 8 times its bytes."""
    T = len(arrays["frame_ids"])
    expected = {
        "pose": (T, 72),
        "betas": (T, 10),
        "betas_track": (10,),
        "pred_cam": (T, 3),
        "orig_cam": (T, 4),
        "bboxes": (T, 4),
        "trans_cam_m": (T, 3),
    }
    for name, shape in expected.items():
        if np.shape(arrays[name]) != shape:
            raise VibeError(
                f"track {track_id}: '{name}' has shape {np.shape(arrays[name])}, expected {shape}; "
                "the result file is damaged."
            )
    if np.ndim(arrays["joints3d"]) != 3 or np.shape(arrays["joints3d"])[0] != T:
        raise VibeError(f"track {track_id}: 'joints3d' has shape {np.shape(arrays['joints3d'])}, expected ({T}, J, 3).")


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
    model_name: str  # e.g. "vibe_model_wo_3dpw", or "synthetic placeholder"
    focal_length_px: float
    camera_convention: str = CAMERA_CONVENTION
    meta: dict[str, str] = field(default_factory=dict)  # free-form strings (versions, settings)

    def track(self, track_id: int) -> Track:
        for t in self.tracks:
            if t.track_id == track_id:
                return t
        raise VibeError(f"The result has no track {track_id}; it has {[t.track_id for t in self.tracks]}.")


def save_result(path_or_file, result: MocapResult) -> None:
    """Write ``result`` as a compressed npz (no pickles). The zip is closed whether or not writing
    succeeds: numpy 1.x's ``savez_compressed`` left it open when a write failed (a full disk), and
    its later clean-up then wrote to a file already closed."""
    arrays = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION),
        "video_name": np.array(result.video.name),
        "video_fps": np.array(float(result.video.fps)),
        "video_width": np.array(int(result.video.width)),
        "video_height": np.array(int(result.video.height)),
        "video_frame_count": np.array(int(result.video.frame_count)),
        "model_name": np.array(result.model_name),
        "focal_length_px": np.array(float(result.focal_length_px)),
        "camera_convention": np.array(result.camera_convention),
        "track_ids": np.array([t.track_id for t in result.tracks], dtype=np.int64),
        "meta_keys": np.array(list(result.meta.keys()), dtype=str),
        "meta_values": np.array([str(v) for v in result.meta.values()], dtype=str),
    }
    for t in result.tracks:
        for name in _TRACK_ARRAYS:
            dtype = np.int64 if name in _INT_ARRAYS else np.float32
            arrays[f"track_{t.track_id}/{name}"] = np.asarray(getattr(t, name), dtype=dtype)
    with zipfile.ZipFile(path_or_file, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for name, array in arrays.items():  # the layout np.savez_compressed writes: one NAME.npy each
            with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _text(z: dict, key: str, label: str) -> str:
    value = z[key]
    _check_text_kind(value, key, label)
    if value.shape != ():
        raise VibeError(f"{label}: '{key}' is not a text field; the file is damaged.")
    return str(value)


def _check_text_kind(array: np.ndarray, key: str, label: str) -> None:
    """VibeError unless ``array`` holds text as save_result writes it (numpy's unicode, kind 'U'): bytes
    (kind 'S') would read back as "b'...'", and no longer match a video's name."""
    if array.dtype.kind == "S":
        raise VibeError(
            f"{label}: '{key}' holds bytes ({array.dtype}) where a result stores text; the file was written "
            "by another program or altered."
        )
    if array.dtype.kind != "U":
        raise VibeError(f"{label}: '{key}' is not a text field; the file is damaged.")


def _number(z: dict, key: str, label: str, low: float, high: float) -> float:
    value = z[key]
    if value.shape != () or value.dtype.kind not in "iuf":
        raise VibeError(f"{label}: '{key}' is not a single number; the file is damaged.")
    return check_range(label, key, value.item(), low, high)


def _track(z: dict, track_id: int, label: str) -> Track:
    arrays = {n: z[f"track_{track_id}/{n}"] for n in _TRACK_ARRAYS}
    shape_keys = ("betas", "betas_track")
    check_motion_values(
        f"{label}, track {track_id}",
        arrays["frame_ids"],
        {k: arrays[k] for k in shape_keys},
        **{n: a for n, a in arrays.items() if n != "frame_ids" and n not in shape_keys},
    )
    check_track_shapes(track_id, arrays)  # before the int64 copy: 8 times the bytes of stored uint8 ids
    arrays["frame_ids"] = arrays["frame_ids"].astype(np.int64)
    return Track(track_id=track_id, **arrays)


def load_result(path_or_file, *, hint: str = "Choose a VIBE Mocap result (.npz) file.") -> MocapResult:
    """Read a result file; any problem (format, sizes, values) becomes one VibeError that names the file
    (``hint``: what to do when it is no .npz at all)."""
    label = str(path_or_file) if isinstance(path_or_file, (str, Path)) else "the result file"
    z = read_npz(path_or_file, label=label, hint=hint)
    try:
        if "format" not in z or z["format"].dtype.kind != "U" or str(z["format"]) != FORMAT_NAME:
            raise VibeError(
                f"{label} is an .npz file but not a VIBE Mocap result (its 'format' is not {FORMAT_NAME!r}); "
                "the file is damaged or was written by another program."
            )
        version = int(_number(z, "format_version", label, 0, 2**31))
        if version > FORMAT_VERSION:
            raise VibeError(
                f"{label} has result format version {version}; this version reads up to "
                f"{FORMAT_VERSION}. Update VIBE Mocap."
            )
        track_ids = z["track_ids"]
        # sizes are checked before any .tolist(): each element becomes a Python object many times its size
        if track_ids.ndim != 1 or track_ids.dtype.kind not in "iu" or len(np.unique(track_ids)) != len(track_ids):
            raise VibeError(f"{label}: 'track_ids' is not a list of distinct integers; the file is damaged.")
        if len(track_ids) > MAX_TRACKS:
            raise VibeError(
                f"{label} lists {len(track_ids):,} tracks, more than the {MAX_TRACKS:,} a result holds; "
                "the file is damaged."
            )
        meta_keys, meta_values = z["meta_keys"], z["meta_values"]
        if meta_keys.ndim != 1 or meta_keys.shape != meta_values.shape:
            raise VibeError(f"{label}: 'meta_keys'/'meta_values' are not two lists of texts; the file is damaged.")
        _check_text_kind(meta_keys, "meta_keys", label)
        _check_text_kind(meta_values, "meta_values", label)
        if len(meta_keys) > MAX_META_ENTRIES:
            raise VibeError(
                f"{label} has {len(meta_keys):,} notes in its meta, more than the {MAX_META_ENTRIES:,} a result "
                "holds; the file is damaged."
            )
        return MocapResult(
            video=VideoInfo(
                name=_text(z, "video_name", label),
                fps=_number(z, "video_fps", label, *FPS_RANGE),
                width=int(_number(z, "video_width", label, 1, MAX_IMAGE_SIDE_PX)),
                height=int(_number(z, "video_height", label, 1, MAX_IMAGE_SIDE_PX)),
                frame_count=int(_number(z, "video_frame_count", label, 0, MAX_VIDEO_FRAMES)),
            ),
            tracks=[_track(z, int(tid), label) for tid in track_ids.tolist()],
            model_name=_text(z, "model_name", label),
            focal_length_px=_number(z, "focal_length_px", label, *FOCAL_RANGE_PX),
            camera_convention=_text(z, "camera_convention", label),
            meta=dict(zip(meta_keys.tolist(), meta_values.tolist())),
        )
    except KeyError as err:
        raise VibeError(f"{label} is incomplete: {err} is missing. Run the capture again.") from err

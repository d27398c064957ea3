"""The official VIBE demo's ``vibe_output.pkl``, read without joblib (Blender does not ship it).

``demo.py`` writes ``joblib.dump({track_id: {pred_cam, orig_cam, verts, pose, betas, joints3d,
joints2d, joints2d_img_coord, bboxes, frame_ids}})``. joblib's format is a pickle in which each numpy
array is replaced by a ``NumpyArrayWrapper`` (shape, dtype, order) whose raw bytes follow the BUILD
opcode directly in the file (after one padding-length byte and padding, when the wrapper records an
alignment). The reader below is a restricted pickle reader: it lets through plain containers,
numpy dtypes/arrays and that wrapper, and refuses every other class, so a hostile file cannot run
code. zlib/gzip/bz2/lzma-compressed joblib files and plain pickles are read too: a compressed file's
decompressed bytes and the arrays built from them share one :func:`..bounded_arrays.byte_budget` of
the file's size. An uncompressed file is read straight from disk, each array into its own memory once,
so its size is limited by what it holds.

The official result has no translation and no video size. Both are recovered here:
- video size: ``orig_cam = [sx, sy, tx, ty]`` with ``sx = s · h_box / W`` and ``sy = s · h_box / H``
  (``s`` from ``pred_cam``, ``h_box`` from ``bboxes``), so ``W = s · h_box / sx``;
- translation: VIBE's weak-perspective ``x_ndc = sx (X + tx)`` equals a pinhole camera of focal f
  (pixels) at depth ``tz = 2 f / (W · sx)``, so ``trans = (tx, ty, 2 f / (W · sx))``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, ClassVar

import numpy as np

from ..bounded_arrays import (
    ByteBudget,
    TooLargeError,
    array_from_stream,
    checked_shape,
    decompress_bounded,
    is_compressed,
)
from ..errors import VibeError
from ..motion import CameraInfo, MotionSet, TrackMotion
from ..regular_file import open_user_file
from ..result_file import (
    FOCAL_RANGE_PX,
    FPS_RANGE,
    MAX_IMAGE_SIDE_PX,
    check_motion_values,
    check_range,
)
from ..safe_pickle import (
    NDARRAY,
    PickleRefused,
    RestrictedUnpickler,
    StandIn,
    describe_failure,
    dtype_of,
)
from ..shown_text import display_text


class _ArrayWrapper(StandIn):
    """Stand-in for joblib's NumpyArrayWrapper: once built, reads its array from the bytes that follow."""

    def finish(self, unpickler: JoblibUnpickler) -> np.ndarray:
        d = self.state
        if d.get("subclass") is not NDARRAY or d.get("order") not in ("C", "F"):
            raise PickleRefused("a joblib array that is not a plain C- or F-ordered numpy array")
        dtype = dtype_of(d.get("dtype"))
        shape = checked_shape(d.get("shape"))
        file = unpickler.array_source
        if d.get("numpy_array_alignment_bytes") is not None:
            padding = file.read(1)  # one length byte, then that much padding
            file.read(padding[0] if padding else 0)
        array = array_from_stream(file, dtype, shape, fortran_order=d["order"] == "F")
        unpickler.budget.take(array.nbytes, "an array")
        return array


def _ordered_dict():
    """``collections.OrderedDict()``; its items follow as SETITEMS, whose keys are checked."""
    return {}


class JoblibUnpickler(RestrictedUnpickler):
    """Plain containers, numbers, strings, numpy arrays and joblib's array wrapper; nothing else."""

    GLOBALS: ClassVar[dict] = {
        **RestrictedUnpickler.GLOBALS,
        ("collections", "OrderedDict"): _ordered_dict,
        ("joblib.numpy_pickle", "NumpyArrayWrapper"): _ArrayWrapper,
        ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper"): _ArrayWrapper,
    }
    what = "a VIBE result"

    def __init__(self, file, budget: ByteBudget | None = None):
        super().__init__(file, budget)
        self.array_source = file  # joblib writes each array's bytes right after its BUILD


def load_joblib_pickle(
    path: str | Path,
    *,
    unpickler: type[JoblibUnpickler] = JoblibUnpickler,
    expected: str = "a VIBE vibe_output.pkl",
    hint: str = "Choose the vibe_output.pkl written by VIBE's demo.py.",
):
    """Read a joblib (or plain) pickle of dicts/lists/numbers/strings/numpy arrays, nothing else
    (``unpickler``: a JoblibUnpickler that allows a little more); else one VibeError saying the file
    is not ``expected``, and ``hint``.

    Compressed files are decompressed and unpickled within one :func:`bounded_arrays.byte_budget` of
    the file size; uncompressed ones are read from the open file. A device, FIFO or socket is refused
    unread.
    """
    path = Path(path)
    with open_user_file(path, "the file", "Put the real file at that path.") as file:
        try:
            return unpickler(*_pickle_stream(file)).load()
        except TooLargeError as err:
            raise VibeError(f"'{path.name}' was not read: {err}.") from err
        except MemoryError as err:
            size = os.fstat(file.fileno()).st_size
            raise VibeError(
                f"'{path.name}' ({size:,} bytes) does not fit in the free memory: it is read whole. "
                "Free some memory or use a machine with more."
            ) from err
        except Exception as err:  # any unpickling failure means: not a file this reader accepts
            raise VibeError(f"'{path.name}' is not {expected} ({describe_failure(err)}). {hint}") from err


def _pickle_stream(file: BinaryIO) -> tuple[BinaryIO, ByteBudget | None]:
    """(the open file itself, None) when it is a plain pickle (arrays are read from it as they come, within
    the budget of its size), else (its decompressed content in memory, the budget of the file's size
    that decompressing it took from: what is left of it is what unpickling may build)."""
    compressed = is_compressed(file.read(6))
    file.seek(0)
    if not compressed:
        return file, None
    raw = file.read()
    budget = ByteBudget(len(raw))
    data = decompress_bounded(raw, budget.limit)
    budget.take(len(data), "the decompressed data")
    return io.BytesIO(data), budget


PERSON_ID_CHARS = 40  # of a person id, shown in object names and messages
_TRACK_SHAPES = {"pose": 72, "betas": 10, "orig_cam": 4, "pred_cam": 3, "bboxes": 4, "frame_ids": None}


def _track_arrays(track_id, data, label) -> dict[str, np.ndarray]:
    """One person's dict from the file -> its arrays (T rows each), shapes and values checked."""
    if not isinstance(data, dict) or any(k not in data for k in _TRACK_SHAPES):
        have = display_text(sorted(map(str, data))) if isinstance(data, dict) else type(data).__name__
        missing = [k for k in _TRACK_SHAPES if not isinstance(data, dict) or k not in data]
        raise VibeError(
            f"{label}: person {track_id} lacks {', '.join(missing)} "
            f"(it has {have}); is this a vibe_output.pkl from VIBE's demo.py?"
        )
    arrays = {}
    for key in _TRACK_SHAPES:  # kinds checked before any conversion: float frame ids, bool poses are damage
        value, kinds = data[key], ("iu" if key == "frame_ids" else "f")
        if not isinstance(value, np.ndarray) or value.dtype.kind not in kinds:
            what = f"an array of {value.dtype}" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
            expected = "integer" if key == "frame_ids" else "floating-point"
            raise VibeError(
                f"{label}: person {track_id}'s '{key}' is {what}, not an array of {expected} numbers; "
                "the file is damaged."
            )
        arrays[key] = value
    if arrays["frame_ids"].ndim != 1:
        raise VibeError(
            f"{label}: person {track_id}'s 'frame_ids' has shape {arrays['frame_ids'].shape}, expected (T,); "
            "the file is damaged."
        )
    T = len(arrays["frame_ids"])
    for key, width in _TRACK_SHAPES.items():
        expected = (T,) if width is None else (T, width)
        if arrays[key].shape != expected:
            raise VibeError(
                f"{label}: person {track_id}'s '{key}' has shape {arrays[key].shape}, expected {expected}; "
                "the file is damaged."
            )
    check_motion_values(
        f"{label}: person {track_id}",
        arrays["frame_ids"],
        {"betas": arrays["betas"]},
        **{k: v for k, v in arrays.items() if k not in ("frame_ids", "betas")},
    )
    return {k: v.astype(np.int64 if k == "frame_ids" else np.float64) for k, v in arrays.items()}


def video_size_from_cameras(orig_cam: np.ndarray, pred_cam: np.ndarray, bboxes: np.ndarray) -> tuple[int, int]:
    """orig_cam (T, 4), pred_cam (T, 3), bboxes (T, 4) [cx, cy, w, h] -> the video's (W, H) pixels."""
    s_h = pred_cam[:, 0] * bboxes[:, 3]
    ok = (np.abs(orig_cam[:, 0]) > 1e-9) & (np.abs(orig_cam[:, 1]) > 1e-9)
    if not np.any(ok):
        raise VibeError("the cameras in the file are all zero; cannot recover the video size.")
    size = [float(np.median(s_h[ok] / orig_cam[ok, axis])) for axis in (0, 1)]
    for name, value in zip(("width", "height"), size):
        check_range("the cameras in the file", f"the video {name} they imply", value, 1, MAX_IMAGE_SIDE_PX)
    return round(size[0]), round(size[1])


def weak_perspective_to_trans(orig_cam: np.ndarray, width_px: int, focal_length_px: float) -> np.ndarray:
    """orig_cam (T, 4) [sx, sy, tx, ty] -> SMPL transl (T, 3) in the camera frame, metres."""
    sx = np.maximum(np.abs(orig_cam[:, 0]), 1e-6)
    return np.stack([orig_cam[:, 2], orig_cam[:, 3], 2.0 * focal_length_px / (width_px * sx)], axis=-1)


def read_official_pkl(path: str | Path, *, fps: float = 30.0, focal_length_px: float | None = None) -> MotionSet:
    """vibe_output.pkl -> MotionSet (one track per person id; root and translation in camera frame).

    fps: the video's frame rate (the file does not store it). focal_length_px: the assumed camera
    focal length; default max(W, H), a normal lens.
    """
    path = Path(path)
    check_range(path.name, "the frame rate", fps, *FPS_RANGE)
    if focal_length_px is not None:
        check_range(path.name, "the focal length (pixels)", focal_length_px, *FOCAL_RANGE_PX)
    data = load_joblib_pickle(path)
    if not isinstance(data, dict) or not data:
        raise VibeError(
            f"'{path.name}' holds no people (expected a dict of person id -> results). "
            "Choose the vibe_output.pkl written by VIBE's demo.py."
        )
    tracks_raw = {
        tid: _track_arrays(display_text(tid, PERSON_ID_CHARS), d, path.name)
        for tid, d in sorted(data.items(), key=lambda kv: str(kv[0]))
    }
    width, height = video_size_from_cameras(
        np.concatenate([t["orig_cam"] for t in tracks_raw.values()]),
        np.concatenate([t["pred_cam"] for t in tracks_raw.values()]),
        np.concatenate([t["bboxes"] for t in tracks_raw.values()]),
    )
    focal = float(focal_length_px or max(width, height))
    tracks, names = [], set()
    for tid, t in tracks_raw.items():
        if len(t["frame_ids"]) == 0:
            continue
        # the name of objects and of lines printed: printable characters only (a NUL would cut it short)
        name = f"track_{display_text(tid, PERSON_ID_CHARS)}"
        if name in names:  # ids 1 and "1", or ids that differ only in characters not shown
            name = f"track_{display_text(repr(tid), PERSON_ID_CHARS)}"
        while name in names:
            name += "_"
        names.add(name)
        trans = weak_perspective_to_trans(t["orig_cam"], width, focal)
        # the translation the cameras imply, bounded like a stored one (a huge tx, a vanishing scale)
        check_motion_values(f"{path.name}: person {name[len('track_') :]}", t["frame_ids"], {}, trans=trans)
        tracks.append(
            TrackMotion(
                name=name,
                frame_ids=t["frame_ids"],
                pose=t["pose"],
                trans_m=trans,
                betas=np.median(t["betas"], axis=0),
            )
        )
    last = max((int(t.frame_ids[-1]) + 1 for t in tracks), default=0)
    return MotionSet(
        tracks=tracks,
        fps=float(fps),
        frame_count=last,
        source_name=path.stem,
        camera=CameraInfo(width, height, focal),
        fps_stored=False,
    )

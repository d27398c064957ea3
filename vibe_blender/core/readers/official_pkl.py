"""The official VIBE demo's ``vibe_output.pkl``, read without joblib (Blender does not ship it).

``demo.py`` writes ``joblib.dump({track_id: {pred_cam, orig_cam, verts, pose, betas, joints3d,
joints2d, joints2d_img_coord, bboxes, frame_ids}})``. joblib's format is a pickle in which each numpy
array is replaced by a ``NumpyArrayWrapper`` (shape, dtype, order) whose raw bytes follow the BUILD
opcode directly in the file (after one padding-length byte and padding, when the wrapper records an
alignment). The reader below is a restricted pickle reader: it lets through plain containers,
numpy dtypes/arrays and that wrapper, and refuses every other class, so a hostile file cannot run
code. zlib/gzip/bz2/lzma-compressed joblib files and plain pickles are read too.

The official result has no translation and no video size. Both are recovered here:
- video size: ``orig_cam = [sx, sy, tx, ty]`` with ``sx = s · h_box / W`` and ``sy = s · h_box / H``
  (``s`` from ``pred_cam``, ``h_box`` from ``bboxes``), so ``W = s · h_box / sx``;
- translation: VIBE's weak-perspective ``x_ndc = sx (X + tx)`` equals a pinhole camera of focal f
  (pixels) at depth ``tz = 2 f / (W · sx)``, so ``trans = (tx, ty, 2 f / (W · sx))``.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import zlib
from pathlib import Path

import numpy as np

from ..errors import VibeError
from ..motion import CameraInfo, MotionSet, TrackMotion


class _ArrayWrapper:
    """Stand-in for joblib's NumpyArrayWrapper: reads its array from the bytes that follow it."""

    def read(self, file) -> np.ndarray:
        d = self.__dict__
        dtype, shape = np.dtype(d["dtype"]), tuple(int(s) for s in d["shape"])
        if dtype.hasobject:
            raise VibeError("the file stores Python objects inside an array; refusing to read it.")
        if d.get("numpy_array_alignment_bytes") is not None:
            padding = file.read(1)
            file.read(int.from_bytes(padding, "little"))
        count = int(np.prod(shape, dtype=np.int64))
        raw = file.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise VibeError("the file ends in the middle of an array; it is truncated.")
        array = np.frombuffer(raw, dtype=dtype, count=count)
        array = array.reshape(shape[::-1]).T if d.get("order") == "F" else array.reshape(shape)
        return array.astype(dtype.newbyteorder("="), copy=True)


def _numpy_global(module: str, name: str):
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
        try:
            from numpy._core import multiarray                    # numpy >= 2
        except ImportError:
            from numpy.core import multiarray                     # numpy 1.x
        return getattr(multiarray, name)
    return None


class _RestrictedJoblibUnpickler(pickle._Unpickler):               # the pure-Python unpickler: BUILD is overridable
    dispatch = pickle._Unpickler.dispatch.copy()

    def __init__(self, file):
        super().__init__(file, encoding="latin1")
        self._raw = file

    def find_class(self, module, name):
        if module.startswith("joblib.numpy_pickle") and name == "NumpyArrayWrapper":
            return _ArrayWrapper
        found = _numpy_global(module, name)
        if found is not None:
            return found
        if module in ("collections",) and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module == "_codecs" and name == "encode":
            import codecs

            return codecs.encode
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a VIBE result")

    def load_build(self):
        pickle._Unpickler.load_build(self)
        if isinstance(self.stack[-1], _ArrayWrapper):
            self.stack[-1] = self.stack[-1].read(self._raw)

    dispatch[pickle.BUILD[0]] = load_build


def _decompressed(raw: bytes) -> bytes:
    """joblib's compressed formats: zlib ('ZF' prefix or plain), gzip, bz2, xz/lzma; else as is."""
    if raw.startswith(b"ZF"):                                     # joblib < 0.10 zlib container
        return zlib.decompress(raw[raw.index(b"x", 2):])
    if raw[:1] == b"\x78":
        return zlib.decompress(raw)
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    if raw[:3] == b"BZh":
        return bz2.decompress(raw)
    if raw[:6] == b"\xfd7zXZ\x00" or raw[:1] == b"\x5d":
        return lzma.decompress(raw)
    return raw


def load_joblib_pickle(path: str | Path):
    """Read a joblib (or plain) pickle of dicts/lists/numbers/strings/numpy arrays, nothing else."""
    path = Path(path)
    try:
        raw = _decompressed(path.read_bytes())
        return _RestrictedJoblibUnpickler(io.BytesIO(raw)).load()
    except VibeError as err:
        raise VibeError(f"Cannot read '{path.name}': {err}") from err
    except OSError as err:
        raise VibeError(f"Cannot read '{path}': {err.strerror or err}.") from err
    except Exception as err:  # any unpickling failure means: not a file this reader accepts
        raise VibeError(f"'{path.name}' is not a VIBE vibe_output.pkl ({err}). "
                        "Choose the vibe_output.pkl written by VIBE's demo.py.") from err


def _track_arrays(track_id, data, label):
    required = ("pose", "betas", "orig_cam", "pred_cam", "bboxes", "frame_ids")
    if not isinstance(data, dict) or any(k not in data for k in required):
        have = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise VibeError(f"{label}: person {track_id} lacks {', '.join(k for k in required if not isinstance(data, dict) or k not in data)} "
                        f"(it has {have}); is this a vibe_output.pkl from VIBE's demo.py?")
    return {k: np.asarray(data[k], dtype=np.int64 if k == "frame_ids" else np.float64) for k in required}


def video_size_from_cameras(orig_cam: np.ndarray, pred_cam: np.ndarray, bboxes: np.ndarray) -> tuple[int, int]:
    """orig_cam (T, 4), pred_cam (T, 3), bboxes (T, 4) [cx, cy, w, h] -> the video's (W, H) pixels."""
    s_h = pred_cam[:, 0] * bboxes[:, 3]
    ok = (np.abs(orig_cam[:, 0]) > 1e-9) & (np.abs(orig_cam[:, 1]) > 1e-9)
    if not np.any(ok):
        raise VibeError("the cameras in the file are all zero; cannot recover the video size.")
    return (int(round(float(np.median(s_h[ok] / orig_cam[ok, 0])))),
            int(round(float(np.median(s_h[ok] / orig_cam[ok, 1])))))


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
    data = load_joblib_pickle(path)
    if not isinstance(data, dict) or not data:
        raise VibeError(f"'{path.name}' holds no people (expected a dict of person id -> results). "
                        "Choose the vibe_output.pkl written by VIBE's demo.py.")
    tracks_raw = {tid: _track_arrays(tid, d, path.name) for tid, d in sorted(data.items(), key=lambda kv: str(kv[0]))}
    width, height = video_size_from_cameras(np.concatenate([t["orig_cam"] for t in tracks_raw.values()]),
                                            np.concatenate([t["pred_cam"] for t in tracks_raw.values()]),
                                            np.concatenate([t["bboxes"] for t in tracks_raw.values()]))
    focal = float(focal_length_px or max(width, height))
    tracks = []
    for tid, t in tracks_raw.items():
        if len(t["frame_ids"]) == 0:
            continue
        tracks.append(TrackMotion(name=f"track_{tid}", frame_ids=t["frame_ids"], pose=t["pose"],
                                  trans_m=weak_perspective_to_trans(t["orig_cam"], width, focal),
                                  betas=np.median(t["betas"], axis=0)))
    last = max((int(t.frame_ids[-1]) + 1 for t in tracks), default=0)
    return MotionSet(tracks=tracks, fps=float(fps), frame_count=last, source_name=path.stem,
                     camera=CameraInfo(width, height, focal))

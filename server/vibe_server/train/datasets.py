"""The original's preprocessed database files, read as they are, cut into T-frame windows.

Layouts (see the training spec): every `.pt` is a `joblib.dump` of a dict of numpy arrays; InstaVariety
is HDF5. Shared keys: `features` (N, 2048) per-frame backbone features, `bbox` (N, 4) [cx, cy, w, h]
pixels, `vid_name` (N,) one contiguous track per name. A window never crosses a track; the tail
shorter than T is dropped; windows start every `stride` frames.

Items (float32 tensors, T = seqlen): `features` (T, 2048), `kp_2d` (T, 49, 3) in [-1, 1] crop units
with confidence last, `kp_3d` (T, 49, 3) metres when training / (T, 14, 3) for evaluation, `theta`
(T, 85) = [1, 0, 0 | pose 72 | betas 10], `w_3d`, `w_smpl` (T,). Motion (AMASS) items: `theta` only.

Unlike the original, arrays are copied before they are transformed (the original overwrote the
database in place through views) and nothing passes through float16.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from vibe_blender.core.errors import VibeError
from vibe_blender.core.readers.official_pkl import JoblibUnpickler, load_joblib_pickle
from vibe_blender.core.safe_pickle import DtypeSpec

from .dataset_specs import (
    LSP_IN_SPIN,
    ORIGINAL_KEYPOINT_CROP_SCALE,
    db_path,
    spec_for,
    to_spin,
)
from .layout import JOINTS_3D, check_joint_layout, joint_count


class _DatabaseDtype(DtypeSpec):
    """``numpy.dtype`` in a database: plain numbers or fixed-width text (`vid_name`, `img_name`)."""

    allow_text = True


class _DatabaseUnpickler(JoblibUnpickler):
    """The restricted joblib reader of vibe_output.pkl, with text arrays: never runs code from the file."""

    GLOBALS: ClassVar[dict] = {**JoblibUnpickler.GLOBALS, ("numpy", "dtype"): _DatabaseDtype}
    what = "a training database"


def load_db(path: str | Path) -> dict:
    """A database file -> dict of numpy arrays (`.pt` = joblib pickle, read by a restricted reader that
    builds only containers, numbers, text and arrays) or a lazy dict view (`.h5` = HDF5)."""
    path = Path(path)
    if not path.exists():
        raise VibeError(
            f"Database file {path} not found. Put the preprocessed files (the original's "
            "data/vibe_db) there or point --db_dir at them."
        )
    if path.suffix == ".h5":
        return H5Database(path)
    db = load_joblib_pickle(
        path,
        unpickler=_DatabaseUnpickler,
        expected="a training database (a joblib dict of number and text arrays, as VIBE's preprocessing writes)",
        hint="Get the original's database files (its data/vibe_db folder) again.",
    )
    if not isinstance(db, dict):
        raise VibeError(f"{path} is not a database file (expected a dict of arrays, got {type(db).__name__}).")
    return db


class H5Database:
    """Read-only dict view of an HDF5 database (InstaVariety is 18 GB: frames are read per window).

    The file is opened lazily once per process, so DataLoader workers each get their own handle."""

    def __init__(self, path: Path):
        try:
            import h5py  # noqa: F401 - optional dependency (the train extra): checked when the file is opened
        except ImportError:
            raise VibeError("Reading the InstaVariety .h5 database needs h5py: pip install h5py") from None
        self.path, self._file, self._pid = path, None, None

    def _handle(self):
        import h5py  # optional dependency (the train extra)

        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def __contains__(self, key: str) -> bool:
        return key in self._handle()

    def __getitem__(self, key: str):
        return self._handle()[key]

    def __getstate__(self):  # DataLoader workers reopen the file themselves
        return {"path": self.path, "_file": None, "_pid": None}


def require_keys(db: dict, keys: tuple, path: str | Path) -> None:
    missing = [k for k in keys if k not in db]
    if missing:
        raise VibeError(
            f"{path} lacks {', '.join(missing)}, so it is not in the layout expected here (which needs "
            f"{', '.join(keys)}). Check that the dataset named for it matches the file (its name or --dataset)."
        )


def _trailing_rules(joints_2d_src: str) -> dict:
    """key -> what each of its N rows must be: per dimension an int (that size), a set (one of those
    sizes) or a (min, None) pair (at least min): what the items are cut from."""
    return {
        "features": (2048,),
        "bbox": (4,),
        "joints2D": ((joint_count(joints_2d_src), None), 3),  # the source order's joints
        "joints3D": (set(JOINTS_3D), (3, None)),  # common or spin-49 order
        "pose": (72,),
        "shape": ((10, None),),
        "theta": ((82, None),),  # 72 pose + 10 betas
    }


def _fits(size: int, rule) -> bool:
    if isinstance(rule, int):
        return size == rule
    if isinstance(rule, set):
        return size in rule
    return size >= rule[0]


def _describe(rule) -> str:
    if isinstance(rule, int):
        return str(rule)
    if isinstance(rule, set):
        return " or ".join(map(str, sorted(rule)))
    return f">={rule[0]}"


def check_database(db: dict, keys: tuple, path: str | Path, joints_2d_src: str = "spin") -> None:
    """Every array of ``keys`` as the items need it: one row per ``vid_name`` entry, numbers (a
    ``vid_name`` of text), the trailing shape of :func:`_trailing_rules`; else one VibeError naming
    the file and the array (the items would fail later with an IndexError, or be cut short)."""
    vid_name = db["vid_name"]
    if getattr(vid_name, "ndim", None) != 1:
        raise VibeError(
            f"{path}: 'vid_name' has shape {getattr(vid_name, 'shape', None)}, expected (N,), one track name "
            "per frame; the file is damaged or not a database of this dataset."
        )
    n = vid_name.shape[0]
    rules = _trailing_rules(joints_2d_src)
    for key in keys:
        if key not in rules:
            continue
        array, rule = db[key], rules[key]
        shape, dtype = getattr(array, "shape", None), getattr(array, "dtype", None)
        if shape is None or dtype is None or dtype.kind not in "iuf":
            what = f"an array of {dtype}" if dtype is not None else f"a {type(array).__name__}"
            raise VibeError(f"{path}: '{key}' is {what}, not an array of numbers; the file is damaged.")
        if len(shape) != 1 + len(rule) or shape[0] != n or not all(map(_fits, shape[1:], rule)):
            expected = ", ".join(["N", *map(_describe, rule)])
            raise VibeError(
                f"{path}: '{key}' has shape {tuple(shape)}, expected ({expected}) with N = {n}, the rows of "
                "'vid_name'; the file is damaged or not a database of this dataset."
            )


def split_into_chunks(vid_names: np.ndarray, seqlen: int, stride: int) -> list[tuple[int, int]]:
    """vid_names (N,) -> inclusive (start, end) windows of seqlen frames inside each track.

    Tracks are taken in order of first appearance and assumed contiguous; tracks shorter than
    seqlen give nothing; the tail after the last full window is dropped."""
    vid_names = np.asarray(vid_names)
    _, first, counts = np.unique(vid_names, return_index=True, return_counts=True)
    tracks = sorted(zip(first, counts))
    ends = [int(start) for start, _ in tracks[1:]] + [len(vid_names)]
    if any(end - start != count for (start, count), end in zip(tracks, ends)):
        raise VibeError(
            "A track (vid_name) of the database is split in several runs of frames; the "
            "database files keep each track's frames together. Is the file damaged?"
        )
    windows = []
    for start, count in tracks:
        for offset in range(0, count - seqlen + 1, stride):
            windows.append((int(start + offset), int(start + offset + seqlen - 1)))
    return windows


def normalize_keypoints_to_crop(kp_2d: np.ndarray, bbox: np.ndarray, crop_scale: float) -> np.ndarray:
    """kp_2d (T, J, 3) pixels, bbox (T, 4) [cx, cy, w, h] -> copy with x, y in [-1, 1] of the square
    crop of side crop_scale * bbox centred on the box (what the 224 crop then /112 - 1 gives)."""
    out = np.array(kp_2d, dtype=np.float64, copy=True)
    half_w = crop_scale * bbox[:, 2:3] / 2.0
    half_h = crop_scale * bbox[:, 3:4] / 2.0
    out[:, :, 0] = (out[:, :, 0] - bbox[:, 0:1]) / half_w
    out[:, :, 1] = (out[:, :, 1] - bbox[:, 1:2]) / half_h
    return out


class SequenceDataset(Dataset):
    """T-frame windows of one database file (2D, 3D or motion layout); see the module docstring."""

    def __init__(
        self,
        db_dir: str | Path,
        name: str,
        split: str = "train",
        seqlen: int = 16,
        fix_pennaction_joints: bool = True,
        match_keypoint_crop: bool = True,
        path: str | Path | None = None,
        layout_fix: str = "Use the database file of that dataset.",
    ):
        """db_dir + name + split pick the file (e.g. mpii3d, train -> mpii3d_train_db.pt); `path`
        names another file in that dataset's layout. split 'train' gives training items.
        `layout_fix` ends the message for a file in another dataset's joint layout: what to do."""
        self.spec = spec_for(name)
        self.split, self.seqlen = split, seqlen
        self.is_train = split == "train"
        self.path = Path(path) if path else db_path(db_dir, name, split)
        self.db = load_db(self.path)
        needed = {
            "motion": ("theta", "vid_name"),
            "2d": ("features", "joints2D", "vid_name"),
            "3d": ("features", "joints2D", "joints3D", "bbox", "vid_name"),
        }[self.spec.kind]
        if self.spec.kind == "2d" and name != "insta":
            needed = needed + ("bbox",)
        if self.spec.kind == "3d" and split in self.spec.smpl_splits:
            needed = needed + ("pose", "shape")
        require_keys(self.db, needed, self.path)

        self.joints_2d_src = self.spec.joints_2d
        if name == "pennaction" and not fix_pennaction_joints:
            self.joints_2d_src = "pennaction_original"
        check_joint_layout(self.spec, self.db, self.path, layout_fix)
        check_database(self.db, needed, self.path, self.joints_2d_src)
        # Insta's keypoints are pixels of the stored crop (scale 0): never box-normalised, either way
        keep_original = not match_keypoint_crop and self.spec.feature_crop_scale != 0.0
        self.keypoint_crop_scale = ORIGINAL_KEYPOINT_CROP_SCALE if keep_original else self.spec.feature_crop_scale
        stride = max(1, int(seqlen * self.spec.train_stride_fraction)) if self.is_train else seqlen
        self.vid_names = np.array(
            [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(self.db["vid_name"][()])]
        )
        self.windows = split_into_chunks(self.vid_names, seqlen, stride)
        if not self.windows:
            raise VibeError(
                f"{self.path} has no track of at least {seqlen} frames, the sequence length (--seqlen): "
                "there is no window to use. Lower --seqlen or use a file with longer tracks."
            )

    def __len__(self) -> int:
        return len(self.windows)

    def window_track(self, index: int) -> str:
        """-> the vid_name (track) of window `index`."""
        return str(self.vid_names[self.windows[index][0]])

    def __getitem__(self, index: int) -> dict:
        start, end = self.windows[index]
        frames = slice(start, end + 1)
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))
        if self.spec.kind == "motion":
            theta = np.asarray(self.db["theta"][frames], dtype=np.float64)[:, :82]
            cam = np.tile([1.0, 0.0, 0.0], (self.seqlen, 1))
            return {"theta": f32(np.concatenate([cam, theta], axis=1))}

        item = {"features": f32(self.db["features"][frames]), "kp_2d": f32(self._keypoints_2d(frames))}
        if self.spec.kind == "3d":
            item.update(self._targets_3d(frames))
        return item

    def _keypoints_2d(self, frames: slice) -> np.ndarray:
        """-> (T, 49, 3) in [-1, 1] crop units, confidence last (a copy: the db is never written)."""
        kp = to_spin(np.asarray(self.db["joints2D"][frames], dtype=np.float64), self.joints_2d_src)
        if self.keypoint_crop_scale == 0.0:  # Insta: pixels of the stored 224 crop
            kp[:, :, :2] = 2.0 * kp[:, :, :2] / 224.0 - 1.0
            return kp
        bbox = np.asarray(self.db["bbox"][frames], dtype=np.float64)
        return normalize_keypoints_to_crop(kp, bbox, self.keypoint_crop_scale)

    def _targets_3d(self, frames: slice) -> dict:
        joints_3d = np.asarray(self.db["joints3D"][frames], dtype=np.float64)[:, :, :3]
        if joints_3d.shape[1] == 14:  # common order (3DPW)
            kp_3d = to_spin(joints_3d, "common") if self.is_train else joints_3d
        else:  # spin-49
            kp_3d = joints_3d if self.is_train else joints_3d[:, LSP_IN_SPIN]
        has_smpl = self.split in self.spec.smpl_splits
        if has_smpl:
            pose = np.asarray(self.db["pose"][frames], dtype=np.float64)
            betas = np.asarray(self.db["shape"][frames], dtype=np.float64)[:, :10]
        else:
            pose, betas = np.zeros((self.seqlen, 72)), np.zeros((self.seqlen, 10))
        cam = np.tile([1.0, 0.0, 0.0], (self.seqlen, 1))
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))
        return {
            "kp_3d": f32(kp_3d),
            "theta": f32(np.concatenate([cam, pose, betas], axis=1)),
            "w_3d": torch.ones(self.seqlen),
            "w_smpl": torch.full((self.seqlen,), float(has_smpl)),
        }

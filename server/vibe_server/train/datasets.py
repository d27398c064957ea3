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

Values are checked where the original would fail on them (a NaN loss in training, NaN joint errors
or a failed Procrustes fit in evaluation): every value an item reads must be finite, as the float32
the items hold, except the SMPL ground truth of an evaluation file (a NaN pose or shape there only
makes PVE NaN, as in the original, and the other metrics are computed). In training every box must
also have a size: stricter than the original, which turns the keypoints of a zero-size box into
meaningless numbers instead of failing; but 3DPW's padded boxes (``DatasetSpec.padded_boxes``) give
those frames' keypoints confidence 0, as in evaluation (``frames_without_box`` counts them). A `.pt`
file is checked when it is opened, the (18 GB) `.h5` window by window. Values no item reads (a
track's tail, a joint no loss uses, the boxes in evaluation) are not checked.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from vibe_blender.core.bounded_arrays import (
    MAX_EXPANSION,
    MIN_BUDGET_BYTES,
    UntrustedDataError,
    plain_dtype,
)
from vibe_blender.core.errors import VibeError
from vibe_blender.core.readers.official_pkl import JoblibUnpickler, load_joblib_pickle
from vibe_blender.core.regular_file import open_user_file
from vibe_blender.core.safe_pickle import DtypeSpec

from ..model.discriminator import BODY_POSE_SLICE
from .dataset_specs import (
    LSP_IN_SPIN,
    ORIGINAL_KEYPOINT_CROP_SCALE,
    TO_SPIN,
    db_path,
    spec_for,
    to_spin,
)
from .layout import JOINTS_3D, check_joint_layout, joint_count

GET_AGAIN = "Get the original's database files (its data/vibe_db folder) again."
CHECK_ROWS = 1 << 14  # rows checked at a time: a temporary of a few tens of MB for the features
# theta as stored (global orient 3 | body pose 69 | betas 10): the body pose the motion discriminator
# and MPoser read, i.e. their slice of the item's theta without its 3 camera values.
BODY_POSE_IN_DB = slice(BODY_POSE_SLICE.start - 3, BODY_POSE_SLICE.stop - 3)


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
        hint=GET_AGAIN,
    )
    if not isinstance(db, dict):
        raise VibeError(f"{path} is not a database file (expected a dict of arrays, got {type(db).__name__}).")
    return db


H5_FILTERS = {1: "gzip", 2: "shuffle", 32000: "lzf"}  # the only HDF5 filters read (the original's file has none)
H5_COMPRESSORS = {1, 32000}
MAX_H5_CHUNK_BYTES = 16 << 20  # a chunk is read (and decompressed) whole for any window that touches it


def _h5_dataset_problem(dataset, file_size: int) -> str | None:
    """What makes an HDF5 dataset unsafe to read (None when nothing): every byte it declares must be
    stored in the file (at most MAX_EXPANSION times its stored bytes when compressed), with plain
    numbers or fixed-width text, bounded chunks and only gzip/lzf/shuffle filters. Fill values and
    unallocated chunks would otherwise let a 2 kB file declare gigabytes."""
    if dataset.shape is None:
        return "holds no array (an empty dataspace)"
    try:
        plain_dtype(dataset.dtype.str, allow_text=True)
    except UntrustedDataError:
        return f"has the type {dataset.dtype}, not plain numbers or fixed-width text"
    plist = dataset.id.get_create_plist()
    if dataset.is_virtual or plist.get_external_count():
        return "is stored outside the file (a virtual or external dataset)"
    filters = {plist.get_filter(i)[0] for i in range(plist.get_nfilters())}
    if filters - set(H5_FILTERS):
        return f"uses the HDF5 filters {sorted(filters - set(H5_FILTERS))}, not only {', '.join(H5_FILTERS.values())}"
    itemsize = dataset.dtype.itemsize
    if dataset.chunks and math.prod(dataset.chunks) * itemsize > MAX_H5_CHUNK_BYTES:
        return f"has chunks of {math.prod(dataset.chunks) * itemsize:,} bytes, more than {MAX_H5_CHUNK_BYTES:,}"
    stored = dataset.id.get_storage_size()
    if stored > file_size:
        return f"claims {stored:,} bytes of storage, more than the file's {file_size:,}"
    declared = math.prod(dataset.shape) * itemsize
    # chunks are decompressed one at a time, so compressed data has the expansion limit but no total cap
    expands_to = max(MIN_BUDGET_BYTES, MAX_EXPANSION * stored) if filters & H5_COMPRESSORS else stored
    if declared > expands_to:
        return f"declares {declared:,} bytes ({dataset.shape} {dataset.dtype}) but the file stores {stored:,} for it"
    return None


class H5Database:
    """Read-only dict view of an HDF5 database (InstaVariety is 18 GB: frames are read per window).

    The file is opened once per process, so DataLoader workers each get their own handle; each dataset
    is checked by :func:`_h5_dataset_problem` before its first read."""

    def __init__(self, path: Path):
        try:
            import h5py  # noqa: F401 - optional dependency (the train extra): checked when the file is opened
        except ImportError:
            raise VibeError("Reading the InstaVariety .h5 database needs h5py: pip install h5py") from None
        self.path, self._file, self._pid = path, None, None
        self._handle()  # a device, a FIFO or a file that is not HDF5 is named now, not in a worker

    def _handle(self):
        import h5py  # optional dependency (the train extra)

        if self._file is None or self._pid != os.getpid():
            raw = open_user_file(self.path, "the database", "Put the real file at that path.")
            try:  # h5py reads the descriptor checked above, not whatever the name points to now
                self._file = h5py.File(raw, "r")
            except Exception as err:  # noqa: BLE001 - whatever h5py fails on, the file is not a database
                raw.close()
                raise VibeError(f"{self.path} is not an HDF5 file h5py can read ({err}). {GET_AGAIN}") from err
            self._raw, self._size, self._pid, self._checked = raw, os.fstat(raw.fileno()).st_size, os.getpid(), {}
        return self._file

    def __contains__(self, key: str) -> bool:
        return key in self._handle()

    def __getitem__(self, key: str):
        import h5py  # optional dependency (the train extra)

        handle = self._handle()
        if key not in self._checked:
            link = handle.get(key, getlink=True)
            dataset = handle[key] if isinstance(link, h5py.HardLink) else None
            if not isinstance(dataset, h5py.Dataset):
                problem = "is not an array stored in the file (a group, or a link to elsewhere)"
            else:
                problem = _h5_dataset_problem(dataset, self._size)
            if problem:
                raise VibeError(f"{self.path}: '{key}' {problem}; the file is damaged. {GET_AGAIN}")
            self._checked[key] = dataset
        return self._checked[key]

    def __getstate__(self):  # DataLoader workers reopen the file themselves
        return {"path": self.path, "_file": None, "_pid": None}


def require_keys(db: dict, keys: tuple, path: str | Path, fix: str) -> None:
    """``fix``: what to do about a file that lacks some of ``keys`` (the command's own flags)."""
    missing = [k for k in keys if k not in db]
    if missing:
        raise VibeError(
            f"{path} lacks {', '.join(missing)}, so it is not in the layout expected here (which needs "
            f"{', '.join(keys)}). {fix}"
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
    if vid_name.dtype.kind not in "US":  # numbers would be compared as track names: NaN equals no row
        raise VibeError(
            f"{path}: 'vid_name' is an array of {vid_name.dtype}, not of text (one track name per frame, as "
            "VIBE's preprocessing writes); the file is damaged or not a database of this dataset."
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


def track_name(value: object) -> str:
    """A `vid_name` entry as text: the `.h5` stores bytes, shown with any byte that is not UTF-8 escaped."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def split_into_chunks(
    vid_names: np.ndarray, seqlen: int, stride: int, source: str | Path = "The database"
) -> list[tuple[int, int]]:
    """vid_names (N,) -> inclusive (start, end) windows of seqlen frames inside each track.

    Tracks are taken in order of first appearance and must be contiguous (``source`` names the file
    in the message when one is not); tracks shorter than seqlen give nothing; the tail after the last
    full window is dropped."""
    vid_names = np.asarray(vid_names)
    _, first, counts = np.unique(vid_names, return_index=True, return_counts=True)
    tracks = sorted(zip(first, counts))
    ends = [int(start) for start, _ in tracks[1:]] + [len(vid_names)]
    for (start, count), end in zip(tracks, ends):
        if end - start != count:
            rows = np.flatnonzero(vid_names == vid_names[start])
            gap = int(np.flatnonzero(np.diff(rows) > 1)[0])
            first_run = f"rows {rows[0]}-{rows[gap]}" if rows[gap] > rows[0] else f"row {rows[0]}"
            raise VibeError(
                f"{source}: the frames of track {track_name(vid_names[start])!r} are not together ({first_run}, "
                f"then again from row {rows[gap + 1]}), so its windows would cross other tracks; the "
                f"original's preprocessing keeps each track's frames together. {GET_AGAIN}"
            )
    windows = []
    for start, count in tracks:
        for offset in range(0, count - seqlen + 1, stride):
            windows.append((int(start + offset), int(start + offset + seqlen - 1)))
    return windows


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _finite_rows(values: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N,) whether every value of each row is finite as the float32 the items hold: a
    float64 1e300 is finite but becomes inf there (NaN fails the comparison too)."""
    return (np.abs(values.reshape(len(values), -1)) <= FLOAT32_MAX).all(axis=1)


def usable_boxes(bbox: np.ndarray) -> np.ndarray:
    """bbox (N, 4) [cx, cy, w, h] -> (N,) whether each box is finite with a positive width and height."""
    return _finite_rows(bbox) & (bbox[:, 2] > 0) & (bbox[:, 3] > 0)


def normalize_keypoints_to_crop(kp_2d: np.ndarray, bbox: np.ndarray, crop_scale: float) -> np.ndarray:
    """kp_2d (T, J, 3) pixels, bbox (T, 4) [cx, cy, w, h] -> copy with x, y in [-1, 1] of the square
    crop of side crop_scale * bbox centred on the box (what the 224 crop then /112 - 1 gives).

    A frame whose box is not usable (3DPW's padded boxes: zero centre, infinite size) has no crop: its
    keypoints become 0 with confidence 0. Evaluation and 3DPW training meet one (``padded_boxes``); other
    training files with one are refused."""
    usable = usable_boxes(bbox)
    bbox = np.where(usable[:, None], bbox, 1.0)  # no division by a zero or infinite size
    out = np.array(kp_2d, dtype=np.float64, copy=True)
    half_w = crop_scale * bbox[:, 2:3] / 2.0
    half_h = crop_scale * bbox[:, 3:4] / 2.0
    out[:, :, 0] = (out[:, :, 0] - bbox[:, 0:1]) / half_w
    out[:, :, 1] = (out[:, :, 1] - bbox[:, 1:2]) / half_h
    out[~usable] = 0.0
    return out


def _lsp_joints(joints_3d: np.ndarray) -> np.ndarray:
    """joints3D rows (N, 14 or 49, >=3) -> (N, 14, 3): the joints the 3D loss and the metrics read."""
    return joints_3d[:, LSP_IN_SPIN, :3] if joints_3d.shape[1] == 49 else joints_3d[:, :, :3]


def _float32_tensor(values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float32))


def _covered_spans(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive windows -> the [start, stop) row ranges they cover together."""
    spans: list[list[int]] = []
    for start, end in windows:  # in row order, each track's windows one after another
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end + 1)
        else:
            spans.append([start, end + 1])
    return [(start, stop) for start, stop in spans]


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
        `layout_fix` ends the message for a file in another dataset's layout (keys or joints): what to do."""
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
        require_keys(self.db, needed, self.path, layout_fix)

        self.joints_2d_src = self.spec.joints_2d
        if name == "pennaction" and not fix_pennaction_joints:
            self.joints_2d_src = "pennaction_original"
        check_joint_layout(self.spec, self.db, self.path, layout_fix)
        check_database(self.db, needed, self.path, self.joints_2d_src)
        # Insta's keypoints are pixels of the stored crop (scale 0): never box-normalised, either way
        keep_original = not match_keypoint_crop and self.spec.feature_crop_scale != 0.0
        self.keypoint_crop_scale = ORIGINAL_KEYPOINT_CROP_SCALE if keep_original else self.spec.feature_crop_scale
        stride = max(1, int(seqlen * self.spec.train_stride_fraction)) if self.is_train else seqlen
        self.vid_names = np.asarray(self.db["vid_name"][()])  # names compared as stored (bytes in the .h5)
        self.windows = split_into_chunks(self.vid_names, seqlen, stride, self.path)
        if not self.windows:
            raise VibeError(
                f"{self.path} has no track of at least {seqlen} frames, the sequence length (--seqlen): "
                "there is no window to use. Lower --seqlen or use a file with longer tracks."
            )
        self.read_keys = tuple(k for k in needed if k != "vid_name")  # what each item reads
        self.value_checks = self._value_checks()
        self.frames_without_box = self._frames_without_box()
        if not isinstance(self.db, H5Database):  # in memory: checked once; the .h5 window by window
            for start, stop in _covered_spans(self.windows):
                for first in range(start, stop, CHECK_ROWS):
                    rows = slice(first, min(stop, first + CHECK_ROWS))
                    for key in self.value_checks:
                        self._check_values(key, self.db[key][rows], first)

    def _value_checks(self) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        """key -> rows of that array -> (rows,) whether the values the items read from each are usable
        (the module docstring says which)."""
        if self.spec.kind == "motion":
            return {"theta": lambda rows: _finite_rows(rows[:, BODY_POSE_IN_DB])}
        checks = {"features": _finite_rows}
        if self.is_train:  # evaluation reads neither the 2D keypoints nor the boxes
            mapped = sorted(set(TO_SPIN[self.joints_2d_src].values()))
            checks["joints2D"] = lambda rows: _finite_rows(rows[:, mapped])
            if self.keypoint_crop_scale and not self.spec.padded_boxes:
                checks["bbox"] = usable_boxes
        if self.spec.kind == "3d":
            checks["joints3D"] = lambda rows: _finite_rows(_lsp_joints(rows))
        if self.is_train and self.split in self.spec.smpl_splits:  # evaluation: they only make PVE NaN
            checks["pose"] = _finite_rows
            checks["shape"] = lambda rows: _finite_rows(rows[:, :10])
        return checks

    def _frames_without_box(self) -> int:
        """How many rows the training windows read have a padded box (``spec.padded_boxes``): their
        keypoints get confidence 0, as in evaluation."""
        if not (self.is_train and self.keypoint_crop_scale and self.spec.padded_boxes):
            return 0
        spans = _covered_spans(self.windows)
        return sum(int((~usable_boxes(np.asarray(self.db["bbox"][start:stop]))).sum()) for start, stop in spans)

    def _check_values(self, key: str, rows: np.ndarray, first_row: int) -> None:
        """VibeError naming the file, the row and its track when a value the items read is unusable."""
        usable = self.value_checks[key](np.asarray(rows))
        if usable.all():
            return
        row = first_row + int(np.argmin(usable))
        track = track_name(self.vid_names[row])
        if key == "bbox":
            problem = (
                f"'bbox' {np.asarray(rows)[row - first_row].tolist()} at row {row} (track {track!r}) has no finite, "
                "positive width and height, so the keypoints of that frame cannot be put in its crop"
            )
        else:
            reader, failure = ("training", "a NaN loss") if self.is_train else ("evaluation", "NaN metrics")
            problem = (
                f"'{key}' holds a NaN, an infinite value or one beyond float32's range (3.4e38) at row {row} "
                f"(track {track!r}), which {reader} reads "
                f"(the original would end in {failure})"
            )
        raise VibeError(f"{self.path}: {problem}. The file is damaged: make it again or get it again.")

    def __len__(self) -> int:
        return len(self.windows)

    def window_track(self, index: int) -> str:
        """-> the vid_name (track) of window `index`."""
        return track_name(self.vid_names[self.windows[index][0]])

    def __getitem__(self, index: int) -> dict:
        start, end = self.windows[index]
        rows = {key: np.asarray(self.db[key][start : end + 1]) for key in self.read_keys}
        if isinstance(self.db, H5Database):
            for key in self.value_checks:
                self._check_values(key, rows[key], start)
        if self.spec.kind == "motion":
            theta = rows["theta"].astype(np.float64)[:, :82]
            cam = np.tile([1.0, 0.0, 0.0], (self.seqlen, 1))
            return {"theta": _float32_tensor(np.concatenate([cam, theta], axis=1))}

        item = {"features": _float32_tensor(rows["features"]), "kp_2d": _float32_tensor(self._keypoints_2d(rows))}
        if self.spec.kind == "3d":
            item.update(self._targets_3d(rows))
        return item

    def _keypoints_2d(self, rows: dict) -> np.ndarray:
        """-> (T, 49, 3) in [-1, 1] crop units, confidence last (a copy: the db is never written)."""
        kp = to_spin(rows["joints2D"].astype(np.float64), self.joints_2d_src)
        if self.keypoint_crop_scale == 0.0:  # Insta: pixels of the stored 224 crop
            kp[:, :, :2] = 2.0 * kp[:, :, :2] / 224.0 - 1.0
            return kp
        return normalize_keypoints_to_crop(kp, rows["bbox"].astype(np.float64), self.keypoint_crop_scale)

    def _targets_3d(self, rows: dict) -> dict:
        joints_3d = rows["joints3D"].astype(np.float64)[:, :, :3]
        if not self.is_train:
            kp_3d = _lsp_joints(joints_3d)
        else:  # spin-49, from the common order of 3DPW
            kp_3d = to_spin(joints_3d, "common") if joints_3d.shape[1] == 14 else joints_3d
        has_smpl = self.split in self.spec.smpl_splits
        if has_smpl:
            pose = rows["pose"].astype(np.float64)
            betas = rows["shape"].astype(np.float64)[:, :10]
        else:
            pose, betas = np.zeros((self.seqlen, 72)), np.zeros((self.seqlen, 10))
        cam = np.tile([1.0, 0.0, 0.0], (self.seqlen, 1))
        return {
            "kp_3d": _float32_tensor(kp_3d),
            "theta": _float32_tensor(np.concatenate([cam, pose, betas], axis=1)),
            "w_3d": torch.ones(self.seqlen),
            "w_smpl": torch.full((self.seqlen,), float(has_smpl)),
        }


@contextlib.contextmanager
def worker_errors_unwrapped() -> Iterator[None]:
    """For the block, a VibeError raised in a DataLoader worker (a damaged window of an .h5 file) is
    its own message again: torch raises it in this process as "Caught VibeError in DataLoader worker
    process N." followed by the worker's whole traceback, whose last line holds the message."""
    try:
        yield
    except VibeError as err:
        text, raised_as = str(err), f"\n{type(err).__module__}.{type(err).__qualname__}: "
        if not text.startswith(f"Caught {type(err).__name__} in DataLoader worker") or raised_as not in text:
            raise
        err.__traceback__ = None  # (its frames hold the loader: let its workers go now, not when collected)
        raise VibeError(text[text.rindex(raised_as) + len(raised_as) :].rstrip("\n")) from None

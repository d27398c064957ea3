"""Which datasets training and evaluation read, and how: each one's database files, joint orders and
crop scales (the original's tables), with no I/O and no torch, so the settings and the layout
checks can name them without loading the readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vibe_blender.core.errors import VibeError

NUM_SPIN_JOINTS = 49
LSP_IN_SPIN = slice(25, 39)  # the 14 common (LSP-order) joints inside spin-49

# dst spin-49 index <- src index, per source joint order (from the original's joint-name tables).
TO_SPIN = {
    "insta": {
        0: 14,
        1: 12,
        2: 8,
        3: 7,
        4: 6,
        5: 9,
        6: 10,
        7: 11,
        9: 2,
        10: 1,
        11: 24,
        12: 3,
        13: 4,
        14: 23,
        15: 16,
        16: 15,
        17: 18,
        18: 17,
        19: 19,
        20: 21,
        21: 5,
        22: 20,
        23: 22,
        24: 0,
        38: 13,
    },
    "common": {25 + i: i for i in range(14)},
    "spin": {i: i for i in range(NUM_SPIN_JOINTS)},
    # What the original applies to PennAction (its 13-name 'pennaction' order, although the stored
    # array is in common order): kept only to reproduce it with fix_pennaction_joints=false.
    "pennaction_original": {
        38: 0,
        34: 1,
        33: 2,
        35: 3,
        32: 4,
        36: 5,
        31: 6,
        28: 7,
        27: 8,
        29: 9,
        26: 10,
        30: 11,
        25: 12,
    },
}


def to_spin(joints: np.ndarray, src: str) -> np.ndarray:
    """joints (N, J_src, C) -> (N, 49, C) float64 copy; joints the source lacks stay zero (conf 0)."""
    mapping = TO_SPIN[src]
    out = np.zeros((len(joints), NUM_SPIN_JOINTS, joints.shape[2]))
    dst, src_idx = list(mapping), list(mapping.values())
    out[:, dst] = joints[:, src_idx]
    return out


@dataclass(frozen=True)
class DatasetSpec:
    """How one dataset's database file is read."""

    name: str
    kind: str  # '2d', '3d' or 'motion'
    files: dict  # split -> file name in db_dir
    joints_2d: str = "spin"  # source order of joints2D
    joints_3d: str = "spin"  # source order of joints3D
    feature_crop_scale: float = 1.2  # crop side / bbox side the features were extracted with
    train_stride_fraction: float = 1.0  # window stride as a fraction of seqlen (training)
    smpl_splits: tuple = ()  # splits whose pose/shape are ground truth (w_smpl = 1)
    # boxes without a size where the original's preprocessing padded a track (3DPW's [0, 0, inf, inf]):
    # those frames' keypoints get confidence 0 (normalize_keypoints_to_crop) instead of refusing the file
    padded_boxes: bool = False
    extra: dict = field(default_factory=dict)


DATASETS = {
    "insta": DatasetSpec(
        "insta", "2d", {"train": "insta_train_db.h5"}, joints_2d="insta", feature_crop_scale=0.0
    ),  # 0: keypoints are already in the 224 crop's pixels
    "pennaction": DatasetSpec(
        "pennaction",
        "2d",
        {"train": "pennaction_train_db.pt"},
        joints_2d="common",
        feature_crop_scale=1.3,
        train_stride_fraction=0.25,
    ),
    "posetrack": DatasetSpec(
        "posetrack", "2d", {"train": "posetrack_train_db.pt"}, feature_crop_scale=1.3, train_stride_fraction=0.25
    ),
    "mpii3d": DatasetSpec(
        "mpii3d", "3d", {"train": "mpii3d_train_db.pt", "val": "mpii3d_val_db.pt"}, feature_crop_scale=1.3
    ),
    "3dpw": DatasetSpec(
        "3dpw",
        "3d",
        {"train": "3dpw_train_db.pt", "val": "3dpw_val_db.pt", "test": "3dpw_test_db.pt"},
        joints_2d="common",
        joints_3d="common",
        smpl_splits=("train", "val", "test"),
        padded_boxes=True,
    ),
    "h36m": DatasetSpec("h36m", "3d", {"train": "h36m_train_db.pt", "val": "h36m_val_db.pt"}, smpl_splits=("train",)),
    "amass": DatasetSpec("amass", "motion", {"train": "amass_db.pt"}),
}
ORIGINAL_KEYPOINT_CROP_SCALE = 1.2  # what the original normalises every non-Insta keypoint with


def spec_for(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise VibeError(f"Unknown dataset {name!r}; choose from {', '.join(DATASETS)}.")
    return DATASETS[name]


def db_path(db_dir: str | Path, name: str, split: str) -> Path:
    spec = spec_for(name)
    if split not in spec.files:
        raise VibeError(f"Dataset {name!r} has no {split!r} split; it has {', '.join(spec.files)}.")
    return Path(db_dir) / spec.files[split]

"""Tiny database files in the original's layouts, with random content, for tests and smoke runs.

Same file names, keys, shapes and dtypes as the preprocessed `data/vibe_db` files (see the training
spec), a few tracks each. The numbers mean nothing: smooth random motion, random features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FEATURE_SIZE = 2048


def _tracks(prefix: str, lengths: list[int]) -> np.ndarray:
    return np.concatenate([[f"{prefix}_{i}"] * n for i, n in enumerate(lengths)])


def _smooth(rng, n: int, dims: int, amplitude: float) -> np.ndarray:
    """(n, dims) sinusoids with random phase and frequency: motion-like curves."""
    t = np.arange(n)[:, None]
    return amplitude * np.sin(rng.uniform(0.05, 0.3, dims) * t + rng.uniform(0, 6.3, dims))


def _per_track(rng, lengths, dims, amplitude):
    return np.concatenate([_smooth(rng, n, dims, amplitude) for n in lengths])


def _bbox(rng, n: int) -> np.ndarray:
    centre = rng.uniform(300, 700, (n, 2))
    side = rng.uniform(200, 400, (n, 1))
    return np.concatenate([centre, side, side], axis=1)


def _keypoints_in_box(rng, bbox: np.ndarray, joints: int, visible: np.ndarray | None = None) -> np.ndarray:
    """(N, joints, 3) pixels inside each box, confidence 1 (or `visible`)."""
    offset = rng.uniform(-0.45, 0.45, (len(bbox), joints, 2)) * bbox[:, None, 2:3]
    xy = bbox[:, None, :2] + offset
    conf = np.ones((len(bbox), joints, 1)) if visible is None else visible[..., None]
    return np.concatenate([xy, conf], axis=2)


def _features(rng, n: int) -> np.ndarray:
    return np.abs(rng.normal(0, 1, (n, FEATURE_SIZE))).astype(np.float32)  # post-ReLU, non-negative


def write_3d_db(
    path: Path, rng: np.random.Generator, lengths: list[int], joints: int, with_smpl: bool, prefix: str
) -> None:
    import joblib  # optional dependency (the train extra)

    n = sum(lengths)
    bbox = _bbox(rng, n)
    db = {
        "vid_name": _tracks(prefix, lengths),
        "frame_id": np.concatenate([np.arange(k) for k in lengths]),
        "img_name": np.array([f"{prefix}/image_{i:05d}.jpg" for i in range(n)]),
        "joints2D": _keypoints_in_box(rng, bbox, joints),
        "joints3D": _per_track(rng, lengths, joints * 3, 0.4).reshape(n, joints, 3).astype(np.float32),
        "bbox": bbox,
        "features": _features(rng, n),
    }
    if joints == 49:
        db["joints2D"][:, :25, 2] = 0.0  # ground-truth joints only
    if with_smpl:
        pose = _per_track(rng, lengths, 72, 0.3)
        pose[:, 0] += np.pi  # upright in the camera frame
        db["pose"] = pose.astype(np.float32)
        db["shape"] = np.repeat(rng.normal(0, 0.5, (len(lengths), 10)), lengths, axis=0).astype(np.float32)
    joblib.dump(db, path)


def write_synthetic_db(folder: str | Path, seed: int = 0, lengths: list[int] | None = None) -> Path:
    """Writes amass_db.pt, insta_train_db.h5 (when h5py is installed), mpii3d_{train,val}_db.pt,
    3dpw_{train,val,test}_db.pt, h36m_{train,val}_db.pt, pennaction_train_db.pt and
    posetrack_train_db.pt into `folder`. Track lengths default to [40, 23, 10] (the last track is
    shorter than 16 frames, so it yields no window)."""
    import joblib  # optional dependency (the train extra)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lengths = lengths or [40, 23, 10]
    n = sum(lengths)

    # AMASS: theta (N, 82) = 72 axis-angle + 10 betas, smooth motion.
    amass_lengths = [80, 64, 48]
    theta = np.concatenate(
        [_per_track(rng, amass_lengths, 72, 0.4), np.repeat(rng.normal(0, 0.5, (3, 10)), amass_lengths, axis=0)], axis=1
    )
    joblib.dump({"theta": theta, "vid_name": _tracks("CMU_01", amass_lengths)}, folder / "amass_db.pt")

    write_3d_db(folder / "mpii3d_train_db.pt", rng, lengths, 49, False, "subj1_seq1_vid0_seg")
    write_3d_db(folder / "mpii3d_val_db.pt", rng, lengths, 49, False, "subj1_seg")
    write_3d_db(folder / "h36m_train_db.pt", rng, lengths, 49, True, "S1_walking")
    write_3d_db(folder / "h36m_val_db.pt", rng, lengths, 49, False, "S9_walking")
    for split in ("train", "val", "test"):
        write_3d_db(folder / f"3dpw_{split}_db.pt", rng, lengths, 14, True, f"courtyard_{split}")

    bbox = _bbox(rng, n)
    penn = _keypoints_in_box(rng, bbox, 14)
    penn[:, 12] = 0.0  # PennAction has no neck
    joblib.dump(
        {
            "vid_name": _tracks("penn", lengths),
            "img_name": np.array([f"p{i}.jpg" for i in range(n)]),
            "joints2D": penn,
            "bbox": bbox,
            "features": _features(rng, n),
        },
        folder / "pennaction_train_db.pt",
    )
    bbox = _bbox(rng, n)
    visible = np.zeros((n, 49))
    visible[:, [25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 44, 47, 48]] = 1.0
    joblib.dump(
        {
            "vid_name": _tracks("posetrack", lengths),
            "img_name": np.array([f"q{i}.jpg" for i in range(n)]),
            "joints2D": _keypoints_in_box(rng, bbox, 49, visible),
            "bbox": bbox,
            "features": _features(rng, n),
        },
        folder / "posetrack_train_db.pt",
    )

    try:
        import h5py  # optional dependency (the train extra)
    except ImportError:
        return folder
    with h5py.File(folder / "insta_train_db.h5", "w") as f:
        f["vid_name"] = np.array([v.encode() for v in _tracks("insta.tfrecord", lengths)])
        f["frame_id"] = np.concatenate([np.arange(k) for k in lengths])
        kp = np.concatenate([rng.uniform(20, 204, (n, 25, 2)), (rng.uniform(size=(n, 25, 1)) > 0.2)], axis=2)
        f["joints2D"] = kp
        f["features"] = _features(rng, n)
    return folder

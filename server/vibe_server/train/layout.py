"""Does a database file's content match the dataset it is read as? The keys are checked when it is
opened (`datasets.require_keys`); the joint counts are checked here, from the arrays' shapes, since a
file of another dataset otherwise fails deep inside a batch (index out of bounds) or, worse, is read
with the wrong joint order without a word."""

from __future__ import annotations

from vibe_blender.core.errors import VibeError

from .datasets import DATASETS, TO_SPIN, SequenceDataset

JOINTS_3D = (14, 49)  # what `SequenceDataset._targets_3d` reads: the common 14 or spin-49


def joint_count(order: str) -> int:
    """Joints a file in this source order has (one past the highest index the mapping reads)."""
    return max(TO_SPIN[order].values()) + 1


def _shape(db, key: str) -> tuple:
    return tuple(db[key].shape)


def check_joint_layout(dataset: SequenceDataset, fix: str) -> None:
    """Raises VibeError when joints2D / joints3D of `dataset`'s file do not have its dataset's shapes,
    naming the datasets the file looks like; `fix` says what to do (it depends on the command)."""
    spec = dataset.spec
    if spec.kind == "motion":
        return
    expected_2d = joint_count(dataset.joints_2d_src)
    shape_2d = _shape(dataset.db, "joints2D")
    problems = []
    if len(shape_2d) != 3 or shape_2d[1:] != (expected_2d, 3):
        problems.append(f"joints2D has shape {shape_2d}, {spec.name} files have (N, {expected_2d}, 3)")
    if spec.kind == "3d":
        shape_3d = _shape(dataset.db, "joints3D")
        if len(shape_3d) != 3 or shape_3d[1] not in JOINTS_3D or shape_3d[2] < 3:
            problems.append(f"joints3D has shape {shape_3d}, expected (N, 14 or 49, 3)")
    if not problems:
        return
    looks_like = [
        other.name
        for other in DATASETS.values()
        if other.kind == spec.kind
        and other.name != spec.name
        and len(shape_2d) == 3
        and shape_2d[1] == joint_count(other.joints_2d)
    ]
    guess = f" It looks like {' or '.join(looks_like)} data." if looks_like else ""
    raise VibeError(f"{dataset.path} is not in the {spec.name} layout: its {'; its '.join(problems)}.{guess} {fix}")

"""Does a database file's content match the dataset it is read as? The keys are checked when it is
opened (`datasets.require_keys`); the joint counts are checked here, from the arrays' shapes, before
any other shape (`datasets.check_database`), since a file of another dataset otherwise fails deep
inside a batch (index out of bounds) or, worse, is read with the wrong joint order without a word;
the message names the datasets the file looks like."""

from __future__ import annotations

from pathlib import Path

from vibe_blender.core.errors import VibeError

from .dataset_specs import DATASETS, TO_SPIN, DatasetSpec

JOINTS_3D = (14, 49)  # what `SequenceDataset._targets_3d` reads: the common 14 or spin-49


def joint_count(order: str) -> int:
    """Joints a file in this source order has (one past the highest index the mapping reads)."""
    return max(TO_SPIN[order].values()) + 1


def _shape(db, key: str) -> tuple:
    return tuple(db[key].shape)


def _layout_problems(spec: DatasetSpec, db: dict) -> list[str]:
    """What in joints2D / joints3D of ``db`` does not have the shapes of dataset ``spec``'s files."""
    expected_2d = joint_count(spec.joints_2d)  # as stored; how it is read may differ (pennaction)
    shape_2d = _shape(db, "joints2D")
    problems = []
    if len(shape_2d) != 3 or shape_2d[1:] != (expected_2d, 3):
        problems.append(f"joints2D has shape {shape_2d}, {spec.name} files have (N, {expected_2d}, 3)")
    if spec.kind == "3d":
        shape_3d = _shape(db, "joints3D")
        if len(shape_3d) != 3 or shape_3d[1] not in JOINTS_3D or shape_3d[2] < 3:
            problems.append(f"joints3D has shape {shape_3d}, expected (N, 14 or 49, 3)")
    return problems


def check_joint_layout(spec: DatasetSpec, db: dict, path: str | Path, fix: str) -> None:
    """Raises VibeError when joints2D / joints3D of the database ``db`` (read from ``path``) do not have
    the shapes of dataset ``spec``'s files, naming the datasets whose shapes they have; ``fix`` says what
    to do (it depends on the command)."""
    if spec.kind == "motion" or not all(hasattr(db[key], "shape") for key in ("joints2D", "joints3D") if key in db):
        return  # check_database names what a non-array is
    problems = _layout_problems(spec, db)
    if not problems:
        return
    looks_like = [
        other.name
        for other in DATASETS.values()
        if other.kind == spec.kind and other.name != spec.name and not _layout_problems(other, db)
    ]
    guess = f" It looks like {' or '.join(looks_like)} data." if looks_like else ""
    raise VibeError(f"{path} is not in the {spec.name} layout: its {'; its '.join(problems)}.{guess} {fix}")

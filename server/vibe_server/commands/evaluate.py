"""``vibe-mocap evaluate DB_FILE``: MPJPE, PA-MPJPE, PVE, ACCEL, ACCEL_ERR of a VIBE checkpoint on a
database file (3DPW, MPI-INF-3DHP or Human3.6M layout), overall and per sequence."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from vibe_blender.core.atomic_file import atomic_write_bytes
from vibe_blender.core.errors import VibeError
from vibe_blender.core.regular_file import NOT_REGULAR

from ..data.loading import H36M_REGRESSOR, MODEL_FILES, VIBE_CHECKPOINT, require_files, resolve_data_dir
from ..train.config import TrainConfig, check_setting
from ..train.dataset_specs import DATASETS
from ..value_range import ValueRange
from .model_data_outputs import check_output_outside_model_data
from .shared_arguments import add_data_dir_argument, add_device_argument

# the window and batch of the per-epoch validation, which are the original's evaluation ones
SEQLEN, BATCH_SIZE = TrainConfig.seqlen, TrainConfig.val_batch_size
# windows per forward pass: a larger batch only holds more memory at once (the SMPL meshes of its frames)
BATCH_SIZES = ValueRange(ge=1, le=4096)
LAYOUTS = tuple(name for name, spec in DATASETS.items() if spec.kind == "3d")  # files with 3D ground truth


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a VIBE checkpoint on a 3DPW / MPI-INF-3DHP / H36M database file")
    p.add_argument("db_file", help="e.g. data/vibe_db/3dpw_test_db.pt")
    p.add_argument("--checkpoint", help="VIBE checkpoint (default: vibe_model_wo_3dpw.pth.tar in the data folder)")
    p.add_argument(
        "--dataset",
        choices=LAYOUTS,
        help="layout of db_file (default: from its name, e.g. 3dpw_test_db.pt -> 3dpw)",
    )
    add_data_dir_argument(p, "SMPL, J_regressor_h36m.npy")
    p.add_argument(
        "--seqlen", type=int, default=SEQLEN, help=f"window length T (results depend on it; default {SEQLEN})"
    )
    p.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help=f"windows per forward pass (default {BATCH_SIZE})"
    )
    add_device_argument(p, default="cpu")
    p.add_argument("--json", dest="json_path", help="also write the results to this JSON file")
    p.set_defaults(run=run)


def dataset_from_name(db_file: Path) -> str:
    for name in LAYOUTS:
        if db_file.name.startswith(name):
            return name
    raise VibeError(f"Cannot tell the layout of {db_file.name} from its name; pass --dataset {_one_of(LAYOUTS)}.")


def _not_a_file(path: Path, what: str) -> str:
    """Why ``path``, which is no regular file, is not ``what`` (e.g. "a database file")."""
    return f"is a folder, not {what}" if path.is_dir() else (NOT_REGULAR if path.exists() else "not found")


def _one_of(names: tuple[str, ...]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}"


def run(args: argparse.Namespace) -> int:
    check_setting("seqlen", args.seqlen, flag="--seqlen", default=SEQLEN)
    check_setting("batch_size", args.batch_size, flag="--batch-size", default=BATCH_SIZE, value_range=BATCH_SIZES)
    from ..data.loading import resolve_device  # start-up: torch loads only when an evaluation really runs

    device = resolve_device(args.device)
    db_file = Path(args.db_file)
    if not db_file.is_file():  # before the layout: a wrong path is the first thing to fix
        what = _not_a_file(db_file, "a database file")
        raise VibeError(f"Database file {db_file} {what}; give the path of a file such as 3dpw_test_db.pt.")
    if args.checkpoint and not Path(args.checkpoint).is_file():  # the user's own file: not the model data's
        what = _not_a_file(Path(args.checkpoint), "a checkpoint file")
        raise VibeError(
            f"Checkpoint {args.checkpoint} (from --checkpoint) {what}; check the path (e.g. a training run's "
            "model_best.pth.tar), or leave --checkpoint out for the installed VIBE model."
        )
    name = args.dataset or dataset_from_name(db_file)
    data_dir = resolve_data_dir(args.data_dir)
    checkpoint = Path(args.checkpoint) if args.checkpoint else data_dir / VIBE_CHECKPOINT
    if args.json_path:  # the output first, as every command does: a wrong one is said before the inputs
        inputs = {"the database": db_file, "the checkpoint": checkpoint}
        check_output_outside_model_data(args.json_path, "the JSON report", args.data_dir, inputs)
    # every file the evaluation reads, missing ones in one message (the checkpoint may be elsewhere)
    require_files(data_dir, (*MODEL_FILES, H36M_REGRESSOR), extra_paths=[checkpoint])

    # start-up: torch and the training code load only when an evaluation really runs
    from ..data import loading
    from ..evaluate.evaluate import evaluate_generator
    from ..train.datasets import SequenceDataset
    from ..train.generator import build_generator

    # a dataset's test file when it has one (3DPW), else its val file; 3DPW's carry SMPL ground truth
    # (PVE), the others are scored on joints only
    fix = f"Pass --dataset with the layout the file was made in ({_one_of(LAYOUTS)})."
    split = "test" if "test" in DATASETS[name].files else "val"
    dataset = SequenceDataset(None, name, split, seqlen=args.seqlen, path=db_file, layout_fix=fix)
    generator = build_generator(args.data_dir, vibe_checkpoint=checkpoint).to(device)
    j_regressor = loading.load_h36m_regressor(args.data_dir)
    result = evaluate_generator(generator, dataset, j_regressor, device, batch_size=args.batch_size, progress=True)
    print(f"{checkpoint} on {db_file} ({result.num_frames} frames, T = {args.seqlen}); mm, mm/frame^2:")
    print(result.table())
    if args.json_path:
        report = {
            "checkpoint": str(checkpoint),
            "db_file": str(db_file),
            "overall": result.overall,
            "per_sequence": result.per_sequence,
        }
        text = json.dumps(finite_or_null(report), indent=1, allow_nan=False)
        atomic_write_bytes(args.json_path, text.encode("utf-8"))
    return 0


def finite_or_null(value: object) -> object:
    """``value`` (dicts, lists, numbers, strings) with every NaN or infinite number replaced by None:
    JSON has no NaN (a metric with no ground truth, e.g. PVE without SMPL), so it is written null."""
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

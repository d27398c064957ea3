"""``vibe-mocap extract-features VIDEO --bboxes BOXES --out OUT.pt``: per-frame ResNet-50 features of
one tracked person, in the database-file layout (features, bbox, frame_id, vid_name)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..pipeline.options import MAX_BACKBONE_BATCH
from ..train.config import check_setting
from ..value_range import ValueRange
from .model_data_outputs import check_output_outside_model_data
from .shared_arguments import add_data_dir_argument, add_device_argument

SCALE, BATCH_SIZE = 1.3, 200  # the original's training crops; frames per backbone call
BATCH_SIZES = ValueRange(ge=1, le=MAX_BACKBONE_BATCH)  # as infer's --batch-size


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract-features", help="backbone features of a person in a video, for training files")
    p.add_argument("video", help="video file")
    p.add_argument(
        "--bboxes", required=True, help=".npy or .csv: rows [cx, cy, w, h] per frame from 0, or [frame, cx, cy, w, h]"
    )
    p.add_argument("--out", required=True, help="output .pt (joblib dict of arrays, like the original's db files)")
    p.add_argument(
        "--scale", type=float, default=SCALE, help=f"crop side / box side (default {SCALE}, as the original training)"
    )
    p.add_argument("--name", help="vid_name of the track (default: the video's file name without its extension)")
    add_data_dir_argument(
        p, "the whole installed bundle (SMPL, both checkpoints; the backbone is the SPIN checkpoint's ResNet-50)"
    )
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"crops per backbone call (default {BATCH_SIZE})")
    add_device_argument(p, default="cpu")
    p.set_defaults(run=run)


def iter_frames_rgb(path: Path) -> Iterator[np.ndarray]:
    """The frames of the video at ``path``, each (H, W, 3) uint8 RGB, through the pipeline's reader
    (real video containers only)."""
    from ..pipeline.video import open_video  # start-up: OpenCV loads only when a video is read

    for _, frame_rgb in open_video(path):
        yield frame_rgb


def run(args: argparse.Namespace) -> int:
    # start-up: torch and the model load only when features are really extracted
    from .. import load_model
    from ..data.loading import resolve_device
    from ..pipeline.video import check_video_path
    from ..train.features import (
        check_crop_scale,
        extract_video_features,
        read_bboxes,
        require_joblib,
        write_feature_db,
    )

    check_setting("batch_size", args.batch_size, flag="--batch-size", default=BATCH_SIZE, value_range=BATCH_SIZES)
    device = resolve_device(args.device)
    require_joblib()  # writes the result: missing, it would lose the whole run
    video = Path(args.video)
    check_video_path(video, f"'{video}'")
    inputs = {"the video": video, "the boxes": args.bboxes}
    check_output_outside_model_data(args.out, "the feature file", args.data_dir, inputs)
    frame_ids, bboxes = read_bboxes(args.bboxes)
    check_crop_scale(args.scale)  # before the model loads
    model = load_model(args.data_dir, device=device)
    features = extract_video_features(
        model,
        iter_frames_rgb(video),
        frame_ids,
        bboxes,
        scale=args.scale,
        batch_size=args.batch_size,
        device=device,
        progress=True,
    )
    write_feature_db(args.out, features, frame_ids, bboxes, args.name or video.stem)
    print(f"wrote {args.out}: {len(frame_ids)} frames x 2048 features")
    return 0

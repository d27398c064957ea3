"""Front-end benchmark: decode, YOLOv3 (fp32 vs bf16 + channels_last, batch sizes), HOG, tracking, crop.

    python benchmarks/front_end.py [--video PATH] [--weights yolov3.weights] [--frames 16]
                                   [--batch-sizes 1,8] [--repeats 3] [--threads N] [--device cpu]

Without --weights it writes random weights of the official size and layout to a temporary
folder (same compute as the real file; the detections are meaningless). Figures are frames per
second of the clip's own frames, the median of --repeats; compare ratios measured in one run. On a
shared machine that is busy, use --threads 1: OpenMP threads that wait for a busy core make
multi-threaded figures swing by several times.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from clips import WALKING_CLIP
from reference_sort import ReferenceSort  # tests/, put on sys.path by clips
from timing import decode_rates, median_seconds

from vibe_server.pipeline.crop import crop_people
from vibe_server.pipeline.detect.darknet_weights import write_random_darknet_weights
from vibe_server.pipeline.detect.hog import HogDetector
from vibe_server.pipeline.detect.yolo import YoloDetector
from vibe_server.pipeline.track import track_detections
from vibe_server.pipeline.video import open_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default=str(WALKING_CLIP))
    parser.add_argument("--weights")
    parser.add_argument("--frames", type=int, default=16, help="frames per detector measurement")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows: list[tuple[str, str]] = []

    reader = open_video(args.video)
    info = reader.info
    decode_frames = min(info.frame_count, 300)
    decode_s = median_seconds(lambda: sum(1 for _ in reader.frames(0, decode_frames)), args.repeats)
    rows.append((f"decode {decode_frames} frames (RGB ndarray)", f"{decode_frames / decode_s:.0f} frames/s"))
    prefetched = open_video(args.video, prefetch=8)
    decode_s = median_seconds(lambda: sum(1 for _ in itertools.islice(prefetched, decode_frames)), args.repeats)
    rows.append(("decode, background thread", f"{decode_frames / decode_s:.0f} frames/s"))
    for workers, fps in decode_rates(args.video, (1, 2, 4), args.repeats).items():
        rows.append((f"decode the whole clip, {workers} thread(s) over keyframe chunks", f"{fps:.0f} frames/s"))

    # frames with a person in them (the clip's second visit)
    frames = [f for _, f in reader.frames(300, 300 + args.frames)]

    tmp = None
    if args.weights is None:
        tmp = tempfile.TemporaryDirectory()
        args.weights = write_random_darknet_weights(Path(tmp.name) / "yolov3.weights")
    yolo_fp32_fps = None
    for precision, channels_last in (("fp32", False), ("bf16", True)):
        for batch_size in batch_sizes:
            detector = YoloDetector(
                args.weights,
                device=args.device,
                batch_size=batch_size,
                precision=precision,
                channels_last=channels_last,
            )
            detector.detect(frames[:batch_size])  # warm-up
            seconds = median_seconds(lambda d=detector: d.detect(frames), args.repeats)
            fps = len(frames) / seconds
            yolo_fp32_fps = yolo_fp32_fps or fps
            layout = "channels_last" if channels_last else "NCHW"
            rows.append(
                (
                    f"YOLOv3-416 {precision} {layout} batch {batch_size}",
                    f"{fps:.1f} frames/s ({fps / yolo_fp32_fps:.2f}x)",
                )
            )

    hog = HogDetector()
    hog_frames = frames[: max(4, args.frames // 2)]
    seconds = median_seconds(lambda: hog.detect(hog_frames), args.repeats)
    rows.append((f"HOG people detector ({info.width}x{info.height})", f"{len(hog_frames) / seconds:.1f} frames/s"))
    for people in (3, 10, 30):  # people walking side by side, in rows
        walkers = [
            np.array(
                [[100 + 3 * t + 150 * p, 80 + 200 * (p % 5), 160 + 3 * t + 150 * p, 240 + 200 * (p % 5), 0.9]
                 for p in range(people)],
                np.float32,
            )
            for t in range(300)
        ]  # fmt: skip
        seconds = median_seconds(lambda w=walkers: track_detections(w, min_track_frames=1), args.repeats)
        reference_s = median_seconds(
            lambda w=walkers: [s.update(d) for s in [ReferenceSort()] for d in w], args.repeats
        )
        rows.append(
            (
                f"SORT, {people} people: filters in arrays / one object per person (as the official code)",
                f"{len(walkers) / seconds:.0f} / {len(walkers) / reference_s:.0f} updates/s",
            )
        )
    boxes = np.array([[info.width / 2, info.height / 2, 150.0, 150.0]] * 8)
    seconds = median_seconds(lambda: crop_people(frames[0], boxes), args.repeats)
    rows.append(("crop + normalise, 8 boxes", f"{8 / seconds:.0f} crops/s"))

    print(
        f"\nVIBE front end on {Path(args.video).name} ({info.width}x{info.height}), {args.device}, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()

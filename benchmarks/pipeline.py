"""Pipeline benchmark: per-stage throughput and end-to-end frames/s, ours against the official
configuration, in one run on the same clip, machine and model.

    python benchmarks/pipeline.py [--data-dir DIR] [--frames 200] [--start 250] [--threads 2] [--stride 16]

- "official": YOLOv3 on every frame, fp32 eager, fresh GRU state every 450 frames (the demo's setup).
- "ours": detection every --stride frames (default 16; the tracker carries the boxes), bf16
  autocast + channels_last for YOLO and ResNet-50 (``--fast``), GRU state carried. YOLOv3-416
  costs about 16 ResNet-50 crops per frame, so the stride is what lets the pipeline keep up with
  its backbone.
Both run the same streaming pipeline (one decode pass, batched crops).

The clip is ``one-by-one-person-detection.mp4`` (768x432); to stay within minutes a slice of
--frames frames from --start (people visible) is re-encoded to a temporary file first.
Without --data-dir the models are full-size with random weights (a synthetic bundle and random
Darknet weights): their cost is the real models' cost, but random YOLO weights find nobody, so its
boxes are replaced by OpenCV HOG detections computed beforehand (the YOLO network still runs and is
timed). With the real model data the real detections are used.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from clips import WALKING_CLIP
from timing import best_of

REPO = Path(__file__).resolve().parents[1]


def slice_clip(src: Path, dst: Path, start: int, frames: int) -> int:
    """Copy frames [start, start + frames) of src to dst (mp4v); returns the number written."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    writer, written = None, 0
    while written < frames:
        ok, frame = cap.read()
        if not ok:
            break
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        writer.write(frame)
        written += 1
    cap.release()
    if writer is not None:
        writer.release()
    return written


def frame_key(frame_rgb: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(frame_rgb[::8, ::8]).tobytes(), digest_size=12).hexdigest()


class YoloCostHogBoxes:
    """Runs the YOLO network on every frame it is given (so its cost is measured) but returns the
    HOG boxes found beforehand for that frame (random YOLO weights detect nobody)."""

    def __init__(self, yolo, boxes_by_frame: dict[str, np.ndarray]):
        self.yolo, self.boxes_by_frame = yolo, boxes_by_frame
        self.batch_size = yolo.batch_size

    def detect(self, frames_rgb):
        self.yolo.detect(frames_rgb)
        return [self.boxes_by_frame.get(frame_key(f), np.zeros((0, 5), np.float32)) for f in frames_rgb]


def hog_boxes(clip: Path) -> dict[str, np.ndarray]:
    from vibe_server.pipeline.detect import make_detector
    from vibe_server.pipeline.video import open_video

    hog = make_detector("hog")
    return {frame_key(frame): hog.detect([frame])[0] for _, frame in open_video(clip)}


def backbone_alone(model, precision: str, device: str, batch: int = 32, repeats: int = 5) -> float:
    """ResNet-50 feature extraction alone on random crops: crops per second (best of repeats)."""
    from vibe_server.pipeline.engine import Engine

    engine = Engine(model, model_name="bench", data_dir=None, device=device, precision=precision)
    crops = torch.randn(batch, 3, 224, 224)

    def step():
        engine.extract_features(crops)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    step()                                                          # warm-up
    return batch / best_of(step, repeats)


def smpl_alone(engine, frames: int = 200) -> float:
    pose = np.zeros((frames, 72), np.float32)
    pose[:, 0] = np.pi
    betas = np.zeros((frames, 10), np.float32)
    engine.smpl(pose[:8], betas[:8])
    t0 = time.perf_counter()
    engine.smpl(pose, betas)
    return frames / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="real model data (default: full-size random weights)")
    parser.add_argument("--clip", default=str(WALKING_CLIP))
    parser.add_argument("--start", type=int, default=250, help="first frame of the slice (people visible)")
    parser.add_argument("--frames", type=int, default=200, help="frames in the slice")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stride", type=int, default=16, help="our detection stride")
    parser.add_argument("--skip-official", action="store_true")
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cpu or cuda[:N]")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import copy

    from vibe_server import load_model
    from vibe_server.data.loading import resolve_device
    from vibe_server.pipeline.engine import Engine
    from vibe_server.pipeline.frontend import FrontEnd
    from vibe_server.pipeline.options import RunOptions
    from vibe_server.pipeline.progress import STAGES

    device = resolve_device(args.device)

    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    clip = work / "slice.mp4"
    n = slice_clip(Path(args.clip), clip, args.start, args.frames)
    print(f"clip: {Path(args.clip).name}, frames {args.start}..{args.start + n - 1} ({n} frames, re-encoded mp4v); "
          f"{args.threads} CPU threads; device {device}; torch {torch.__version__}")

    frontend = FrontEnd.default()
    if args.data_dir:
        data_dir = Path(args.data_dir)
        make_detector = frontend.make_detector
        print(f"model data: {data_dir} (real detections)")
    else:
        from vibe_server.data.synthetic import write_synthetic_bundle
        from vibe_server.pipeline.detect.darknet_weights import write_random_darknet_weights

        data_dir = work / "vibe_data"
        write_synthetic_bundle(data_dir)
        write_random_darknet_weights(data_dir / "yolov3.weights")
        boxes = hog_boxes(clip)
        print(f"model data: full-size random weights; YOLO boxes replaced by HOG boxes "
              f"({sum(len(b) for b in boxes.values())} detections in {n} frames, computed beforehand)")
        real_make = frontend.make_detector

        def make_detector(name, **kw):
            return YoloCostHogBoxes(real_make(name, **kw), boxes)
    frontend = FrontEnd(open_video=frontend.open_video, make_detector=make_detector,
                        stream_people=frontend.stream_people, crop_people=frontend.crop_people)

    model = load_model(data_dir, device=device)
    configs = []
    if not args.skip_official:
        configs.append(("official", "fp32", RunOptions(detector="yolo", detection_stride=1, chunking="official")))
    configs.append(("ours", "bf16", RunOptions(detector="yolo", detection_stride=args.stride, chunking="carry")))
    outputs = {}
    for name, precision, options in configs:
        engine = Engine(copy.deepcopy(model), model_name="bench", data_dir=data_dir, device=device,
                        precision=precision, frontend=frontend)
        engine.detector("yolo")                                      # loading is not part of the run
        print(f"running {name} ({precision}, detection stride {options.detection_stride}) ...", flush=True)
        outputs[name] = (engine.run(clip, options), engine)

    backbone = {p: backbone_alone(copy.deepcopy(model), p, device) for p in ("fp32", "bf16")}
    smpl_fps = smpl_alone(outputs["ours"][1])

    names = list(outputs)
    print("\nper stage: seconds (frames/s; backbone in person crops/s)")
    header = f"{'stage':<10}" + "".join(f"{n + ' s':>12}{n + ' /s':>12}" for n in names)
    print(header + ("   ratio" if len(names) == 2 else ""))
    for stage in STAGES:
        row, rates = f"{stage:<10}", []
        for n in names:
            out = outputs[n][0]
            seconds = out.timings_s[stage]
            count = out.crops if stage == "backbone" else out.frames_decoded
            rate = count / seconds if seconds > 1e-6 else float("inf")
            rates.append(seconds)
            row += f"{seconds:>12.2f}{rate:>12.1f}"
        if len(names) == 2 and rates[1] > 1e-6:
            row += f"{rates[0] / rates[1]:>8.1f}x"
        print(row)
    print()
    e2e = {n: outputs[n][0].frames_decoded / outputs[n][0].wall_s for n in names}
    for n in names:
        out = outputs[n][0]
        print(f"end to end {n:<9} {out.wall_s:7.1f} s  {e2e[n]:6.2f} video frames/s  "
              f"({out.crops} crops, {len(out.result.tracks)} tracks)")
    if "official" in e2e:
        print(f"speed-up ours / official: {e2e['ours'] / e2e['official']:.1f}x   (goal >= 5x)")
    ours = outputs["ours"][0]
    crops_per_frame = ours.crops / max(ours.frames_decoded, 1)
    pipeline_crop_rate = e2e["ours"] * crops_per_frame
    print(f"backbone alone: fp32 {backbone['fp32']:.1f} crops/s, bf16+channels_last {backbone['bf16']:.1f} crops/s")
    print(f"our pipeline: {pipeline_crop_rate:.1f} person crops/s end to end = "
          f"{pipeline_crop_rate / backbone['bf16']:.2f} of the backbone alone (goal >= 0.5)")
    print(f"SMPL alone (the model's, fp32): {smpl_fps:.0f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

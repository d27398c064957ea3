"""Pipeline benchmark: per-stage throughput and end-to-end frames/s, ours against the official
configuration, in one run on the same clip, machine and model.

    python benchmarks/pipeline.py [--data-dir DIR] [--frames 200] [--start 250] [--threads 2] [--repeats 3]

- "official": the official demo's configuration (``vibe-mocap infer --official``): YOLOv3 on every
  frame, fp32 eager, fresh GRU state every 450 frames.
- "ours": exactly what ``vibe-mocap infer`` does without flags (the options are printed): detection
  every Nth frame plus adaptive detection, bf16 + channels_last where the CPU has bf16 hardware
  (fp16 on CUDA), GRU state carried; the backbone compiled only for long videos.
- "compiled" (with --compiled): ours with the compiled backbone (compiled in the warm-up).
- "yolo comp" (with --compiled-detector): ours with YOLOv3's network compiled (``--compile-detector``).
Each configuration runs once on a short warm-up clip, then --repeats times; the median run is reported.
All run the same streaming pipeline (one decode pass, batched crops).

The clip is ``one-by-one-person-detection.mp4`` (768x432); to stay within minutes a slice of
--frames frames from --start (people visible) is re-encoded to a temporary file first.
Without --data-dir the models are full-size with random weights (a synthetic bundle and random
Darknet weights): their cost is the real models' cost, but random YOLO weights find nobody, so its
boxes are replaced by OpenCV HOG detections computed beforehand (the YOLO network still runs and is
timed). With the real model data the real detections are used.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from clips import REAL_CLIPS_DIR, SPEED_CLIP, SPEED_FRAMES, SPEED_START, YoloCostHogBoxes, hog_boxes, slice_clip
from timing import median_seconds


def backbone_alone(model, precision: str, device: str, batch: int = 32, repeats: int = 5) -> float:
    """ResNet-50 feature extraction alone on random crops: crops per second (median of repeats)."""
    from vibe_server.pipeline.engine import Engine

    engine = Engine(model, model_name="bench", data_dir=None, device=device, precision=precision)
    crops = torch.randn(batch, 3, 224, 224)

    def step():
        engine.extract_features(crops)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step()  # warm-up
    return batch / median_seconds(step, repeats)


def _autocast(precision: str, device: str):
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _crops(batch: int, device: str) -> torch.Tensor:
    return torch.randn(batch, 3, 224, 224).to(device).contiguous(memory_format=torch.channels_last)


def compiled_backbone_alone(runner, precision: str, device: str, batch: int = 32, repeats: int = 5) -> float:
    """The compiled ResNet-50 alone on random crops: crops per second (median of repeats)."""
    crops = _crops(batch, device)

    def step():
        with torch.inference_mode(), _autocast(precision, device):
            runner(crops, compiled=True, batch_size=batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step()
    return batch / median_seconds(step, repeats)


def compiled_difference(runner, precision: str, device: str = "cpu", batch: int = 32) -> tuple[float, float]:
    """Largest |compiled - eager| over the features of random crops, both in ``precision``, and the
    largest |eager feature| (for scale)."""
    crops = _crops(batch, device)
    with torch.inference_mode(), _autocast(precision, device):
        eager = runner(crops, compiled=False).float()
        compiled = runner(crops, compiled=True, batch_size=batch).float()
    return float((compiled - eager).abs().max()), float(eager.abs().max())


def smpl_alone(engine, frames: int = 200) -> float:
    pose = np.zeros((frames, 72), np.float32)
    pose[:, 0] = np.pi
    betas = np.zeros((frames, 10), np.float32)
    engine.smpl(pose[:8], betas[:8])
    return frames / median_seconds(lambda: engine.smpl(pose, betas))


def median_run(engine, clip: Path, options, repeats: int):
    """The run with the median wall time of ``repeats`` runs of the clip."""
    outputs = sorted((engine.run(clip, options) for _ in range(repeats)), key=lambda out: out.wall_s)
    return outputs[len(outputs) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="real model data (default: full-size random weights)")
    parser.add_argument("--clip", default=str(REAL_CLIPS_DIR / SPEED_CLIP))
    parser.add_argument("--start", type=int, default=SPEED_START, help="first frame of the slice (people visible)")
    parser.add_argument("--frames", type=int, default=SPEED_FRAMES, help="frames in the slice")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median reported)")
    parser.add_argument("--compiled", action="store_true", help="also run ours with the compiled backbone")
    parser.add_argument(
        "--compiled-detector", action="store_true", help="also run ours with YOLOv3 compiled (--compile-detector)"
    )
    parser.add_argument("--skip-official", action="store_true")
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cpu or cuda[:N]")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import copy
    import dataclasses
    from dataclasses import asdict

    from vibe_server import load_model
    from vibe_server.data.loading import resolve_device
    from vibe_server.pipeline.cpu_features import cpu_has_fast_bf16, default_precision
    from vibe_server.pipeline.engine import Engine
    from vibe_server.pipeline.frontend import FrontEnd
    from vibe_server.pipeline.options import RunOptions, official_options
    from vibe_server.pipeline.progress import STAGES

    device = resolve_device(args.device)

    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    clip = work / "slice.mp4"
    n = slice_clip(Path(args.clip), clip, args.start, args.frames)
    warmup = work / "warmup.mp4"
    slice_clip(Path(args.clip), warmup, args.start, 40)
    print(
        f"clip: {Path(args.clip).name}, frames {args.start}..{args.start + n - 1} ({n} frames, re-encoded mp4v); "
        f"{args.threads} CPU threads; device {device}; torch {torch.__version__}; "
        f"CPU bf16 hardware (AVX512-BF16/AMX): {cpu_has_fast_bf16()}"
    )

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
        boxes = {**hog_boxes(clip), **hog_boxes(warmup)}
        print(
            f"model data: full-size random weights; YOLO boxes replaced by HOG boxes "
            f"({sum(len(b) for b in boxes.values())} detections in {n} frames, computed beforehand)"
        )
        real_make = frontend.make_detector

        def make_detector(name, **kw):
            return YoloCostHogBoxes(real_make(name, **kw), boxes)

    frontend = dataclasses.replace(frontend, make_detector=make_detector)

    model = load_model(data_dir, device=device)
    ours_precision = default_precision(device)
    ours = RunOptions(detector="yolo")  # the CLI defaults
    configs = []
    if not args.skip_official:
        configs.append(("official", official_options(RunOptions(detector="yolo")), "off"))
    configs.append(("ours", ours, "auto"))
    if args.compiled:
        configs.append(("compiled", ours, "on"))
    if args.compiled_detector:
        configs.append(("yolo comp", dataclasses.replace(ours, compile_detector=True), "auto"))
    print(
        "ours = the CLI defaults: "
        + ", ".join(f"{k}={v}" for k, v in asdict(ours).items())
        + f"; precision {ours_precision} (auto); compile_backbone auto"
    )
    outputs = {}
    for name, options, compile_mode in configs:
        precision = options.precision or ours_precision
        engine = Engine(
            copy.deepcopy(model),
            model_name="bench",
            data_dir=data_dir,
            device=device,
            precision=precision,
            frontend=frontend,
            compile_backbone=compile_mode,
            log=lambda msg: print(msg, file=sys.stderr),
        )
        print(
            f"running {name} ({precision}, detection stride {options.detection_stride}, adaptive "
            f"{options.adaptive_detection}, compile {compile_mode}): warm-up, then {args.repeats} runs ...",
            flush=True,
        )
        engine.run(warmup, options)  # loading, first calls, compiling
        outputs[name] = (median_run(engine, clip, options, args.repeats), engine)

    backbone = {p: backbone_alone(copy.deepcopy(model), p, device) for p in ("fp32", ours_precision)}
    smpl_fps = smpl_alone(outputs["ours"][1])

    names = list(outputs)
    print("\nper stage, median run: seconds (frames/s; backbone in person crops/s)")
    print(f"{'stage':<10}" + "".join(f"{n + ' s':>14}{n + ' /s':>14}" for n in names))
    for stage in STAGES:
        row = f"{stage:<10}"
        for n in names:
            out = outputs[n][0]
            seconds = out.timings_s[stage]
            count = out.crops if stage == "backbone" else out.frames_decoded
            rate = count / seconds if seconds > 1e-6 else float("inf")
            row += f"{seconds:>14.2f}{rate:>14.1f}"
        print(row)
    print()
    e2e = {n: outputs[n][0].frames_decoded / outputs[n][0].wall_s for n in names}
    for n in names:
        out = outputs[n][0]
        print(
            f"end to end {n:<9} {out.wall_s:7.1f} s  {e2e[n]:6.2f} video frames/s  "
            f"{out.crops / out.wall_s:6.1f} person crops/s  ({out.crops} crops, {len(out.result.tracks)} tracks)"
        )
    if "official" in e2e:
        for n in names[1:]:
            print(f"speed-up {n} / official: {e2e[n] / e2e['official']:.1f}x   (goal >= 15x; stretch 40x compiled)")
    ours_out = outputs["ours"][0]
    pipeline_crop_rate = ours_out.crops / ours_out.wall_s
    print(
        f"backbone alone: fp32 {backbone['fp32']:.1f} crops/s, {ours_precision} {backbone[ours_precision]:.1f} crops/s"
    )
    print(
        f"our pipeline: {pipeline_crop_rate:.1f} person crops/s end to end = "
        f"{pipeline_crop_rate / backbone[ours_precision]:.2f} of the backbone alone (goal >= 0.8)"
    )
    if "compiled" in outputs:
        runner = outputs["compiled"][1].backbone_runner
        compiled_rate = compiled_backbone_alone(runner, ours_precision, device)
        diff, scale = compiled_difference(runner, ours_precision, device)
        out = outputs["compiled"][0]
        print(
            f"compiled backbone alone: {compiled_rate:.1f} crops/s; our compiled pipeline "
            f"{out.crops / out.wall_s:.1f} crops/s = {out.crops / out.wall_s / compiled_rate:.2f} of it; "
            f"compiled vs eager features ({ours_precision}): max |difference| {diff:.2e} "
            f"(largest feature {scale:.1f})"
        )
    print(f"SMPL alone (the model's, fp32): {smpl_fps:.0f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

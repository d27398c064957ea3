"""GPU benchmark: ours against the official configuration on one GPU, in one run.

    PYTHONPATH=server:. python benchmarks/gpu.py [--data-dir DIR] [--device cuda] [--minutes 10] [--repeats 3]

Prints, for the whole sample clip (``one-by-one-person-detection.mp4``, 768x432, 1394 frames):
- how fast the clip decodes alone, with 1, 2, 4 and 8 decoding threads;
- frames/s per stage (decode, detect, track, crop, backbone, temporal, smpl, write; the backbone in
  person crops/s) and end to end, for
  "official": ``--official`` (YOLOv3 on every frame, fp32 eager, a fresh GRU state every 450
  frames, OpenCV's crop, the official YOLO post-processing; decoding and detection still run in this
  engine's threads, which can only make the baseline faster and the ratios smaller),
  "official, TF32": the same with cuDNN's TF32 convolutions (PyTorch's
  default, which the official code gets on a current PyTorch; the faster of the two is the
  baseline of every ratio), "ours": the defaults on a GPU (fp16, the staged front end with crops on
  the GPU, detection every 8th frame plus adaptive detection), "ours, every frame": the same
  with detection on every frame, and "ours, 1-frame spot": ours with each on-the-spot detection
  carrying only its own frame (not the frames ahead; its speed and boxes against ours are printed);
- end to end on a video of at least --minutes: the clip decoded again and again (whole times) as
  one video, with its own peak GPU memory and how much the host's RSS grew during it;
- peak GPU memory (each configuration's alone: the previous one's models are freed first) and the
  host RSS before and at most during each configuration's timed runs, and the frames each detected
  in scheduled batches and on the spot (adaptive detection: the triggered frames, and the frames and
  calls that detected them, each call carrying the frames ahead), with the seconds they took;
- on a GPU, how many times one run of ours makes the host wait for the GPU (CUDA's sync debug mode);
- the accuracy difference to the official run (as benchmarks/fidelity.py: track recall at box IoU
  >= 0.9, median box IoU);
- ``--official`` in fp32 on the GPU against the same on the CPU, on a slice: the largest pose and
  joint difference and the smallest box IoU (goal: within 1e-4, IoU >= 0.999);
- SORT's updates per second on the clip's recorded HOG boxes;
- the GPU crop against OpenCV's ``warpAffine`` crop on real frames of the clip: the largest and the
  mean difference in grey levels;
- with several GPUs visible, ours divided among all of them (``run_across_devices``): its speed
  against one GPU and the largest difference to the one-GPU result (on a CPU: two CPU engines, to
  check the script; with one GPU: "not measured");
- with ``--compiled``, last: ours with the backbone and YOLOv3's network through torch.compile
  (the warm-up's seconds include compiling).

Each configuration's figures are printed as soon as it is measured, and the summary at the end
repeats them; a part that fails (a configuration, the looped run, a check) prints one line (its
traceback to stderr) and the script goes on, so that one device run keeps what it measured.

Without --data-dir the models are full-size with random weights (a synthetic bundle and random
Darknet weights): their cost is the real models' cost, but random YOLO weights find nobody, so its
boxes are replaced by OpenCV HOG's boxes recorded on every frame of the clip
(tests/data/fixtures/hog_detections.npz); the YOLO network still runs on every frame it is given,
and is timed. With real model data the real detections are used.

``--device cpu --frames N --minutes M`` runs the same code on a CPU, to check the script itself; with
``--emulate-gpu-paths`` the engines there take the code paths a CUDA device takes (the staged front
end, the device crop, YOLO's batched post-processing, on-the-spot calls carrying the frames ahead),
so that those run with this script's wrappers before a device run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import importlib.util
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch
from clips import REAL_CLIPS_DIR, SPEED_CLIP, CountingDetector, YoloCostHogBoxes, frame_key, slice_clip
from fidelity import compare, track_recall
from pipeline import median_run
from recorded_detections import recorded_hog_detections
from timing import decode_rates

# "official" runs in exact fp32 (TF32 off, as the GPU = CPU check needs); the official code on a current
# PyTorch convolves in TF32 (cuDNN's default), so that is measured too, and the faster is the baseline.
OFFICIAL_TF32 = "official, TF32"
# The official code ran on OpenCV 4; the pinned opencv-python-headless<5 reproduces its crop bit for bit.
OPENCV_5_NOTE = (
    "note: OpenCV 5's warpAffine differs from OpenCV 4's (on this clip's person crops: 5 % of values, by up to 4 "
    "grey levels), so official's crop here is not bit-exact with the official code's; the GPU = CPU check uses "
    "it on both sides"
)
WARMUP_START = 250  # the warm-up and the GPU = CPU check use frames from here (people visible)


def recorded_hog_boxes(clip: Path, start: int = 0) -> dict[str, np.ndarray]:
    """{frame_key: (K, 5)} of every frame of ``clip`` (the sample clip, or a slice of it from frame
    ``start``), from the detections recorded on the sample clip, matched by decode order."""
    from vibe_server.pipeline.video import open_video

    per_frame = recorded_hog_detections()[SPEED_CLIP]
    return {frame_key(frame): per_frame[start + i] for i, frame in open_video(clip) if start + i < len(per_frame)}


class LoopedVideo:
    """A reader that decodes the clip ``loops`` times in a row as one video (frame indices go on);
    the engine's decode settings (``prefetch``, ``decode_workers``) reach the clip's reader."""

    def __init__(self, reader, loops: int):
        self.reader, self.loops = reader, loops
        self.info = dataclasses.replace(reader.info, frame_count=reader.info.frame_count * loops)
        self.warnings: list[str] = []

    def __getattr__(self, name):  # prefetch, decode_workers
        return getattr(self.reader, name)

    def __setattr__(self, name, value):
        if name in ("prefetch", "decode_workers"):
            setattr(self.reader, name, value)
        else:
            super().__setattr__(name, value)

    def __iter__(self):
        n = self.reader.info.frame_count
        for loop in range(self.loops):
            for index, frame in self.reader:
                yield loop * n + index, frame


def loops_for(minutes: float, fps: float, frame_count: int) -> int:
    """How many times the clip plays in a video of at least ``minutes`` (whole loops, rounded up)."""
    frames = round(minutes * 60 * fps)  # whole frames first: float rounding must not add a loop
    return max(1, -(-frames // frame_count))


class OneFrameSpots:
    """A detector whose on-the-spot detections carry the triggered frame only, not the frames ahead."""

    spot_batch_size = 1

    def __init__(self, detector):
        self.detector = detector

    def detect(self, frames_rgb):
        return self.detector.detect(frames_rgb)

    def __getattr__(self, name):  # batch_size, device, ...
        return getattr(self.detector, name)


def detection_counts(counters: list[CountingDetector], streams: list) -> dict[str, float]:
    """Sums over the runs since the counters were reset: the frames detected in scheduled batches,
    and on the spot (the triggered frames, the frames their calls carried, the calls), with seconds."""
    schedules = [stream.schedule for stream in streams]
    sent = sum(schedule.spot_frames_sent for schedule in schedules)
    spot_s = sum(schedule.spot_s for schedule in schedules)
    return {
        "batched frames": sum(counter.frames for counter in counters) - sent,
        "batched s": sum(counter.seconds for counter in counters) - spot_s,
        "triggered": sum(sum(schedule.extra_detections.values()) for schedule in schedules),
        "sent": sent,
        "calls": sum(schedule.spot_calls for schedule in schedules),
        "spot s": spot_s,
    }


def detection_figures(sums: dict[str, float], repeats: int) -> str:
    """One run's detections, from the sums of ``repeats`` runs (:func:`detection_counts`)."""
    run = {key: value / repeats for key, value in sums.items()}
    return (
        f"batched {run['batched frames']:.0f} frames in {run['batched s']:.2f} s; on the spot "
        f"{run['triggered']:.0f} frames ({run['sent']:.0f} detected in {run['calls']:.0f} calls) "
        f"in {run['spot s']:.2f} s"
    )


def host_rss_mib() -> float | None:
    """The process's resident memory now (Linux: /proc/self/statm), None where it cannot be read."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class RssDuring:
    """The host RSS before a block and the most it reached during it (sampled every ``every_s``)."""

    def __init__(self, every_s: float = 0.2):
        self.every_s, self.before, self.peak = every_s, host_rss_mib(), host_rss_mib()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss", daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(self.every_s):
            now = host_rss_mib()
            if now is not None and self.peak is not None:
                self.peak = max(self.peak, now)

    def __enter__(self) -> RssDuring:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        now = host_rss_mib()
        if now is not None and self.peak is not None:
            self.peak = max(self.peak, now)

    def figures(self, during: str = "it") -> str:
        if self.before is None or self.peak is None:
            return "host RSS not measured here (no /proc/self/statm)"
        growth = self.peak - self.before
        return f"host RSS {self.before:.0f} MiB before, at most {self.peak:.0f} MiB during {during} (+{growth:.0f} MiB)"


def free_device_memory(cuda: bool) -> None:
    """What is no longer referenced goes, and a GPU gets back the memory PyTorch caches."""
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def sort_updates_per_s(min_s: float = 0.5) -> tuple[float, float]:
    """SORT's updates per second over the recorded HOG boxes of the clip, every frame (a frame without
    boxes: a skip), repeated for at least ``min_s``; and the boxes a frame on average."""
    from vibe_server.pipeline.track import Sort

    per_frame = recorded_hog_detections()[SPEED_CLIP]
    updates, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_s:
        sort = Sort()
        for dets in per_frame:
            if len(dets):
                sort.update(dets)
            else:
                sort.skip()
        updates += len(per_frame)
    return updates / (time.perf_counter() - started), float(np.mean([len(d) for d in per_frame]))


def crop_differences(clip: Path, start: int, frames: int, device: str) -> tuple[int, int, float, float, float]:
    """The device crop against OpenCV's ``warpAffine`` crop on the frames ``start`` .. ``start + frames``
    of the sample clip with people in them, with the recorded HOG boxes made square as the tracker
    gives them -> (frames, crops, largest and mean |difference| in grey levels, share of values that
    differ)."""
    from vibe_server.pipeline.batched.crop import crop_people_on_device
    from vibe_server.pipeline.crop import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, crop_people_uint8
    from vibe_server.pipeline.video import open_video

    per_frame = recorded_hog_detections()[SPEED_CLIP]
    largest, total, differ, values, crops, used = 0.0, 0.0, 0, 0, 0, 0
    mean = torch.tensor(IMAGENET_MEAN_RGB, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD_RGB, device=device).view(1, 3, 1, 1)
    for i, frame in open_video(clip):
        if i < start:
            continue
        if i >= min(start + frames, len(per_frame)):
            break
        dets = per_frame[i]
        if not len(dets):
            continue
        side = np.maximum(dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1])
        boxes = np.stack([(dets[:, 0] + dets[:, 2]) / 2, (dets[:, 1] + dets[:, 3]) / 2, side, side], axis=1)
        reference = torch.from_numpy(crop_people_uint8(frame, boxes)).to(device).permute(0, 3, 1, 2).float()
        levels = ((crop_people_on_device([frame], [boxes], device) * std + mean) * 255).round()
        difference = (levels - reference).abs()
        largest = max(largest, float(difference.max()))
        total += float(difference.sum())
        differ += int((difference > 0).sum())
        values += difference.numel()
        crops += len(boxes)
        used += 1
    return used, crops, largest, total / max(values, 1), differ / max(values, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="real model data (default: full-size random weights, recorded HOG boxes)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, help="only N frames of the clip, from frame 250 (default: all)")
    parser.add_argument("--min-track-frames", type=int, default=25, help="for short checks (official: 25)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the looped video")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median reported)")
    parser.add_argument("--warmup-frames", type=int, default=64)
    parser.add_argument("--compiled", action="store_true", help="also run ours with backbone and YOLOv3 compiled, last")
    parser.add_argument("--equality-frames", type=int, default=60, help="slice for the GPU = CPU check (0: skip)")
    parser.add_argument("--crop-frames", type=int, default=100, help="frames for the GPU crop vs OpenCV check")
    parser.add_argument(
        "--emulate-gpu-paths",
        action="store_true",
        help="on a CPU, take the code paths a CUDA device takes, to check the script before a device run",
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each line as it comes: a failure or a timeout keeps the figures
    if importlib.util.find_spec("smplx") is None:  # the body model, needed long after the slow start
        raise SystemExit("smplx is not installed here: install it (pip install smplx, pure Python) and run again.")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("No CUDA device is visible; run on a GPU machine, or pass --device cpu to check the script.")

    if args.emulate_gpu_paths:
        emulate_gpu_paths()
    from vibe_server import load_model
    from vibe_server.pipeline.cpu_features import default_precision
    from vibe_server.pipeline.engine import Engine
    from vibe_server.pipeline.frontend import FrontEnd
    from vibe_server.pipeline.options import RunOptions, official_options
    from vibe_server.pipeline.progress import STAGES

    device = args.device
    cuda = device.startswith("cuda")
    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    source = REAL_CLIPS_DIR / SPEED_CLIP
    clip = work / "clip.mp4"
    clip_start = WARMUP_START if args.frames else 0
    if args.frames:
        slice_clip(source, clip, clip_start, args.frames)
    else:
        clip = source
    warmup = work / "warmup.mp4"
    slice_clip(source, warmup, WARMUP_START, args.warmup_frames)

    base = FrontEnd.default()
    if args.data_dir:
        data_dir = Path(args.data_dir)
        make_detector = base.make_detector
        detections = "real YOLOv3"
        boxes = None
    else:
        from vibe_server.data.synthetic import write_synthetic_bundle
        from vibe_server.pipeline.detect.darknet_weights import write_random_darknet_weights

        data_dir = work / "vibe_data"
        write_synthetic_bundle(data_dir)
        write_random_darknet_weights(data_dir / "yolov3.weights")
        boxes = {**recorded_hog_boxes(clip, clip_start), **recorded_hog_boxes(warmup, WARMUP_START)}
        detections = "OpenCV HOG's, recorded (random-weight YOLOv3 runs and is timed)"

        def make_detector(name, **kwargs):
            return YoloCostHogBoxes(base.make_detector(name, **kwargs), boxes, person_rows=True)

    counters: list[CountingDetector] = []
    streams: list = []  # each run's people stream: its schedule counts the on-the-spot detections

    def counted_detector(name, **kwargs):
        counters.append(CountingDetector(make_detector(name, **kwargs)))
        return counters[-1]

    def kept(make_stream):
        def make(*args, **kwargs):
            streams.append(make_stream(*args, **kwargs))
            return streams[-1]

        return make

    frontend = dataclasses.replace(
        base,
        make_detector=counted_detector,
        stream_people=kept(base.stream_people),
        stream_people_staged=kept(base.stream_people_staged),
    )
    reader = frontend.open_video(str(clip))
    loops = loops_for(args.minutes, reader.info.fps, reader.info.frame_count)
    looped = dataclasses.replace(
        frontend, open_video=lambda path, stopped=None: LoopedVideo(base.open_video(path, stopped=stopped), loops)
    )
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    if args.emulate_gpu_paths:
        name += " (emulating a CUDA device's code paths)"
    print(
        f"device: {name}; torch {torch.__version__}; OpenCV {cv2.__version__}; clip {SPEED_CLIP} "
        f"({reader.info.width}x{reader.info.height}, {reader.info.frame_count} frames); detections: {detections}"
    )
    if int(cv2.__version__.split(".")[0]) >= 5:
        print(OPENCV_5_NOTE)

    rates = decode_rates(clip, (1, 2, 4, 8))
    print(
        "decode alone (whole clip to RGB): "
        + ", ".join(f"{n} thread(s) {fps:.0f} frames/s" for n, fps in rates.items())
    )

    # kept on the host: each configuration's engine gets its own copy on the device, freed after it
    model = load_model(data_dir, device="cpu")
    defaults = RunOptions(detector="yolo", min_track_frames=args.min_track_frames)
    one_frame_spots = dataclasses.replace(
        frontend, make_detector=lambda name, **kwargs: OneFrameSpots(counted_detector(name, **kwargs))
    )
    configs = [
        ("official", official_options(defaults), frontend),
        (OFFICIAL_TF32, official_options(defaults), frontend),
        ("ours", defaults, frontend),
        ("ours, every frame", dataclasses.replace(defaults, detection_stride=1), frontend),
        ("ours, 1-frame spot", defaults, one_frame_spots),  # on-the-spot calls without the frames ahead
    ]
    outputs, peaks, detections = {}, {}, {}

    def measure(label: str, options, front_end=frontend):
        """Warm-up, then the median of --repeats runs; keeps its figures and prints them at once (a
        later failure or a timeout keeps them). The earlier configurations' detectors and runs are
        let go first, and their GPU memory with them."""
        counters.clear()
        streams.clear()
        free_device_memory(cuda)
        engine = Engine(
            copy.deepcopy(model).to(device),
            model_name="bench",
            data_dir=data_dir,
            device=device,
            precision=options.precision or default_precision(device),
            frontend=front_end,
            log=lambda msg: print(msg, file=sys.stderr),
        )
        print(f"running {label}: warm-up, then {args.repeats} runs ...")
        # the engine turned TF32 off (exact fp32); the official code on a current PyTorch convolves in TF32
        torch.backends.cudnn.allow_tf32 = label == OFFICIAL_TF32
        try:
            t0 = time.perf_counter()
            engine.run(warmup, options)
            print(f"  warm-up (compiling, where asked): {time.perf_counter() - t0:.1f} s")
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            for counter in counters:
                counter.reset()
            streams.clear()
            with RssDuring() as rss:  # this configuration's own, not the process's peak so far
                out = median_run(engine, clip, options, args.repeats)
        finally:
            torch.backends.cudnn.allow_tf32 = False
        outputs[label] = out
        detections[label] = detection_counts(counters, streams)
        peaks[label] = (torch.cuda.max_memory_allocated(device) / 2**20 if cuda else float("nan"), rss)
        print(f"  {end_to_end(label, out, *peaks[label])}")
        stages = ", ".join(f"{stage} {s:.2f} s ({rate:.0f}/s)" for stage, s, rate in stage_rates(out))
        print(f"  per stage (GPU front end: {out.result.meta['gpu_front_end']}): {stages}")
        print(f"  {detection_line(label, detections[label], args.repeats)}")
        return engine

    def looped_run(engine, options) -> str:
        """Ours on the --minutes long video (the clip decoded again and again): its line."""
        frames = loops * reader.info.frame_count
        print(f"running ours on the looped video: {frames} frames, {frames / reader.info.fps / 60:.2f} minutes ...")
        engine.frontend = looped
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        with RssDuring() as long_rss:
            long_run = engine.run(clip, options)
        long_s = time.perf_counter() - t0
        long_gpu_mib = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else float("nan")
        line = (
            f"end to end ours, {long_run.frames_decoded} frames ({long_run.frames_decoded / reader.info.fps / 60:.2f} "
            f"minutes, the clip {loops} times): {long_s:.1f} s, {long_run.frames_decoded / long_s:.1f} frames/s; "
            f"peak GPU memory {long_gpu_mib:.0f} MiB (its own); {long_rss.figures()}"
        )
        print(f"  {line}")
        return line

    waits = looped_line = None
    for label, options, front_end in configs:
        engine = None  # the previous configuration's models go before this one is measured
        engine = attempt(label, lambda: measure(label, options, front_end))  # noqa: B023 (called at once)
        if label == "ours" and engine is not None:
            if cuda:
                waits = host_waits(engine, clip, options)
            looped_line = attempt("ours, looped", lambda: looped_run(engine, options))  # noqa: B023
    engine = None
    measured = [label for label, *_ in configs if label in outputs]

    print(
        "\nper stage, median run: seconds (frames/s; backbone in person crops/s). In ours decoding and detection"
        "\nrun in threads of their own, beside tracking and the backbone: their seconds overlap the others'."
        "\nThe seconds are the host's: GPU work queued without waiting (the device crop) is counted in the"
        "\nstage that next waits for the GPU (the backbone, or an on-the-spot detection)."
    )
    print(f"{'stage':<10}" + "".join(f"{label[:18]:>20}" for label in measured))
    rates = {label: stage_rates(outputs[label]) for label in measured}
    for i, stage in enumerate(STAGES):
        cells = [f"{rates[label][i][1]:7.2f} s {rates[label][i][2]:8.0f}/s" for label in measured]
        print(f"{stage:<10}" + "".join(f"{c:>20}" for c in cells))
    print()
    fps = {label: out.frames_decoded / out.wall_s for label, out in outputs.items()}
    for label in measured:
        print(end_to_end(label, outputs[label], *peaks[label]))
    for label in measured:
        print(detection_line(label, detections[label], args.repeats))
    print(looped_line or "end to end ours, looped: not measured (see above)")
    if "official" in fps and OFFICIAL_TF32 in fps:
        baseline = max(("official", OFFICIAL_TF32), key=fps.get)  # the faster: the ratio is not flattered
        other = min(fps["official"], fps[OFFICIAL_TF32])
        print(f"baseline: {baseline} ({fps[baseline]:.1f} frames/s; the other {other:.1f})")
    else:
        baseline = next((label for label in ("official", OFFICIAL_TF32) if label in fps), None)
        print(f"baseline: {baseline or 'none'} (the other official configuration was not measured)")
    for label in ("ours", "ours, every frame"):
        if baseline is None or "official" not in outputs or label not in outputs:
            continue
        box = np.asarray(compare(outputs["official"].result, outputs[label].result)["box_iou"], dtype=np.float64)
        median = float(np.median(box)) if len(box) else float("nan")
        print(
            f"{label}: {fps[label] / fps[baseline]:.1f}x the official configuration (goal >= 40x, >= 1000 frames/s); "
            f"track recall {track_recall(box):.3f}, median box IoU {median:.3f} over {len(box)} official track-frames"
        )
    if isinstance(waits, str):
        print(f"ours: the host's waits for the GPU were not counted: {waits}")
    elif waits is not None:
        print(
            f"ours: the host waited for the GPU at least {waits} times in one run (the waits CUDA's sync debug mode "
            "reports; the copies back of each detection call and each backbone batch are among them)"
        )
    if "ours" in outputs and "ours, 1-frame spot" in outputs:
        merged = compare(outputs["ours, 1-frame spot"].result, outputs["ours"].result)
        box = np.asarray(merged["box_iou"], dtype=np.float64)
        print(
            f"ours against ours, 1-frame spot: {fps['ours'] / fps['ours, 1-frame spot']:.2f}x as fast; track recall "
            f"{track_recall(box):.3f}, min box IoU {float(box.min()) if len(box) else float('nan'):.4f} "
            "(the frames ahead should change no box)"
        )

    if args.equality_frames:  # (on a CPU this checks the script: CPU against CPU)
        attempt(
            "--official fp32, GPU vs CPU",
            lambda: check_gpu_equals_cpu(args, model, source, work, frontend, data_dir, defaults, boxes),
        )
    attempt("SORT", print_sort_updates)
    attempt("device crop vs OpenCV's warpAffine", lambda: print_crop_differences(source, args.crop_frames, device))
    free_device_memory(cuda)
    if "ours" in outputs:
        attempt(
            "multi-GPU split",
            lambda: print(split_figures(model, clip, warmup, defaults, outputs["ours"], data_dir, frontend, device)),
        )

    if args.compiled:  # last: compiling may take minutes, and everything above is printed already
        label = "ours, compiled"
        compiled = dataclasses.replace(defaults, compile_backbone="on", compile_detector=True)
        attempt(label, lambda: measure(label, compiled))
        if label in outputs:
            out, (gpu_mib, _) = outputs[label], peaks[label]
            fps = out.frames_decoded / out.wall_s
            official = [outputs[o] for o in ("official", OFFICIAL_TF32) if o in outputs]
            official_fps = max((o.frames_decoded / o.wall_s for o in official), default=float("nan"))
            print(
                f"end to end {label} (backbone and YOLOv3 compiled) {out.wall_s:.2f} s {fps:.1f} frames/s = "
                f"{fps / official_fps:.1f}x the official configuration; {len(out.result.tracks)} tracks; "
                f"peak GPU memory {gpu_mib:.0f} MiB; detections {detection_figures(detections[label], args.repeats)}"
            )
    return 0


def emulate_gpu_paths() -> None:
    """On a CPU, the code paths a CUDA device takes, so that a CPU run checks them with this script's
    wrappers before the one device run: the GPU front end (staged stream, device crop, tracks
    together), YOLO's batched post-processing (still per frame for ``--official``), and on-the-spot
    detections carrying the frames ahead. An engine made with an explicit ``gpu_front_end`` keeps it."""
    from vibe_server.pipeline.detect import yolo
    from vibe_server.pipeline.engine import Engine

    engine_init = Engine.__init__

    def gpu_engine_init(self, *args, gpu_front_end=None, **kwargs):
        engine_init(self, *args, gpu_front_end=True if gpu_front_end is None else gpu_front_end, **kwargs)

    Engine.__init__ = gpu_engine_init
    yolo.batches_postprocessing = lambda device: True  # (read by the engine each time it makes a detector)
    yolo.YoloDetector.spot_batch_size = property(lambda self: self.batch_size)


T = TypeVar("T")


def attempt(what: str, run: Callable[[], T]) -> T | None:
    """``run()``; a failure prints one line (its traceback to stderr) and gives None, so that the
    one device run goes on and prints what it has."""
    try:
        return run()
    except Exception as err:
        traceback.print_exc()
        print(f"{what}: failed: {type(err).__name__}: {err}")
        return None


def stage_rates(out) -> list[tuple[str, float, float]]:
    """(stage, seconds, frames/s; the backbone in person crops/s) of each stage of a run."""
    from vibe_server.pipeline.progress import STAGES

    rates = []
    for stage in STAGES:
        count = out.crops if stage == "backbone" else out.frames_decoded
        seconds = out.timings_s[stage]
        rates.append((stage, seconds, count / seconds if seconds > 1e-6 else float("inf")))
    return rates


def end_to_end(label: str, out, gpu_mib: float, rss: RssDuring) -> str:
    fps = out.frames_decoded / out.wall_s
    return (
        f"end to end {label:<18} {out.wall_s:7.2f} s {fps:8.1f} frames/s  {out.crops} crops, {len(out.result.tracks)} "
        f"tracks; peak GPU memory {gpu_mib:.0f} MiB, {rss.figures('its runs')}"
    )


def detection_line(label: str, sums: dict[str, float], repeats: int) -> str:
    return f"detections {label:<18} {detection_figures(sums, repeats)} (a run's average)"


def print_sort_updates() -> None:
    updates_per_s, boxes_per_frame = sort_updates_per_s()
    print(
        f"SORT: {updates_per_s:,.0f} updates/s on the clip's recorded HOG boxes ({boxes_per_frame:.1f} a frame; "
        "a frame without boxes: a skip)"
    )


def print_crop_differences(source: Path, frames: int, device: str) -> None:
    used, crops, largest, mean, share = crop_differences(source, WARMUP_START, frames, device)
    print(
        f"device crop vs OpenCV's warpAffine on {used} frames of the clip ({crops} crops, HOG's recorded boxes): "
        f"max |difference| {largest:.0f} grey levels, mean {mean:.3f}, {100 * share:.2f} % of values differ"
    )


def split_figures(model, clip: Path, warmup: Path, options, one_device, data_dir, frontend, device: str) -> str:
    """Ours divided among every visible GPU (on a CPU: two CPU engines, to check the script) against
    ``one_device``, the one-GPU run of the same clip: speed and the largest differences."""
    from vibe_server.pipeline.cpu_features import default_precision
    from vibe_server.pipeline.engine import Engine
    from vibe_server.pipeline.segmented import run_across_devices

    cuda = device.startswith("cuda")
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if cuda else ["cpu", "cpu"]
    if len(devices) < 2:
        return "multi-GPU split: one GPU: not measured"
    engines = [
        Engine(
            copy.deepcopy(model).to(where), model_name="bench", data_dir=data_dir, device=where,
            precision=options.precision or default_precision(where), frontend=frontend,
        )
        for where in devices
    ]  # fmt: skip
    if cuda:
        run_across_devices(engines, warmup, options)
    out = run_across_devices(engines, clip, options)
    pose, joints = largest_differences(one_device.result, out.result)
    iou = np.asarray(compare(one_device.result, out.result)["box_iou"], dtype=np.float64)
    fps, one_fps = out.frames_decoded / out.wall_s, one_device.frames_decoded / one_device.wall_s
    return (
        f"multi-GPU split on {len(devices)} devices ({', '.join(devices)}{'; checks the script' if not cuda else ''}): "
        f"{fps:.1f} frames/s = {fps / one_fps:.2f}x one device; {len(out.result.tracks)} vs "
        f"{len(one_device.result.tracks)} tracks; max |pose difference| {pose:.2e}, max |joints3d difference| "
        f"{joints:.2e}; min box IoU {float(iou.min()) if len(iou) else float('nan'):.4f}"
    )


def host_waits(engine, clip: Path, options) -> int | str:
    """How many times one run makes the host wait for the GPU: CUDA's sync debug mode warns at each."""
    import warnings

    before = torch.cuda.get_sync_debug_mode()
    try:
        with warnings.catch_warnings(record=True) as caught:  # (process-wide: the other threads' too)
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                engine.run(clip, options)
            finally:
                torch.cuda.set_sync_debug_mode(before)
    except Exception as err:  # the figures stand without it; say what broke
        return f"{type(err).__name__}: {err}"
    return sum("synchroniz" in str(warning.message) for warning in caught)


def check_gpu_equals_cpu(args, model, source, work, frontend, data_dir, defaults, boxes) -> None:
    """``--official`` in fp32 on the GPU and on the CPU, on a slice: print the largest differences."""
    from vibe_server.pipeline.engine import Engine
    from vibe_server.pipeline.options import official_options

    equality_clip = work / "equality.mp4"
    slice_clip(source, equality_clip, WARMUP_START, args.equality_frames)
    if boxes is not None:
        boxes.update(recorded_hog_boxes(equality_clip, WARMUP_START))
    options = official_options(defaults)
    gpu, cpu = (
        Engine(
            copy.deepcopy(model).to(where), model_name="bench", data_dir=data_dir, device=where,
            precision="fp32", frontend=frontend, gpu_front_end=front_end,
        ).run(equality_clip, options).result
        for where, front_end in ((args.device, None), ("cpu", False))  # the CPU's own paths, even emulating
    )  # fmt: skip
    pose, joints = largest_differences(cpu, gpu)
    iou = np.asarray(compare(cpu, gpu)["box_iou"], dtype=np.float64)
    print(
        f"--official fp32, GPU vs CPU on {args.equality_frames} frames: {len(gpu.tracks)} vs {len(cpu.tracks)} "
        f"tracks; max |pose difference| {pose:.2e}, max |joints3d difference| {joints:.2e} (goal <= 1e-4); "
        f"min box IoU {float(iou.min()) if len(iou) else float('nan'):.4f} (goal >= 0.999)"
    )
    if boxes is not None:  # both runs replayed the same boxes: compare YOLOv3's network on its own
        print(yolo_gpu_vs_cpu(args.device, data_dir, equality_clip))


def yolo_gpu_vs_cpu(device: str, data_dir: Path, clip: Path, frames: int = 8) -> str:
    """YOLOv3's decoded rows (boxes in network pixels, objectness, class probabilities) in fp32 on
    ``device`` and on the CPU, for the clip's first ``frames`` frames: the largest differences."""
    from vibe_server.pipeline.detect import make_detector
    from vibe_server.pipeline.video import open_video

    images = [rgb for _, (_, rgb) in zip(range(frames), open_video(clip))]
    rows = [
        make_detector("yolo", data_dir=data_dir, device=where, precision="fp32").network_rows(images).cpu()
        for where in (device, "cpu")
    ]
    box = float((rows[0][..., :4] - rows[1][..., :4]).abs().max())
    probability = float((rows[0][..., 4:] - rows[1][..., 4:]).abs().max())
    return (
        f"YOLOv3 fp32, GPU vs CPU on {len(images)} frames (random weights): max |box difference| {box:.2e} "
        f"network pixels, max |objectness or class probability difference| {probability:.2e}"
    )


def largest_differences(reference, other) -> tuple[float, float]:
    """Largest |pose| and |joints3d| differences on the frames that matched tracks share (each
    reference track matched to the other run's track that shares most frames with it)."""
    pose = joints = 0.0
    for ref in reference.tracks:
        shared = [np.intersect1d(ref.frame_ids, t.frame_ids, return_indices=True) for t in other.tracks]
        if not shared:
            continue
        best = max(range(len(shared)), key=lambda k: len(shared[k][0]))
        _, rows, cols = shared[best]
        match = other.tracks[best]
        pose = max(pose, float(np.abs(ref.pose[rows] - match.pose[cols]).max(initial=0.0)))
        joints = max(joints, float(np.abs(ref.joints3d[rows] - match.joints3d[cols]).max(initial=0.0)))
    return pose, joints


if __name__ == "__main__":
    sys.exit(main())

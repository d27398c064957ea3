"""Host work of the GPU path's job thread: the PyTorch operations it issues per frame.

    PYTHONPATH=server:. python benchmarks/host_ops.py [--frames N] [--device cpu]

On a GPU each PyTorch operation that does work costs the host a launch or a copy, whatever its
size, and at 1000 frames/s the job's thread has 1 ms a frame for all of its work. This runs the GPU
front end (the staged stream and the device crop, ``Engine(gpu_front_end=True)``) on the sample
clip and counts the aten operations that thread issues, those doing work (views and empty
allocations left out) and all, with the device crop taking ``CROP_GROUP_FRAMES`` frames a call
against one frame a call, in one run. A CPU gives the counts: the same code issues the same
operations on a GPU, but for the host-to-device copies (a few a crop call) that a CPU does not need.
The detector replays OpenCV HOG's boxes recorded on the clip and the backbone's forward is left out
(its operations are per batch of crops, not per frame); the temporal model, SMPL and the result are
counted. Counts are exact; the tracker's seconds a frame are the median of --repeats runs.

Last, the job thread's own CPU time in the stream pass (decoding and detection run in their own
threads), with the crop's compute left out too, as on a GPU where its launches return at once: the
host's ceiling for that thread. It overstates the host's work a little, since the CPU still makes
the copies that a GPU makes on its own (held crops, the backbone's batches).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from clips import REAL_CLIPS_DIR, SPEED_CLIP, ReplayDetector, slice_clip
from gpu import WARMUP_START, recorded_hog_boxes
from pipeline import median_run
from torch.utils._python_dispatch import TorchDispatchMode


class CountOperations(TorchDispatchMode):
    """Counts the aten operations issued by one thread while active: all of them, and those that do
    work (not views, which only describe a tensor, nor an empty tensor's allocation)."""

    def __init__(self, thread_id: int):
        super().__init__()
        self.thread_id = thread_id
        self.counts: collections.Counter[str] = collections.Counter()
        self.working: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if threading.get_ident() == self.thread_id:
            self.counts[str(func)] += 1
            if not func.is_view and func.overloadpacket is not torch.ops.aten.empty:
                self.working[str(func)] += 1
        return func(*args, **(kwargs or {}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, help="only N frames of the clip, from frame 250 (default: all)")
    parser.add_argument("--min-track-frames", type=int, default=25, help="for short checks (official: 25)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:  # the synthetic model data is about 500 MB
        return measure(args, Path(work))


def measure(args: argparse.Namespace, work: Path) -> int:
    from vibe_server import load_model
    from vibe_server.data.synthetic import write_synthetic_bundle
    from vibe_server.pipeline import engine as engine_module
    from vibe_server.pipeline.crop import CROP_SIZE_PX
    from vibe_server.pipeline.engine import Engine
    from vibe_server.pipeline.frontend import FrontEnd
    from vibe_server.pipeline.options import RunOptions

    clip, start = REAL_CLIPS_DIR / SPEED_CLIP, 0
    if args.frames:
        start, clip = WARMUP_START, work / "clip.mp4"
        slice_clip(REAL_CLIPS_DIR / SPEED_CLIP, clip, start, args.frames)
    boxes = recorded_hog_boxes(clip, start)
    write_synthetic_bundle(work / "data")
    base = FrontEnd.default()
    crop_calls, crop_left_out = [0], [False]

    def counted_crop(frames, bboxes, device):
        crop_calls[0] += 1
        if crop_left_out[0]:  # as on a GPU, where the crop's launches return at once: no compute here
            return torch.empty((sum(map(len, bboxes)), 3, CROP_SIZE_PX, CROP_SIZE_PX), device=device)
        return base.crop_people_on_device(frames, bboxes, device)

    frontend = dataclasses.replace(
        base, make_detector=lambda name, **kwargs: ReplayDetector(boxes), crop_people_on_device=counted_crop
    )
    engine = Engine(
        load_model(work / "data", device=args.device), model_name="bench", data_dir=work / "data",
        device=args.device, precision="fp32", frontend=frontend, gpu_front_end=True,
    )  # fmt: skip
    engine.extract_features = lambda crops: np.zeros((len(crops), 2048), np.float32)  # the backbone left out
    options = RunOptions(detector="yolo", min_track_frames=args.min_track_frames)
    grouped = engine_module.CROP_GROUP_FRAMES
    print(f"device: {args.device}; torch {torch.__version__}; clip {SPEED_CLIP}; the GPU front end, defaults")
    engine.run(clip, options)  # warm-up
    for label, group_frames in (("one frame a call", 1), (f"{grouped} frames a call", grouped)):
        engine_module.CROP_GROUP_FRAMES = group_frames
        crop_calls[0] = 0
        with CountOperations(threading.get_ident()) as counter:
            out = engine.run(clip, options)
        total, working = sum(counter.counts.values()), sum(counter.working.values())
        common = ", ".join(f"{name.removeprefix('aten.')} {n}" for name, n in counter.working.most_common(4))
        print(
            f"device crop {label:<18} {working:6d} PyTorch operations doing work in the job's thread, "
            f"{working / out.frames_decoded:.1f} a frame ({total} with views); {crop_calls[0]} crop calls "
            f"({out.frames_decoded} frames, {out.crops} crops); most: {common}"
        )
    engine_module.CROP_GROUP_FRAMES = grouped
    crop_left_out[0] = True
    stream_pass, pass_cpu_s = engine._stream_pass, []

    def timed_stream_pass(*pass_args, **pass_kwargs):
        """The job thread's own CPU time in the stream pass: not decoding or detection in their
        threads, nor waiting for them."""
        start = time.thread_time()
        try:
            return stream_pass(*pass_args, **pass_kwargs)
        finally:
            pass_cpu_s.append(time.thread_time() - start)

    engine._stream_pass = timed_stream_pass
    out = median_run(engine, clip, options, args.repeats)
    per_frame_ms = 1000 * out.timings_s["track"] / out.frames_decoded
    print(
        f"tracking (the tracker's own clock, adaptive detection included): {per_frame_ms:.2f} ms a frame, "
        f"median of {args.repeats} runs"
    )
    job_ms = 1000 * statistics.median(pass_cpu_s) / out.frames_decoded
    print(
        f"job thread's own CPU time in the stream pass, crop and backbone left out: {job_ms:.2f} ms a frame, "
        f"median of {args.repeats} runs: at most {1000 / job_ms:.0f} frames/s from that thread on this CPU"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

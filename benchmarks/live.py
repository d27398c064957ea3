"""Live capture on this machine: the bundled clip played at its real frame rate (and faster), the
online pipeline with the defaults, frames dropped when it cannot keep up.

For each source rate (the median of --repeats runs, by p95 latency) it prints the frames/s
processed, the latency from a frame's arrival to its result (p50 / p95) and the share of frames
dropped. The model is the full-size network with random
weights (its cost is the real model's); the detector is OpenCV's HOG (random YOLO weights detect
nobody), or YOLOv3 with --data-dir and the real model data.

    python benchmarks/live.py [--rates 10 30] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "server")]

CLIP = REPO / "samples" / "one-person-walk.mp4"  # one person walking, 10 frames/s, 150 frames


def run_once(engine, rate_fps: float, detector: str):
    from vibe_server.pipeline.live import LiveOptions, LiveSession, run_live
    from vibe_server.pipeline.live_source import LiveSource, SourceInfo
    from vibe_server.pipeline.video import open_video

    reader = open_video(CLIP)
    info = SourceInfo(CLIP.name, rate_fps, reader.info.width, reader.info.height)
    source = LiveSource((rgb for _, rgb in reader), info, pace_fps=rate_fps)
    session = LiveSession(engine, LiveOptions(detector=detector), width=info.width, height=info.height)
    with source:
        return run_live(source, session)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 30.0], help="source frames/s to play at")
    parser.add_argument("--data-dir", help="real model data (default: full-size random weights, HOG detector)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per rate; the median run (by p95) is shown")
    args = parser.parse_args()

    import torch

    from vibe_server.data.synthetic import write_synthetic_bundle
    from vibe_server.pipeline.engine import load_engine

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / "data"
        if not args.data_dir:
            write_synthetic_bundle(data_dir)
        engine = load_engine(data_dir, device="auto")
        detector = "auto" if args.data_dir else "hog"
        run_once(engine, 1000.0, detector)  # warm-up (first calls allocate)
        print(
            f"clip: {CLIP.name} ({engine.device}, {engine.precision}, {torch.get_num_threads()} threads, "
            f"detector {engine.resolve_detector_name(detector)}, defaults of LiveOptions)"
        )
        print(f"{'source fps':>10}  {'processed fps':>13}  {'p50 ms':>7}  {'p95 ms':>7}  {'dropped':>8}  frames")
        for rate in args.rates:
            runs = sorted(
                (run_once(engine, rate, detector) for _ in range(args.repeats)), key=lambda r: r.latency_p95_s
            )
            stats = runs[len(runs) // 2]
            dropped = stats.frames_dropped / max(stats.frames_arrived, 1)
            processed_fps = rate * stats.frames_processed / max(stats.frames_arrived, 1)
            print(
                f"{rate:>10.0f}  {processed_fps:>13.1f}  {1000 * stats.latency_p50_s:>7.0f}  "
                f"{1000 * stats.latency_p95_s:>7.0f}  {100 * dropped:>7.1f}%  "
                f"{stats.frames_processed}/{stats.frames_arrived}"
            )


if __name__ == "__main__":
    main()

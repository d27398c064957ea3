"""Batch benchmark: throughput with 1 and with 2 local workers, and Ray's per-video overhead against
a local run with the same number of workers, in one run on the same clips, machine and model.

    python benchmarks/batch.py [--clips 8] [--frames 60] [--repeats 3] [--data-dir DIR [--detector yolo]] [--ray]
    python benchmarks/batch.py --engine tests.server.batch_fakes:tiny_engine --clips 4 --frames 12  # check

The clips are --clips slices of --frames frames of ``one-by-one-person-detection.mp4`` (people
visible), re-encoded to a temporary folder. Without --data-dir the model is the full-size
random-weight placeholder: its cost is the real model's. Each configuration runs the whole batch
(workers start, load the model, process every clip) into a fresh output folder; the table gives the
median of --repeats runs. "worker s/video" is the median time a worker spent on one video (from the
manifest), so "batch wall - clips x worker s/video / workers" is the start-up and scheduling cost.
Ray's overhead is measured against the local pool with as many workers as Ray has actors.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "server")]

from clips import WALKING_CLIP, slice_clip  # noqa: E402  (benchmarks/ is on the path when run as a script)

from vibe_server.batch.engine_adapter import ENGINE_FACTORY, EngineSpec, make_options  # noqa: E402
from vibe_server.batch.runner import run_batch  # noqa: E402


def one_batch(clips: Path, out: Path, spec: EngineSpec, options, *, jobs: int | None, use_ray: bool) -> dict:
    t0 = time.perf_counter()
    records = run_batch([str(clips)], out, spec, options, jobs=jobs, use_ray=use_ray, show_progress=False)
    wall = time.perf_counter() - t0
    failed = [r for r in records if r["status"] != "done"]
    if failed:
        raise SystemExit(f"benchmark batch failed: {failed[0]['input']}: {failed[0]['error']}")
    return {
        "wall": wall,
        "frames": sum(r["frames"] for r in records),
        "worker_s": statistics.median(r["seconds"] for r in records),
    }


def median_run(label: str, repeats: int, run) -> dict:
    runs = [run(i) for i in range(repeats)]
    row = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    row["label"] = label
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default=str(WALKING_CLIP))
    parser.add_argument("--start", type=int, default=262, help="first frame of the slices (people visible)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=60, help="frames per clip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", help="real model data (default: the full-size random-weight placeholder)")
    parser.add_argument("--engine", default=ENGINE_FACTORY, help="engine factory MODULE:FUNCTION")
    parser.add_argument("--device", default="cpu", help="cpu, cuda (one worker per GPU) or cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per CPU worker")
    parser.add_argument("--ray", action="store_true", help="also measure Ray's overhead (needs the extra .[ray])")
    parser.add_argument(
        "--detector",
        choices=("hog", "yolo"),
        default="hog",
        help="hog (default: the placeholder's random-weight YOLO finds nobody) or yolo (with --data-dir)",
    )
    args = parser.parse_args()
    if args.detector == "yolo" and args.data_dir is None:
        parser.error("--detector yolo needs --data-dir: the placeholder's random-weight YOLO detects nobody")

    options = make_options(detector=args.detector, detection_stride=4, min_track_frames=min(25, args.frames // 2))
    spec = EngineSpec(
        device=args.device,
        data_dir=args.data_dir,
        allow_synthetic=args.data_dir is None,  # the placeholder when no model data is installed
        factory=args.engine,
        threads=args.threads if args.device == "cpu" else None,
    )
    with tempfile.TemporaryDirectory(prefix="vibe-batch-bench-") as tmp:
        tmp = Path(tmp)
        clips = tmp / "clips"
        clips.mkdir()
        for i in range(args.clips):
            written = slice_clip(Path(args.clip), clips / f"clip{i:03d}.mp4", args.start + i * 5, args.frames)
            if written < args.frames:
                raise SystemExit(f"{args.clip} has fewer than {args.start + i * 5 + args.frames} frames")

        def runner(jobs: int, use_ray: bool):
            return lambda i: one_batch(
                clips, tmp / f"out-{'ray' if use_ray else 'local'}{jobs}-{i}", spec, options, jobs=jobs, use_ray=use_ray
            )

        rows = [
            median_run("local, 1 worker", args.repeats, runner(1, False)),
            median_run("local, 2 workers", args.repeats, runner(2, False)),
        ]
        if args.ray:
            import ray  # optional extra, only for --ray

            # as many actors as local workers: Ray gives each CPU actor 2 CPUs (CPUS_PER_CPU_ACTOR)
            t0 = time.perf_counter()
            ray.init(
                num_cpus=4 if args.device == "cpu" else None,
                include_dashboard=False,
                logging_level="WARNING",
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'server'}"}},
            )
            ray_start = time.perf_counter() - t0
            rows.append(median_run("ray, 2 actors", args.repeats, runner(2, True)))
            ray.shutdown()

    print(
        f"\n{args.clips} clips x {args.frames} frames, engine {args.engine}, device {args.device}, "
        f"median of {args.repeats} runs (each: start workers, load the model, run every clip)\n"
    )
    print(f"{'configuration':<18}  {'batch wall s':>12}  {'videos/s':>8}  {'frames/s':>8}  {'worker s/video':>14}")
    for row in rows:
        print(
            f"{row['label']:<18}  {row['wall']:>12.2f}  {args.clips / row['wall']:>8.2f}  "
            f"{row['frames'] / row['wall']:>8.1f}  {row['worker_s']:>14.3f}"
        )
    one, two = rows[0], rows[1]
    print(f"\n2 workers / 1 worker throughput: {one['wall'] / two['wall']:.2f}x")
    if args.ray:
        ray_row = rows[2]
        print(f"Ray cluster start (once, not in the rows): {ray_start:.1f} s")
        print(
            f"Ray overhead per video against the local pool with 2 workers: "
            f"{(ray_row['wall'] - two['wall']) / args.clips * 1000:+.0f} ms "
            f"(worker time per video: local {two['worker_s']:.3f} s, Ray {ray_row['worker_s']:.3f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

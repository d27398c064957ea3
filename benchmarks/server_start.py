"""Seconds from pressing Capture with no server running to the first progress update.

What the add-on does when Capture is pressed and nothing answers on this machine, through the same
code (``vibe_blender.core``: ``connect_or_start`` starts ``vibe-mocap serve`` on a free port with a
fresh token, waits for /health, then the capture sends the clip and polls): the clock starts at the
press and stops at the first status the server reports for the job (queued or running). Each run
starts a new server process; the placeholder model is written once beforehand (as after the first
start), so the figure is a warm start of the program, not the one-time model write.

    python benchmarks/server_start.py [--repeats 3]
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

from vibe_blender.core.capture import CaptureJob  # noqa: E402  (needs the path above)
from vibe_blender.core.client import ServerClient  # noqa: E402
from vibe_blender.core.local_server import LocalServer, connect_or_start, find_program, free_port  # noqa: E402

CLIP = REPO / "samples" / "one-person-walk.mp4"


def one_press(work: Path, program: Path) -> tuple[float, float]:
    """-> (seconds to the server's first answer, seconds to the first progress update of the job)."""
    server = LocalServer(log_dir=work / "log")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the add-on starts its own server
    t0 = time.perf_counter()
    ready_s = []

    def connect() -> ServerClient:
        server_url, token = connect_or_start(url, "", server, lambda: _found(program))
        ready_s.append(time.perf_counter() - t0)
        return ServerClient(server_url, token)

    job = CaptureJob(
        None,
        CLIP,
        work / "results",
        body_model_path=work / "body_model.npz",
        params={"detector": "hog"},
        poll_interval_s=0.05,
        connect=connect,
    ).start()
    try:
        while job.snapshot().state not in ("queued", "running", "done", "failed"):
            time.sleep(0.01)
        first_progress_s = time.perf_counter() - t0
        if job.snapshot().state == "failed":
            raise SystemExit(f"the capture failed: {job.snapshot().message}")
    finally:
        job.cancel()
        job.join(30)
        server.stop()
    return ready_s[0], first_progress_s


def _found(program: Path):
    from vibe_blender.core.local_server import ServerProgram

    return ServerProgram(path=program, version="", found_in="benchmark")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    program = find_program().path
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
            os.environ[name] = str(work / name.lower())
        one_press(work / "warm-up", program)  # writes the placeholder model once, as a first start does
        runs = [one_press(work / f"run{i}", program) for i in range(args.repeats)]
    ready = statistics.median(r for r, _ in runs)
    progress = statistics.median(p for _, p in runs)
    print(f"program: {program}")
    print(f"{'Capture pressed -> server answers /health':<48}{ready:>7.2f} s  (median of {args.repeats})")
    print(f"{'Capture pressed -> first progress update':<48}{progress:>7.2f} s  (median of {args.repeats})")
    print("runs: " + ", ".join(f"{r:.2f}/{p:.2f} s" for r, p in runs))


if __name__ == "__main__":
    main()

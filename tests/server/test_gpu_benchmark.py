"""benchmarks/gpu.py runs its GPU measurement on a CPU too (CI has no GPU): every figure it
promises is printed, from the real pipeline on the recorded detections of the bundled clip, through
the code paths a CUDA device takes (--emulate-gpu-paths), so that the one device run finds them
checked with the script's own wrappers."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def run_benchmark(script: str, args: list[str], temp: Path) -> subprocess.CompletedProcess:
    """benchmarks/SCRIPT with ARGS from the repository root, as a user runs it, with TEMP as the
    temporary folder; it must succeed and leave nothing there but torch.compile's cache."""
    paths = os.pathsep.join([str(REPOSITORY / "server"), str(REPOSITORY)])
    env = {**os.environ, "PYTHONPATH": paths, "TMPDIR": str(temp)}
    done = subprocess.run(
        [sys.executable, str(REPOSITORY / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPOSITORY,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    left = [p.name for p in temp.iterdir() if not p.name.startswith("torchinductor_")]
    assert left == [], f"{script} left its temporary files behind"
    return done


def test_the_gpu_benchmark_prints_every_figure_on_a_cpu(tmp_path):
    args = ["--device", "cpu", "--frames", "30", "--warmup-frames", "30", "--minutes", "0.1", "--repeats", "1"]
    args += ["--min-track-frames", "4", "--equality-frames", "20", "--crop-frames", "20", "--compiled"]
    args += ["--emulate-gpu-paths"]
    done = run_benchmark("gpu.py", args, tmp_path)
    out = done.stdout
    # the first line names the versions; with OpenCV 5 a note says the official crop is not bit-exact
    import cv2

    device = r"CPU \(emulating a CUDA device's code paths\)"
    assert re.search(rf"^device: {device}; torch \S+; OpenCV {re.escape(cv2.__version__)}; clip ", out, re.M)
    assert ("OpenCV 5's warpAffine differs" in out) == (int(cv2.__version__.split(".")[0]) >= 5)
    assert re.search(r"^decode alone \(whole clip to RGB\): 1 thread\(s\) \d+ frames/s, 2 thread\(s\)", out, re.M)
    for stage in ("decode", "detect", "track", "crop", "backbone", "temporal", "write"):
        assert re.search(rf"^{stage}\s+\d+\.\d+ s\s+\S+/s\s+\d+\.\d+ s", out, re.MULTILINE), stage
    summary = out.index("\nper stage, median run")
    rss = r"host RSS (\d+) MiB before, at most (\d+) MiB during its runs \(\+\d+ MiB\)"
    for config in ("official", "ours", "ours, every frame", "ours, 1-frame spot"):
        line = rf"end to end {re.escape(config)}\s+[\d.]+ s\s+[\d.]+ frames/s .*peak GPU memory nan MiB, {rss}$"
        before, during = map(int, re.search(rf"^{line}", out, re.M).groups())
        assert 0 < before <= during  # the host RSS during this configuration's own runs
        # each configuration's figures are printed as soon as it is measured, before the summary
        # (every configuration through the staged front end, as on a GPU)
        measured = re.search(rf"^  {line}\n  per stage \(GPU front end: True\): decode [\d.]+ s", out, re.M)
        assert measured and measured.start() < summary, config
    spot = r"on the spot (\d+) frames \((\d+) detected in (\d+) calls\) in [\d.]+ s"
    found = {}
    for config in ("official", "ours", "ours, 1-frame spot"):  # detected in scheduled batches, and on the spot
        line = re.search(rf"^detections {re.escape(config)}\s+batched \d+ frames in [\d.]+ s; {spot}", out, re.M)
        found[config] = tuple(map(int, line.groups()))
    # ours' on-the-spot calls carry the frames ahead, as on a GPU: fewer calls than triggered frames
    triggered, sent, calls = found["ours"]
    assert calls < triggered < sent <= 8 * calls
    assert found["ours, 1-frame spot"] == (triggered, triggered, triggered)  # one frame a call
    assert re.search(
        r"^detections official\s+batched \d+ frames in [\d.]+ s; on the spot 0 frames \(0 detected", out, re.M
    )
    # the looped run: its own GPU peak (none on a CPU) and how much the host's RSS grew during it
    looped = r"^end to end ours, 60 frames \(0\.10 minutes, the clip 2 times\): [\d.]+ s, [\d.]+ frames/s; "
    looped += (
        r"peak GPU memory nan MiB \(its own\); host RSS (\d+) MiB before, at most (\d+) MiB during it \(\+\d+ MiB\)"
    )
    before, during = map(int, re.search(looped, out, re.M).groups())
    assert 0 < before <= during
    # detection on every frame reproduces the official boxes exactly
    every_frame = r"^ours, every frame: [\d.]+x the official .* track recall 1\.000, median box IoU 1\.000"
    assert re.search(every_frame, out, re.M)
    assert re.search(r"^ours: [\d.]+x the official configuration .* track recall [01]\.\d{3}", out, re.M)
    # ours against one frame per on-the-spot call: the frames ahead change no box
    assert re.search(
        r"^ours against ours, 1-frame spot: [\d.]+x as fast; track recall 1\.000, min box IoU 1\.0000", out, re.M
    )
    # last, ours with both networks compiled (the real torch.compile, on the CPU here)
    compiled = r"^end to end ours, compiled \(backbone and YOLOv3 compiled\) [\d.]+ s [\d.]+ frames/s = [\d.]+x"
    found = re.search(compiled + rf".* detections batched \d+ frames in [\d.]+ s; {spot}", out, re.M)
    triggered, sent, calls = map(int, found.groups())  # compiled YOLO pads every call: it carries frames ahead
    assert calls < triggered <= sent <= 8 * calls
    assert "is not available" not in done.stderr  # neither compile fell back to eager
    assert re.search(r"^SORT: [\d,]+ updates/s on the clip's recorded HOG boxes", out, re.M)
    crop = r"^device crop vs OpenCV's warpAffine on (\d+) frames of the clip \((\d+) crops, .*\): "
    crop += r"max \|difference\| (\d+) grey levels, mean ([\d.]+), [\d.]+ % of values differ"
    frames, crops, largest, mean = re.search(crop, out, re.M).groups()
    assert 0 < int(frames) <= int(crops) and int(largest) <= 8 and float(mean) < 0.2
    # the multi-GPU split runs its code on two CPU engines here, with the one-device result
    split = r"^multi-GPU split on 2 devices \(cpu, cpu; checks the script\): [\d.]+ frames/s = [\d.]+x one device; "
    split += r"(\d+) vs \1 tracks; max \|pose difference\| ([\d.e+-]+), .* min box IoU 1\.0000"
    assert float(re.search(split, out, re.M).group(2)) < 1e-3, out[-2000:]
    # the GPU = CPU check runs (here CPU against CPU: no difference at all)
    equal = r"^--official fp32, GPU vs CPU on 20 frames: (\d+) vs \1 tracks; max \|pose difference\| 0\.00e\+00, "
    assert re.search(equal + r"max \|joints3d difference\| 0\.00e\+00 .* min box IoU 1\.0000", out, re.M), out[-2000:]
    # the official configuration is timed in exact fp32 and with TF32 convolutions; the faster is the baseline
    assert re.search(r"^baseline: official(, TF32)? \([\d.]+ frames/s; the other [\d.]+\)$", out, re.M), out[-2000:]
    # the detections were replayed on both sides: YOLOv3's network is compared on its own
    yolo = r"^YOLOv3 fp32, GPU vs CPU on 8 frames \(random weights\): max \|box difference\| 0\.00e\+00 network pixels"
    assert re.search(yolo, out, re.M), out[-2000:]


def test_the_gpu_cpu_check_compares_matched_tracks_on_the_frames_they_share(monkeypatch):
    from types import SimpleNamespace

    import numpy as np

    monkeypatch.syspath_prepend(str(REPOSITORY / "benchmarks"))
    from gpu import largest_differences

    def track(frames, offset=0.0):
        frames = np.asarray(frames)
        return SimpleNamespace(
            frame_ids=frames, pose=frames[:, None] + np.zeros((1, 72)) + offset, joints3d=np.zeros((len(frames), 49, 3))
        )

    cpu = SimpleNamespace(tracks=[track(range(0, 10)), track(range(20, 30))])
    # the GPU found the second person one frame later, and in another order; its poses differ by 3e-5
    gpu = SimpleNamespace(tracks=[track(range(21, 30), 3e-5), track(range(0, 10))])
    pose, joints = largest_differences(cpu, gpu)
    assert abs(pose - 3e-5) < 1e-9 and joints == 0.0
    gpu.tracks[1].joints3d[4, 7, 2] = 0.5
    assert largest_differences(cpu, gpu)[1] == 0.5


def test_the_looped_video_lasts_at_least_the_minutes_asked(monkeypatch):
    monkeypatch.syspath_prepend(str(REPOSITORY / "benchmarks"))
    from gpu import loops_for

    assert loops_for(10, 10.0, 1394) == 5  # 11.6 minutes of the 2.3-minute sample clip (4 times: 9.3)
    assert loops_for(0.1, 10.0, 30) == 2  # exactly 60 frames: no loop more
    assert loops_for(0.17, 10.0, 34) == 3  # 0.17 x 60 x 10 is 102.00000000000001 frames: 102 = 3 x 34
    assert loops_for(0.01, 10.0, 1394) == 1


def test_a_failing_part_prints_one_line_and_the_benchmark_goes_on(monkeypatch, capsys):
    """The one device run must keep what it measured: a part that fails says so in one line (its
    traceback on stderr) and gives None, instead of ending the script."""
    monkeypatch.syspath_prepend(str(REPOSITORY / "benchmarks"))
    from gpu import attempt

    def looped():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    assert attempt("ours, looped", looped) is None
    assert attempt("SORT", lambda: 7) == 7
    captured = capsys.readouterr()
    assert captured.out == "ours, looped: failed: RuntimeError: CUDA error: an illegal memory access was encountered\n"
    assert "Traceback" in captured.err


def test_detection_figures_are_one_run_s_average(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(REPOSITORY / "benchmarks"))
    from gpu import detection_counts, detection_figures

    # three runs together: the detector was given 390 frames in 2.1 s, 120 of them on the spot
    counters = [SimpleNamespace(frames=240, seconds=1.2), SimpleNamespace(frames=150, seconds=0.9)]
    schedule = SimpleNamespace(spot_frames_sent=40, spot_s=0.2, spot_calls=6, extra_detections={"unsettled": 30})
    streams = [SimpleNamespace(schedule=schedule)] * 3
    sums = detection_counts(counters, streams)
    assert detection_figures(sums, 3) == (
        "batched 90 frames in 0.50 s; on the spot 30 frames (40 detected in 6 calls) in 0.20 s"
    )


def test_the_host_operations_benchmark_counts_fewer_operations_with_the_frames_cropped_together(tmp_path):
    args = ["--frames", "40", "--repeats", "1", "--min-track-frames", "4"]
    done = run_benchmark("host_ops.py", args, tmp_path)
    line = r"^device crop (one frame|8 frames) a call +(\d+) PyTorch operations doing work in .*; (\d+) crop"
    found = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(line, done.stdout, re.M)}
    assert set(found) == {"one frame", "8 frames"}, done.stdout
    (ops_one, calls_one), (ops_grouped, calls_grouped) = found["one frame"], found["8 frames"]
    assert ops_grouped < ops_one and calls_grouped < calls_one
    assert re.search(r"^tracking .*: [\d.]+ ms a frame", done.stdout, re.M)
    job = r"^job thread's own CPU time in the stream pass, .*: ([\d.]+) ms a frame, .*: at most (\d+) frames/s"
    job_ms, ceiling = map(float, re.search(job, done.stdout, re.M).groups())
    assert 0 < job_ms and 1000 / (job_ms + 0.005) - 1 <= ceiling <= 1000 / max(job_ms - 0.005, 1e-9) + 1  # rounded


def test_the_person_rows_of_the_stand_in_detector_merge_into_the_recorded_boxes():
    """The GPU benchmark's stand-in YOLO (random weights) gets person rows around each recorded box,
    so that its post-processing merges as many boxes as the real weights make it; merged, they give
    the recorded boxes back."""
    import numpy as np
    import torch

    sys.path.insert(0, str(REPOSITORY / "benchmarks"))
    from clips import CANDIDATES_PER_PERSON, with_person_rows

    from vibe_server.pipeline.batched.detections import person_detections_batched
    from vibe_server.pipeline.track import iou_matrix

    boxes = [np.array([[100, 40, 180, 300, 1.0], [400, 60, 470, 330, 1.0]], np.float32), np.zeros((0, 5), np.float32)]
    rows = with_person_rows(torch.zeros(2, 10647, 85), boxes, (360, 640), 416)
    assert int((rows[..., 4] > 0.8).sum()) == 2 * CANDIDATES_PER_PERSON
    found = person_detections_batched(rows, 360, 640)
    assert len(found[0]) == 2 and len(found[1]) == 0
    assert iou_matrix(found[0], boxes[0]).max(axis=1).min() > 0.9

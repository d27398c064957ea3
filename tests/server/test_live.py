"""The online pipeline against the offline one: with no frame dropped and no smoothing, live results
are the offline "carry" results (same model, same detector, same tracker)."""

import ast
import dataclasses
import io
import os
import time
import types
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from vibe_blender.core.errors import VibeError
from vibe_server.pipeline.live import FORGET_AFTER_FRAMES, LiveOptions, LiveRecording, LiveSession
from vibe_server.pipeline.options import DEFAULT_DETECTION_STRIDE, RunOptions
from vibe_server.pipeline.video import open_video

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.mark.parametrize("stride", [1, 3, DEFAULT_DETECTION_STRIDE])
def test_streamed_results_equal_offline_carry(fp32_engine, short_clip, stride):
    engine = fp32_engine
    offline = engine.run(
        short_clip,
        # the same detection schedule as the live session (stride, adaptive detection), GRU carried
        RunOptions(detector="hog", detection_stride=stride, min_track_frames=1, chunking="carry", smoothing=0.0),
    ).result
    reader = open_video(short_clip)
    session = LiveSession(
        engine, LiveOptions(detector="hog", detection_stride=stride), width=reader.info.width, height=reader.info.height
    )
    streamed: dict[int, list] = {}
    for index, rgb in reader:
        for person in session.process(index, rgb, frame_time_s=index / reader.info.fps):
            streamed.setdefault(person.track_id, []).append(person)
    assert offline.tracks and sorted(streamed) == [t.track_id for t in offline.tracks]
    for track in offline.tracks:
        rows = streamed[track.track_id]
        np.testing.assert_array_equal([p.frame_index for p in rows], track.frame_ids)
        np.testing.assert_allclose(np.stack([p.pose for p in rows]), track.pose, atol=1e-5)
        np.testing.assert_allclose(np.stack([p.betas for p in rows]), track.betas, atol=1e-5)
        np.testing.assert_allclose(np.stack([p.trans_cam_m for p in rows]), track.trans_cam_m, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.stack([p.joints3d for p in rows]), track.joints3d, atol=1e-5)


def test_recording_gives_the_standard_result_file(fp32_engine, short_clip, tmp_path):
    engine = fp32_engine
    from vibe_blender.core.result_file import load_result, save_result

    reader = open_video(short_clip)
    session = LiveSession(
        engine,
        LiveOptions(detector="hog", detection_stride=1, smoothing=0.5),
        width=reader.info.width,
        height=reader.info.height,
    )
    recording = LiveRecording(
        name="camera 0",
        fps=reader.info.fps,
        width=reader.info.width,
        height=reader.info.height,
        focal_px=session.focal_px,
        model_name="synthetic",
    )
    streamed: dict[int, list] = {}
    for index, rgb in reader:
        people = session.process(index, rgb, frame_time_s=index / reader.info.fps)
        recording.add(people)
        for person in people:
            streamed.setdefault(person.track_id, []).append(person)
    save_result(tmp_path / "live.npz", recording.result(frames_seen=24, dropped=0))
    result = load_result(tmp_path / "live.npz")
    assert result.video.frame_count == 24 and result.meta["source"] == "live"
    assert sum(t.num_frames for t in result.tracks) == recording.rows > 5
    assert [t.track_id for t in result.tracks] == sorted(streamed)
    for track in result.tracks:  # each person as streamed (the smoothed pose), in frame order
        rows = streamed[track.track_id]
        np.testing.assert_array_equal(track.frame_ids, [p.frame_index for p in rows])
        for name, values in (("pose", "pose"), ("betas", "betas"), ("pred_cam", "pred_cam"), ("bboxes", "bbox")):
            np.testing.assert_array_equal(getattr(track, name), np.stack([getattr(p, values) for p in rows]), name)
        np.testing.assert_array_equal(track.joints3d, np.stack([p.joints3d for p in rows]))
        np.testing.assert_allclose(track.trans_cam_m, np.stack([p.trans_cam_m for p in rows]), rtol=1e-5, atol=1e-5)


def test_live_command_prints_figures_and_records(short_clip, synthetic_bundle, tmp_path, capsys):
    from vibe_blender.core.result_file import load_result
    from vibe_server.cli import main

    out = tmp_path / "take.npz"
    assert (
        main(
            [
                "live",
                str(short_clip),
                "--detector",
                "hog",
                "--data-dir",
                str(synthetic_bundle),
                "--device",
                "cpu",
                "--record",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    summary = printed.out.strip().splitlines()[0]
    assert "frames/s" in summary and "latency p50" in summary and "p95" in summary
    processed = int(summary.split("processed ")[1].split()[0])
    dropped, arrived = (int(v) for v in summary.split("dropped ")[1].split()[:3:2])
    assert arrived == 24 and processed + dropped == arrived
    result = load_result(out)
    assert result.tracks and result.meta["frames_dropped"] == str(dropped)
    assert "Recorded" in printed.out


FALLBACK_WARNING = "yolov3.weights is not in the model data, so people were found with HOG"


class _FakeLiveModel:
    """The live model reduced to one person (track 1) in every frame."""

    focal_px = 500.0
    detector_name = "hog"

    def __init__(self, engine=None, options=None, *, width=8, height=8):
        self.frames_processed = self.people_left_out = 0
        self.warnings = [FALLBACK_WARNING]  # as the real session says it without yolov3.weights (test_live_api.py)

    def process(self, index, rgb, time_s):
        from vibe_server.pipeline.live import LivePerson

        self.frames_processed += 1
        theta = np.full((1, 85), 0.1, np.float32)  # as the real session: rows of one batch's arrays
        joints3d = np.zeros((1, 49, 3), np.float32)
        z = np.zeros
        return [
            LivePerson(
                1, index, time_s, 0.01, theta[0, 3:75], theta[0, 75:85], z(3, np.float32), z(4, np.float32),
                theta[0, :3], np.array([4, 4, 4, 4], np.float32), joints3d[0],
            )
        ]  # fmt: skip


@pytest.fixture
def fake_live_command(monkeypatch):
    """``vibe-mocap live 0`` on a camera that sends ``camera.frames``, then says ``camera.said_at_end``
    and raises ``camera.error``, and the fake model: no engine, no data folder."""
    import vibe_server.commands.live as command
    import vibe_server.pipeline.engine as engine_module
    import vibe_server.pipeline.live as pipeline_live
    from vibe_server.pipeline.live_source import LiveSource, SourceInfo

    camera = types.SimpleNamespace(frames=30, error=None, delay_s=0.0, said_at_end=None, sent_at=[])
    said = []

    def frames():
        for _ in range(camera.frames):
            time.sleep(camera.delay_s)  # the time between two frames of the camera
            camera.sent_at.append(time.monotonic())
            yield np.zeros((8, 8, 3), np.uint8)
        if camera.said_at_end is not None:  # as a file that breaks off says so
            said.append(camera.said_at_end)
        if camera.error is not None:
            raise camera.error

    def open_camera(spec, lossless=False):
        return LiveSource(frames(), SourceInfo("camera 0", 30.0, 8, 8), lossless=True, warnings=said)

    fake_engine = types.SimpleNamespace(model_name="fake")
    monkeypatch.setattr(engine_module, "load_engine", lambda *a, **k: fake_engine)
    monkeypatch.setattr(command, "checked_data_dir", lambda folder: folder)
    monkeypatch.setattr(command, "resolve_device", lambda device: "cpu")
    monkeypatch.setattr(command, "open_live_source", open_camera)
    monkeypatch.setattr(pipeline_live, "LiveSession", _FakeLiveModel)
    return camera


def test_live_command_saves_the_recording_when_the_source_breaks(fake_live_command, tmp_path, capsys):
    """Only Ctrl-C saved the recording: a source that broke (here a new frame size) lost it."""
    from vibe_blender.core.result_file import load_result
    from vibe_server.cli import main

    fake_live_command.error = VibeError("camera 0 changed its frame size from 8 x 8 to 16 x 16 pixels; start again.")
    out = tmp_path / "take.npz"
    assert main(["live", "0", "--record", str(out)]) == 2
    printed = capsys.readouterr()
    assert f"Recorded 1 track(s), 30 frames: {out}" in printed.out and "(failed)" in printed.out
    assert "camera 0 changed its frame size" in printed.err
    assert f"detector: hog. Ctrl-C stops.\nWARNING: {FALLBACK_WARNING}\n" in printed.err
    assert load_result(out).meta["warnings"] == FALLBACK_WARNING  # the recording keeps it, as a video's result
    (track,) = load_result(out).tracks
    np.testing.assert_array_equal(track.frame_ids, np.arange(30))
    np.testing.assert_allclose(track.pose, 0.1)


def test_the_live_command_prints_and_records_what_its_source_said_as_it_ended(fake_live_command, tmp_path, capsys):
    from vibe_blender.core.result_file import load_result
    from vibe_server.cli import main

    fake_live_command.said_at_end = "The video is truncated or damaged: decoding stopped at frame 30 of the 90 ..."
    out = tmp_path / "take.npz"
    assert main(["live", "0", "--record", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count(f"WARNING: {fake_live_command.said_at_end}\n") == 1
    assert load_result(out).meta["warnings"] == f"{FALLBACK_WARNING}\n{fake_live_command.said_at_end}"


@pytest.mark.parametrize(
    "name, words",
    [
        ("take.mp4", "The recording must end in .npz; got '{path}'."),
        ("take.npz", "The recording '{path}' already exists and is not a .npz file: writing it would destroy"),
    ],
)
def test_live_refuses_a_recording_that_would_replace_a_file_of_another_kind(
    fake_live_command, tmp_path, capsys, name, words
):
    """Before: only the suffix was checked, so a video saved as take.npz was replaced by the take."""
    from vibe_server.cli import main

    path = tmp_path / name
    path.write_bytes(b"my video")
    assert main(["live", "0", "--record", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {words.format(path=path)}") and err.count("\n") == 1, err
    assert path.read_bytes() == b"my video"


def test_live_command_saves_the_recording_whatever_ends_the_session(fake_live_command, tmp_path, capsys, monkeypatch):
    """Only a VibeError kept the recording: out of memory on a GPU, an OpenCV error in a crop lost it."""
    from vibe_blender.core.result_file import load_result
    from vibe_server.cli import main

    process = _FakeLiveModel.process

    def out_of_memory_after_20(self, index, rgb, time_s):
        if self.frames_processed == 20:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")  # (a class in CPU builds too)
        return process(self, index, rgb, time_s)

    monkeypatch.setattr(_FakeLiveModel, "process", out_of_memory_after_20)
    out = tmp_path / "take.npz"
    assert main(["live", "0", "--record", str(out)]) == 2
    printed = capsys.readouterr()
    assert f"Recorded 1 track(s), 20 frames: {out}" in printed.out and "(failed)" in printed.out
    assert "ran out of memory" in printed.err
    np.testing.assert_array_equal(load_result(out).tracks[0].frame_ids, np.arange(20))


def test_ctrl_c_ends_the_live_command_with_the_sessions_last_figures(fake_live_command, tmp_path, capsys, monkeypatch):
    """Ctrl-C is how a camera session stops; before, its closing line lost the rate and latency
    ("0.0 frames/s latency p50 - ms")."""
    from vibe_server.cli import main

    process = _FakeLiveModel.process

    def ctrl_c_after_30(self, index, rgb, time_s):
        if self.frames_processed == 30:
            raise KeyboardInterrupt  # where Ctrl-C lands: the main thread, while it processes a frame
        return process(self, index, rgb, time_s)

    monkeypatch.setattr(_FakeLiveModel, "process", ctrl_c_after_30)
    fake_live_command.frames = 10_000
    assert main(["live", "0", "--record", str(tmp_path / "take.npz")]) == 0
    final = [line for line in capsys.readouterr().out.splitlines() if line.endswith("(interrupted)")]
    assert len(final) == 1 and "processed 30" in final[0], final
    assert " 0.0 frames/s" not in final[0] and "p50 - ms" not in final[0], final


def test_ctrl_c_during_the_save_lets_the_recording_be_saved(fake_live_command, tmp_path, capsys, monkeypatch):
    """Saving a long take takes a while, silently: Ctrl-C pressed again then stopped the save, and
    the whole take was lost ("interrupted")."""
    import signal

    import vibe_server.commands.live as command
    from vibe_blender.core.result_file import load_result
    from vibe_server.cli import main

    save = command.save_result

    def ctrl_c_while_saving(file, result):
        signal.raise_signal(signal.SIGINT)  # where a second Ctrl-C lands: the main thread, saving
        save(file, result)

    monkeypatch.setattr(command, "save_result", ctrl_c_while_saving)
    out = tmp_path / "take.npz"
    # Ctrl-C as a terminal's: a run started in the background (`cmd &`) begins with SIGINT ignored
    launched_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main(["live", "0", "--record", str(out)]) == 0
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, launched_with)
    printed = capsys.readouterr()
    assert f"Saving the recording to {out}...\n" in printed.err and "interrupted" not in printed.err
    assert f"Recorded 1 track(s), 30 frames: {out}" in printed.out
    assert load_result(out).tracks[0].num_frames == 30
    assert after is signal.default_int_handler  # Ctrl-C works again after


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP"])
def test_sigterm_or_a_closed_terminal_stops_the_live_command_as_ctrl_c_does(synthetic_bundle, tmp_path, stop):
    """Only Ctrl-C saved the recording: SIGTERM (`kill`, `docker stop`, `timeout`, a service stopping)
    and SIGHUP (the terminal closed) ended the command at once, and the whole take was lost."""
    import pty
    import select
    import signal
    import subprocess
    import sys

    from testdata import SAMPLE

    from tests.server.test_batch import ROOT, _as_from_a_terminal
    from vibe_blender.core.result_file import load_result

    out = tmp_path / "take.npz"
    # stdout and stderr on one pipe, or on a terminal that is closed before SIGHUP (writing to it fails then)
    ours, theirs = pty.openpty() if stop == "SIGHUP" else os.pipe()
    live = subprocess.Popen(
        [sys.executable, "-m", "vibe_server", "live", str(SAMPLE), "--detector", "hog", "--record", str(out),
         "--data-dir", str(synthetic_bundle), "--device", "cpu"],
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'server'}", "OMP_NUM_THREADS": "1"},
        stdout=theirs, stderr=theirs, start_new_session=True, preexec_fn=_as_from_a_terminal,
    )  # fmt: skip
    os.close(theirs)
    printed, deadline = b"", time.monotonic() + 120
    try:
        while b"people 1" not in printed:  # a second's figures once someone is tracked (the clip lasts 15 s)
            assert time.monotonic() < deadline and live.poll() is None, printed.decode()
            if select.select([ours], [], [], 1.0)[0]:
                printed += os.read(ours, 65536)
        if stop == "SIGHUP":
            os.close(ours)
        live.send_signal(getattr(signal, stop))
        status = live.wait(timeout=60)  # (without a terminal, "Recorded ..." fails to print: no status to check)
        if stop == "SIGTERM":
            while chunk := os.read(ours, 65536):  # what it printed since, up to its end
                printed += chunk
        assert status == 0 or stop == "SIGHUP", printed.decode()
    finally:
        if live.poll() is None:
            live.kill()
        if stop == "SIGTERM":
            os.close(ours)
    if stop == "SIGTERM":
        text = printed.decode()
        assert f"(stopped by SIGTERM)\nSaving the recording to {out}...\nRecorded " in text, text
    assert load_result(out).tracks[0].num_frames > 0


@pytest.mark.parametrize("broken", [False, True], ids=["source-ends", "source-breaks"])
def test_a_live_recording_with_nobody_tracked_says_so_and_writes_nothing(
    fake_live_command, tmp_path, capsys, monkeypatch, broken
):
    """Before: a recording without a single row ended in a raw traceback ("zip() argument 2 is
    longer than argument 1"), hiding the message below, or the source's own error when it broke."""
    from vibe_server.cli import main

    monkeypatch.setattr(_FakeLiveModel, "process", lambda self, index, rgb, time_s: [])
    if broken:
        fake_live_command.error = VibeError("camera 0 stopped sending frames.")
    out = tmp_path / "take.npz"
    assert main(["live", "0", "--record", str(out)]) == 2
    err = capsys.readouterr().err
    if broken:
        assert "camera 0 stopped sending frames." in err and "nothing to record" not in err
    else:
        assert "Nobody was tracked from camera 0: nothing to record." in err
    assert "Traceback" not in err and not out.exists()


def test_the_live_command_names_its_detector_and_warns_of_the_hog_fallback(synthetic_bundle, capsys):
    """The official model data without yolov3.weights: infer and the server warned that 'auto' fell
    back to HOG, the live command said nothing."""
    from testdata import SAMPLE

    from vibe_server.cli import main

    main(["live", str(SAMPLE), "--duration", "0.5", "--data-dir", str(synthetic_bundle), "--device", "cpu"])
    err = capsys.readouterr().err
    assert "detector: hog. Ctrl-C stops." in err
    assert "WARNING: yolov3.weights is not in the model data" in err


def test_a_full_recording_stops_the_command_and_is_saved(fake_live_command, tmp_path, capsys, monkeypatch):
    """The command's recording had no bound: memory grew for as long as it ran."""
    import vibe_server.pipeline.live as pipeline_live
    from vibe_blender.core.result_file import load_result
    from vibe_server.cli import main

    monkeypatch.setattr(pipeline_live, "MAX_RECORDED_FRAMES", 10)
    fake_live_command.frames = 10_000
    out = tmp_path / "take.npz"
    assert main(["live", "0", "--record", str(out)]) == 0
    printed = capsys.readouterr()
    assert "The recording is full: 10 person-frames" in printed.err and "what was recorded is saved" in printed.err
    processed = int(printed.out.split("processed ")[1].split()[0])
    assert processed < 100  # it stopped there, not at the source's end
    (track,) = load_result(out).tracks
    np.testing.assert_array_equal(track.frame_ids, np.arange(10))


def test_a_recording_keeps_only_what_the_result_file_needs():
    """Each person-frame kept its whole LivePerson, whose arrays were views holding the frame's whole
    batch: about 2.3 kB per person-frame (246 MB an hour for one person at 30 frames/s)."""
    import tracemalloc

    from vibe_blender.core.keyed_rows import CHUNK_ROWS
    from vibe_server.pipeline.live import ROW_WIDTH

    recording = LiveRecording("camera 0", 30.0, 8, 8, 500.0, "fake")
    model = _FakeLiveModel()
    n = 5 * CHUNK_ROWS - 100
    tracemalloc.start()
    try:
        for i in range(n):
            recording.add(model.process(i, None, i / 30))
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ROW_WIDTH == 3 + 72 + 10 + 4 + 49 * 3  # pred_cam, pose, betas, bbox, joints3d: nothing else
    # whole chunks of those float32 and two int64 keys per row, and a few kB of bookkeeping
    assert used < 5 * CHUNK_ROWS * (4 * ROW_WIDTH + 16) + 16_384
    assert used / n < 1000  # bytes a person-frame (was about 2,300)
    assert recording.rows == recording.frames_recorded == n


@pytest.mark.parametrize(
    "sent_fps, seconds, saved_fps",
    [(15.0, 3.0, 15.0), (29.8, 3.0, 30.0), (15.0, 1.5, 30.0), (60.0, 3.0, 60.0)],
    ids=["half the stated rate", "within 2 % of it", "too short to measure", "twice the stated rate"],
)
def test_a_recording_is_saved_at_the_rate_its_frames_came_at(sent_fps, seconds, saved_fps):
    """The frames of a camera stating 30 frames/s that sends 15 were saved at 30 frames/s: the
    recording played twice as fast as filmed."""
    recording = LiveRecording("camera 0", 30.0, 8, 8, 500.0, "fake")
    model = _FakeLiveModel()
    for i in range(int(seconds * sent_fps) + 1):
        recording.add(model.process(i, None, 100.0 + i / sent_fps))
        recording.add([])  # a frame with nobody: its time is not the last recorded
    assert recording.result(frames_seen=10, dropped=0).video.fps == pytest.approx(saved_fps, abs=1e-3)


def test_the_live_command_saves_a_camera_at_the_rate_it_sends(fake_live_command, tmp_path, capsys, monkeypatch):
    import vibe_server.pipeline.live as pipeline_live
    from vibe_blender.core.result_file import load_result
    from vibe_server.cli import main

    monkeypatch.setattr(pipeline_live, "RATE_MEASURED_OVER_S", 0.3, raising=False)  # the 0.6 s sent are enough
    fake_live_command.frames, fake_live_command.delay_s = 10, 1 / 15  # states 30 frames/s, sends 15
    out = tmp_path / "take.npz"
    assert main(["live", "0", "--record", str(out)]) == 0
    sent_at = fake_live_command.sent_at
    sent_fps = (len(sent_at) - 1) / (sent_at[-1] - sent_at[0])  # ~15, slower on a loaded machine
    result = load_result(out)
    assert result.video.fps == pytest.approx(sent_fps, rel=0.2), (result.video.fps, sent_fps)  # far from 30
    assert f"camera 0 states 30 frames/s but sent {result.video.fps:g}" in capsys.readouterr().err


def test_a_full_recording_keeps_what_it_has(monkeypatch):
    import vibe_server.pipeline.live as pipeline_live

    monkeypatch.setattr(pipeline_live, "MAX_RECORDED_FRAMES", 4)
    recording = LiveRecording("camera 0", 30.0, 8, 8, 500.0, "fake")
    model = _FakeLiveModel()
    two = model.process(0, None, 0.0) + [dataclasses.replace(model.process(0, None, 0.0)[0], track_id=2)]
    assert recording.add(two) and recording.add(model.process(1, None, 0.1)) and not recording.full
    assert recording.add(two) is False and recording.full  # a frame whose people do not all fit is left out
    assert recording.add(model.process(3, None, 0.2)) and recording.add([]) and recording.rows == 4
    assert recording.add(model.process(4, None, 0.3)) is False
    result = recording.result(frames_seen=5, dropped=0)
    assert {t.track_id: t.frame_ids.tolist() for t in result.tracks} == {1: [0, 1, 3], 2: [0]}


def test_a_recording_ends_at_the_last_frame_a_result_file_counts():
    """Frame ids are the source's: past 10,000,000 (3.8 days at 30 frames/s) the saved file was one
    its own reader refuses."""
    from vibe_blender.core.result_file import MAX_FRAME_ID, load_result, save_result

    recording = LiveRecording("camera 0", 30.0, 8, 8, 500.0, "fake")
    model = _FakeLiveModel()
    assert recording.add(model.process(MAX_FRAME_ID - 1, None, 0.0)) and recording.add(
        model.process(MAX_FRAME_ID, None, 0.1)
    )
    assert recording.add(model.process(MAX_FRAME_ID + 1, None, 0.2)) is False and recording.full
    assert recording.add([]) and recording.rows == 2  # (nobody: nothing to refuse)
    buffer = io.BytesIO()
    save_result(buffer, recording.result(frames_seen=MAX_FRAME_ID + 2, dropped=0))
    buffer.seek(0)
    assert load_result(buffer).tracks[0].frame_ids.tolist() == [MAX_FRAME_ID - 1, MAX_FRAME_ID]


def test_a_recording_of_more_tracks_than_a_result_holds_keeps_the_longest_and_says_so(monkeypatch):
    import vibe_server.pipeline.live as pipeline_live

    monkeypatch.setattr(pipeline_live, "MAX_TRACKS", 2)
    recording = LiveRecording("camera 0", 30.0, 8, 8, 500.0, "fake")
    model = _FakeLiveModel()
    person = model.process(0, None, 0.0)[0]
    for frame, track_ids in enumerate([(1, 2, 3), (2, 3), (3,)]):
        recording.add([dataclasses.replace(person, track_id=t, frame_index=frame) for t in track_ids])
    result = recording.result(frames_seen=3, dropped=0, warnings=["the source broke off"])
    assert [t.track_id for t in result.tracks] == [2, 3]
    assert result.meta["warnings"].splitlines() == [
        "the source broke off",
        "3 people were tracked; the result keeps the 2 tracked longest, the most a result file holds.",
    ]


def test_a_recording_groups_its_rows_by_track_in_one_pass_as_track_by_track(monkeypatch):
    """The rows were grouped with one pass over all rows per track (2.9 s for 2,000 tracks at the
    2,000,000-row limit); grouped once, each track keeps the same rows in the same order."""
    import vibe_server.pipeline.live as pipeline_live
    from vibe_blender.core import keyed_rows
    from vibe_server.pipeline import postprocess

    monkeypatch.setattr(keyed_rows, "CHUNK_ROWS", 16)  # rows across many chunks
    rng = np.random.default_rng(0)
    recording = LiveRecording("camera 0", 30.0, 640, 480, 500.0, "fake")
    model = _FakeLiveModel()
    for index in range(60):
        people = []
        for track_id in rng.choice([3, 9, 1, 42, 7], size=rng.integers(0, 5), replace=False):
            (person,) = model.process(index, None, index / 30)
            people.append(
                dataclasses.replace(
                    person,
                    track_id=int(track_id),
                    pose=rng.normal(size=72).astype(np.float32),
                    bbox=rng.uniform(10, 100, 4).astype(np.float32),
                    joints3d=rng.normal(size=(49, 3)).astype(np.float32),
                )
            )
        assert recording.add(people)
    result = recording.result(frames_seen=60, dropped=0)

    keys = recording._recorded_keys()
    expected = []
    for track_id in np.unique(keys[:, 0]):  # the earlier grouping: one pass over the rows per track
        rows = np.flatnonzero(keys[:, 0] == track_id)
        values = recording._rows.values_at(rows)
        expected.append(
            postprocess.build_track(
                int(track_id),
                keys[rows, 1],
                values[:, pipeline_live._THETA],
                values[:, pipeline_live._JOINTS].reshape(-1, 49, 3),
                values[:, pipeline_live._BBOX],
                width=640,
                height=480,
                focal_px=500.0,
            )
        )
    assert [t.track_id for t in result.tracks] == [t.track_id for t in expected] == [1, 3, 7, 9, 42]
    for track, want in zip(result.tracks, expected, strict=True):
        for name, value in dataclasses.asdict(want).items():
            np.testing.assert_array_equal(getattr(track, name), value, err_msg=name)


def test_live_command_refuses_a_bad_source(capsys):
    from vibe_server.cli import main

    assert main(["live", "rtsp://192.0.2.1/cam", "--device", "cpu"]) == 2
    assert "not on this machine" in capsys.readouterr().err


@pytest.mark.parametrize("duration", ["-1", "0", "nan", "inf"])
def test_live_command_refuses_a_duration_that_is_not_positive(capsys, duration):
    from vibe_server.cli import main

    # refused before the source is looked at (this one would be refused too, differently)
    assert main(["live", "rtsp://192.0.2.1/cam", "--duration", duration, "--device", "cpu"]) == 2
    assert "--duration must be a number of seconds more than 0" in capsys.readouterr().err


def test_live_command_refuses_non_finite_options(capsys):
    from vibe_server.cli import main

    assert main(["live", "rtsp://192.0.2.1/cam", "--smoothing", "nan", "--device", "cpu"]) == 2
    assert "--smoothing must be a finite number between 0 and 1; got nan." in capsys.readouterr().err
    # by the flag typed, without "or empty", which a command line cannot give
    assert main(["live", "0", "--max-people", "0", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == "error: --max-people must be between 1 and 32; got 0.\n"


def test_live_command_says_a_missing_camera_before_the_model_loads(monkeypatch, capsys):
    """Before: `live 0` without a camera loaded the whole model, and only then said so."""
    import vibe_server.commands.live as command
    import vibe_server.pipeline.engine as engine_module
    from vibe_server.cli import main

    missing = "Cannot open camera 0: check that it is connected and not used by another program."

    def no_camera(spec, lossless=False):
        raise VibeError(missing)

    monkeypatch.setattr(command, "open_live_source", no_camera)
    monkeypatch.setattr(command, "checked_data_dir", lambda folder: folder)
    monkeypatch.setattr(engine_module, "load_engine", lambda *a, **k: pytest.fail("the model loaded"))
    assert main(["live", "0", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == f"error: {missing}\n"


def test_live_command_releases_the_camera_when_the_model_does_not_load(monkeypatch, capsys):
    import vibe_server.commands.live as command
    import vibe_server.pipeline.engine as engine_module
    from vibe_server.cli import main
    from vibe_server.pipeline.live_source import LiveSource, SourceInfo

    released = []

    def camera(spec, lossless=False):
        return LiveSource(iter(()), SourceInfo("camera 0", 30.0, 8, 8), close=lambda: released.append(spec))

    def no_model(*args, **kwargs):
        raise VibeError("Model data missing.")

    monkeypatch.setattr(command, "open_live_source", camera)
    monkeypatch.setattr(command, "checked_data_dir", lambda folder: folder)
    monkeypatch.setattr(engine_module, "load_engine", no_model)
    assert main(["live", "0", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == "error: Model data missing.\n" and released == ["0"]


@pytest.mark.parametrize("unseen", [FORGET_AFTER_FRAMES - 1, FORGET_AFTER_FRAMES, 990])
def test_a_person_unseen_for_long_starts_a_fresh_gru_state_even_when_nobody_was_tracked(make_engine, unseen):
    """The states were forgotten only at frames with someone tracked: a person back after a long
    stretch with nobody in view went on from the state of long before (and the state was kept for ever)."""
    engine = make_engine()
    session = LiveSession(engine, LiveOptions(detector="hog"), width=64, height=64)
    seen_at = {*range(10), 9 + unseen + 1}  # track 1, then nobody for ``unseen`` frames, then track 1 again
    box = np.array([32.0, 32.0, 40.0, 40.0], np.float32)
    session._track = lambda rgb: [(1, box)] if index in seen_at else []
    gru_states = []
    forward = engine.model.forward_features

    def spy(x, h0=None, **kwargs):
        gru_states.append(h0.clone())
        return forward(x, h0=h0, **kwargs)

    engine.model.forward_features = spy
    for index in range(max(seen_at) + 1):
        session.process(index, np.zeros((64, 64, 3), np.uint8), index / 30)
    assert len(gru_states) == 11 and not gru_states[0].any() and gru_states[9].any()
    assert gru_states[10].any() == (unseen < FORGET_AFTER_FRAMES)


def test_a_person_a_result_file_cannot_hold_is_left_out_of_the_frame_and_counted(make_engine, tmp_path):
    """A camera scale of 0 or less put a person ~1e9 m away, and a NaN went through: the add-on refused
    the whole frame, everyone in it, and a recording holding it did not open."""
    from vibe_blender.core.result_file import load_result, save_result
    from vibe_server.pipeline.live import run_live
    from vibe_server.pipeline.live_source import LiveSource, SourceInfo

    engine = make_engine()
    session = LiveSession(engine, LiveOptions(detector="hog", smoothing=0.5), width=64, height=64)
    boxes = [(1, np.array([20.0, 32.0, 30.0, 30.0], np.float32)), (2, np.array([44.0, 32.0, 30.0, 30.0], np.float32))]
    session._track = lambda rgb: boxes
    forward, calls, gru_states = engine.model.forward_features, [], []

    def spoiled(x, h0=None, **kwargs):
        gru_states.append(h0.clone())
        out = forward(x, h0=h0, **kwargs)
        if len(calls) == 3:
            out["theta"][0, 0, 0] = -0.05  # person 1's camera scale, at frame 3
        if len(calls) == 5:  # person 2's values at frame 5, and so their GRU state
            out["theta"][1], out["gru_state"][:, 1] = np.nan, np.nan
        calls.append(1)
        return out

    engine.model.forward_features = spoiled
    frames = (np.zeros((64, 64, 3), np.uint8) for _ in range(8))
    recording = LiveRecording("camera 0", 30.0, 64, 64, session.focal_px, "tiny")
    shown = []
    with LiveSource(frames, SourceInfo("camera 0", 30.0, 64, 64), lossless=True) as source:
        stats = run_live(source, session, recording=recording, on_frame=lambda f, people, s: shown.append(people))
    assert [[p.track_id for p in people] for people in shown] == [[1, 2]] * 3 + [[2], [1, 2], [1]] + [[1, 2]] * 2
    assert session.people_left_out == stats.people_left_out == stats.to_json()["people_left_out"] == 2
    assert len(session.warnings) == 1 and "cannot hold" in session.warnings[0] and "frame 3" in session.warnings[0]
    assert gru_states[6][:, 1].abs().sum() == 0 and gru_states[6][:, 0].abs().sum() > 0  # person 2 starts afresh
    result = recording.result(frames_seen=8, dropped=0, warnings=session.warnings)
    save_result(tmp_path / "take.npz", result)
    tracks = load_result(tmp_path / "take.npz").tracks
    np.testing.assert_array_equal(tracks[0].frame_ids, [0, 1, 2, 4, 5, 6, 7])
    np.testing.assert_array_equal(tracks[1].frame_ids, [0, 1, 2, 3, 4, 6, 7])


def test_live_features_keep_the_engines_default_whatever_a_job_chose(make_engine, monkeypatch):
    """A live session shares the engine with the job worker: an official (fp32) or compiled job run
    must not switch the live backbone calls, which stay eager in the engine's default precision."""
    import contextlib

    from vibe_server.pipeline import engine as engine_module
    from vibe_server.pipeline.options import official_options

    engine = make_engine(precision="bf16")
    used = []
    monkeypatch.setattr(
        engine_module, "autocast", lambda precision, device: used.append(precision) or contextlib.nullcontext()
    )
    engine.prepare_run(official_options(), expected_crops=10**6)
    assert engine.precision == "fp32"
    engine._use_compiled = True  # as after a long default run

    def compiled_runner(*args, **kwargs):
        raise AssertionError("a live frame went through the compiled backbone")

    engine.backbone_runner = compiled_runner
    crops = np.zeros((2, 3, 224, 224), np.float32)
    assert engine.extract_features(crops, run_settings=False).shape == (2, 2048)
    assert used == ["bf16"]
    with pytest.raises(AssertionError, match="compiled backbone"):
        engine.extract_features(crops)  # a job's own call does use its run's settings
    assert used == ["bf16", "fp32"]


def test_a_live_sessions_yolo_runs_in_the_engines_default_precision_whatever_a_job_chose(make_engine):
    """The live session's YOLO took the precision of the job the worker ran last (fp32 after an
    official job: slower on a GPU, and unlike its own backbone calls)."""
    from vibe_server.pipeline.options import official_options

    engine = make_engine(precision="bf16")
    engine.prepare_run(official_options(), expected_crops=10**6)  # a job in fp32 runs meanwhile
    session = LiveSession(engine, LiveOptions(detector="yolo"), width=64, height=48)
    assert session.schedule.detector.options["precision"] == "bf16"
    assert engine.detector("yolo").options["precision"] == "fp32"  # the job's own: a detector of its own


def test_live_sessions_ask_for_the_engines_default(fp32_engine, short_clip, monkeypatch):
    calls = []
    original = fp32_engine.extract_features

    def spy(crops, **kwargs):
        calls.append(kwargs)
        return original(crops, **kwargs)

    monkeypatch.setattr(fp32_engine, "extract_features", spy)
    reader = open_video(short_clip)
    session = LiveSession(fp32_engine, LiveOptions(detector="hog"), width=reader.info.width, height=reader.info.height)
    for index, rgb in reader:
        session.process(index, rgb, frame_time_s=index / reader.info.fps)
    assert calls and all(kwargs == {"run_settings": False} for kwargs in calls)


def _blender_live_settings() -> dict[str, dict]:
    """The Live panel's settings (vibe_blender/live_operators.py, which needs bpy), read from its source:
    property name -> its keyword arguments (``items``: the enum's identifiers)."""
    source = Path(__file__).resolve().parents[2] / "vibe_blender" / "live_operators.py"
    tree = ast.parse(source.read_text())
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()
    }
    (settings,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VIBE_LiveSettings"]
    found = {}
    for node in settings.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.annotation, ast.Call):  # name: bpy.props.X(...)
            kwargs = {
                k.arg: constants[k.value.id] if isinstance(k.value, ast.Name) else ast.literal_eval(k.value)
                for k in node.annotation.keywords
            }
            if "items" in kwargs:
                kwargs["items"] = [item[0] for item in kwargs["items"]]
            found[node.target.id] = kwargs
    return found


def test_the_blender_live_settings_have_the_servers_defaults_and_bounds():
    """The panel sends each of these with every start: "Detect every" defaulted to 1, not the
    server's documented live default (the figures of docs/server.md are measured with it)."""
    blender = _blender_live_settings()
    fields = {f.name: f for f in dataclasses.fields(LiveOptions)}
    sent = ("detector", "detection_stride", "smoothing", "max_people")
    assert set(sent) <= set(blender)
    for name in sent:
        field, prop = fields[name], blender[name]
        assert prop["default"] == field.default, name
        if name == "detector":
            assert sorted(prop["items"]) == sorted(typing.get_args(typing.get_type_hints(LiveOptions)["detector"]))
        else:
            bounds = field.metadata["bounds"]
            assert (prop["min"], prop["max"]) == (bounds.ge, bounds.le), name
    assert blender["detection_stride"]["default"] == DEFAULT_DETECTION_STRIDE

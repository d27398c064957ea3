"""The server's live sessions with a source that cannot run in a test (a camera that stalls, a
stream that changes size): a stand-in source and model behind the real manager and routes. The real
source and model are tested in test_live_source.py, test_live.py and test_live_api.py."""

import asyncio
import logging
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

import vibe_server.api.live as api_live
import vibe_server.pipeline.live as pipeline_live
from vibe_blender.core.errors import VibeError
from vibe_server.api.app import create_app
from vibe_server.api.settings import Settings
from vibe_server.pipeline.live_options import LiveOptions
from vibe_server.pipeline.live_source import LiveSource, SourceInfo, open_live_source, parse_source

BASE = "http://127.0.0.1:8765"
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Camera:
    """Frames while ``flowing`` is set, else a read that waits (a stalled camera); records release."""

    def __init__(self):
        self.flowing = threading.Event()
        self.released = threading.Event()

    def frames(self):
        while not self.released.is_set():
            if self.flowing.wait(0.05):
                yield np.zeros((8, 8, 3), np.uint8)
                time.sleep(0.01)

    def source(self, spec, lossless=False):
        return LiveSource(self.frames(), SourceInfo("camera 0", 30.0, 8, 8), close=self.released.set)


class NoModel:
    """The live model, reduced to counting frames (nobody is ever found)."""

    def __init__(self, engine, options, width, height):
        self.frames_processed = self.people_left_out = 0
        self.warnings = []

    def process(self, index, rgb, time_s):
        self.frames_processed += 1
        return []


@pytest.fixture
def camera(monkeypatch):
    camera = Camera()
    monkeypatch.setattr(api_live, "open_live_source", camera.source)
    monkeypatch.setattr(pipeline_live, "LiveSession", NoModel)
    yield camera
    camera.released.set()


@pytest.fixture
def manager(camera):
    manager = api_live.LiveManager(engine=object())
    yield manager
    camera.released.set()  # a stalled stand-in camera gives up: stop_all waits for its release
    manager.stop_all()


def test_a_session_that_cannot_be_set_up_releases_its_camera_at_once(camera, monkeypatch):
    def no_weights(*args, **kwargs):
        raise VibeError("YOLO weights are missing (yolov3.weights).")

    monkeypatch.setattr(pipeline_live, "LiveSession", no_weights)
    with pytest.raises(VibeError, match="YOLO weights are missing"):
        api_live.LiveManager(engine=object()).start("0", LiveOptions())
    assert camera.released.is_set()


def test_a_session_that_fails_on_an_internal_error_says_so_in_one_sentence(manager, camera, monkeypatch, caplog):
    """Not the error's own text (an OpenCV error names the server's source files); the log has it."""

    def broken(self, index, rgb, time_s):
        raise RuntimeError("OpenCV(4.10) /srv/build/opencv/modules/imgproc/resize.cpp:4152: error")

    monkeypatch.setattr(NoModel, "process", broken)
    camera.flowing.set()
    with caplog.at_level(logging.ERROR, logger="vibe_server.api"):
        run = manager.start("0", LiveOptions())
        assert run.finished.wait(10)
    assert run.status == "failed" and run.error == api_live.INTERNAL_ERROR_MESSAGE
    assert "/srv/build" in caplog.text and "Traceback" in caplog.text


def test_what_a_session_says_of_the_model_data_names_no_folder_of_the_server(camera, monkeypatch, tmp_path):
    data_dir = tmp_path / "model data"

    class HogModel(NoModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.warnings = [f"yolov3.weights is not in the model data ({data_dir}), so HOG finds the people."]

    monkeypatch.setattr(pipeline_live, "LiveSession", HogModel)
    manager = api_live.LiveManager(engine=SimpleNamespace(data_dir=data_dir))
    try:
        run = manager.start("0", LiveOptions())
        assert run.public()["warnings"] == [
            "yolov3.weights is not in the model data (the server's model data folder), so HOG finds the people."
        ]
    finally:
        camera.released.set()
        manager.stop_all()


def test_a_session_nobody_watches_stops_by_itself(manager, camera, monkeypatch):
    monkeypatch.setattr(api_live, "UNWATCHED_STOP_S", 0.3)
    camera.flowing.set()
    run = manager.start("0", LiveOptions())
    assert run.finished.wait(10)
    assert run.status == "stopped" and "nobody watched this session" in run.error
    assert camera.released.wait(10)
    manager.start("0", LiveOptions())  # the next start is not blocked


def test_a_watched_session_keeps_running(manager, camera, monkeypatch):
    camera.flowing.set()
    run = manager.start("0", LiveOptions())
    loop = asyncio.new_event_loop()  # a viewer's loop (not run: the messages wait in its queue)
    try:
        assert run.subscribe(api_live.Subscriber(asyncio.Queue(api_live.SUBSCRIBER_QUEUE), loop))
        monkeypatch.setattr(api_live, "UNWATCHED_STOP_S", 0.3)  # once watched (a slow start is no stop)
        time.sleep(1.0)
        assert run.status == "running"
        manager.stop(run)
    finally:
        loop.close()


def test_stop_on_a_stalled_camera_answers_with_the_final_status(manager, camera):
    run = manager.start("0", LiveOptions())  # the camera sends nothing
    t0 = time.monotonic()
    manager.stop(run)
    assert run.status == "stopped" and time.monotonic() - t0 < 3.0
    assert manager.active() is None


def test_the_servers_stop_waits_until_every_source_is_released(manager, camera, monkeypatch):
    """A process that exits while a reader is still inside OpenCV can abort ("terminate called
    without an active exception"): the server's stop returns once each camera is released, a slow
    one too, not merely once the session's status is final."""

    def slow_release():
        time.sleep(0.5)
        camera.released.set()

    slow_camera = LiveSource(camera.frames(), SourceInfo("camera 0", 30.0, 8, 8), close=slow_release)
    serve_source(monkeypatch, slow_camera)
    camera.flowing.set()
    run = manager.start("0", LiveOptions())
    manager.stop_all()
    assert run.status == "stopped" and camera.released.is_set() and not run.thread.is_alive()


def test_the_servers_stop_waits_for_a_start_opening_its_source_and_stops_it_too(manager, camera, monkeypatch):
    """A start still opening a stream (seconds) when the server stopped was missed by the stop: its
    session began after it, and its reader could still be inside OpenCV as the process exited."""
    opening, may_open = threading.Event(), threading.Event()

    def slow_source(spec, lossless=False):
        opening.set()
        may_open.wait(10)
        return camera.source(spec)

    monkeypatch.setattr(api_live, "open_live_source", slow_source)
    camera.flowing.set()
    started = []
    starting = threading.Thread(target=lambda: started.append(manager.start("0", LiveOptions())))
    starting.start()
    assert opening.wait(10)
    threading.Timer(0.3, may_open.set).start()  # the source opens while the stop waits
    manager.stop_all()
    starting.join(10)
    (run,) = started
    assert run.status == "stopped" and camera.released.is_set() and not run.thread.is_alive()
    with pytest.raises(api_live.LiveServerStopping, match="The server is stopping"):
        manager.start("0", LiveOptions())


def test_a_second_start_names_the_running_session_and_what_to_do(manager, camera):
    run = manager.start("0", LiveOptions())
    with pytest.raises(VibeError, match=rf"already running \('{run.live_id}'\).*POST /live/{run.live_id}/stop.*30 s"):
        manager.start("0", LiveOptions())


def serve_source(monkeypatch, source: LiveSource) -> None:
    """The live sessions started from now on read ``source``, whatever they are asked for."""
    monkeypatch.setattr(api_live, "open_live_source", lambda spec, lossless=False: source)


def follow_to_the_end(run, subscribed=lambda: None) -> list[dict]:
    """A viewer of ``run`` (``subscribed()`` is called once it follows) until the session has ended:
    every message handed to it."""
    loop = asyncio.new_event_loop()  # the viewer's loop, run below to take what was handed to it
    try:
        queue = asyncio.Queue(api_live.SUBSCRIBER_QUEUE)
        assert run.subscribe(api_live.Subscriber(queue, loop))
        subscribed()
        assert run.finished.wait(10)
        loop.run_until_complete(asyncio.sleep(0.1))
        return [queue.get_nowait() for _ in range(queue.qsize())]
    finally:
        loop.close()


def test_the_end_message_brings_what_the_source_said_as_it_ended(manager, monkeypatch):
    """A file that breaks off says so once its decode reaches the break: after the session's start,
    whose answer was the only one to carry its warnings to a viewer."""
    said = []
    watched = threading.Event()  # the file is read once the viewer follows: the session cannot end unseen

    def frames():
        watched.wait(10)
        yield from (np.zeros((8, 8, 3), np.uint8) for _ in range(3))
        said.append("The video is truncated or damaged: decoding stopped at frame 3 of the 10 ...")

    serve_source(monkeypatch, LiveSource(frames(), SourceInfo("cut.mp4", 30.0, 8, 8), lossless=True, warnings=said))
    run = manager.start("cut.mp4", LiveOptions())
    messages = follow_to_the_end(run, subscribed=watched.set)
    assert run.status == "ended"
    assert messages[-1]["type"] == "end" and messages[-1]["warnings"] == said
    assert run.public()["warnings"] == said


def test_a_lossless_replay_waits_for_its_first_viewer_and_its_first_frame_is_frame_0(manager, monkeypatch):
    """Its first frame used to be processed at once, before the viewer's WebSocket had opened: lost to it."""
    read = []

    def frames():
        for i in range(3):
            read.append(i)
            yield np.zeros((8, 8, 3), np.uint8)

    serve_source(monkeypatch, LiveSource(frames(), SourceInfo("walk.mp4", 30.0, 8, 8), lossless=True))
    run = manager.start("walk.mp4", LiveOptions())
    time.sleep(0.5)  # a viewer that is slow to follow
    assert read == [] and run.status == "starting"  # not yet running: nothing processed to report
    messages = follow_to_the_end(run)
    assert run.status == "ended"
    assert [m["frame_index"] for m in messages if m["type"] == "frame"] == [0, 1, 2]


def test_a_lossless_replay_nobody_follows_stops_and_releases_its_file(manager, monkeypatch):
    closed = threading.Event()
    serve_source(monkeypatch, LiveSource(iter([]), SourceInfo("walk.mp4", 30.0, 8, 8), lossless=True, close=closed.set))
    monkeypatch.setattr(api_live, "UNWATCHED_STOP_S", 0.3)
    run = manager.start("walk.mp4", LiveOptions())
    assert run.finished.wait(10) and run.status == "stopped"
    assert run.error == "Stopped: nobody watched this session for 0 s." and closed.wait(10)


def test_a_lossless_replay_stopped_before_anyone_follows_stops_at_once_and_reads_nothing(manager, monkeypatch):
    read, closed = [], threading.Event()

    def frames():
        read.append("a frame")
        yield np.zeros((8, 8, 3), np.uint8)

    serve_source(monkeypatch, LiveSource(frames(), SourceInfo("walk.mp4", 30.0, 8, 8), lossless=True, close=closed.set))
    run = manager.start("walk.mp4", LiveOptions())
    started = time.monotonic()
    manager.stop(run)
    assert run.status == "stopped" and time.monotonic() - started < 5.0  # not the 30 s nobody-watched limit
    assert closed.wait(10)
    run.thread.join(10)
    assert read == []  # its reader never started: the file was released unread


@pytest.fixture
def client(camera, tmp_path):
    app = create_app(Settings(jobs_dir=tmp_path / "jobs", token=TOKEN), engine_loader=lambda s: object())
    with TestClient(app, base_url=BASE, headers=AUTH, client=("127.0.0.1", 50000)) as client:
        yield client
        camera.released.set()  # as in manager(): the server's stop waits for the camera's release


def _wait_for(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_viewers_who_leave_before_any_frame_free_their_places(client, camera):
    live_id = client.post("/api/v1/live", json={"source": "0"}).json()["live_id"]
    run = client.app.state.live.runs[live_id]
    for _ in range(api_live.MAX_SUBSCRIBERS + 2):  # the camera stalls: no frame tells who left
        with client.websocket_connect(f"ws://127.0.0.1:8765/api/v1/live/{live_id}/stream", headers=AUTH):
            _wait_for(lambda: len(run.subscribers) == 1)
        _wait_for(lambda: len(run.subscribers) == 0)
    assert run.status == "running"


def test_a_viewer_beyond_the_limit_is_told_why(client, camera):
    live_id = client.post("/api/v1/live", json={"source": "0"}).json()["live_id"]
    url = f"ws://127.0.0.1:8765/api/v1/live/{live_id}/stream"
    viewers = [client.websocket_connect(url, headers=AUTH) for _ in range(api_live.MAX_SUBSCRIBERS)]
    for viewer in viewers:
        viewer.__enter__()
    try:
        with client.websocket_connect(url, headers=AUTH) as one_too_many:
            message = one_too_many.receive_json()
        assert message["type"] == "end" and "already has 8 viewers; close one" in message["error"]
    finally:
        for viewer in viewers:
            viewer.__exit__(None, None, None)


def test_only_a_running_session_makes_a_start_a_conflict(client, camera, monkeypatch, tmp_path):
    """409 was chosen by the error's text: a video named "already running.mp4" that cannot be opened
    was a conflict too."""
    live_id = client.post("/api/v1/live", json={"source": "0"}).json()["live_id"]
    second = client.post("/api/v1/live", json={"source": "0"})
    assert second.status_code == 409 and f"already running ('{live_id}')" in second.json()["detail"]
    client.post(f"/api/v1/live/{live_id}/stop")
    monkeypatch.setattr(api_live, "open_live_source", open_live_source)  # the real one: the file is missing
    missing = str(tmp_path / "already running.mp4")
    answer = client.post("/api/v1/live", json={"source": missing})
    assert answer.status_code == 415 and "already running.mp4" in answer.json()["detail"]


def test_a_start_once_the_servers_stop_began_is_a_503_that_says_so(client, camera):
    live_id = client.post("/api/v1/live", json={"source": "0"}).json()["live_id"]
    camera.released.set()  # the stand-in camera gives up its stalled read at once
    client.app.state.live.stop_all()  # as the server's stop does, requests still being answered
    answer = client.post("/api/v1/live", json={"source": "0"})
    assert answer.status_code == 503 and answer.json()["detail"].startswith("The server is stopping")
    assert client.get(f"/api/v1/live/{live_id}").json()["status"] == "stopped"


def test_a_unicode_digit_is_no_camera_index():
    assert parse_source("²") == ("file", "²")  # str.isdigit says yes, int() would fail


class ResizingCapture:
    """cv2.VideoCapture stand-in: states no size, then sends frames of ``sizes`` (h, w) in turn."""

    def __init__(self, sizes):
        self.sizes, self.released = list(sizes), False

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return True

    def get(self, prop):
        return 0.0  # states neither size nor frame rate

    def read(self):
        if not self.sizes:
            return False, None
        h, w = self.sizes.pop(0)
        return True, np.zeros((h, w, 3), np.uint8)

    def release(self):
        self.released = True


def _camera_sending(monkeypatch, sizes):
    import cv2

    capture = ResizingCapture(sizes)
    monkeypatch.setattr(cv2, "VideoCapture", lambda *args: capture)
    return capture


def test_a_camera_that_states_no_size_gets_its_first_frames_size(monkeypatch):
    capture = _camera_sending(monkeypatch, [(48, 64), (48, 64)])
    source = open_live_source("0")
    assert (source.info.width, source.info.height, source.info.fps) == (64, 48, 30.0)
    with source:
        assert [source.next_frame(5).rgb.shape for _ in range(2)] == [(48, 64, 3), (48, 64, 3)]
    assert capture.released


def test_a_camera_that_changes_its_frame_size_ends_with_one_message(monkeypatch):
    _camera_sending(monkeypatch, [(48, 64), (96, 128)])
    with open_live_source("0") as source:
        assert source.next_frame(5) is not None
        _wait_for(lambda: source.ended)
    assert "changed its frame size from 64 x 48 to 128 x 96 pixels; start the live session again" in source.error


def test_an_unplugged_camera_ends_the_session_with_its_cause(monkeypatch):
    """A camera whose read fails (unplugged) looked like a finished file: the session "ended"
    without a word."""
    _camera_sending(monkeypatch, [(48, 64), (48, 64)])  # then every read fails
    with open_live_source("0") as source:
        assert [source.next_frame(5) is not None for _ in range(2)] == [True, True]
        _wait_for(lambda: source.ended)
    assert source.error == (
        "camera 0 stopped sending frames; check that it is still connected, then start the live session again."
    )


def test_a_camera_that_breaks_fails_the_session_with_its_cause(manager, camera, monkeypatch):
    """What the client is told (the Blender panel shows the end message's error)."""

    def breaking_frames():
        yield np.zeros((8, 8, 3), np.uint8)
        raise RuntimeError("cv2.error: camera unplugged")

    monkeypatch.setattr(camera, "frames", breaking_frames)
    run = manager.start("0", LiveOptions())
    assert run.finished.wait(10)
    assert run.status == "failed" and run.error.startswith(
        "camera 0 stopped (RuntimeError: cv2.error: camera unplugged)"
    )
    assert camera.released.wait(10)


def test_a_camera_that_sends_no_frame_is_one_message(monkeypatch):
    capture = _camera_sending(monkeypatch, [])
    with pytest.raises(VibeError, match="camera 0 opened but sent no frame"):
        open_live_source("0")
    assert capture.released

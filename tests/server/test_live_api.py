"""Live capture through the REAL server (``vibe-mocap serve`` on loopback, started the way the add-on
starts it) and the add-on's own client (``core.live_client``, stdlib WebSocket)."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from vibe_blender.core.client import ServerClient
from vibe_blender.core.errors import VibeError
from vibe_blender.core.live_client import LiveConnection
from vibe_blender.core.local_server import LocalServer, venv_program
from vibe_blender.core.websocket import WebSocket

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def server(synthetic_bundle, tmp_path_factory):
    program = venv_program(REPO)
    if not program.is_file():
        pytest.fail("The main .venv's vibe-mocap is missing: run scripts/setup.sh first.")
    local = LocalServer(
        log_dir=tmp_path_factory.mktemp("live_server"), synthetic=False, serve_args=("--precision", "fp32")
    )
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))  # the server's jobs folder
    try:
        local.start(program, data_dir=str(synthetic_bundle))
        status = local.wait_ready(300)
        assert status.state == "ready", (status.message, status.log_tail)
        yield local
    finally:
        local.stop()
        if saved is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = saved


def follow(live: LiveConnection, timeout_s: float = 300.0) -> list:
    """What the add-on's timer does: take the newest frame until the session ends."""
    shown, deadline = [], time.monotonic() + timeout_s
    while live.state in ("connecting", "streaming"):
        frame = live.take_latest()
        if frame is not None:
            shown.append(frame)
        assert time.monotonic() < deadline, live.state
        time.sleep(0.02)
    return shown


def test_lossless_replay_streams_the_offline_carry_results(server, short_clip, fp32_engine):
    from vibe_server.pipeline.options import RunOptions

    live = LiveConnection(ServerClient(server.snapshot().url, server.token))
    live.recording_start()
    live.start(str(short_clip), {"detector": "hog", "lossless": True})
    follow(live)
    assert live.state == "ended", live.error
    take = live.recording_stop()
    assert live.server_stats["frames_dropped"] == 0 and live.frames_received == 24
    # the defaults on both sides: the same detection schedule (stride and adaptive detection)
    live_schedule = RunOptions(detector="hog", min_track_frames=1)
    offline = fp32_engine.run(short_clip, live_schedule).result
    assert take.track_ids == [t.track_id for t in offline.tracks]
    for track in offline.tracks:
        np.testing.assert_array_equal(take.frame_ids[track.track_id], track.frame_ids)
        np.testing.assert_allclose(np.stack(take.pose[track.track_id]), track.pose, atol=1e-5)
        # the depth (~10 m here) is focal / scale: compared relatively, as in test_live.py
        np.testing.assert_allclose(np.stack(take.trans_cam_m[track.track_id]), track.trans_cam_m, rtol=1e-5, atol=1e-5)


def test_real_time_pace_reports_drops_and_latency(server, short_clip):
    live = LiveConnection(ServerClient(server.snapshot().url, server.token))
    live.start(str(short_clip), {"detector": "hog"})
    shown = follow(live)
    assert live.state == "ended", live.error
    stats = live.server_stats
    assert stats["frames_arrived"] == 24
    assert stats["frames_processed"] + stats["frames_dropped"] == 24
    assert live.frames_received == stats["frames_processed"] and 0 < len(shown) <= live.frames_received
    assert stats["latency_p95_s"] >= stats["latency_p50_s"] > 0


def test_the_fallback_to_hog_is_said_to_the_client(server, short_clip):
    """The model data here has no yolov3.weights: the detector 'auto' runs HOG, and the add-on is
    told so, as `vibe-mocap live` prints it (the Live panel shows it, a take keeps it)."""
    live = LiveConnection(ServerClient(server.snapshot().url, server.token))
    live.recording_start()
    live.start(str(short_clip), {"detector": "auto", "lossless": True, "max_frames": 4})
    follow(live)
    assert live.state == "ended", live.error
    assert len(live.warnings) == 1 and "'vibe-mocap data install yolov3.weights'" in live.warnings[0]
    assert live.recording_stop().warnings == live.warnings
    record = ServerClient(server.snapshot().url, server.token).live_status(live.live_id)
    assert record["warnings"] == live.warnings
    client = ServerClient(server.snapshot().url, server.token)
    asked_for_hog = client.start_live(str(short_clip), {"detector": "hog", "max_frames": 1})
    client.stop_live(asked_for_hog["live_id"])  # one session at a time: the next test's may start
    assert asked_for_hog["warnings"] == []


def test_a_client_that_reads_late_gets_every_frame_or_its_drop_count(server):
    """60 frames of the sample clip, every one processed (lossless), and a client that reads
    nothing until the session has ended: what it gets plus what it is told was dropped is every
    frame (the kernel's socket buffers may hold some; the server's own queue holds 32 at most, see
    test_a_subscriber_that_never_reads_holds_32_messages)."""
    client = ServerClient(server.snapshot().url, server.token)
    live_id = client.start_live(
        str(REPO / "samples" / "one-person-walk.mp4"),
        {"detector": "hog", "detection_stride": 4, "lossless": True, "max_frames": 60},
    )["live_id"]
    ws = client.open_live_stream(live_id)
    deadline = time.monotonic() + 300
    while client.live_status(live_id)["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    messages = []
    try:
        while not messages or messages[-1]["type"] != "end":
            messages.append(json.loads(ws.recv_text()))
    finally:
        ws.close()
    end, frames = messages[-1], messages[:-1]
    processed = end["stats"]["frames_processed"]
    assert processed == 60
    assert len(frames) + end["dropped_for_client"] == processed
    assert [m["frame_index"] for m in frames] == sorted(m["frame_index"] for m in frames)


def test_a_subscriber_that_never_reads_holds_32_messages():
    import asyncio

    from vibe_server.api.live import SUBSCRIBER_QUEUE, LiveRun, Subscriber

    async def publish_to_a_stalled_client():
        sub = Subscriber(asyncio.Queue(SUBSCRIBER_QUEUE), asyncio.get_running_loop())
        run = LiveRun(live_id="0" * 16, source_name="test", subscribers=[sub])
        for i in range(500):
            run.publish({"type": "frame", "frame_index": i})
        await asyncio.sleep(0.1)  # let the loop deliver the offers
        return sub

    sub = asyncio.run(publish_to_a_stalled_client())
    assert sub.queue.qsize() == SUBSCRIBER_QUEUE == 32 and sub.dropped == 500 - 32
    newest = [sub.queue.get_nowait() for _ in range(32)]
    assert [m["frame_index"] for m in newest] == list(range(468, 500))  # the newest are kept


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, "token+origin"])
def test_websocket_handshake_needs_token_and_own_origin(server, short_clip, headers):
    client = ServerClient(server.snapshot().url, server.token)
    live_id = client.start_live(str(short_clip), {"detector": "hog"})["live_id"]
    try:
        if headers == "token+origin":
            headers = {"Authorization": f"Bearer {server.token}", "Origin": "http://evil.example"}
        url = server.snapshot().url.replace("http://", "ws://") + f"/api/v1/live/{live_id}/stream"
        with pytest.raises(VibeError, match="refused the live stream"):
            WebSocket(url, headers)
    finally:
        client.stop_live(live_id)


def test_a_remote_stream_source_is_refused(server):
    client = ServerClient(server.snapshot().url, server.token)
    with pytest.raises(VibeError, match="not on this machine"):
        client.start_live("rtsp://192.0.2.9/cam")

"""Live frame sources: a small queue that drops its oldest frame, drops counted, memory bounded, files paced."""

import http.server
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hostile_files import tiny_gif
from testdata import SAMPLE

from vibe_blender.core.errors import VibeError
from vibe_server.pipeline.live_source import MAX_WAITING, LiveSource, SourceInfo, open_live_source, parse_source
from vibe_server.pipeline.video import open_video

INFO = SourceInfo("test", 100.0, 8, 8)


def counting_frames(n, every_s=0.0):
    for i in range(n):
        if every_s:
            time.sleep(every_s)
        yield np.full((8, 8, 3), i % 256, np.uint8)


def test_a_fast_consumer_sees_every_frame_in_order():
    # a frame every 80 ms: the queue of 3 holds 240 ms, more than a loaded machine holds the consumer up
    with LiveSource(counting_frames(25, every_s=0.08), INFO) as source:
        seen = []
        while (frame := source.next_frame(timeout_s=5)) is not None:
            seen.append(frame.index)
    assert seen == list(range(25)) and source.dropped == 0 and source.arrived == 25


def test_a_slow_consumer_gets_drop_counts_not_a_growing_queue():
    with LiveSource(counting_frames(400), INFO, pace_fps=400.0) as source:
        seen, waiting = [], []
        while (frame := source.next_frame(timeout_s=5)) is not None:
            seen.append(frame.index)
            waiting.append(len(source._waiting))
            time.sleep(0.02)  # a model 8x slower than the source
    assert source.arrived == 400
    assert source.dropped == 400 - len(seen) > 300  # every frame is either seen or counted
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert max(waiting) <= MAX_WAITING == 3  # never more than the bound waited


def test_a_short_stall_is_absorbed_without_a_drop():
    # a frame every 250 ms: a stall of 2 intervals leaves one (250 ms) to spare before a drop
    with LiveSource(counting_frames(15), INFO, pace_fps=4.0) as source:
        seen = []
        while (frame := source.next_frame(timeout_s=5)) is not None:
            seen.append(frame.index)
            time.sleep(0.5 if frame.index == 5 else 0.002)  # one frame 2 intervals slow (3 may wait)
    assert seen == list(range(15)) and source.dropped == 0


def test_a_file_is_played_at_its_own_frame_rate():
    source = open_live_source(str(SAMPLE))  # 10 frames/s
    assert source.info.fps == pytest.approx(10.0)
    t0 = time.monotonic()
    with source:
        frames = [source.next_frame(timeout_s=5) for _ in range(6)]
    elapsed = time.monotonic() - t0
    assert [f.index for f in frames] == list(range(6))
    assert 0.4 < elapsed < 2.0  # frame 5 is due at 0.5 s, not at once
    assert frames[0].rgb.shape == (source.info.height, source.info.width, 3)


def test_a_source_that_breaks_ends_with_its_cause():
    """Only a VibeError was caught: a cv2.error or OSError from the capture killed the reader thread
    with a traceback, and the session ended as if the source had finished."""

    def breaking_frames():
        yield from counting_frames(3)
        raise OSError(5, "Input/output error")

    with LiveSource(breaking_frames(), SourceInfo("camera 0", 30.0, 8, 8)) as source:
        seen = []
        while (frame := source.next_frame(timeout_s=5)) is not None:
            seen.append(frame.index)
    assert seen == [0, 1, 2] and source.ended
    assert source.error == (
        "camera 0 stopped (OSError: [Errno 5] Input/output error); check its connection, then start the live "
        "session again."
    )


def test_stop_ends_the_stream_at_once():
    source = LiveSource(counting_frames(10_000, every_s=0.01), INFO).start()
    source.next_frame(timeout_s=5)
    t0 = time.monotonic()
    source.stop()
    assert source.next_frame(timeout_s=5) is None and time.monotonic() - t0 < 1.0


def test_stop_returns_once_a_stalled_read_has_let_the_source_go():
    """A read blocks up to 10 s on a stalled stream or camera; stop gave up after 5 s, and a new
    session on the same camera found it still held."""
    from vibe_server.pipeline.ffmpeg_capture import STREAM_READ_TIMEOUT_MS
    from vibe_server.pipeline.live_source import READER_STOP_S

    assert READER_STOP_S > STREAM_READ_TIMEOUT_MS / 1000
    released = threading.Event()

    def stalled_then_released():
        yield np.zeros((8, 8, 3), np.uint8)
        time.sleep(6.0)  # inside a read that times out (beyond the 5 s stop waited)
        released.set()
        yield np.zeros((8, 8, 3), np.uint8)

    source = LiveSource(stalled_then_released(), INFO).start()
    assert source.next_frame(timeout_s=5) is not None
    source.stop()
    assert released.is_set()


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("0", ("camera", 0)),
        ("rtsp://127.0.0.1:8554/cam", ("stream", "rtsp://127.0.0.1:8554/cam")),
        ("rtsp://127.0.0.1:8554/cam?channel=1", ("stream", "rtsp://127.0.0.1:8554/cam?channel=1")),  # the camera's
        ("udp://127.0.0.1:5000", ("stream", "udp://127.0.0.1:5000")),
        ("clip.mp4", ("file", "clip.mp4")),
    ],
)
def test_source_kinds(spec, expected):
    assert parse_source(spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("rtsp://192.0.2.7/cam", "not on this machine"),
        ("http://example.com/live.m3u8", "not on this machine"),
        ("999", "out of range"),
        ("ftp://127.0.0.1/x", "not a camera index"),
        ("http://[", "'http://\\[' is not a valid URL"),  # urllib's ValueError was a 500 over HTTP
        ("rtsp://[::1", "'rtsp://\\[::1' is not a valid URL"),
        # FFmpeg's own options: these listened on every network, or on another address, for anyone to send to
        ("udp://127.0.0.1:45999?localaddr=0.0.0.0&sources=192.0.2.7", "udp stream is named by its address and port"),
        ("tcp://127.0.0.1:5000?listen=1", "tcp stream is named by its address and port"),
        ("srt://127.0.0.1:5000?mode=listener", "srt stream is named by its address and port"),
        ("udp://127.0.0.1:5000#x", "has options"),
        # as a file, the current folder: "'.' is not a regular video file (a folder, a device or a pipe)"
        ("", r"^The source is empty; name a camera index \(0\), a video file, or a stream URL on this machine"),
        (" \t", "The source is empty"),
    ],
)
def test_bad_sources_are_refused(spec, message):
    with pytest.raises(VibeError, match=message):
        parse_source(spec)


def test_a_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(VibeError, match=r"^Video file not found: .*none\.mp4\. Check the path\.$"):
        open_live_source(str(tmp_path / "none.mp4"))


def test_a_file_that_breaks_off_says_so_once_played(tmp_path):
    """The reader's warning was dropped: a truncated file played live ended as a whole one, and a
    recording of it said nothing, where infer on the same file warns."""
    whole, cut = tmp_path / "whole.avi", tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter.fourcc(*"MJPG"), 100, (64, 48))
    for i in range(120):
        writer.write(np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 3 // 5])
    with open_live_source(str(cut), lossless=True) as source:
        while source.next_frame(timeout_s=5) is not None:
            pass
    assert len(source.warnings) == 1 and "truncated or damaged" in source.warnings[0], source.warnings
    assert "of the 120 its header announces" in source.warnings[0] and source.arrived < 120


def test_a_lossless_file_waits_for_a_slow_consumer():
    with LiveSource(counting_frames(30), INFO, pace_fps=1000.0, lossless=True) as source:
        seen = []
        while (frame := source.next_frame(timeout_s=5)) is not None:
            seen.append(frame)
            time.sleep(0.01)
    assert [f.index for f in seen] == list(range(30)) and source.dropped == 0
    # each frame is timed by the file's clock, not by when the slow consumer let it in
    np.testing.assert_allclose(np.diff([f.time_s for f in seen]), 1 / 1000.0, atol=1e-9)


class LoopbackHttp:
    """An HTTP server on ``host`` serving ``folder`` (or redirecting every request to ``redirect_to``),
    recording the paths asked for."""

    def __init__(self, folder, *, host="127.0.0.1", redirect_to=None):
        self.folder = folder
        asked = self.asked = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                asked.append(self.path)
                if redirect_to is None:
                    super().do_GET()
                    return
                self.send_response(302)
                self.send_header("Location", redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{host}:{self.server.server_port}"


@pytest.fixture
def loopback_http(tmp_path):
    """A stream on this machine: 12 frames of the sample clip as an MJPEG AVI (readable as it arrives)."""
    writer = cv2.VideoWriter(str(tmp_path / "live.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 90))
    for _, (_, rgb) in zip(range(12), open_video(SAMPLE)):
        writer.write(cv2.resize(rgb, (160, 90)))
    writer.release()
    http_server = LoopbackHttp(tmp_path)
    yield http_server
    http_server.server.shutdown()
    http_server.server.server_close()


def test_a_stream_on_this_machine_plays_after_a_file_was_opened(loopback_http):
    """Opening a file limits FFmpeg to files; a stream opened later in the same process (a live
    session after a capture job, in one server) still gets its own protocols."""
    assert len(open_video(SAMPLE)) > 0
    with open_live_source(f"{loopback_http.url}/live.avi") as source:
        frames = []
        while (frame := source.next_frame(timeout_s=10)) is not None:
            frames.append(frame)
    assert len(frames) == 12  # every frame; then a stream that stops sending is no finished file
    assert source.error.startswith(f"The stream {loopback_http.url}/live.avi stopped sending frames")
    assert frames[0].rgb.shape == (90, 160, 3) and source.info.width == 160


def test_a_playlist_on_this_machine_is_refused_before_it_names_anything(loopback_http):
    """An HLS playlist served on 127.0.0.1 could name files or other hosts: FFmpeg may not read it."""
    playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nlive.avi\n#EXT-X-ENDLIST\n"
    (loopback_http.folder / "live.m3u8").write_text(playlist)
    with pytest.raises(VibeError, match=r"playlists \(\.m3u8\) are not read"):
        open_live_source(f"{loopback_http.url}/live.m3u8")
    assert loopback_http.asked and "/live.avi" not in loopback_http.asked


def test_a_stream_that_redirects_elsewhere_is_refused(loopback_http):
    """FFmpeg followed an HTTP redirect: a stream on 127.0.0.1 could send the server to any other
    host, past the loopback-only check of the URL."""
    elsewhere = LoopbackHttp(loopback_http.folder, host="127.0.0.2")  # stands in for another host
    redirecting = LoopbackHttp(loopback_http.folder, redirect_to=f"{elsewhere.url}/live.avi")
    try:
        direct = open_live_source(f"{elsewhere.url}/live.avi")  # a readable stream there
        direct.discard()
        assert direct.info.width == 160
        elsewhere.asked.clear()
        with pytest.raises(VibeError, match=r"redirects are not followed \(name the stream's own address\)"):
            open_live_source(f"{redirecting.url}/cam")
        assert redirecting.asked == ["/cam"] and elsewhere.asked == []
    finally:
        for server in (elsewhere, redirecting):
            server.server.shutdown()
            server.server.server_close()


def test_a_stream_that_states_frames_larger_than_8k_is_refused(loopback_http):
    (loopback_http.folder / "huge.gif").write_bytes(tiny_gif(16000, 16000))
    with pytest.raises(VibeError, match="frames of 16000 x 16000 pixels"):
        open_live_source(f"{loopback_http.url}/huge.gif")


def test_a_camera_that_is_not_there_is_one_message_without_opencvs_own_lines():
    """Two lines of OpenCV's log ("[ WARN:0@0.015] global cap_v4l.cpp ...") came before our message.
    A fresh process: OpenCV's log level is the process's, and another test may have set it already."""
    repo = Path(__file__).resolve().parents[2]
    script = (
        "from vibe_blender.core.errors import VibeError\n"
        "from vibe_server.pipeline.live_source import open_live_source\n"
        "try:\n    open_live_source('63')\nexcept VibeError as err:\n    print(err)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_LOG_LEVEL", "OPENCV_VIDEOIO_DEBUG")}
    env["PYTHONPATH"] = os.pathsep.join([str(repo), str(repo / "server")])
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.stdout.startswith("Cannot open camera 63: check that it is connected"), run.stdout + run.stderr
    assert run.stderr == ""


def test_a_stream_stating_a_frame_rate_no_result_holds_is_taken_at_30(loopback_http):
    """Some RTSP streams state the RTP clock (90,000) as their frame rate: a recording of one was saved
    as a file its own reader refuses ("video_fps is 90000.0, outside 0.01..32767")."""
    avi = bytearray((loopback_http.folder / "live.avi").read_bytes())
    rate_at = avi.index(b"strh") + 8 + 20  # the stream header's dwScale, dwRate: 1/25 s a frame
    assert struct.unpack_from("<II", avi, rate_at) == (1, 25)
    struct.pack_into("<II", avi, rate_at, 1, 90000)
    (loopback_http.folder / "rtp.avi").write_bytes(avi)
    source = open_live_source(f"{loopback_http.url}/rtp.avi")
    source.discard()
    assert source.info.fps == 30.0
    assert open_live_source(f"{loopback_http.url}/live.avi").info.fps == 25.0  # a rate it may hold is kept

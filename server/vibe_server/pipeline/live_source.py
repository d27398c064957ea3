"""Frames as they arrive, for live capture: a camera, a stream on this machine, or a video file
played at its own frame rate.

A reader thread takes frames from the source at the source's pace into a small queue
(``MAX_WAITING`` frames). The consumer (the model) takes them in order; a short stall (a frame that
needs a detection) is absorbed by the queue, and when the consumer stays slower than the source the
oldest waiting frame is dropped and counted. Memory holds at most ``MAX_WAITING`` frames, however
slow the consumer; the queue adds at most that many frame intervals of latency.

    with open_live_source("0") as source:            # camera 0; or "clip.mp4", "rtsp://127.0.0.1/x"
        while (frame := source.next_frame()) is not None:
            ...frame.index, frame.rgb, frame.time_s...
        source.dropped                                 # frames the consumer never saw
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vibe_blender.core.client import is_loopback_url
from vibe_blender.core.errors import VibeError
from vibe_blender.core.server_stop import READER_STOP_S

STREAM_SCHEMES = ("rtsp", "rtmp", "http", "https", "udp", "tcp", "srt")
# FFmpeg's RTSP client follows a redirect (3xx Location) to any host, with no option to stop it (http's
# redirects are turned off: ffmpeg_capture.STREAM_OPTIONS).
REDIRECT_FOLLOWING_SCHEMES = ("rtsp",)
# FFmpeg takes these protocols' own settings from the URL's query (udp://...?localaddr=0.0.0.0 listens on
# every network): their URLs may not have one. The others send the query to the stream's server.
QUERY_IS_FFMPEG_OPTIONS = ("udp", "tcp", "srt")
MAX_CAMERA_INDEX = 63
MAX_WAITING = 3  # frames held for the consumer: absorbs a few slow frames, bounds latency and memory


@dataclass(frozen=True)
class LiveFrame:
    index: int  # position in the source, counting dropped frames too
    rgb: np.ndarray  # (H, W, 3) uint8
    time_s: float  # when it arrived (time.monotonic()); a file's: when it was due at its frame rate


@dataclass(frozen=True)
class SourceInfo:
    name: str
    fps: float
    width: int
    height: int


class LiveSource:
    """The reader thread and the bounded queue between it and the consumer.

    frames: an iterator of (H, W, 3) uint8 RGB frames (it may block until the next one arrives);
    pace_fps: for a file, hand frames out at this rate (a camera or stream paces itself);
    lossless: for a file, wait for the consumer instead of dropping (tests, and replays that must
        keep every frame); pacing then gives the earliest time a frame is handed out;
    warnings: what the source has to say once read (a file that breaks off), filled as ``frames`` is
        read: complete once the source has ended.
    """

    def __init__(
        self,
        frames: Iterator[np.ndarray],
        info: SourceInfo,
        *,
        pace_fps: float | None = None,
        lossless: bool = False,
        close: Callable[[], None] | None = None,
        warnings: list[str] | None = None,
    ):
        self.info = info
        self.warnings = warnings if warnings is not None else []
        self._frames, self._pace_fps, self._lossless, self._close = frames, pace_fps, lossless, close
        self._waiting: deque[LiveFrame] = deque()
        self._cond = threading.Condition()
        self._ended = False
        self._stop = threading.Event()
        self.arrived = 0  # frames read from the source
        self.dropped = 0  # frames pushed out of the full queue before the consumer took them
        self.error: str | None = None
        self._thread = threading.Thread(target=self._read, daemon=True, name="vibe-live-source")

    def __enter__(self) -> LiveSource:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> LiveSource:
        self._thread.start()
        return self

    def discard(self) -> None:
        """Release a source that was never started (its reader would have released it)."""
        if self._close is not None and not self._thread.is_alive():
            self._close()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(READER_STOP_S)
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    @property
    def lossless(self) -> bool:
        return self._lossless

    @property
    def ended(self) -> bool:
        """True once the source has no more frames and the last one was taken."""
        with self._cond:
            return self._ended and not self._waiting

    def next_frame(self, timeout_s: float | None = None) -> LiveFrame | None:
        """The oldest frame still waiting (waits for one); None when the source has ended."""
        with self._cond:
            self._cond.wait_for(lambda: self._waiting or self._ended, timeout_s)
            frame = self._waiting.popleft() if self._waiting else None
            self._cond.notify_all()  # a lossless reader waits for room in the queue
            return frame

    def _read(self) -> None:
        t0 = time.monotonic()
        try:
            for index, rgb in enumerate(self._frames):
                if self._stop.is_set():
                    break
                if self._pace_fps:  # a file: wait until this frame is "due"
                    delay = t0 + index / self._pace_fps - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                # a file's frame time is its own clock (when it is due), so a lossless replay that
                # waits for a slow model still times its frames at the file's rate
                due = t0 + index / self._pace_fps if self._pace_fps else None
                frame = LiveFrame(index, rgb, due if due is not None else time.monotonic())
                with self._cond:
                    if self._lossless:
                        self._cond.wait_for(lambda: len(self._waiting) < MAX_WAITING or self._stop.is_set())
                    if len(self._waiting) >= MAX_WAITING:
                        self._waiting.popleft()
                        self.dropped += 1
                    self._waiting.append(frame)
                    self.arrived += 1
                    self._cond.notify_all()
        except VibeError as err:
            self.error = str(err)
        except Exception as err:  # e.g. cv2.error or OSError from the capture: the session says why it ended
            self.error = (
                f"{self.info.name} stopped ({type(err).__name__}: {err}); check its connection, then start the "
                "live session again."
            )
        finally:
            if self._close is not None:
                self._close()
            with self._cond:
                self._ended = True
                self._cond.notify_all()


def parse_source(spec: str) -> tuple[str, int | str]:
    """ "0" -> ("camera", 0); "rtsp://127.0.0.1:8554/x" -> ("stream", url); else ("file", path).

    Streams are accepted from this machine only (a loopback host), so that a live session cannot be
    pointed at other hosts on the network."""
    spec = str(spec).strip()
    if not spec:  # (as a file, "" is the current folder: a message about a folder, not a video)
        raise VibeError(
            "The source is empty; name a camera index (0), a video file, or a stream URL on this machine "
            "(e.g. rtsp://127.0.0.1:8554/cam)."
        )
    if spec.isascii() and spec.isdigit():  # not "²": a digit to str.isdigit, not to int()
        index = int(spec)
        if index > MAX_CAMERA_INDEX:
            raise VibeError(f"Camera index {index} is out of range; use 0 for the first camera.")
        return "camera", index
    try:
        scheme = urllib.parse.urlparse(spec).scheme.lower()
    except ValueError as err:  # a bracket left open ("http://[", "rtsp://[::1")
        raise VibeError(
            f"The source '{spec}' is not a valid URL ({err}); name a stream as e.g. rtsp://127.0.0.1:8554/cam."
        ) from None
    if scheme in STREAM_SCHEMES:
        if not is_loopback_url(spec.replace(f"{scheme}://", "http://", 1)):
            raise VibeError(
                f"The stream '{spec}' is not on this machine; live streams must come from "
                "127.0.0.1 (relay the camera to this machine first)."
            )
        if scheme in QUERY_IS_FFMPEG_OPTIONS and ("?" in spec or "#" in spec):
            raise VibeError(
                f"The stream '{spec}' has options after '?'; a {scheme} stream is named by its address and port "
                f"only (e.g. {scheme}://127.0.0.1:5000)."
            )
        return "stream", spec
    if scheme and len(scheme) > 1:
        raise VibeError(
            f"'{spec}' is not a camera index, a video file or a stream URL "
            f"({', '.join(STREAM_SCHEMES)}) on this machine."
        )
    return "file", spec


def for_local_clients_only(kind: str, target: int | str) -> bool:
    """Whether only a client on the server's machine may name this source: a camera or a file there,
    or a stream whose server can send FFmpeg on to another host (RTSP), which a client elsewhere could
    use to reach hosts it cannot reach itself."""
    if kind != "stream":
        return True
    return urllib.parse.urlparse(str(target)).scheme.lower() in REDIRECT_FOLLOWING_SCHEMES


def open_live_source(spec: str, *, lossless: bool = False) -> LiveSource:
    """A camera index, a loopback stream URL or a video file (played at its own frame rate;
    ``lossless``: a file waits for the consumer rather than drop frames)."""
    kind, target = parse_source(spec)
    if kind == "file":
        from .video import open_video  # start-up: OpenCV loads only when a source is opened

        reader = open_video(str(target))
        info = SourceInfo(Path(str(target)).name, float(reader.info.fps or 30.0), reader.info.width, reader.info.height)
        # the reader's warnings: it says there that the file breaks off, once its decode reaches the break
        frames = (rgb for _, rgb in reader)
        return LiveSource(frames, info, pace_fps=info.fps, lossless=lossless, warnings=reader.warnings)
    return _open_capture(kind, target)


def _open_capture(kind: str, target: int | str) -> LiveSource:
    import cv2  # start-up: OpenCV loads only when a source is opened

    from .ffmpeg_capture import (
        CONTAINER_NAMES,
        STREAM_OPTIONS,
        STREAM_READ_TIMEOUT_MS,
        open_camera,
        open_ffmpeg_capture,
    )
    from .video import check_frame_size, usable_fps

    scheme = urllib.parse.urlparse(str(target)).scheme.lower() if kind == "stream" else None
    if kind == "camera":
        capture = open_camera(target)
    else:  # only this scheme's protocols and real video containers: no playlist naming other hosts
        capture = open_ffmpeg_capture(str(target), scheme=scheme)
    if not capture.isOpened():
        if kind == "camera":
            raise VibeError(f"Cannot open camera {target}: check that it is connected and not used by another program.")
        redirects = "; redirects are not followed (name the stream's own address)" if scheme in STREAM_OPTIONS else ""
        raise VibeError(
            f"Cannot open the stream {target}: check that it is running on this machine and sends video in a "
            f"container ({CONTAINER_NAMES}); playlists (.m3u8) are not read{redirects}."
        )
    name = f"camera {target}" if kind == "camera" else str(target)
    try:
        # the size the source states (0 when it does not), before a frame is decoded; then the first
        # decoded frame's, which is the truth the cameras are computed from
        check_frame_size(capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT), name)
        ok, first = capture.read()
        if not ok:
            raise VibeError(f"{name} opened but sent no frame; check that it is sending video, then start again.")
        height, width = first.shape[:2]
        check_frame_size(width, height, name)
    except VibeError:
        capture.release()
        raise
    info = SourceInfo(name, usable_fps(capture.get(cv2.CAP_PROP_FPS)), width, height)

    # a camera or a stream has no end: a read that fails is a camera unplugged or a stream that stopped
    # sending (for STREAM_READ_TIMEOUT_MS), not a finished file
    if kind == "camera":
        stopped = f"{name} stopped sending frames; check that it is still connected, then start the live session again."
    else:
        stopped = (
            f"The stream {name} stopped sending frames (it ended, or sent nothing for "
            f"{STREAM_READ_TIMEOUT_MS / 1000:g} s); check that it is still running, then start the live session again."
        )

    def frames() -> Iterator[np.ndarray]:
        bgr = first
        while True:
            if bgr.shape[:2] != (height, width):  # the cameras and the tracker assume one size
                raise VibeError(
                    f"{name} changed its frame size from {width} x {height} to {bgr.shape[1]} x "
                    f"{bgr.shape[0]} pixels; start the live session again."
                )
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            ok, bgr = capture.read()
            if not ok:
                raise VibeError(stopped)

    return LiveSource(frames(), info, close=capture.release)

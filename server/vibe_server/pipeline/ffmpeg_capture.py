"""Every OpenCV capture that FFmpeg opens is opened here, with what FFmpeg may read limited.

FFmpeg picks a demuxer by probing the file, and some demuxers read OTHER files: an HLS playlist
(.m3u8), a concat list or an image-sequence pattern names files anywhere on the disk (or URLs).
So every open whitelists the real video containers, and the protocols its source needs: a file
opens with ``file`` alone, a stream on this machine with its own scheme's protocols (an HLS
playlist served on 127.0.0.1 could name other hosts, so playlists stay refused there too).

OpenCV passes FFmpeg options only through one environment variable, read at each open; it is
process-wide, so setting it and opening happen under one lock (a file job and a live stream may
open at once), and between opens it holds the files-only options.

FFmpeg's and OpenCV's own log lines are silenced unless the user asks for them
(``OPENCV_FFMPEG_LOGLEVEL``, ``OPENCV_LOG_LEVEL``): every failure reaches the user as one message of
ours instead.
"""

from __future__ import annotations

import os
import threading

import cv2

VIDEO_CONTAINERS = (
    "mov",
    "mp4",
    "m4a",
    "3gp",
    "3g2",
    "mj2",  # FFmpeg's "mov,mp4,..." demuxer
    "matroska",
    "webm",
    "avi",
    "gif",
    "mpegts",
    "mpeg",
    "flv",
    "asf",
)
CONTAINER_NAMES = "mp4, mov, mkv, webm, avi, gif, mpeg-ts, mpeg, flv, wmv"

# The FFmpeg protocols (and extra demuxers) each stream scheme needs, and nothing else.
STREAM_PROTOCOLS = {
    "rtsp": "rtsp,rtp,udp,tcp",
    "rtmp": "rtmp,tcp",
    "http": "http,tcp",
    "https": "https,tls,tcp",
    "udp": "udp",
    "tcp": "tcp",
    "srt": "srt",
}
STREAM_DEMUXERS = {"rtsp": ("rtsp",)}
# FFmpeg's http protocol (https too) follows redirects to any host: a stream on this machine could
# send it to another one, past the loopback-only check of the URL. So it follows none.
STREAM_OPTIONS = {"http": "max_redirects;0", "https": "max_redirects;0"}
STREAM_OPEN_TIMEOUT_MS = 10_000  # the lock is held while a stream connects; OpenCV's default is 30 s
STREAM_READ_TIMEOUT_MS = 10_000  # a stream that sends nothing for this long has ended

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
FFMPEG_LOGLEVEL_ENV = "OPENCV_FFMPEG_LOGLEVEL"  # read once, at OpenCV's first FFmpeg open
FFMPEG_QUIET = "-8"  # AV_LOG_QUIET
_open_lock = threading.Lock()


def capture_options(scheme: str = "file") -> str:
    """The FFmpeg options of an open: ``"file"`` for a file, else a stream's URL scheme."""
    demuxers = VIDEO_CONTAINERS + STREAM_DEMUXERS.get(scheme, ())
    protocols = "file" if scheme == "file" else STREAM_PROTOCOLS[scheme]
    extra = f"|{STREAM_OPTIONS[scheme]}" if scheme in STREAM_OPTIONS else ""
    return f"format_whitelist;{','.join(demuxers)}|protocol_whitelist;{protocols}{extra}"


def open_ffmpeg_capture(target: str, *, scheme: str = "file", params: tuple[int, ...] = ()) -> cv2.VideoCapture:
    """cv2.VideoCapture of ``target`` through FFmpeg, with only ``scheme``'s protocols and the real
    video containers allowed (see ``capture_options``); the caller checks ``isOpened()``."""
    if scheme != "file":  # a stalled stream ends (and frees the reader) instead of blocking a read forever
        params = (*params, cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_OPEN_TIMEOUT_MS)
        params = (*params, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_READ_TIMEOUT_MS)
    with _open_lock:
        _quiet_logs_once()
        os.environ[FFMPEG_OPTIONS_ENV] = capture_options(scheme)
        try:
            return cv2.VideoCapture(target, cv2.CAP_FFMPEG, list(params))
        finally:  # at rest, files only: any other capture in this process gets the strictest options
            os.environ[FFMPEG_OPTIONS_ENV] = capture_options("file")


_quieted = False


def open_camera(index: int) -> cv2.VideoCapture:
    """cv2.VideoCapture of camera ``index``, with OpenCV's own lines off as for a file (a camera that is
    not there printed two of its warnings before our message); the caller checks ``isOpened()``."""
    with _open_lock:
        _quiet_logs_once()
    return cv2.VideoCapture(index)


def _quiet_logs_once() -> None:
    """FFmpeg's and OpenCV's own lines off, unless the user set their levels (called under the lock)."""
    global _quieted
    if _quieted:
        return
    _quieted = True
    if FFMPEG_LOGLEVEL_ENV not in os.environ and "OPENCV_FFMPEG_DEBUG" not in os.environ:
        os.environ[FFMPEG_LOGLEVEL_ENV] = FFMPEG_QUIET
    logging = getattr(getattr(cv2, "utils", None), "logging", None)  # None in builds without its bindings
    if "OPENCV_LOG_LEVEL" not in os.environ and logging is not None:  # "backend is available but can't be used"
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)

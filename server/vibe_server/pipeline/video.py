"""Streaming video decode: frames straight from the container, never through image files.

    reader = open_video("clip.mp4")            # VibeError for anything that is not a usable video
    reader.info                                # VideoInfo(name, fps, width, height, frame_count)
    for frame_index, frame_rgb in reader:      # frame_rgb (H, W, 3) uint8 RGB
        ...
    for frame_indices, frames_rgb in reader.batches(16):   # (B,) int64, list of B (H, W, 3) uint8
        ...
    part = reader.segment(700, 1394)           # a decoder of its own that starts at a keyframe
    for frame_index, frame_rgb in part:        # frames 700..1393; then part.head / part.tail
        ...

OpenCV's FFMPEG backend decodes one frame at a time, so memory stays bounded by the batch size and
the prefetch queue, whatever the video length. With ``prefetch > 0`` a background thread decodes
ahead into a bounded queue, so decoding overlaps whatever the consumer does with the frames; with
``decode_workers > 1`` several threads decode chunks of the video at once (``parallel_decode``).

Frame indices are 0-based positions in decode order, as the official demo's sorted PNG list gives.

Segments let several decoders share one video: ``keyframes()`` lists where decoding can start on
its own (read from the container's packets, nothing decoded), ``jump_targets()`` the frames that
are cheapest to jump to, and a segment's decoder jumps straight to its start. Whether a jump landed
on the right frame is checked, not assumed:
a segment records a mark (timestamp + pixel digest) of its first frame, and of the frame just past
its end, so that consecutive segments must agree where they meet (``later.continues(earlier)``).
A segment given ``stopped`` asks it before each frame it decodes, those dropped on the way to its
start included, and gives up (``DecodeStopped``) once it is true.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import weakref
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import FPS_RANGE, VideoInfo

from .background import ahead_in_thread
from .ffmpeg_capture import CONTAINER_NAMES, open_ffmpeg_capture
from .frame_counts import counted_frames, file_identity
from .parallel_decode import decode_in_parallel

# OpenCV's FFmpeg reader starts a jump to frame n from the keyframe at or before n - 16 and decodes
# forward to n, so the cheapest frames to jump to are the 16th after each keyframe.
JUMP_PREROLL_FRAMES = 16

# A container's frame count is an estimate for some formats (duration x fps); a shortfall this small
# is taken as the container's error, a larger one as a truncated or damaged file.
_SHORTFALL_TOLERANCE_FRAMES = 3
_SHORTFALL_TOLERANCE_FRACTION = 0.02
_FALLBACK_FPS = 30.0


def count_slack(stated: int) -> int:
    """How many frames a container's count ``stated`` may be off by, as an estimate's error (see above)."""
    return max(_SHORTFALL_TOLERANCE_FRAMES, int(_SHORTFALL_TOLERANCE_FRACTION * stated))


def usable_fps(stated: float) -> float:
    """The frame rate a container or a stream states, or 30 when it is none a result file may hold (0
    or NaN when unknown; 90,000, the RTP clock, from some RTSP streams)."""
    return float(stated) if np.isfinite(stated) and FPS_RANGE[0] <= stated <= FPS_RANGE[1] else _FALLBACK_FPS


# Where the open file can be named for FFmpeg by its descriptor (Linux): every later open reads the
# file checked here, even when its name is given to a pipe meanwhile (which would block the open).
_FD_NAMES = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else None

# The largest frames read: 8K (DCI 8192 x 4320, either way up). The model sees 224-pixel crops, so
# larger frames add nothing, and a header can claim any size (an 89-byte GIF can claim 16000 x 16000:
# 768 MB a decoded frame).
MAX_FRAME_SIDE = 8192
MAX_FRAME_PIXELS = 8192 * 4320

# top-level boxes of an mp4 looked at for media data (a real file has a handful: ftyp, moov, mdat, free)
_ISO_TOP_BOXES_MAX = 64


def open_video(
    path,
    *,
    count_frames: bool = False,
    prefetch: int = 0,
    decode_workers: int = 1,
    label: str | None = None,
    stopped: Callable[[], bool] | None = None,
) -> VideoReader:
    """Open a video file for streaming decode; raises VibeError when it is not a usable video.

    path: a video file in a real container (mp4, mov, mkv, webm, avi, gif, mpeg-ts...); playlists,
        concat lists, image sequences and still images are refused (see ffmpeg_capture.VIDEO_CONTAINERS).
    count_frames: decode the whole file once up front (fast ``grab`` pass) to get the exact frame
        count and to catch a truncated file before any work starts. Otherwise the container's count
        is used and a truncation is reported while iterating.
    prefetch: number of frames a background thread may decode ahead (0: decode in the caller's thread).
    decode_workers: threads decoding chunks of the video at once (see parallel_decode; 1: one decoder).
    label: how messages name the file (default: the path); a server passes what its client sent.
    stopped: asked before each frame of the count (``count_frames``, or a container that states no
        count); once true the open gives up with DecodeStopped (a server's probe past its time limit).

    A file that breaks off (truncated, damaged) is not refused: the frames before the break are
    decoded, and ``reader.warnings`` says what was lost once the decode reaches the break.
    """
    return VideoReader(
        path, count_frames=count_frames, prefetch=prefetch, decode_workers=decode_workers, label=label, stopped=stopped
    )


class VideoReader:
    """Iterate ``(frame_index, frame_rgb (H, W, 3) uint8)`` over a video; ``.info`` describes it.

    Each iteration (or ``batches`` call) decodes the video from the start again.
    """

    def __init__(
        self,
        path,
        *,
        count_frames: bool = False,
        prefetch: int = 0,
        decode_workers: int = 1,
        label: str | None = None,
        stopped: Callable[[], bool] | None = None,
    ):
        self.path = Path(path)
        self.label = label if label is not None else str(self.path)
        self.prefetch = int(prefetch)
        self.decode_workers = int(decode_workers)
        self.warnings: list[str] = []  # e.g. the file breaks off; set once a decode reaches the end
        self._keyframes: list[int] | None = None
        check_video_path(self.path, self.label)
        self._capture_name, self.close = self._hold_file()
        self._file_identity = file_identity(self._capture_name)  # the file held, before FFmpeg reads it
        try:
            self._read_header(count_frames, stopped)
        except BaseException:
            self.close()  # the descriptor goes with the failure, not when a kept exception is collected
            raise

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_header(self, count_frames: bool, stopped: Callable[[], bool] | None) -> None:
        """The container's figures and the first frame: fps, size, frame count (VibeError when unusable)."""
        capture = self._open_capture()
        try:
            fps = float(capture.get(cv2.CAP_PROP_FPS))
            container_count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
            # the size the file states, checked before a frame of that size is decoded
            check_frame_size(capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT), self.label)
            ok, first_bgr = capture.read()
        finally:
            capture.release()
        if (not ok or first_bgr is None) and container_count == 0:  # (nothing to decode, nothing damaged)
            raise _without_frames(self.label)
        if not ok or first_bgr is None:
            raise VibeError(
                f"{self.label} contains no decodable frames: it is empty, truncated or not a video. "
                "Export it again as an mp4 (H.264) file."
            )
        height, width = first_bgr.shape[:2]  # the decoded size (after any rotation metadata) is the truth
        check_frame_size(width, height, self.label)
        fps = usable_fps(fps)
        # Negative, zero or absurd counts mean the container does not know (still images, some streams).
        container_knows = np.isfinite(container_count) and 0 < container_count < 2**31
        self._container_frame_count = int(container_count) if container_knows else None

        frame_count = self._container_frame_count
        if count_frames or frame_count is None:  # (once per unchanged file: the probe's count serves its job)
            frame_count = counted_frames(self._file_identity, lambda: self._count_by_decoding(stopped))
            self.check_complete(frame_count, update=False)
        if frame_count < 2:
            raise VibeError(
                f"{self.label} has a single frame: it is a still image, not a video. "
                "Pass a video file (mp4, mkv, avi, mov, gif...)."
            )
        self.info = VideoInfo(name=self.path.name, fps=fps, width=width, height=height, frame_count=int(frame_count))

    # -- iteration -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.decode_workers > 1:
            return decode_in_parallel(self, self.decode_workers)
        return self.frames_ahead()

    def __len__(self) -> int:
        return self.info.frame_count

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        """Yield ``(frame_indices (B,) int64, [frame_rgb (H, W, 3) uint8] * B)``, B <= batch_size."""
        if batch_size < 1:
            raise VibeError(f"batch_size must be at least 1, got {batch_size}.")
        indices, frames = [], []
        for frame_index, frame_rgb in self:
            indices.append(frame_index)
            frames.append(frame_rgb)
            if len(frames) == batch_size:
                yield np.asarray(indices, dtype=np.int64), frames
                indices, frames = [], []
        if frames:
            yield np.asarray(indices, dtype=np.int64), frames

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(frame_index, frame_rgb)`` for start <= frame_index < stop (None: to the end).

        Frames before ``start`` are decoded and dropped (exact, unlike container seeking).
        """
        return self._decode(start, stop)

    def keyframes(self) -> list[int]:
        """Indices of the frames where decoding can start on its own (GOP starts), ascending, from 0.

        Read from the container's packets without decoding them (milliseconds for minutes of video;
        never more packets than the header's frame count). Only ``[0]`` when the packets do not map
        one to one onto the frames.
        """
        if self._keyframes is None:
            found, packets = array("q"), 0  # 8 bytes a keyframe, bounded by the file's packets
            try:
                capture = self._open_capture(raw_packets=True)
                try:
                    while packets <= self.info.frame_count and capture.grab():
                        if capture.get(cv2.CAP_PROP_LRF_HAS_KEY_FRAME):
                            found.append(packets)
                        packets += 1
                finally:
                    capture.release()
            except (VibeError, cv2.error, AttributeError):  # an OpenCV build that cannot hand out packets
                found = array("q")
            one_to_one = packets == self.info.frame_count and found[:1].tolist() == [0]
            self._keyframes = found.tolist() if one_to_one else [0]
        return list(self._keyframes)

    def jump_targets(self) -> list[int]:
        """The frames a decoder jumps to with the least waste, ascending: JUMP_PREROLL_FRAMES after
        each keyframe (a jump to any other frame decodes more frames before it)."""
        return [k + JUMP_PREROLL_FRAMES for k in self.keyframes() if k + JUMP_PREROLL_FRAMES < self.info.frame_count]

    def segment(
        self, start: int, stop: int | None, *, seek: bool = True, stopped: Callable[[], bool] | None = None
    ) -> VideoSegment:
        """Frames [start, stop) from a decoder of their own that jumps to ``start`` (``seek=False``:
        decodes from the first frame and drops the frames before ``start``, always exact).
        ``stopped()``: asked before each frame decoded; once true the decode raises DecodeStopped."""
        return VideoSegment(self, start, stop, seek=seek, stopped=stopped)

    def _decode(
        self, start: int, stop: int | None, *, jump: bool = False, marks: VideoSegment | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Decode frames [start, stop): ``jump`` straight to ``start``, or from the first frame
        dropping those before it. ``marks`` (a segment's decode) gets the mark of the first frame
        (head) and of the frame at ``stop`` (tail), and its ``stopped`` is asked before every frame
        (a decode from the first frame may drop minutes of video before it yields one); then the
        caller checks completeness."""
        stopped = marks.stopped if marks is not None else None
        capture = self._open_capture()
        frame_index = 0
        try:
            if jump and start > 0:
                landed = capture.set(cv2.CAP_PROP_POS_FRAMES, start)
                if landed and int(capture.get(cv2.CAP_PROP_POS_FRAMES)) == start:
                    frame_index = start
                else:  # the container cannot jump there: decode from the first frame
                    capture.release()
                    capture = self._open_capture()
            while stop is None or frame_index < stop:
                if stopped is not None and stopped():
                    raise DecodeStopped(f"stopped at frame {frame_index}")
                if frame_index < start:
                    ok, frame_bgr = capture.grab(), None
                else:
                    ok, frame_bgr = capture.read()
                if not ok:
                    break
                if frame_bgr is not None:
                    if marks is not None and frame_index == start:
                        marks.head = _frame_mark(capture, frame_bgr)
                    yield frame_index, cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
                frame_index += 1
            if marks is not None and stop is not None and frame_index == stop:
                ok, frame_bgr = capture.read()  # the next segment's first frame, to check the cut
                marks.tail = _frame_mark(capture, frame_bgr) if ok else None
        finally:
            capture.release()
        if marks is not None:
            marks.decoded = max(0, frame_index - start)
        elif stop is None or frame_index < stop:
            self.check_complete(frame_index)

    def frames_ahead(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """``frames(start)`` from one decoder; with ``prefetch > 0`` in a daemon thread, at most
        ``prefetch`` frames ahead (its errors are re-raised here)."""
        if self.prefetch <= 0:
            return self.frames(start)
        return ahead_in_thread(self.frames(start), max_ahead=self.prefetch, name=f"decode {self.path.name}")

    # -- helpers -------------------------------------------------------------------------------
    def _hold_file(self) -> tuple[str, Callable[[], None]]:
        """-> (the name FFmpeg opens the file by, close). Where open files have names (Linux), the file
        is held open while the reader lives (or until close) and FFmpeg opens it by its descriptor's
        name, telling the container by its content alone: a file swapped for a pipe after the check
        is not what FFmpeg opens. Elsewhere the path itself (holding it would only keep it from being
        deleted, on Windows)."""
        if not _FD_NAMES:
            return str(self.path), lambda: None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as err:
            raise _unreadable(self.label, err) from None
        close = weakref.finalize(self, os.close, fd)
        try:
            check_video_stat(os.fstat(fd), self.label)  # the file held is the file checked
        except VibeError:
            close()
            raise
        return f"{_FD_NAMES}/{fd}", close

    def _open_capture(self, *, raw_packets: bool = False) -> cv2.VideoCapture:
        """A capture of the file (``raw_packets``: demuxing only, each grab one compressed packet)."""
        capture = open_ffmpeg_capture(self._capture_name, params=(cv2.CAP_PROP_FORMAT, -1) if raw_packets else ())
        if not capture.isOpened():
            capture.release()
            if _is_iso_media_without_media_data(self._capture_name):  # FFmpeg opens no video there either
                raise _without_frames(self.label)
            raise VibeError(
                f"Cannot open {self.label} as a video: it is not a video file in a container this "
                f"program reads ({CONTAINER_NAMES}), or it is damaged. Playlists (.m3u8), concat "
                "lists, image sequences and still images are not videos here. Export the clip "
                "as an mp4 (H.264) file."
            )
        return capture

    def _count_by_decoding(self, stopped: Callable[[], bool] | None) -> int:
        """Exact frame count from one grab pass (decodes, skips the colour conversion); DecodeStopped
        once ``stopped()`` is true."""
        capture = self._open_capture()
        count = 0
        try:
            while capture.grab():
                count += 1
                if stopped is not None and stopped():
                    raise DecodeStopped(f"stopped at frame {count} of the count")
        finally:
            capture.release()
        return count

    def check_complete(self, frames_decoded: int, *, update: bool = True) -> None:
        """After a decode to the end that covered ``frames_decoded`` frames: warn (``self.warnings``)
        when that is well short of the container's count, and (``update``) make it ``info.frame_count``.
        Called by whoever saw where the whole decode ended: a plain decode itself, the caller of segments."""
        expected = self._container_frame_count
        if expected is None or frames_decoded >= expected:
            if update and frames_decoded > self.info.frame_count:  # the container under-counted
                self.info.frame_count = frames_decoded
            return
        if expected - frames_decoded > count_slack(expected):
            # a phone that stopped recording: keep what decodes, and say clearly what is missing
            warning = (
                f"The video is truncated or damaged: decoding stopped at frame {frames_decoded} of the "
                f"{expected} its header announces, so only those {frames_decoded} frames were used. "
                "Copy or export the video again to get the rest."
            )
            if warning not in self.warnings:
                self.warnings.append(warning)
        if update:
            self.info.frame_count = frames_decoded


def _without_frames(label: str) -> VibeError:
    return VibeError(
        f"{label} is a video file without frames (a recording stopped before its first frame?). "
        "Record or export the clip again."
    )


def _is_iso_media_without_media_data(path: str) -> bool:
    """Whether ``path`` is an ISO base media file (mp4, mov: 'ftyp' first) whose top-level boxes are whole,
    with its movie header ('moov') and no byte of media data ('mdat', 'moof'): a recording stopped before
    its first frame, which FFmpeg cannot open as a video, as it cannot a file of another kind."""
    kinds: list[bytes] = []
    offset = 0
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            while offset < size and len(kinds) < _ISO_TOP_BOXES_MAX:
                f.seek(offset)
                header = f.read(16)
                if len(header) < 8:
                    return False
                box_size, kind = struct.unpack(">I4s", header[:8])
                header_size = 8
                if box_size == 1 and len(header) == 16:  # a 64-bit size follows the kind
                    box_size, header_size = struct.unpack(">Q", header[8:])[0], 16
                elif box_size == 0:  # to the end of the file
                    box_size = size - offset
                if box_size < header_size or offset + box_size > size:
                    return False
                if kind in (b"mdat", b"moof") and box_size > header_size:
                    return False
                kinds.append(kind)
                offset += box_size
    except OSError:
        return False
    return offset == size and kinds[:1] == [b"ftyp"] and b"moov" in kinds


def check_file_name(path: str | os.PathLike, label: str) -> None:
    """VibeError when ``path`` is not valid UTF-8 (a name whose bytes the file system could not decode,
    which Python keeps as surrogates: 'caf\\udce9.mp4'): OpenCV's reader crashes the process on it."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        raise VibeError(
            f"The file name of {label} is not valid UTF-8, which the video reader cannot open; rename the file."
        ) from None


def check_video_stat(st: os.stat_result, label: str) -> None:
    """VibeError unless ``st`` is the status of a regular, non-empty file: a folder, a device (/dev/zero)
    or a pipe is no video file, and reading one may block or never end."""
    if not stat.S_ISREG(st.st_mode):
        raise VibeError(
            f"{label} is not a regular video file (a folder, a device or a pipe). Pass the path of a video file."
        )
    if st.st_size == 0:
        raise VibeError(f"Video file {label} is empty (0 bytes). Copy or export it again.")


def check_video_path(path: str | os.PathLike, label: str) -> None:
    """VibeError unless ``path`` names a regular, non-empty file whose name the video reader can open,
    each problem in its own words: not found, unreadable, a folder, a device or a pipe (see
    :func:`check_video_stat`), empty, not readable by this user. It is opened without blocking and
    closed unread: a pipe put in its place cannot block it."""
    check_file_name(path, label)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VibeError(f"Video file not found: {label}. Check the path.") from None
    except (OSError, ValueError) as err:  # name too long, NUL byte, a folder on the way not searchable...
        raise _unreadable(label, err) from None
    check_video_stat(st, label)
    try:  # the status says nothing of read permission, and the video reader would call it "not a video"
        os.close(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))
    except OSError as err:
        raise _unreadable(label, err) from None


def _unreadable(label: str, err: Exception) -> VibeError:
    reason = getattr(err, "strerror", None) or str(err)
    advice = "Give this user read permission" if isinstance(err, PermissionError) else "Check the path"
    return VibeError(f"Cannot read the video file {label} ({reason}). {advice}.")


FrameMark = tuple[float, bytes]  # (timestamp in ms, digest of the decoded pixels): which frame this is


class DecodeStopped(Exception):
    """A segment's decode gave up at a frame because its ``stopped()`` turned true."""


def check_frame_size(width: float, height: float, label: str) -> None:
    """VibeError when a frame of width x height would be larger than 8K (see MAX_FRAME_PIXELS); a
    size the file does not state (0) passes here and is checked on the decoded frame."""
    width, height = int(width or 0), int(height or 0)
    if max(width, height) > MAX_FRAME_SIDE or width * height > MAX_FRAME_PIXELS:
        raise VibeError(
            f"{label} has frames of {width} x {height} pixels; the largest this program reads is 8K "
            f"({MAX_FRAME_SIDE} x {MAX_FRAME_PIXELS // MAX_FRAME_SIDE}). Scale the video down: "
            "1920 x 1080 is plenty for the model."
        )


def _frame_mark(capture: cv2.VideoCapture, frame_bgr: np.ndarray) -> FrameMark:
    digest = hashlib.blake2b(np.ascontiguousarray(frame_bgr).data, digest_size=16).digest()
    return float(capture.get(cv2.CAP_PROP_POS_MSEC)), digest


class VideoSegment:
    """Frames [start, stop) of a video, decoded by a capture of their own (see ``VideoReader.segment``).

    Iterating yields ``(frame_index, frame_rgb)``; afterwards ``head`` marks the frame decoded as
    ``start`` and ``tail`` the frame decoded as ``stop`` (read past the end, not yielded; None at
    the video's end), and ``decoded`` counts the frames yielded. A segment never changes its
    reader's ``info`` or ``warnings``: several may decode at once; their caller, who sees where the
    whole decode ended, calls ``reader.check_complete``. ``stopped()``, where given, is asked
    before every frame decoded: once true, the iteration raises DecodeStopped.
    """

    def __init__(
        self,
        reader: VideoReader,
        start: int,
        stop: int | None,
        *,
        seek: bool = True,
        stopped: Callable[[], bool] | None = None,
    ):
        self.reader = reader
        self.start, self.stop, self.seek, self.stopped = int(start), stop, seek, stopped
        self.head: FrameMark | None = None
        self.tail: FrameMark | None = None
        self.decoded = 0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self.reader._decode(self.start, self.stop, jump=self.seek, marks=self)

    def continues(self, earlier: VideoSegment) -> bool:
        """Did this segment's decoder start on the very frame that ``earlier``'s reached at their cut?
        (Both decoded to their ends. A segment from frame 0 jumps nowhere, so checking the cuts in
        order chains the proof up from the first frame.)"""
        return earlier.tail is not None and earlier.tail == self.head

"""The add-on's side of live capture (no bpy): start a live session on the server, receive its
frames over the WebSocket in a worker thread, hand the newest one to the UI, and keep a recording.

    live = LiveConnection(client).start("0", {"detection_stride": 2})
    ... in Blender's timer:  frame = live.take_latest()    # newest frame not shown yet, or None
    live.recording_start(); ...; take = live.recording_stop()   # per track: frames, pose, betas, trans
    frames = take_on_frames(take, 24.0)   # the recording on a 24 frames/s timeline, at real speed
    live.stop()

Every field of every message is checked before use (types, sizes, finite numbers within what a result
file may hold, frames in order), so a recording always saves as one that imports; a message that fails
is counted as bad and skipped (one nested deeply enough to exhaust the parser too), while a person whose
values alone fail (a model's output no result file can hold) is left out of the frame and counted. A
frame stamped more than a minute after the one before, or before it, starts a new stretch of the
recording a minute after the last (a gap: :func:`take_on_frames` interpolates nothing across it), so
that one jump of the server's clock neither freezes the stream nor makes the recording too long to
place. When the connection drops or the server breaks the protocol, ``state`` says so, the recording
so far is kept and the server is asked to stop the session (nobody follows it any more).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from operator import methodcaller
from typing import NamedTuple, Protocol

import numpy as np

from . import safe_json
from .client import JOB_ID_PATTERN, ServerClient
from .errors import VibeError
from .keyed_rows import ByTrack, KeyedRows
from .result_file import BETA_LIMIT, MAX_POSE_RAD, MAX_TRANSLATION_M
from .rotations import axis_angle_to_quat, quat_slerp, quat_to_axis_angle
from .shown_text import display_text
from .websocket import WebSocket, WebSocketClosed

MAX_PEOPLE_PER_FRAME = 32
MAX_RECORDED_FRAMES = 2_000_000  # rows over all tracks (0.9 GB as a take holds them, see LiveTake): then it stops
MAX_FRAME_TIME_S = 1e12  # the server's clock (time.monotonic()) in seconds; beyond is no clock
# The most time between two frames of the stream: the server ends a stream that sends nothing for
# 10 s (and a camera whose read fails), so a frame a minute after the one before comes from a server
# that stalled (swapping, a machine asleep) or from a broken clock. Taken as stamped, one such jump
# would stretch the recording past any scene's frames: the frames after it are placed this long
# after the one before instead.
MAX_FRAME_INTERVAL_S = 60.0
# The start request waits while the server opens the source (a stream may take 10 s) and loads its
# detector and model (a minute on a slow machine); the server starts the session even when the
# client gave up, so giving up early would leave it running for nobody.
START_TIMEOUT_S = 120.0
# Received frames further apart than this are not interpolated across: the stream stalled (a stalled
# stream's last frame comes when FFmpeg gives up, 10 s later), and a blend would add seconds of slow
# motion. Frames dropped while the model was busy leave shorter holes (a detection on a CPU takes
# under half a second), which are interpolated.
MAX_INTERPOLATED_GAP_S = 1.0
RESAMPLE_CHUNK = 65_536  # frames interpolated at a time (bounds the float64 temporaries)
_POSE, _BETAS, _TRANS = slice(0, 72), slice(72, 82), slice(82, 85)  # a take's row: pose | betas | trans_cam_m
TAKE_ROW_WIDTH = _TRANS.stop
MAX_SESSION_WARNINGS = 8


@dataclass(frozen=True)
class LivePersonFrame:
    track_id: int
    frame_index: int
    pose: np.ndarray  # (72,) float32 axis-angle
    betas: np.ndarray  # (10,) float32
    trans_cam_m: np.ndarray  # (3,) float32


@dataclass(frozen=True)
class LiveFrameMessage:
    frame_index: int
    frame_time_s: float  # when the frame arrived at the server (its clock, seconds)
    people: tuple[LivePersonFrame, ...]
    latency_s: float | None
    people_dropped: int = 0  # people of the message left out: values no result file holds


class JournalWriter(Protocol):
    """What a take's copy on disk does (take_journal.TakeJournal); each write raises OSError when it fails."""

    def add_frame(self, frame: LiveFrameMessage) -> None: ...
    def add_warnings(self, warnings: list[str]) -> None: ...
    def close(self) -> None: ...
    def remove(self) -> None: ...


def dropped_people_note(count: int) -> str:
    """What to tell of ``count`` people left out of their frames (the panel, a recording's warnings)."""
    return (
        f"Left out {count} person-frame(s) holding values a result file cannot hold (a person more than "
        f"{MAX_TRANSLATION_M / 1000:g} km from the camera, or a value that is not a number); the rest of each "
        "frame was kept."
    )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value) -> float | None:
    """A JSON number that is finite as a float -> that float; anything else (a bool, text, NaN, an
    integer past float64's range) -> None."""
    if not _is_number(value):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


class _OutOfBounds(ValueError):
    """Numbers that are well formed but no result file holds: a model's bad output for one person,
    not a broken message."""


def _vector(value, n: int, what: str, limit: float) -> np.ndarray:
    """A flat list of exactly ``n`` finite numbers within ±``limit`` -> (n,) float32 (ValueError else,
    _OutOfBounds for a number that is not finite or beyond ``limit``). ``limit`` is the result file's
    own bound on the field: one frame beyond it would make the whole saved recording a file that no
    import reads."""
    if not isinstance(value, list) or len(value) != n or not all(_is_number(v) for v in value):
        raise ValueError(f"{what} must be a list of {n} numbers")
    try:
        array = np.asarray(value, dtype=np.float64)
    except OverflowError:  # an integer past float64's range: no float a model outputs
        raise ValueError(f"{what} holds huge numbers") from None
    return within_bounds(array, what, limit)


def within_bounds(array: np.ndarray, what: str, limit: float) -> np.ndarray:
    """``array`` as float32 when all its numbers are finite and within ±``limit`` (_OutOfBounds, a
    ValueError, else): the bound a frame's field keeps, wherever it was read from."""
    if not np.all(np.isfinite(array)):
        raise _OutOfBounds(f"{what} holds non-finite numbers")
    if np.abs(array).max(initial=0) > limit:
        raise _OutOfBounds(f"{what} holds a number beyond ±{limit:g}, more than a result file may hold")
    return array.astype(np.float32)


def checked_time(value, what: str) -> float:
    number = _finite(value)
    if number is None or abs(number) > MAX_FRAME_TIME_S:
        raise ValueError(f"{what} must be a time in seconds")
    return number


def checked_index(value, what: str, upper: int = 2**40) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < upper:
        raise ValueError(f"{what} must be a non-negative integer")
    return value


def parse_frame_message(message: dict) -> LiveFrameMessage:
    """A server "frame" message -> checked arrays (ValueError naming the first bad field). A person
    whose numbers are well formed but out of a result file's bounds is left out (``people_dropped``):
    the others in the frame are still seen and recorded."""
    frame_index = checked_index(message.get("frame_index"), "frame_index")
    frame_time_s = checked_time(message.get("frame_time_s"), "frame_time_s")
    people = message.get("people")
    if not isinstance(people, list) or len(people) > MAX_PEOPLE_PER_FRAME:
        raise ValueError("people must be a list of at most 32 entries")
    parsed, seen, dropped, latency = [], set(), 0, None
    for person in people:
        if not isinstance(person, dict):
            raise ValueError("each person must be an object")
        track_id = checked_index(person.get("track_id"), "track_id", 2**31)
        if track_id in seen:
            raise ValueError("a track id appears twice in one frame")
        seen.add(track_id)
        value = person.get("latency_s")
        if value is not None:  # optional, but a number when sent
            latency = checked_time(value, "latency_s")
        try:
            pose = _vector(person.get("pose"), 72, "pose", MAX_POSE_RAD)
            betas = _vector(person.get("betas"), 10, "betas", BETA_LIMIT)
            trans_cam_m = _vector(person.get("trans_cam_m"), 3, "trans_cam_m", MAX_TRANSLATION_M)
        except _OutOfBounds:
            dropped += 1
            continue
        parsed.append(LivePersonFrame(track_id, frame_index, pose, betas, trans_cam_m))
    return LiveFrameMessage(frame_index, frame_time_s, tuple(parsed), latency, dropped)


@dataclass
class LiveTake:
    """A recording: every frame received (its index and time, empty frames too: the server sends each
    frame it processed, so a frame missing here was dropped), and a row per person and frame they were
    seen in. Frames are added in order (index and time increasing). Per track, ``frame_ids[track_id]``,
    ``pose[..]`` (T, 72), ``betas[..]`` (T, 10) and ``trans_cam_m[..]`` (T, 3) read its rows in frame
    order (arrays made for the reader: writing to them leaves the take as it is).

    The rows lie in float32 chunks shared by all tracks: about 450 bytes a row with its frame, however
    many tracks (measured with tracemalloc), 0.9 GB at MAX_RECORDED_FRAMES. Arrays and lists per track
    took 800 bytes a row, and 1,350 when the tracker gave each row a new id (2.7 GB)."""

    received_index: list[int] = field(default_factory=list)
    received_time_s: list[float] = field(default_factory=list)
    full: bool = False  # a frame did not fit: the take keeps what it has
    people_dropped: int = 0  # people left out of the frames added (LiveFrameMessage.people_dropped)
    warnings: list[str] = field(default_factory=list)  # the session's (e.g. YOLO fell back to HOG)
    # The take's copy on disk until it is saved or thrown away (take_journal): what a crash leaves.
    journal: JournalWriter | None = field(default=None, repr=False, compare=False)
    _rows: KeyedRows = field(default_factory=lambda: KeyedRows(TAKE_ROW_WIDTH), repr=False)
    _grouped: ByTrack | None = field(default=None, repr=False, compare=False)  # _by_track(), until a row comes

    def add(self, frame: LiveFrameMessage) -> bool:
        """False once the recording is full (it then keeps what it has)."""
        if self.rows + len(frame.people) > MAX_RECORDED_FRAMES or len(self.received_index) >= MAX_RECORDED_FRAMES:
            self.full = True
            return False
        self.received_index.append(frame.frame_index)
        self.received_time_s.append(frame.frame_time_s)
        self.people_dropped += frame.people_dropped
        for p in frame.people:
            values = self._rows.add(p.track_id, p.frame_index)
            values[_POSE], values[_BETAS], values[_TRANS] = p.pose, p.betas, p.trans_cam_m
        self._grouped = None
        return True

    def drop_journal(self) -> None:
        """The take is saved or thrown away: its journal goes (left in place only when it cannot be removed)."""
        journal, self.journal = self.journal, None
        if journal is not None:
            journal.remove()

    @property
    def rows(self) -> int:
        """Person-frames recorded."""
        return self._rows.count

    @property
    def track_ids(self) -> list[int]:
        return self._by_track().ids.tolist()

    @property
    def frame_ids(self) -> Mapping[int, np.ndarray]:
        return _PerTrack(self, lambda part: self._by_track().frames[part].copy())

    @property
    def pose(self) -> Mapping[int, np.ndarray]:
        return _PerTrack(self, lambda part: self.values_at(self._by_track().rows[part])[:, _POSE])

    @property
    def betas(self) -> Mapping[int, np.ndarray]:
        return _PerTrack(self, lambda part: self.values_at(self._by_track().rows[part])[:, _BETAS])

    @property
    def trans_cam_m(self) -> Mapping[int, np.ndarray]:
        return _PerTrack(self, lambda part: self.values_at(self._by_track().rows[part])[:, _TRANS])

    def track_rows(self, track_id: int) -> np.ndarray:
        """The rows of ``track_id`` (positions in the take, in frame order); KeyError for a track never seen."""
        return self._by_track().rows[self._track_part(track_id)]

    def values_at(self, rows: np.ndarray) -> np.ndarray:
        """The rows at these positions -> (len(rows), TAKE_ROW_WIDTH) float32: pose | betas | trans_cam_m."""
        return self._rows.values_at(rows)

    def _track_part(self, track_id: int) -> slice:
        """Where ``track_id``'s rows lie in :meth:`_by_track`'s arrays; KeyError for a track never seen."""
        grouped = self._by_track()
        k = int(np.searchsorted(grouped.ids, track_id))
        if k == len(grouped.ids) or grouped.ids[k] != track_id:
            raise KeyError(track_id)
        return slice(grouped.starts[k], grouped.starts[k + 1])

    def _by_track(self) -> ByTrack:
        if self._grouped is None:
            self._grouped = self._rows.by_track()
        return self._grouped


class _PerTrack(Mapping):
    """One column of a take's rows per track, read as arrays: ``take.pose[track_id]`` -> (T, 72)."""

    def __init__(self, take: LiveTake, read):
        self._take, self._read = take, read

    def __getitem__(self, track_id: int) -> np.ndarray:
        return self._read(self._take._track_part(track_id))

    def __iter__(self):
        return iter(self._take.track_ids)

    def __len__(self) -> int:
        return len(self._take._by_track().ids)


@dataclass(frozen=True)
class TakeOnFrames:
    """A recording on a timeline of ``fps`` frames, frame 0 at its first received frame."""

    frame_count: int  # timeline frames from the first received frame to the last
    frame_ids: dict[int, np.ndarray]  # per track (T,) int64 timeline frames; a gap where it was absent
    pose: dict[int, np.ndarray]  # (T, 72) float32
    betas: dict[int, np.ndarray]  # (T, 10) float32
    trans_cam_m: dict[int, np.ndarray]  # (T, 3) float32


def take_on_frames(take: LiveTake, fps: float, track_ids: list[int] | None = None) -> TakeOnFrames:
    """Place a recording on a timeline of ``fps`` frames by the server's frame times, so that it plays
    at real speed whatever the source's rate and whatever the server dropped. Each timeline frame shows
    a person as in the received frame nearest in time, interpolated (rotations by slerp) towards the
    received frame on the other side of it when the person is in both: a frame the server dropped or
    never sent leaves no gap, a received frame without the person does. Where the stream stalled
    (received frames more than MAX_INTERPOLATED_GAP_S apart) nothing is interpolated: a received frame
    is shown on its nearest timeline frame only, and the time between is a gap, as in a track that
    skips frames. A person seen only in received frames nearest to no timeline frame (sent faster
    than ``fps``) is shown once, on the timeline frame nearest their first, so that every track keeps
    a frame. ``track_ids``: only these (default: all)."""
    times = np.asarray(take.received_time_s, dtype=np.float64)
    times -= times[0]
    frame_count = int(round(times[-1] * fps)) + 1
    if frame_count > MAX_RECORDED_FRAMES:
        raise _too_long(frame_count, fps)
    grid = np.arange(frame_count) / fps
    before = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(times) - 1)
    after = np.minimum(before + 1, len(times) - 1)
    nearest = np.where(grid - times[before] <= times[after] - grid, before, after)  # non-decreasing
    span = times[after] - times[before]
    weight = np.clip((grid - times[before]) / np.where(span > 0, span, 1.0), 0.0, 1.0)
    stalled = span > MAX_INTERPOLATED_GAP_S
    covered = ~stalled | (np.abs(grid - times[nearest]) <= 0.5 / fps)  # in a stall: a received frame's own frame
    received_index = np.asarray(take.received_index, dtype=np.int64)
    placed, total = {}, 0
    for track_id in take.track_ids if track_ids is None else track_ids:
        seen = np.searchsorted(received_index, take.frame_ids[track_id])  # the received frames with the person
        # Only the timeline frames nearest to a received frame of the track's span are looked at (a cost
        # of the track's length, not the take's); their before/after lie at most one frame outside it.
        lo, hi = int(seen[0]), int(seen[-1])
        row = np.full(hi - lo + 3, -1, dtype=np.int64)  # received frame lo - 1 + i -> the track's row, -1: absent
        row[seen - lo + 1] = np.arange(len(seen))
        window = np.arange(np.searchsorted(nearest, lo), np.searchsorted(nearest, hi, side="right"))
        near_row, before_row, after_row = (row[which[window] - lo + 1] for which in (nearest, before, after))
        shown = np.flatnonzero((near_row >= 0) & covered[window])
        if len(shown):
            both = (before_row[shown] >= 0) & (after_row[shown] >= 0) & ~stalled[window[shown]]
            first = np.where(both, before_row[shown], near_row[shown])
            second = np.where(both, after_row[shown], first)
            placed[track_id] = _Placement(window[shown], first, second, np.where(both, weight[window[shown]], 0.0))
        else:  # seen only between timeline frames: once, as first seen
            frame = min(int(round(times[lo] * fps)), frame_count - 1)
            placed[track_id] = _Placement(np.array([frame]), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1))
        total += len(placed[track_id].frames)
        if total > MAX_RECORDED_FRAMES:
            raise _too_long(total, fps)
    pose, betas, trans_cam_m = _interpolated(take, placed)
    return TakeOnFrames(
        frame_count=frame_count,
        frame_ids={t: placed[t].frames.astype(np.int64) for t in placed},
        pose=pose,
        betas=betas,
        trans_cam_m=trans_cam_m,
    )


class _Placement(NamedTuple):
    """Where a track's received rows go: timeline frame ``frames[i]`` is row ``first[i]`` blended a
    fraction ``weight[i]`` towards row ``second[i]``."""

    frames: np.ndarray
    first: np.ndarray
    second: np.ndarray
    weight: np.ndarray


def _interpolated(take: LiveTake, placed: dict[int, _Placement]) -> tuple[dict[int, np.ndarray], ...]:
    """Per track, its received rows blended as ``placed`` -> (pose, betas, trans_cam_m) per track: the
    rotations by slerp, the rest linearly. Many tracks in one call (a take of thousands of short tracks
    spent seconds in one call per track)."""
    out = ({}, {}, {})
    batch, batch_rows = [], 0
    for track_id in [*placed, None]:
        if track_id is not None:
            batch.append((track_id, take.track_rows(track_id)))
            batch_rows += len(batch[-1][1]) + len(placed[track_id].frames)
        if batch and (track_id is None or batch_rows >= RESAMPLE_CHUNK):
            offsets = np.cumsum([0] + [len(rows) for _, rows in batch])
            values = take.values_at(np.concatenate([rows for _, rows in batch]))
            first = np.concatenate([placed[t].first + offsets[k] for k, (t, _) in enumerate(batch)])
            second = np.concatenate([placed[t].second + offsets[k] for k, (t, _) in enumerate(batch)])
            weight = np.concatenate([placed[t].weight for t, _ in batch])
            ends = np.cumsum([len(placed[t].frames) for t, _ in batch])[:-1]
            for column, blend, per_track in zip((_POSE, _BETAS, _TRANS), (_slerp_poses, _lerp, _lerp), out):
                per_track.update(
                    zip([t for t, _ in batch], np.split(blend(values[:, column], first, second, weight), ends))
                )
            batch, batch_rows = [], 0
    return out


def _too_long(frames: int, fps: float) -> VibeError:
    return VibeError(
        f"The recording is too long to keep: {frames:,} frames of motion at {fps:g} frames/s, more than "
        f"{MAX_RECORDED_FRAMES:,}; record shorter takes."
    )


def _lerp(values: np.ndarray, first: np.ndarray, second: np.ndarray, weight: np.ndarray) -> np.ndarray:
    w = weight[:, None]
    return ((1.0 - w) * values[first] + w * values[second]).astype(np.float32)


def _slerp_poses(poses: np.ndarray, first: np.ndarray, second: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """poses (R, 72) axis-angle -> (T, 72): each joint's rotation a fraction ``weight`` of the shortest
    way from row ``first`` to row ``second`` (in chunks: the quaternions are float64)."""
    out = np.empty((len(first), 72), dtype=np.float32)
    for s in range(0, len(first), RESAMPLE_CHUNK):
        part = slice(s, s + RESAMPLE_CHUNK)
        q0 = axis_angle_to_quat(poses[first[part]].reshape(-1, 24, 3))
        q1 = axis_angle_to_quat(poses[second[part]].reshape(-1, 24, 3))
        out[part] = quat_to_axis_angle(quat_slerp(q0, q1, weight[part, None, None])).reshape(-1, 72)
    return out


def session_warnings(answer: dict) -> list[str]:
    """The warnings of the server's answer to the live request, made displayable (an older server
    sends none); VibeError when they are not a short list of texts."""
    warnings = answer.get("warnings", [])
    if (
        not isinstance(warnings, list)
        or len(warnings) > MAX_SESSION_WARNINGS
        or not all(isinstance(w, str) for w in warnings)
    ):
        raise VibeError("The server's answer to the live request has warnings that are not a short list of texts.")
    return [display_text(w) for w in warnings]


class LiveConnection:
    """One live session on the server, followed by a worker thread.

    start_client: the client for the start request (``client`` when None), one whose timeout covers
    the server's opening of the source and loading of the detector (:data:`START_TIMEOUT_S`)."""

    def __init__(self, client: ServerClient, *, start_client: ServerClient | None = None):
        self.client = client
        self.start_client = start_client if start_client is not None else client
        self.live_id: str | None = None
        self.state = "idle"  # idle | connecting | streaming | ended | lost | failed
        self.error: str | None = None
        self.frames_received = 0
        self.bad_messages = 0
        self.people_dropped = 0  # people left out of frames received (values no result file holds)
        self.clock_jumps = 0  # frames stamped over a minute after the one before, or before it
        self.server_stats: dict = {}
        self.warnings: list[str] = []  # what the server said the user should know of the session
        self.journal_problem: str | None = None  # why the take is no longer copied to disk (it goes on in memory)
        self._latest: LiveFrameMessage | None = None
        self._take: LiveTake | None = None
        self._lock = threading.Lock()
        self._ws: WebSocket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._ended_by_server = False  # the server said the session ended (an "end" message)

    # -- control (any thread) ------------------------------------------------------------------
    def start(self, source: str, params: dict | None = None) -> LiveConnection:
        """Start the session on the server and the receiving thread (both off the caller's thread)."""
        self.state = "connecting"
        self._thread = threading.Thread(
            target=self._run, args=(source, params or {}), daemon=True, name="vibe-live-client"
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the session on the server and close the stream; the recording is kept. While the start
        request is still out, the session ends here at once and the worker thread stops it on the
        server when the server answers."""
        with self._lock:
            self._stopping = True
            live_id = self.live_id
            if live_id is None and self.state in ("idle", "connecting"):
                self.state = "ended"
        if live_id is not None:
            self._stop_on_server(live_id, report=True)
        if self._ws is not None:
            self._ws.close()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _stop_on_server(self, live_id: str, *, report: bool) -> None:
        """Ask the server to stop the session; report: say so in ``error`` when it does not answer."""
        try:
            self.client.stop_live(live_id)
        except VibeError as err:
            if report:
                self.error = (
                    f"The live session may still run on the server, which did not confirm the stop ({err}); "
                    "it stops by itself once nobody watches it, or restart the server to end it now."
                )

    def take_latest(self) -> LiveFrameMessage | None:
        """The newest frame not taken yet (older ones were superseded: the view shows the newest)."""
        with self._lock:
            frame, self._latest = self._latest, None
        return frame

    def recording_start(self, open_journal: Callable[[], JournalWriter] | None = None) -> None:
        """Start a take; ``open_journal`` makes its journal, a copy on disk that a crash leaves behind
        (take_journal). A journal that cannot be made or written is given up: the take goes on."""
        take = LiveTake(warnings=list(self.warnings))
        self.journal_problem = None
        if open_journal is not None:
            try:
                take.journal = open_journal()
            except OSError as err:
                self._journal_failed(take, err)
        with self._lock:
            self._take = take
            self._journal(take, methodcaller("add_warnings", take.warnings))

    def recording_stop(self) -> LiveTake | None:
        """The take, stopped; its journal stays on disk (closed) until the take is saved or thrown away."""
        with self._lock:
            take, self._take = self._take, None
        if take is not None and take.journal is not None:
            take.journal.close()
        return take

    @property
    def recording(self) -> bool:
        return self._take is not None

    @property
    def recording_full(self) -> bool:
        """The recording running reached its size limit (it keeps what it has)."""
        with self._lock:
            return self._take is not None and self._take.full

    @property
    def recorded_rows(self) -> int:
        """The person-frames recorded so far (0 when not recording or nobody was tracked yet)."""
        with self._lock:
            return self._take.rows if self._take is not None else 0

    # -- the worker thread ---------------------------------------------------------------------
    def _run(self, source: str, params: dict) -> None:
        try:
            self._start_and_receive(source, params)
        except VibeError as err:  # refused, unreachable, or the server broke the protocol
            self._fail(str(err))
        except Exception as err:  # never a dead thread under a panel that still says "streaming"
            self._fail(
                f"The live stream stopped on an unexpected error ({err!r}); the recording so far is kept, "
                "please report the error."
            )
        finally:
            if self._ws is not None:
                self._ws.close()
        if self.state in ("lost", "failed") and self.live_id is not None and not self._ended_by_server:
            self._stop_on_server(self.live_id, report=False)  # best effort: nobody follows it any more

    def _fail(self, message: str) -> None:
        if self._stopping:  # stopped by the user: what broke while stopping does not matter
            if self.state not in ("ended", "lost", "failed"):
                self.state = "ended"
            return
        self.state, self.error = "failed", message

    def _start_and_receive(self, source: str, params: dict) -> None:
        answer = self.start_client.start_live(source, params)
        live_id = answer.get("live_id") if isinstance(answer, dict) else None
        if not isinstance(live_id, str) or not JOB_ID_PATTERN.fullmatch(live_id):  # same format as jobs
            raise VibeError("The server's answer to the live request has no valid session id.")
        with self._lock:  # stop() either sees the id or left the stop to this thread
            self.live_id = live_id
            stopped = self._stopping
        if stopped:  # stopped while the server was starting the session
            self.state = "ended"
            self._stop_on_server(live_id, report=True)
            return
        warnings = session_warnings(answer)  # malformed: the session fails, and is stopped on the server
        with self._lock:
            self.warnings = warnings
            if self._take is not None:  # recording from the start: the take keeps them too
                self._take.warnings = list(warnings)
                self._journal(self._take, methodcaller("add_warnings", warnings))
        self._ws = self.client.open_live_stream(live_id)
        self.state = "streaming"
        self._receive()

    def _receive(self) -> None:
        timeline = _StreamTimeline()
        while True:
            try:
                text = self._ws.recv_text()
            except (WebSocketClosed, OSError) as err:
                if self.state == "streaming":
                    self.state = "ended" if self._stopping else "lost"
                    if not self._stopping:
                        self.error = f"The connection to the server was lost ({err}); the recording so far is kept."
                return
            try:
                message = safe_json.loads(text)
                kind = message.get("type") if isinstance(message, dict) else None
                if kind == "end":  # the session is over on the server: nothing to stop there
                    self._ended_by_server = True
                    self._add_end_warnings(message)
                    reason = message.get("error")
                    if message.get("status") == "failed":
                        self.state = "failed"
                        reason = reason if isinstance(reason, str) else "The live session failed on the server."
                    else:
                        self.state = "ended"
                    if isinstance(reason, str):
                        self.error = display_text(reason)
                    return
                if kind != "frame":
                    raise ValueError("unknown message type")
                frame = timeline.place(parse_frame_message(message))
                if isinstance(message.get("stats"), dict):  # figures for the panel: finite floats only
                    self.server_stats = {
                        k: number
                        for k, v in message["stats"].items()
                        if isinstance(k, str) and (number := _finite(v)) is not None
                    }
            # garbled, nested deep enough to exhaust the parser (safe_json), or a number past a float's range
            except (ValueError, TypeError, ArithmeticError):
                self.bad_messages += 1
                continue
            with self._lock:
                self._latest = frame
                self.frames_received += 1
                self.people_dropped += frame.people_dropped
                self.clock_jumps = timeline.jumps
                self._record(frame)

    def _record(self, frame: LiveFrameMessage) -> None:
        """Add ``frame`` to the take recording, if any, and to its journal (with the lock held). Once
        full, the take keeps what it has: the take says so, not the connection."""
        if self._take is not None and self._take.add(frame):
            self._journal(self._take, methodcaller("add_frame", frame))

    def _add_end_warnings(self, end: dict) -> None:
        """Keep the warnings the session's end brought (a video file cut short), for the panel and the
        take; an end without a well-formed list adds none."""
        try:
            ended_with = session_warnings(end)
        except VibeError:
            return
        with self._lock:
            self.warnings = self.warnings + [w for w in ended_with if w not in self.warnings]
            if self._take is not None:
                take = self._take
                take.warnings += [w for w in ended_with if w not in take.warnings]
                self._journal(take, methodcaller("add_warnings", take.warnings))

    def _journal(self, take: LiveTake, write: Callable[[JournalWriter], None]) -> None:
        """``write`` to the take's journal (with the lock held); the first failure ends the journal, not the take."""
        if take.journal is None:
            return
        try:
            write(take.journal)
        except OSError as err:
            self._journal_failed(take, err)

    def _journal_failed(self, take: LiveTake, err: OSError) -> None:
        take.drop_journal()
        self.journal_problem = (
            f"The recording could not be copied to disk as it goes ({err.strerror or err}), so it would be lost "
            "if Blender stopped unexpectedly; it is still recorded in memory, and Stop Recording saves it."
        )


class _StreamTimeline:
    """The stream's frames on one timeline, in the order sent. The server sends them in order and in
    time, and a recording's placing relies on it: a frame whose index does not follow the last one's is
    refused (ValueError). A frame stamped more than MAX_FRAME_INTERVAL_S after the last one, or before
    it (the server stalled for minutes, its machine slept, its clock broke), starts a new stretch
    placed MAX_FRAME_INTERVAL_S after the last one: a gap, and the stream goes on (every later frame
    measured against the frame before the jump was refused, and the view froze for good)."""

    def __init__(self):
        self.jumps = 0
        self._last: LiveFrameMessage | None = None  # as the server stamped it
        self._shift_s = 0.0  # server time - timeline time, over the jumps so far

    def place(self, frame: LiveFrameMessage) -> LiveFrameMessage:
        """``frame`` with its time on the timeline (ValueError when it comes out of order)."""
        last = self._last
        if last is not None:
            if frame.frame_index <= last.frame_index:
                raise ValueError("frames out of order")
            step = frame.frame_time_s - last.frame_time_s
            if not 0 <= step <= MAX_FRAME_INTERVAL_S:
                self._shift_s += step - MAX_FRAME_INTERVAL_S
                self.jumps += 1
        self._last = frame
        return replace(frame, frame_time_s=frame.frame_time_s - self._shift_s) if self._shift_s else frame

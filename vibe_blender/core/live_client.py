"""The add-on's side of live capture (no bpy): start a live session on the server, receive its
frames over the WebSocket in a worker thread, hand the newest one to the UI, and keep a recording.

    live = LiveConnection(client).start("0", {"detection_stride": 2})
    ... in Blender's timer:  frame = live.take_latest()    # newest frame not shown yet, or None
    live.recording_start(); ...; take = live.recording_stop()   # per track: frames, pose, betas, trans
    live.stop()

Every field of every message is checked before use (types, sizes, finite numbers); a message that
fails is counted as bad and skipped (one nested deeply enough to exhaust the parser too). When the
connection drops, ``state`` says so and the recording so far is kept.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from . import safe_json
from .client import JOB_ID_PATTERN, ServerClient
from .errors import VibeError
from .websocket import WebSocket, WebSocketClosed

MAX_PEOPLE_PER_FRAME = 32
MAX_RECORDED_FRAMES = 2_000_000  # rows over all tracks (~0.7 GB of float32 pose): then it stops


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
    people: tuple[LivePersonFrame, ...]
    latency_s: float | None


def _vector(value, n: int, what: str) -> np.ndarray:
    if not isinstance(value, list) or len(value) != n:
        raise ValueError(f"{what} must be a list of {n} numbers")
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)) or np.abs(array).max(initial=0) > 1e6:
        raise ValueError(f"{what} holds non-finite or huge numbers")
    return array.astype(np.float32)


def _index(value, what: str, upper: int = 2**40) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < upper:
        raise ValueError(f"{what} must be a non-negative integer")
    return value


def parse_frame_message(message: dict) -> LiveFrameMessage:
    """A server "frame" message -> checked arrays (ValueError naming the first bad field)."""
    frame_index = _index(message.get("frame_index"), "frame_index")
    people = message.get("people")
    if not isinstance(people, list) or len(people) > MAX_PEOPLE_PER_FRAME:
        raise ValueError("people must be a list of at most 32 entries")
    parsed, latency = [], None
    for person in people:
        if not isinstance(person, dict):
            raise ValueError("each person must be an object")
        parsed.append(
            LivePersonFrame(
                _index(person.get("track_id"), "track_id", 2**31),
                frame_index,
                _vector(person.get("pose"), 72, "pose"),
                _vector(person.get("betas"), 10, "betas"),
                _vector(person.get("trans_cam_m"), 3, "trans_cam_m"),
            )
        )
        value = person.get("latency_s")
        if isinstance(value, (int, float)) and math.isfinite(value):
            latency = float(value)
    return LiveFrameMessage(frame_index, tuple(parsed), latency)


@dataclass
class LiveTake:
    """A recording: per track, the frames it was seen in and its pose, betas and root translation."""

    frame_ids: dict[int, list[int]] = field(default_factory=dict)
    pose: dict[int, list[np.ndarray]] = field(default_factory=dict)
    betas: dict[int, list[np.ndarray]] = field(default_factory=dict)
    trans_cam_m: dict[int, list[np.ndarray]] = field(default_factory=dict)
    rows: int = 0

    def add(self, frame: LiveFrameMessage) -> bool:
        """False once the recording is full (it then keeps what it has)."""
        if self.rows + len(frame.people) > MAX_RECORDED_FRAMES:
            return False
        for p in frame.people:
            self.frame_ids.setdefault(p.track_id, []).append(p.frame_index)
            self.pose.setdefault(p.track_id, []).append(p.pose)
            self.betas.setdefault(p.track_id, []).append(p.betas)
            self.trans_cam_m.setdefault(p.track_id, []).append(p.trans_cam_m)
        self.rows += len(frame.people)
        return True

    @property
    def track_ids(self) -> list[int]:
        return sorted(self.frame_ids)


class LiveConnection:
    """One live session on the server, followed by a worker thread."""

    def __init__(self, client: ServerClient):
        self.client = client
        self.live_id: str | None = None
        self.state = "idle"  # idle | connecting | streaming | ended | lost | failed
        self.error: str | None = None
        self.frames_received = 0
        self.bad_messages = 0
        self.server_stats: dict = {}
        self._latest: LiveFrameMessage | None = None
        self._take: LiveTake | None = None
        self._lock = threading.Lock()
        self._ws: WebSocket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

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
        """Stop the session on the server and close the stream; the recording is kept."""
        self._stopping = True
        if self.live_id is not None:
            try:
                self.client.stop_live(self.live_id)
            except VibeError:
                pass
        if self._ws is not None:
            self._ws.close()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def take_latest(self) -> LiveFrameMessage | None:
        """The newest frame not taken yet (older ones were superseded: the view shows the newest)."""
        with self._lock:
            frame, self._latest = self._latest, None
        return frame

    def recording_start(self) -> None:
        with self._lock:
            self._take = LiveTake()

    def recording_stop(self) -> LiveTake | None:
        with self._lock:
            take, self._take = self._take, None
        return take

    @property
    def recording(self) -> bool:
        return self._take is not None

    # -- the worker thread ---------------------------------------------------------------------
    def _run(self, source: str, params: dict) -> None:
        try:
            answer = self.client.start_live(source, params)
            live_id = answer.get("live_id") if isinstance(answer, dict) else None
            if not isinstance(live_id, str) or not JOB_ID_PATTERN.fullmatch(live_id):  # same format as jobs
                raise VibeError("The server's answer to the live request has no valid session id.")
            self.live_id = live_id
            self._ws = self.client.open_live_stream(live_id)
            self.state = "streaming"
            self._receive()
        except VibeError as err:
            self.state, self.error = "failed", str(err)

    def _receive(self) -> None:
        while True:
            try:
                text = self._ws.recv_text()
            except (WebSocketClosed, OSError, VibeError) as err:
                if self.state == "streaming":
                    self.state = "ended" if self._stopping else "lost"
                    if not self._stopping:
                        self.error = f"The connection to the server was lost ({err}); the recording so far is kept."
                return
            try:
                message = safe_json.loads(text)
                kind = message.get("type") if isinstance(message, dict) else None
                if kind == "end":
                    self.state = "ended"
                    if isinstance(message.get("error"), str):
                        self.error = message["error"][:500]
                    return
                if kind != "frame":
                    raise ValueError("unknown message type")
                frame = parse_frame_message(message)
                if isinstance(message.get("stats"), dict):
                    self.server_stats = {
                        k: v
                        for k, v in message["stats"].items()
                        if isinstance(k, str) and isinstance(v, (int, float, type(None)))
                    }
            except ValueError:  # garbled, or nested deep enough to exhaust the parser (safe_json)
                self.bad_messages += 1
                continue
            with self._lock:
                self._latest = frame
                self.frames_received += 1
                if self._take is not None and not self._take.add(frame):
                    self.error = "The recording reached its size limit; it keeps what it has."

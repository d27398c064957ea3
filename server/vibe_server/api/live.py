"""Live sessions of the server: one source read by one thread, results fanned out to WebSocket clients.

``LiveManager.start(source, options)`` opens the source (camera, loopback stream or paced file) and
runs ``pipeline.live.run_live`` in a worker thread. Every processed frame becomes one JSON message,
handed to each subscriber's bounded queue on the event loop: a subscriber that reads slower than
the frames come loses its oldest messages (counted in ``dropped_for_client``), so no client can make
the server hold more than ``SUBSCRIBER_QUEUE`` messages for it. One live session runs at a time.
A lossless replay (every frame of a file) begins once its first viewer follows: the frames it would
have processed before the viewer's WebSocket opened would be lost to it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vibe_blender.core.errors import VibeError
from vibe_blender.core.server_stop import LIVE_SESSION_STOP_S, SOURCE_RELEASE_S

from ..pipeline.live_source import open_live_source
from .client_text import without_data_folder

if TYPE_CHECKING:
    from ..pipeline.engine import Engine
    from ..pipeline.live import LiveOptions

log = logging.getLogger("vibe_server.api")
SUBSCRIBER_QUEUE = 32  # messages held per WebSocket client at most
MAX_SUBSCRIBERS = 8
# A session nobody watches stops by itself after this long (a client that lost its connection, or
# never connected, leaves no camera running and no session blocking the next start).
UNWATCHED_STOP_S = 30.0
FIRST_VIEWER_POLL_S = 0.1  # how often a lossless replay waiting for its first viewer checks for a stop
INTERNAL_ERROR_MESSAGE = (
    "The live session failed on an internal error of the server; see the server log, and report it if it repeats."
)


class LiveServerStopping(VibeError):
    """The server is stopping: no live session starts any more."""


class LiveSessionRunning(VibeError):
    """A live session was asked to start while another one runs (one at a time)."""


class LiveSourceUnopened(VibeError):
    """The session's source did not open (missing, unreadable, not a video, a camera or stream that
    does not answer); the message says why (a client naming a file gets one answer for all: the route)."""


@dataclass
class Subscriber:
    queue: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    dropped: int = 0

    def offer(self, message: dict) -> None:
        """On the event loop: queue the message, dropping the oldest when the client lags."""
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait({**message, "dropped_for_client": self.dropped})


@dataclass
class LiveRun:
    live_id: str
    source_name: str
    status: str = "starting"  # starting | running | stopped | ended | failed
    error: str | None = None
    warnings: list[str] = field(default_factory=list)  # what the user should know, e.g. YOLO fell back to HOG
    stats: dict = field(default_factory=dict)
    created_s: float = field(default_factory=time.time)
    subscribers: list[Subscriber] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    unwatched_since_s: float | None = field(default_factory=time.monotonic)  # None while someone watches
    finished: threading.Event = field(default_factory=threading.Event)  # the status is final
    watched: threading.Event = field(default_factory=threading.Event)  # a viewer has followed it

    def subscribe(self, subscriber: Subscriber) -> bool:
        """Add a viewer; False when the session already has MAX_SUBSCRIBERS."""
        with self.lock:
            if len(self.subscribers) >= MAX_SUBSCRIBERS:
                return False
            self.subscribers.append(subscriber)
            self.unwatched_since_s = None
            self.watched.set()
            return True

    def wait_until_released(self) -> None:
        """Wait (a bounded time) until a stopped session's reader has released its source."""
        if self.thread is not None:
            self.thread.join(SOURCE_RELEASE_S)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self.lock:
            self.subscribers.remove(subscriber)
            if not self.subscribers:
                self.unwatched_since_s = time.monotonic()

    def unwatched_too_long(self) -> bool:
        since = self.unwatched_since_s
        return since is not None and time.monotonic() - since > UNWATCHED_STOP_S

    def public(self) -> dict:
        return {
            "live_id": self.live_id,
            "status": self.status,
            "source": self.source_name,
            "error": self.error,
            "warnings": self.warnings,
            "stats": self.stats,
            "clients": len(self.subscribers),
        }

    def publish(self, message: dict) -> None:
        """From the worker thread: hand the message to every subscriber's loop."""
        with self.lock:
            subscribers = list(self.subscribers)
        for sub in subscribers:
            try:
                sub.loop.call_soon_threadsafe(sub.offer, message)
            except RuntimeError:  # that client's loop is closed: it is gone
                pass


class LiveManager:
    """The server's live sessions (engine shared with the job worker; torch inference is thread-safe)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.runs: dict[str, LiveRun] = {}
        self._lock = threading.Lock()
        self._closed = False  # the server is stopping (stop_all)

    def client_text(self, text: str) -> str:
        """``text`` for the clients: the model data folder in words (``client_text.py``)."""
        return without_data_folder(text, getattr(self.engine, "data_dir", None))

    def active(self) -> LiveRun | None:
        return next((r for r in self.runs.values() if r.status in ("starting", "running")), None)

    def start(
        self, source_spec: str, options: LiveOptions, *, lossless: bool = False, max_frames: int | None = None
    ) -> LiveRun:
        from ..pipeline.live import LiveSession  # start-up: OpenCV loads with the first live session, not with the API

        with self._lock:
            if self._closed:
                raise LiveServerStopping("The server is stopping; start the live session again once it runs.")
            running = self.active()
            if running is not None:
                raise LiveSessionRunning(
                    f"A live session is already running ('{running.live_id}'); stop it first "
                    f"(POST /live/{running.live_id}/stop), or wait: a session nobody watches stops "
                    f"after {UNWATCHED_STOP_S:.0f} s."
                )
            for run in self.runs.values():  # a stopped session may still be releasing its camera
                run.wait_until_released()
            try:
                source = open_live_source(source_spec, lossless=lossless)
            except (VibeError, OSError, ValueError) as err:  # (OSError, ValueError: a path the OS refuses)
                raise LiveSourceUnopened(str(err)) from err
            try:
                session = LiveSession(self.engine, options, width=source.info.width, height=source.info.height)
            except BaseException:  # e.g. the YOLO weights are missing: the camera is free again at once
                source.discard()
                raise
            run = LiveRun(
                live_id=secrets.token_hex(8),
                source_name=source.info.name,
                warnings=[self.client_text(warning) for warning in session.warnings],
            )
            self.runs = {k: v for k, v in self.runs.items() if v.status in ("starting", "running")}
            self.runs[run.live_id] = run
        run.thread = threading.Thread(
            target=self._work, args=(run, source, session, max_frames), daemon=True, name=f"vibe-live-{run.live_id}"
        )
        run.thread.start()
        return run

    def stop(self, run: LiveRun, timeout_s: float = LIVE_SESSION_STOP_S) -> None:
        """Ask the session to stop and wait until it has (its status is final then, even while a
        stalled source is still being released)."""
        run.stop_event.set()
        run.finished.wait(timeout_s)

    def stop_all(self) -> None:
        """At the server's stop: stop every session and wait (a bounded time) until it has released
        its source, so that no reader is still inside OpenCV when the process exits (that aborts it).
        A start under way (opening its source) is waited for, then stopped too; none starts after."""
        with self._lock:
            self._closed = True
            runs = list(self.runs.values())
        for run in runs:
            self.stop(run)
            run.wait_until_released()

    def _work(self, run: LiveRun, source, session, max_frames: int | None) -> None:
        from ..pipeline.live import run_live  # start-up: OpenCV loads with the first live session, not with the API

        def take_new_warnings() -> None:  # those the session adds as it runs (a file cut short, people left out)
            if len(session.warnings) > len(run.warnings):  # (run.warnings began as the session's, one for one)
                run.warnings = run.warnings + [self.client_text(w) for w in session.warnings[len(run.warnings) :]]

        def on_frame(frame, people, stats) -> None:
            take_new_warnings()
            run.stats = stats.to_json()
            run.publish(
                {
                    "type": "frame",
                    "frame_index": frame.index,
                    "frame_time_s": frame.time_s,
                    "people": [p.to_json() for p in people],
                    "stats": run.stats,
                }
            )

        def should_stop() -> bool:
            if run.unwatched_too_long() and not run.stop_event.is_set():
                run.error = f"Stopped: nobody watched this session for {UNWATCHED_STOP_S:.0f} s."
                run.stop_event.set()
            return run.stop_event.is_set()

        if source.lossless:  # every frame for its viewers: the replay begins ("running") once the first one follows
            while not run.watched.wait(FIRST_VIEWER_POLL_S) and not should_stop():
                pass
            if run.stop_event.is_set():  # stopped first: the file is released unread
                run.status = "stopped"
                self._finish(run)  # final first, as below: whatever the release does, the session has ended
                source.discard()
                return
        run.status = "running"
        source.start()
        try:
            try:
                stats = run_live(source, session, on_frame=on_frame, should_stop=should_stop, max_frames=max_frames)
                run.stats = stats.to_json()
                run.status = "stopped" if run.stop_event.is_set() else "ended"
            except VibeError as err:
                run.status, run.error = "failed", self.client_text(str(err))
            except Exception:  # never let the worker die silently (its text may name the server's files)
                log.exception("live session %s failed", run.live_id)
                run.status, run.error = "failed", INTERNAL_ERROR_MESSAGE
            take_new_warnings()
            self._finish(run)  # final before the source is released: a stalled camera read can take seconds
        finally:
            source.stop()

    @staticmethod
    def _finish(run: LiveRun) -> None:
        """The status is final: said to whoever waits for it and to every viewer."""
        run.finished.set()
        end = {"type": "end", "status": run.status, "error": run.error, "stats": run.stats}
        run.publish({**end, "warnings": run.warnings})  # with those the session's end brought (a file cut short)

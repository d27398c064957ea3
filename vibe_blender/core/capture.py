"""One capture: send a video to the server, follow the job, download the result. Runs in a thread.

Blender's UI thread only ever calls :meth:`CaptureJob.snapshot` (cheap, under a lock) from a timer
and imports the result once the state is ``done``; all network I/O happens in the worker thread.
:meth:`CaptureJob.run` is the thread body and can be called directly (tests, scripts).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .client import (
    AnswerTooSlow,
    Cancelled,
    InvalidAnswer,
    LocalPathRefused,
    ServerClient,
    ServerUnreachable,
    is_loopback_url,
)
from .errors import VibeError
from .model_data import load_served_body_model
from .regular_file import open_user_file
from .smpl_model import BodyModel

# The states a job ends in; before them it is connecting, uploading, queued, running or downloading.
FINAL_STATES = ("done", "failed", "cancelled")
CANCEL_TIMEOUT_S = 0.8  # a cancel must not wait on a slow server for longer than this
# How long a job's status may go unanswered before the capture gives up: a job takes minutes, and one
# slow answer or a moment without Wi-Fi must not lose it. Between tries the worker waits this long.
POLL_OUTAGE_S = 60.0
POLL_RETRY_WAIT_S = 2.0


@dataclass(frozen=True)
class CaptureStatus:
    state: str = "connecting"
    progress: float = 0.0  # 0..1 of the current state (upload, then the server's job)
    stage: str | None = None  # the server's stage: decode, detect, track, ...
    message: str = "Connecting to the server"
    job_id: str | None = None
    eta_s: float | None = None
    result_path: Path | None = None
    body_model_path: Path | None = None
    body_model: BodyModel | None = None  # the one at body_model_path, read once for the import (then let go)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


class CaptureJob:
    """video_path -> result .npz in out_dir (plus the server's body model at body_model_path).

    Local file names are made here, never from what the server sends: the result is
    ``<video stem>_<random>.npz`` in out_dir."""

    def __init__(
        self,
        client: ServerClient | None,
        video_path: str | Path,
        out_dir: str | Path,
        *,
        body_model_path: str | Path,
        params: dict | None = None,
        upload: bool | None = None,
        poll_interval_s: float = 0.5,
        connect: Callable[[], ServerClient] | None = None,
        explain_lost_server: Callable[[str], str | None] | None = None,
    ):
        """connect: instead of ``client``, called first in the worker to get one (the add-on uses it to
        start its local server when none answers); it may block. explain_lost_server(url): when the
        server at ``url`` can no longer be reached, a better message than the client's, or None (the
        add-on says its own server stopped, and where its reason is shown)."""
        if client is None and connect is None:
            raise ValueError("CaptureJob needs a client or a connect function")
        self.client, self._connect = client, connect
        self._explain_lost_server = explain_lost_server
        self.video_path = Path(video_path)
        self.out_dir = Path(out_dir)
        self.result_path = self.out_dir / local_result_name(self.video_path)
        self.body_model_path = Path(body_model_path)
        self.params = dict(params or {})
        self.upload = upload  # None: decided once the server is known (see _decide_upload)
        self.poll_interval_s = poll_interval_s
        self._status = CaptureStatus()
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._server_job_id: str | None = None  # kept apart from the status, which a cancel freezes

    # ---------------------------------------------------------------- UI-thread side
    def start(self) -> CaptureJob:
        self._thread = threading.Thread(target=self.run, name="vibe-mocap-capture", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop now: the state turns 'cancelled' at once, the request in flight is aborted (but for a
        submission sent whole, whose answer names the job), and the worker then asks the server to
        cancel its job (waiting at most CANCEL_TIMEOUT_S for it)."""
        self._cancel.set()
        if self.client is not None:
            self.client.interrupt()
        self._set(state="cancelled", message="Capture cancelled.")

    def snapshot(self) -> CaptureStatus:
        with self._lock:
            return self._status

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def release_body_model(self) -> None:
        """Let go of the status's body model once the import has used it: tens of MB that the last
        capture kept alive until the next one (the file at body_model_path stays)."""
        with self._lock:
            self._status = replace(self._status, body_model=None)

    # ---------------------------------------------------------------- worker side
    def _set(self, **changes) -> None:
        with self._lock:
            if self._status.finished:  # a cancel from the UI is final: later news is dropped
                return
            self._status = replace(self._status, **changes)

    def run(self) -> CaptureStatus:
        try:
            self._send_follow_and_download()
        except Cancelled:
            self._cancel_on_server()
        except (ServerUnreachable, InvalidAnswer, AnswerTooSlow) as err:  # (cut off: its server was killed)
            self._set(state="failed", message=self._lost_server_message() or str(err))
            self._delete_server_job()  # a server that answers again frees its worker for the next capture
        except VibeError as err:
            self._set(state="failed", message=str(err))
        except Exception as err:  # the thread must never die silently: show what broke
            self._set(state="failed", message=f"Unexpected error during the capture: {err!r}. Please report it.")
        return self.snapshot()

    def _stop_requested(self) -> bool:
        return self._cancel.is_set()

    def _lost_server_message(self) -> str | None:
        """What ``explain_lost_server`` says of the client's server (None: nothing better to say)."""
        if self.client is None or self._explain_lost_server is None:
            return None
        return self._explain_lost_server(self.client.base_url)

    def _job_record(self, job_id: str) -> dict:
        """The job's record from the server, asked again while the server does not answer, for up to
        POLL_OUTAGE_S (at once when the add-on's own server is gone: it will not answer again)."""
        stop = self._stop_requested
        outage_since = None
        while True:
            try:
                return self.client.job(job_id, should_stop=stop)
            except (ServerUnreachable, AnswerTooSlow):
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since >= POLL_OUTAGE_S or self._lost_server_message():
                    raise
                self._set(message=f"The server does not answer; asking again for up to {POLL_OUTAGE_S:g} s")
                self._cancel.wait(POLL_RETRY_WAIT_S)
                if stop():
                    raise Cancelled() from None

    def _send_follow_and_download(self) -> None:
        open_user_file(self.video_path, "the video", "Choose a video file.").close()  # before any server work
        stop = self._stop_requested
        if self._connect is not None:
            self._set(
                state="connecting", message="Connecting to the server (starting one on this machine if none runs)"
            )
            self.client = self._connect()
            if stop():
                raise Cancelled()
        if self.upload is None:  # send the path when the server runs on this machine, else upload
            self.upload = not is_loopback_url(self.client.base_url)
        info = self.client.health(should_stop=stop)
        job = None
        if not self.upload:
            try:
                job = self.client.submit_local(self.video_path, self.params, should_stop=stop)
            except LocalPathRefused:
                self.upload = True  # the server cannot see this machine's files: upload instead
        if job is None:
            self._set(state="uploading", message=f"Uploading {self.video_path.name} to {info['device']}")
            job = self.client.submit_upload(
                self.video_path,
                self.params,
                should_stop=stop,
                on_progress=lambda p: self._set(progress=min(max(p, 0.0), 1.0)),
            )
        job_id = self._server_job_id = job["job_id"]
        self._set(job_id=job_id, state="queued", progress=0.0, message="Waiting in the server's queue")
        while True:
            if stop():
                raise Cancelled()
            job = self._job_record(job_id)
            status = job["status"]
            if status == "done":
                break
            if status == "failed":
                raise VibeError(f"The capture failed on the server: {job['error'] or 'no reason given'}")
            if status == "cancelled":
                self._set(state="cancelled", message="The job was cancelled on the server.")
                return
            stage = job["stage"]
            self._set(
                state=status,
                stage=stage,
                progress=job["progress"],
                eta_s=job["eta_s"],
                message=(stage or status).capitalize(),
            )
            self._cancel.wait(self.poll_interval_s)
        self._set(state="downloading", stage=None, progress=1.0, message="Downloading the result")
        result = self.client.download_result(job_id, self.result_path, should_stop=stop)
        self._set(result_path=result)
        try:
            body_model = load_served_body_model(self.client, self.body_model_path, should_stop=stop)
        except VibeError as err:  # the result is saved: say where, and how to import it without the server
            raise VibeError(
                f"{str(err).rstrip('.')}. The captured result is saved in '{result}': import it with "
                "File > Import > VIBE Mocap once the model-data folder (with SMPL_NEUTRAL.pkl) is set in "
                "the add-on's preferences."
            ) from None
        self._set(
            state="done",
            result_path=result,
            body_model_path=self.body_model_path,
            body_model=body_model,
            message=f"Captured {job['num_tracks'] or 0} person(s) from {self.video_path.name}",
        )

    def _cancel_on_server(self) -> None:
        self._delete_server_job()
        self._set(state="cancelled", message="Capture cancelled.")

    def _delete_server_job(self) -> None:
        """Ask the server to cancel the job this capture made, if any, waiting at most CANCEL_TIMEOUT_S."""
        job_id = self._server_job_id
        if job_id:
            quick = ServerClient(self.client.base_url, self.client.token, timeout_s=CANCEL_TIMEOUT_S)
            try:
                quick.cancel(job_id)
            except VibeError:
                pass  # the server may be gone or slow; the local job ends regardless


def local_result_name(video_path: Path) -> str:
    """'<video stem>_<8 random hex>.npz', letters, digits, '-' and '_' only (at most 80 characters)."""
    stem = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in video_path.stem)[:64]
    return f"{stem or 'capture'}_{uuid.uuid4().hex[:8]}.npz"

"""One capture: send a video to the server, follow the job, download the result. Runs in a thread.

Blender's UI thread only ever calls :meth:`CaptureJob.snapshot` (cheap, under a lock) from a timer
and imports the result once the state is ``done``; all network I/O happens in the worker thread.
:meth:`CaptureJob.run` is the thread body and can be called directly (tests, scripts).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .client import Cancelled, ServerClient, is_loopback_url
from .errors import VibeError

# Job states as the panel shows them; the last three are final.
ACTIVE_STATES = ("connecting", "uploading", "queued", "running", "downloading")
FINAL_STATES = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class CaptureStatus:
    state: str = "connecting"
    progress: float = 0.0            # 0..1 of the current state (upload, then the server's job)
    stage: str | None = None         # the server's stage: decode, detect, track, ...
    message: str = "Connecting to the server"
    job_id: str | None = None
    eta_s: float | None = None
    result_path: Path | None = None
    body_model_path: Path | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


class CaptureJob:
    """video_path -> result .npz in out_dir (plus the server's body model at body_model_path)."""

    def __init__(self, client: ServerClient, video_path: str | Path, out_dir: str | Path, *,
                 body_model_path: str | Path, params: dict | None = None, upload: bool | None = None,
                 poll_interval_s: float = 0.5):
        self.client = client
        self.video_path = Path(video_path)
        self.out_dir = Path(out_dir)
        self.body_model_path = Path(body_model_path)
        self.params = dict(params or {})
        # Send the path when the server runs on this machine; upload the file otherwise.
        self.upload = (not is_loopback_url(client.base_url)) if upload is None else upload
        self.poll_interval_s = poll_interval_s
        self._status = CaptureStatus()
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- UI-thread side
    def start(self) -> "CaptureJob":
        self._thread = threading.Thread(target=self.run, name="vibe-mocap-capture", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the worker to stop; it cancels the server job and ends in state 'cancelled'."""
        self._cancel.set()

    def snapshot(self) -> CaptureStatus:
        with self._lock:
            return self._status

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ---------------------------------------------------------------- worker side
    def _set(self, **changes) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def run(self) -> CaptureStatus:
        try:
            self._run()
        except Cancelled:
            self._cancel_on_server()
        except VibeError as err:
            self._set(state="failed", message=str(err))
        except Exception as err:        # the thread must never die silently: show what broke
            self._set(state="failed", message=f"Unexpected error during the capture: {err!r}. Please report it.")
        return self.snapshot()

    def _stop_requested(self) -> bool:
        return self._cancel.is_set()

    def _run(self) -> None:
        if not self.video_path.is_file():
            raise VibeError(f"The video '{self.video_path}' does not exist; choose a video file.")
        info = self.client.health()
        if self._stop_requested():
            raise Cancelled()
        job = None
        if not self.upload:
            try:
                job = self.client.submit_local(self.video_path, self.params)
            except VibeError as err:
                # The server may not see this machine's files (another user, a container): upload instead.
                if getattr(err, "http_status", None) == 401:
                    raise
                self.upload = True
        if job is None:
            self._set(state="uploading", message=f"Uploading {self.video_path.name} to {info.get('device', 'the server')}")
            job = self.client.submit_upload(self.video_path, self.params, should_stop=self._stop_requested,
                                            on_progress=lambda p: self._set(progress=p))
        job_id = job["job_id"]
        self._set(job_id=job_id, state="queued", progress=0.0, message="Waiting in the server's queue")
        while True:
            if self._stop_requested():
                raise Cancelled()
            job = self.client.job(job_id)
            status = job.get("status")
            if status == "done":
                break
            if status == "failed":
                raise VibeError(f"The capture failed on the server: {job.get('error') or 'no reason given'}")
            if status == "cancelled":
                self._set(state="cancelled", message="The job was cancelled on the server.")
                return
            stage = job.get("stage")
            self._set(state=status if status in ACTIVE_STATES else "running", stage=stage,
                      progress=float(job.get("progress") or 0.0), eta_s=job.get("eta_s"),
                      message=f"{(stage or status or 'working').capitalize()}")
            time.sleep(self.poll_interval_s)
        self._set(state="downloading", stage=None, progress=1.0, message="Downloading the result")
        result = self.client.download_result(job_id, self.out_dir / f"{job_id}.npz", should_stop=self._stop_requested)
        if not self.body_model_path.is_file():
            self.client.download_body_model(self.body_model_path, should_stop=self._stop_requested)
        self._set(state="done", result_path=result, body_model_path=self.body_model_path,
                  message=f"Captured {job.get('num_tracks') or 0} person(s) from {self.video_path.name}")

    def _cancel_on_server(self) -> None:
        job_id = self.snapshot().job_id
        if job_id:
            try:
                self.client.cancel(job_id)
            except VibeError:
                pass                     # the server may be gone; the local job is cancelled regardless
        self._set(state="cancelled", message="Capture cancelled.")

"""The job store (on disk) and the workers that run jobs: one per engine (one engine per visible GPU,
or one on the CPU; see ``pipeline/devices.py``), all taking jobs from one queue.

Layout: ``jobs_dir/<job_id>/job.json`` (the record), ``input.video`` (an uploaded video, deleted
when the job ends; a fixed name, so the client's file name never picks FFmpeg's demuxer),
``result.npz`` (written to a temporary name and renamed, so a result is either whole or absent)
and ``vibe_output.pkl`` (the official layout, made on first request).
Finished results survive a restart; a job interrupted by a clean shutdown is queued again, as queued
ones are; one whose record still says running (the server was killed or crashed) is marked failed. A
failing job only ever touches its own folder.

Limits: at most ``max_queued_jobs`` jobs queued, running or being submitted (``JobsFull``), and at
most ``max_queued_upload_bytes`` of uploads held for them, counted while the bytes arrive
(``UploadSpaceFull``).
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import save_result

from ..pipeline.options import RunOptions
from ..pipeline.progress import JobCancelled
from .schemas import Job, JobParams

log = logging.getLogger("vibe_server.jobs")

RECORD_NAME, RESULT_NAME, PKL_NAME, UPLOAD_NAME = "job.json", "result.npz", "vibe_output.pkl", "input.video"
FINAL_STATES = ("done", "failed", "cancelled")
WAITING_STATES = ("queued", "running")


class JobsFull(VibeError):
    """Too many jobs waiting (answered 429)."""


class UploadSpaceFull(VibeError):
    """The uploads of waiting jobs hold the whole upload budget (answered 507)."""


@dataclass
class Admission:
    """One job being submitted: holds a queue slot, and the upload bytes reserved so far."""

    upload_bytes: int = 0


@dataclass
class JobRecord:
    job: Job
    input_path: Path
    input_owned: bool  # uploaded (ours to delete) or a local file (never deleted)
    params: JobParams
    input_bytes: int = 0  # size of an uploaded input (counts against the upload budget)
    cancel: threading.Event = field(default_factory=threading.Event)


def params_to_options(params: JobParams) -> RunOptions:
    """The HTTP params -> the pipeline's options (the same names; HTTP-less options at their defaults)."""
    return RunOptions(**params.model_dump())


class JobManager:
    """Owns the records and the worker threads. ``engines``: one per device, each runs videos
    (``Engine.run``) on its own worker thread; with none (model data missing) the records and
    results are still served, and nothing runs."""

    def __init__(
        self, jobs_dir: Path, engines, *, max_queued_jobs: int = 16, max_queued_upload_bytes: int = 8 * 1024**3
    ):
        self.jobs_dir = Path(jobs_dir)
        self.jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.engines = list(engines)
        self.max_queued_jobs, self.max_queued_upload_bytes = max_queued_jobs, max_queued_upload_bytes
        self._admissions: list[Admission] = []  # submissions in progress
        self._records: dict[str, JobRecord] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._load_existing()

    # -- persistence ---------------------------------------------------------------------------
    def folder(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def result_path(self, job_id: str) -> Path:
        return self.folder(job_id) / RESULT_NAME

    def pkl_path(self, job_id: str) -> Path:
        return self.folder(job_id) / PKL_NAME

    def _save(self, record: JobRecord) -> None:
        data = {
            "job": record.job.model_dump(),
            "input_path": str(record.input_path),
            "input_owned": record.input_owned,
            "params": record.params.model_dump(),
        }
        folder = self.folder(record.job.job_id)
        if not folder.is_dir():  # deleted meanwhile: nothing to keep
            return
        path = folder / RECORD_NAME
        tmp = path.with_suffix(".json.part")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)

    def _load_existing(self) -> None:
        for path in sorted(self.jobs_dir.glob(f"*/{RECORD_NAME}")):
            try:
                data = json.loads(path.read_text())
                record = JobRecord(
                    job=Job(**data["job"]),
                    input_path=Path(data["input_path"]),
                    input_owned=bool(data["input_owned"]),
                    params=JobParams(**data["params"]),
                )
                if record.input_owned and record.input_path.is_file():
                    record.input_bytes = record.input_path.stat().st_size
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("ignoring damaged job record %s: %s", path, err)
                continue
            job = record.job
            if job.status == "running":
                self._finish(
                    record,
                    "failed",
                    error="The server stopped while this job was running; submit the video again.",
                    save=False,
                )
            elif job.status == "done" and not self.result_path(job.job_id).is_file():
                self._finish(
                    record, "failed", error="The result file of this job is gone; submit the video again.", save=False
                )
            elif job.status == "queued" and not record.input_path.is_file():
                self._finish(
                    record, "failed", error="The input video of this job is gone; submit it again.", save=False
                )
            self._records[job.job_id] = record
            self._save(record)
            if job.status == "queued":
                self._queue.put(job.job_id)

    # -- the public operations -----------------------------------------------------------------
    def new_job_folder(self) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex[:16]
        folder = self.folder(job_id)
        folder.mkdir(parents=True, mode=0o700)  # the user's footage and motion: no other account reads them
        return job_id, folder

    @contextmanager
    def admission(self) -> Iterator[Admission]:
        """Hold a queue slot while a job is submitted; JobsFull when none is free. Submit the job
        inside the ``with`` block (it then counts as queued)."""
        with self._lock:
            waiting = sum(r.job.status in WAITING_STATES for r in self._records.values()) + len(self._admissions)
            if waiting >= self.max_queued_jobs:
                raise JobsFull(
                    f"The server already has {waiting} jobs waiting (its limit is {self.max_queued_jobs}); "
                    "wait for some to finish, or cancel some, then submit again."
                )
            admission = Admission()
            self._admissions.append(admission)
        try:
            yield admission
        finally:
            with self._lock:
                self._admissions.remove(admission)

    def reserve_upload_bytes(self, admission: Admission, num_bytes: int) -> None:
        """Count num_bytes more of an upload against the budget; UploadSpaceFull when it is spent."""
        with self._lock:
            held = sum(
                r.input_bytes for r in self._records.values() if r.input_owned and r.job.status in WAITING_STATES
            )
            held += sum(a.upload_bytes for a in self._admissions)
            if held + num_bytes > self.max_queued_upload_bytes:
                raise UploadSpaceFull(
                    f"The uploads of the jobs waiting on this server already fill its upload space "
                    f"({self.max_queued_upload_bytes / 1024**2:.0f} MiB); wait for some jobs to finish, then "
                    "submit again."
                )
            admission.upload_bytes += num_bytes

    def submit(
        self,
        job_id: str,
        *,
        video_name: str,
        input_path: Path,
        input_owned: bool,
        params: JobParams,
        input_bytes: int = 0,
    ) -> Job:
        job = Job(
            job_id=job_id,
            status="queued",
            video_name=video_name,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        record = JobRecord(
            job=job, input_path=Path(input_path), input_owned=input_owned, params=params, input_bytes=input_bytes
        )
        with self._lock:
            self._records[job_id] = record
            self._save(record)
        self._queue.put(job_id)
        return job.model_copy()

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            record = self._records.get(job_id)
            return record.job.model_copy() if record else None

    def list(self) -> list[Job]:
        with self._lock:
            return sorted((r.job.model_copy() for r in self._records.values()), key=lambda j: j.created)

    def queue_length(self) -> int:
        with self._lock:
            return sum(r.job.status in WAITING_STATES for r in self._records.values())

    def delete(self, job_id: str) -> Job | None:
        """Cancel a queued/running job (its record stays, status 'cancelled'); a finished one is
        removed with its result. Returns the job as it stands after the call."""
        with self._lock:
            record = self._records.get(job_id)
            if record is None:
                return None
            if record.job.status in ("queued", "running"):
                record.cancel.set()
                if record.job.status == "queued":
                    self._finish(record, "cancelled")
                else:
                    record.job.status, record.job.eta_s = "cancelled", None
                    self._save(record)
                return record.job.model_copy()
            del self._records[job_id]
        shutil.rmtree(self.folder(job_id), ignore_errors=True)
        return record.job.model_copy()

    # -- the worker ----------------------------------------------------------------------------
    def start(self) -> None:
        """One worker thread per engine (torch releases the GIL while a device computes)."""
        for i, engine in enumerate(self.engines):
            worker = threading.Thread(target=self._work, args=(engine,), name=f"vibe-worker-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the workers; jobs they were running go back to the queue (they run after a restart)."""
        self._stopping.set()
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout_s)

    def _work(self, engine) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._lock:
                record = self._records.get(job_id)
                if record is None or record.job.status != "queued":
                    continue
                record.job.status, record.job.stage, record.job.progress = "running", "decode", 0.0
                self._save(record)
            try:
                self._run_job(record, engine)
            except Exception:  # never let the worker die
                log.exception("job %s crashed", job_id)
                with self._lock:
                    self._finish(
                        record,
                        "failed",
                        error="The server hit an internal error on this video; "
                        "see the server log, and report it if it repeats.",
                    )

    def _run_job(self, record: JobRecord, engine) -> None:
        """Run one job on ``engine`` and record how it ended (done, failed, cancelled or queued again)."""
        job_id = record.job.job_id

        def progress(stage: str, fraction: float, eta_s: float | None) -> None:
            with self._lock:
                if record.job.status == "running":
                    record.job.stage, record.job.progress, record.job.eta_s = stage, round(fraction, 4), eta_s

        result_tmp = self.result_path(job_id).with_suffix(".npz.part")
        try:
            output = engine.run(
                record.input_path,
                params_to_options(record.params),
                progress=progress,
                should_cancel=lambda: record.cancel.is_set() or self._stopping.is_set(),
                video_name=record.job.video_name,
            )
            _save_npz(result_tmp, output.result)
        except JobCancelled:
            result_tmp.unlink(missing_ok=True)
            with self._lock:
                if record.cancel.is_set():
                    self._finish(record, "cancelled")
                else:  # server shutdown: run it next time
                    record.job.status, record.job.stage, record.job.progress, record.job.eta_s = (
                        "queued",
                        None,
                        0.0,
                        None,
                    )
                    self._save(record)
            return
        except VibeError as err:
            result_tmp.unlink(missing_ok=True)
            with self._lock:
                self._finish(record, "failed", error=self._client_message(str(err), record))
            return
        except BaseException:
            result_tmp.unlink(missing_ok=True)
            raise
        with self._lock:
            if record.cancel.is_set():  # cancelled while the result was written
                result_tmp.unlink(missing_ok=True)
                self._finish(record, "cancelled")
                return
            result_tmp.replace(self.result_path(job_id))
            record.job.num_tracks = len(output.result.tracks)
            record.job.warnings = [self._client_message(w, record) for w in output.warnings]
            self._finish(record, "done")

    def _client_message(self, text: str, record: JobRecord) -> str:
        """A message names only what the client sent: the upload's own path becomes its file name,
        and no other path of the job store is shown."""
        if record.input_owned:
            text = text.replace(str(record.input_path), record.job.video_name)
        folder = str(self.folder(record.job.job_id))
        return text.replace(folder, "the job folder").replace(str(self.jobs_dir), "the job store")

    def _finish(self, record: JobRecord, status: str, *, error: str | None = None, save: bool = True) -> None:
        """Final state; the caller holds the lock. Uploaded input is deleted (temp files cleaned)."""
        job = record.job
        job.status, job.error, job.eta_s = status, error, None
        if status == "done":
            job.progress, job.stage = 1.0, "write"
        if record.input_owned:
            record.input_path.unlink(missing_ok=True)
        if save:
            self._save(record)


def _save_npz(path: Path, result) -> None:
    """``save_result`` to an explicit file object, so that numpy does not append '.npz' to the name."""
    with open(path, "wb") as f:
        save_result(f, result)

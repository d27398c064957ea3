"""The job store (on disk) and the worker that runs jobs one at a time on the model's device.

Layout: ``jobs_dir/<job_id>/job.json`` (the record), ``input<.ext>`` (an uploaded video, deleted
when the job ends), ``result.npz`` (written to a temporary name and renamed, so a result is either
whole or absent) and ``vibe_output.pkl`` (the official layout, made on first request).
Finished results survive a restart; a job that was running when the server stopped is marked
failed, queued ones are queued again. A failing job only ever touches its own folder.
"""
from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import save_result

from ..pipeline.run import JobCancelled, RunOptions, official_options
from .schemas import Job, JobParams

log = logging.getLogger("vibe_server.jobs")

RECORD_NAME, RESULT_NAME, PKL_NAME = "job.json", "result.npz", "vibe_output.pkl"
FINAL_STATES = ("done", "failed", "cancelled")


@dataclass
class JobRecord:
    job: Job
    input_path: Path
    input_owned: bool                       # uploaded (ours to delete) or a local file (never deleted)
    params: JobParams
    cancel: threading.Event = field(default_factory=threading.Event)


def params_to_options(params: JobParams) -> RunOptions:
    values = params.model_dump()
    values["detector"] = values["detector"] or "auto"
    official = values.pop("official")
    options = RunOptions(**values)
    return official_options(options) if official else options


class JobManager:
    """Owns the records and the worker thread. ``engine`` runs a video (``Engine.run``); without
    one (model data missing) the records and results are still served, and nothing runs."""

    def __init__(self, jobs_dir: Path, engine):
        self.jobs_dir = Path(jobs_dir)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.engine = engine
        self._records: dict[str, JobRecord] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._worker: threading.Thread | None = None
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
        data = {"job": record.job.model_dump(), "input_path": str(record.input_path),
                "input_owned": record.input_owned, "params": record.params.model_dump()}
        folder = self.folder(record.job.job_id)
        if not folder.is_dir():                                  # deleted meanwhile: nothing to keep
            return
        path = folder / RECORD_NAME
        tmp = path.with_suffix(".json.part")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)

    def _load_existing(self) -> None:
        for path in sorted(self.jobs_dir.glob(f"*/{RECORD_NAME}")):
            try:
                data = json.loads(path.read_text())
                record = JobRecord(job=Job(**data["job"]), input_path=Path(data["input_path"]),
                                   input_owned=bool(data["input_owned"]), params=JobParams(**data["params"]))
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("ignoring damaged job record %s: %s", path, err)
                continue
            job = record.job
            if job.status == "running":
                self._finish(record, "failed", error="The server stopped while this job was running; "
                                                     "submit the video again.", save=False)
            elif job.status == "done" and not self.result_path(job.job_id).is_file():
                self._finish(record, "failed", error="The result file of this job is gone; submit the video again.",
                             save=False)
            elif job.status == "queued" and not record.input_path.is_file():
                self._finish(record, "failed", error="The input video of this job is gone; submit it again.",
                             save=False)
            self._records[job.job_id] = record
            self._save(record)
            if job.status == "queued":
                self._queue.put(job.job_id)

    # -- the public operations -----------------------------------------------------------------
    def new_job_folder(self) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex[:16]
        folder = self.folder(job_id)
        folder.mkdir(parents=True)
        return job_id, folder

    def submit(self, job_id: str, *, video_name: str, input_path: Path, input_owned: bool,
               params: JobParams) -> Job:
        job = Job(job_id=job_id, status="queued", video_name=video_name,
                  created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        record = JobRecord(job=job, input_path=Path(input_path), input_owned=input_owned, params=params)
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
            return sum(r.job.status in ("queued", "running") for r in self._records.values())

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
        self._worker = threading.Thread(target=self._work, name="vibe-worker", daemon=True)
        self._worker.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the worker; a job it was running goes back to the queue (it runs after a restart)."""
        self._stopping.set()
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout_s)

    def _work(self) -> None:
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
                self._run(record)
            except Exception:                                   # never let the worker die
                log.exception("job %s crashed", job_id)
                with self._lock:
                    self._finish(record, "failed", error="The server hit an internal error on this video; "
                                                         "see the server log, and report it if it repeats.")

    def _run(self, record: JobRecord) -> None:
        job_id = record.job.job_id

        def progress(stage: str, fraction: float, eta_s: float | None) -> None:
            with self._lock:
                if record.job.status == "running":
                    record.job.stage, record.job.progress, record.job.eta_s = stage, round(fraction, 4), eta_s

        result_tmp = self.result_path(job_id).with_suffix(".npz.part")
        try:
            output = self.engine.run(record.input_path, params_to_options(record.params), progress=progress,
                                     should_cancel=lambda: record.cancel.is_set() or self._stopping.is_set(),
                                     video_name=record.job.video_name)
            _save_npz(result_tmp, output.result)
        except JobCancelled:
            result_tmp.unlink(missing_ok=True)
            with self._lock:
                if record.cancel.is_set():
                    self._finish(record, "cancelled")
                else:                                            # server shutdown: run it next time
                    record.job.status, record.job.stage, record.job.progress, record.job.eta_s = "queued", None, 0.0, None
                    self._save(record)
            return
        except VibeError as err:
            result_tmp.unlink(missing_ok=True)
            with self._lock:
                self._finish(record, "failed", error=str(err))
            return
        except BaseException:
            result_tmp.unlink(missing_ok=True)
            raise
        with self._lock:
            if record.cancel.is_set():                            # cancelled while the result was written
                result_tmp.unlink(missing_ok=True)
                self._finish(record, "cancelled")
                return
            result_tmp.replace(self.result_path(job_id))
            record.job.num_tracks = len(output.result.tracks)
            self._finish(record, "done")

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

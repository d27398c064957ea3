"""The jobs and the workers that run them: one worker per engine (one engine per visible GPU, or one
on the CPU; see ``pipeline/devices.py``), all taking jobs from one queue. The files live in the job
store (``job_store.py``).

The state lives in memory under one lock, held for memory only: a job.json write, an upload's
deletion or any other file work happens outside it, so the routes on the event loop (``/health``,
admissions) never wait for the disk. Each job's record is written by one thread at a time, always
with its newest state, so job.json never goes back to an older one.

Finished results survive a restart; a clean shutdown leaves queued jobs queued and puts the running
ones back in the queue. Their records say queued from the moment the stop begins (:meth:`JobManager.begin_stop`),
so a server killed while it stops runs them after the restart too; a job whose record still says
running (the server was killed or crashed while it ran) is marked failed. A failing job only ever
touches its own folder, and a worker survives any job's failure.

Limits: at most ``max_queued_jobs`` jobs queued, running or being submitted (``JobsFull``), and at
most ``max_queued_upload_bytes`` of uploads held for them, counted while the bytes arrive
(``UploadSpaceFull``). Finished jobs are kept for ``keep_finished_s`` and at most
``keep_finished_jobs`` of them, but the newest ``MIN_KEEP_NEWEST`` each for at least ``MIN_KEEP_S``:
a client fetches a result right after its job ends. A job's ``.pkl``, made on request and about 90
times the size of its result, is kept for the ``KEPT_PKLS`` jobs whose ``.pkl`` was made last only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vibe_blender.core.atomic_file import atomic_write, is_disk_full
from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import save_result
from vibe_blender.core.server_stop import JOB_STOP_S

from ..pipeline.devices import is_out_of_memory, out_of_memory_error
from ..pipeline.options import RunOptions
from ..pipeline.progress import JobCancelled
from . import job_store
from .client_text import without_data_folder
from .job_store import (
    DISK_FULL_MESSAGE,
    FINAL_STATES,
    PKL_NAME,
    RESULT_NAME,
    WAITING_STATES,
    JobRecord,
    record_data,
    write_record,
)
from .schemas import Job, JobParams

log = logging.getLogger("vibe_server.jobs")

MIN_KEEP_S = 3600.0  # each of the newest MIN_KEEP_NEWEST finished jobs stays at least this long...
MIN_KEEP_NEWEST = 16  # ...whatever the retention limits (more in an hour: keep_finished_jobs applies)
KEPT_PKLS = 3  # .pkl files kept for a client that fetches one again (each up to 1.7 GB)
SWEEP_INTERVAL_S = 3600.0  # how often a running server looks for leftovers of a killed one
TIDY_INTERVAL_S = 600.0  # how often an idle server removes finished jobs past the retention limits
REQUEUED = {"stage": None, "progress": 0.0, "eta_s": None}  # where a job put back in the queue starts again
CANCELLED_AT_START = "Cancelled: the server restarted with --cancel-unfinished-jobs; submit the video again."
INTERNAL_ERROR_MESSAGE = (
    "The server hit an internal error on this video; see the server log, and report it if it repeats."
)


class JobsFull(VibeError):
    """Too many jobs waiting (answered 429)."""


class UploadSpaceFull(VibeError):
    """The uploads of waiting jobs hold the whole upload budget (answered 507)."""


@dataclass(eq=False)
class Admission:
    """One job being submitted: holds a queue slot, and the upload bytes reserved so far."""

    upload_bytes: int = 0


def params_to_options(params: JobParams) -> RunOptions:
    """The HTTP params -> the pipeline's options (the same names; HTTP-less options at their defaults)."""
    return RunOptions(**params.model_dump())


def failure_message(err: BaseException) -> str:
    """What a job that failed on ``err`` (not a VibeError) tells the client."""
    if is_disk_full(err):
        return DISK_FULL_MESSAGE
    if is_out_of_memory(err):  # (a run says where; this is anything else on the GPU)
        return str(out_of_memory_error())
    if isinstance(err, OSError):
        return (
            f"The server's disk failed on this job ({err.strerror or type(err).__name__}); "
            "check the disk, then submit the video again."
        )
    return INTERNAL_ERROR_MESSAGE


class JobManager:
    """Owns the records and the worker threads. ``engines``: one per device, each runs videos
    (``Engine.run``) on its own worker thread; with none (model data missing) the records and
    results are still served, and nothing runs."""

    def __init__(
        self,
        jobs_dir: Path,
        engines,
        *,
        max_queued_jobs: int = 16,
        max_queued_upload_bytes: int = 8 * 1024**3,
        keep_finished_s: float = 7 * 24 * 3600.0,
        keep_finished_jobs: int = 200,
        cancel_unfinished: bool = False,
    ):
        self.jobs_dir = job_store.prepare_jobs_dir(jobs_dir)
        self.cancel_unfinished = cancel_unfinished  # queued jobs found at start are cancelled, not run
        self.engines = list(engines)
        self._data_dirs = {engine.data_dir for engine in self.engines if getattr(engine, "data_dir", None)}
        self.max_queued_jobs, self.max_queued_upload_bytes = max_queued_jobs, max_queued_upload_bytes
        self.keep_finished_s, self.keep_finished_jobs = keep_finished_s, keep_finished_jobs
        self._lock = threading.Lock()  # the state below; held for memory only, never for the disk
        self._records: dict[str, JobRecord] = {}
        self._admissions: list[Admission] = []  # submissions in progress
        self._waiting_jobs = 0  # registered jobs queued or running
        self._held_upload_bytes = 0  # uploads of waiting jobs + bytes reserved by admissions
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._discarded: dict[str, float] = {}  # job id -> time.monotonic() of a discarded submission
        self._in_workers: set[JobRecord] = (
            set()
        )  # run by a worker (also once cancelled): it deletes a removed one's folder
        self._tidy_lock = threading.Lock()  # the workers and the retention thread tidy one at a time
        self._next_sweep = 0.0  # time.monotonic() of the next look for leftovers
        self._last_sequence = 0  # of the last job submitted: the next one gets the number after it
        self._load_existing()

    # -- paths ---------------------------------------------------------------------------------
    def folder(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def result_path(self, job_id: str) -> Path:
        return self.folder(job_id) / RESULT_NAME

    def pkl_path(self, job_id: str) -> Path:
        return self.folder(job_id) / PKL_NAME

    def input_path(self, record: JobRecord) -> Path:
        return job_store.input_path(self.folder(record.job.job_id), record)

    # -- the state (the caller holds the lock) -------------------------------------------------
    def _register(self, record: JobRecord) -> None:
        self._records[record.job.job_id] = record
        self._count_waiting(record, +1)

    def _unregister(self, record: JobRecord) -> bool:
        """Forget a job whose folder is to be deleted. -> whether the caller deletes it now (False: a
        worker still runs the job, cancelled, and deletes the folder when it stops: the run may still
        write there)."""
        if self._records.pop(record.job.job_id, None) is record:
            self._count_waiting(record, -1)
        record.removed = True
        return record not in self._in_workers

    def _count_waiting(self, record: JobRecord, sign: int) -> None:
        if record.job.status in WAITING_STATES:
            self._waiting_jobs += sign
            self._held_upload_bytes += sign * (record.input_bytes if record.uploaded else 0)

    def _set_status(self, record: JobRecord, status: str) -> None:
        registered = self._records.get(record.job.job_id) is record
        if registered:
            self._count_waiting(record, -1)
        record.job.status = status
        if registered:
            self._count_waiting(record, +1)

    def _finish(self, record: JobRecord, status: str, *, error: str | None = None) -> None:
        """The final state, in memory (``_end`` writes it and deletes the upload)."""
        self._set_status(record, status)
        job = record.job
        job.error, job.eta_s = error, None
        if status == "done":
            job.progress, job.stage = 1.0, "write"
        record.finished_at = time.time()

    def _requeue(self, record: JobRecord) -> None:
        self._set_status(record, "queued")
        for name, value in REQUEUED.items():
            setattr(record.job, name, value)

    # -- the files (never under the lock) ------------------------------------------------------
    def _persist(self, record: JobRecord) -> None:
        """Write the record's current state to its job.json (OSError when the disk refuses); once the
        stop began, a job still running is written as queued (it runs again after the restart)."""
        with record.write_lock:  # one writer per job, each with the newest state: never an older one last
            with self._lock:
                if record.removed:
                    return
                data = record_data(record)
                if self._stopping.is_set() and record.job.status == "running":
                    data["job"].update(REQUEUED, status="queued")
            write_record(self.folder(record.job.job_id), data)

    def _delete_upload(self, record: JobRecord) -> None:
        if record.uploaded:
            try:
                self.input_path(record).unlink(missing_ok=True)
            except OSError as err:
                log.warning("cannot delete the upload of job %s: %s", record.job.job_id, err)

    def _remove_folder(self, record: JobRecord) -> None:
        """Delete an unregistered job's folder (after any job.json write in progress)."""
        with record.write_lock:
            job_store.remove_folder(self.folder(record.job.job_id))

    def _persist_or_log(self, record: JobRecord) -> None:
        """``_persist`` where the change stands in memory whatever the disk says: a job that stays
        running on disk counts as failed after a restart."""
        try:
            self._persist(record)
        except OSError as err:
            log.error("cannot record that job %s is %s: %s", record.job.job_id, record.job.status, err)

    def _end(
        self, record: JobRecord, status: str, *, error: str | None = None, done: tuple[int, list[str]] | None = None
    ) -> str:
        """The worker's final state: the upload deleted (first, so a client that sees the job ended
        finds it gone; a full disk gets the space back whatever follows), then the state in memory,
        then in job.json. A job its client cancelled ends cancelled, whatever the run said: decided
        under the lock a DELETE takes, so one that came after the worker last looked is never
        written over. ``done``: a done job's tracks and warnings (a
        cancelled job's record says nothing of its run). -> the state it ended in."""
        self._delete_upload(record)
        with self._lock:
            if record.cancel.is_set():
                status, error = "cancelled", None
            elif done is not None:
                record.job.num_tracks, record.job.warnings = done
            if record.job.status != status:  # (a DELETE ended it so already: its time stands)
                self._finish(record, status, error=error)
        self._persist_or_log(record)
        return status

    def _load_existing(self) -> None:
        """The store's jobs at start: interrupted ones marked, queued ones queued in the order they
        were submitted (so the ones that were running, put back at the stop, come first: the queue
        starts jobs in that order) or, with ``cancel_unfinished``, cancelled; old ones removed."""
        records = job_store.load_records(self.jobs_dir)
        errors = [self._start_error(record) for record in records]  # (file checks: before the lock)
        marked = []  # ended here: their records are written again
        with self._lock:
            self._last_sequence = max((r.sequence for r in records if r.sequence is not None), default=0)
            for record, error in zip(records, errors, strict=True):
                if error:
                    self._finish(record, "failed", error=error)
                    marked.append(record)
                elif self.cancel_unfinished and record.job.status == "queued":
                    self._finish(record, "cancelled", error=CANCELLED_AT_START)
                    marked.append(record)
                self._register(record)
                if record.job.status == "queued":
                    self._queue.put(record.job.job_id)
        for record in marked:
            self._persist_or_log(record)  # (or marked again at the next start)
        for record in records:
            if record.job.status in FINAL_STATES:
                self._delete_upload(record)  # the server stopped between the record and the deletion
        self._tidy()

    def _start_error(self, record: JobRecord) -> str | None:
        """Why a job found at start cannot go on as its record says, or None."""
        job = record.job
        if job.status == "running":
            return "The server stopped while this job was running; submit the video again."
        if job.status == "done" and not self.result_path(job.job_id).is_file():
            return "The result file of this job is gone; submit the video again."
        if job.status == "queued" and not self.input_path(record).is_file():
            return "The input video of this job is gone; submit it again."
        return None

    # -- the public operations -----------------------------------------------------------------
    def new_job_folder(self) -> tuple[str, Path]:
        """A fresh folder for a job being submitted (OSError when the disk refuses)."""
        job_id = job_store.new_job_id()
        folder = self.folder(job_id)
        self.jobs_dir.mkdir(mode=0o700, exist_ok=True)  # deleted while the server runs (a cache clean-up)
        folder.mkdir(mode=0o700)  # the user's footage and motion: no other account reads them
        return job_id, folder

    @contextmanager
    def admission(self) -> Iterator[Admission]:
        """Hold a queue slot while a job is submitted; JobsFull when none is free. Submit the job
        inside the ``with`` block (the job then holds the slot and the bytes)."""
        with self._lock:
            waiting = self._waiting_jobs + len(self._admissions)
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
                self._release(admission)

    def _release(self, admission: Admission) -> None:
        if admission in self._admissions:
            self._admissions.remove(admission)
            self._held_upload_bytes -= admission.upload_bytes
            admission.upload_bytes = 0

    def reserve_upload_bytes(self, admission: Admission, num_bytes: int) -> None:
        """Count num_bytes more of an upload against the budget; UploadSpaceFull when it is spent."""
        with self._lock:
            if self._held_upload_bytes + num_bytes > self.max_queued_upload_bytes:
                raise UploadSpaceFull(
                    f"The uploads of the jobs waiting on this server already fill its upload space "
                    f"({self.max_queued_upload_bytes / 1024**2:.0f} MiB); wait for some jobs to finish, then "
                    "submit again."
                )
            admission.upload_bytes += num_bytes
            self._held_upload_bytes += num_bytes

    def submit(
        self,
        job_id: str,
        *,
        video_name: str,
        params: JobParams,
        local_path: Path | None = None,
        input_bytes: int = 0,
        admission: Admission | None = None,
    ) -> Job:
        """Queue the job in ``new_job_folder(job_id)``: an upload there (``job_store.upload_path``),
        or ``local_path``. The record is written first: when that fails (OSError) nothing is
        registered. ``admission``: its slot and bytes pass to the job."""
        job = Job(
            job_id=job_id,
            status="queued",
            video_name=video_name,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        with self._lock:
            self._last_sequence += 1
            sequence = self._last_sequence
        record = JobRecord(job=job, params=params, local_path=local_path, input_bytes=input_bytes, sequence=sequence)
        self._persist(record)
        with self._lock:
            if admission is not None:
                self._release(admission)
            abandoned = self._discarded.pop(job_id, None) is not None
            if not abandoned:
                self._register(record)
            copy = job.model_copy()
        if abandoned:  # its request gave up (a timeout, a shutdown) while this thread still worked
            job_store.remove_folder(self.folder(job_id))
            raise JobCancelled(f"The submission of job {job_id} was abandoned.")
        self._queue.put(job_id)
        return copy

    def discard(self, job_id: str) -> None:
        """A submission that failed: forget the job if it was registered, and delete its folder."""
        with self._lock:
            record = self._records.get(job_id)
            if record is not None:
                record.cancel.set()
                remove_now = self._unregister(record)
            else:  # a submit still running in an abandoned thread must not register it afterwards
                self._discarded[job_id] = time.monotonic()
        if record is not None:
            if remove_now:
                self._remove_folder(record)
        else:
            job_store.remove_folder(self.folder(job_id))

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            record = self._records.get(job_id)
            return record.job.model_copy() if record else None

    def list(self) -> list[Job]:
        with self._lock:
            return sorted((r.job.model_copy() for r in self._records.values()), key=lambda j: j.created)

    def queue_length(self) -> int:
        with self._lock:
            return self._waiting_jobs

    def delete(self, job_id: str) -> Job | None:
        """Cancel a queued/running job (its record stays, status 'cancelled'); a finished one is
        removed with its result. Returns the job as it stands after the call."""
        with self._lock:
            record = self._records.get(job_id)
            if record is None:
                return None
            status = record.job.status
            if status in WAITING_STATES:
                record.cancel.set()
                self._finish(record, "cancelled")
            else:
                remove_now = self._unregister(record)
            job = record.job.model_copy()
        if status not in WAITING_STATES:
            if remove_now:
                self._remove_folder(record)
            return job
        self._persist_or_log(record)
        if status == "queued":  # a running job's worker deletes its upload when it stops
            self._delete_upload(record)
        return job

    # -- the workers ---------------------------------------------------------------------------
    def start(self) -> None:
        """One worker thread per engine (torch releases the GIL while a device computes), and one that
        applies the retention limits while the server is idle (or has no model to run jobs)."""
        for i, engine in enumerate(self.engines):
            worker = threading.Thread(target=self._work, args=(engine,), name=f"vibe-worker-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        threading.Thread(target=self._tidy_until_stopped, name="vibe-retention", daemon=True).start()

    def _tidy_until_stopped(self) -> None:
        while not self._stopping.wait(TIDY_INTERVAL_S):
            try:
                self._tidy()
            except Exception:  # a disk error now is logged; the next round tries again
                log.exception("applying the retention limits failed")

    def begin_stop(self) -> None:
        """The server is stopping: no job starts any more, the running ones are asked to stop (each at
        its next progress check), and their records say queued from now on, so that a server killed
        at any time after this runs them after the restart. :meth:`stop` then waits for the workers."""
        self._stopping.set()
        with self._lock:
            running = [r for r in self._records.values() if r.job.status == "running"]
        for record in running:
            self._persist_or_log(record)

    def stop(self, timeout_s: float = JOB_STOP_S) -> None:
        """Stop the workers within timeout_s in all (:meth:`begin_stop` first, unless it was called).
        Queued jobs stay queued and running ones go back to the queue: they run after a restart
        (also one whose worker did not stop in time)."""
        if not self._stopping.is_set():
            self.begin_stop()
        for _ in self._workers:
            self._queue.put(None)
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            late = [r for r in self._records.values() if r.job.status == "running"]
            for record in late:
                self._requeue(record)
            deleted = [record for record in self._in_workers if record.removed]
        for record in deleted:  # a deleted job whose worker did not stop in time: not back after the restart
            self._remove_folder(record)
        for record in late:
            log.warning("job %s did not stop in time; it runs again after the restart", record.job.job_id)
            self._persist_or_log(record)

    def _work(self, engine) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None or self._stopping.is_set():
                return  # the jobs still in the queue stay queued (on disk too)
            try:
                self._run_next(job_id, engine)
                self._tidy()
            except Exception:  # never let the worker die: log it, the next job runs
                log.exception("the worker failed after job %s", job_id)

    def _run_next(self, job_id: str, engine) -> None:
        with self._lock:
            record = self._records.get(job_id)
            if record is None or record.job.status != "queued":
                return  # cancelled or deleted meanwhile
            self._set_status(record, "running")
            record.job.stage, record.job.progress = "decode", 0.0
            self._in_workers.add(record)
        try:
            self._persist(record)
            self._run_job(record, engine)
        except Exception as err:
            log.exception("job %s failed", job_id)
            self._end(record, "failed", error=failure_message(err))
        finally:
            with self._lock:
                self._in_workers.discard(record)
                removed = record.removed
            if removed:  # cancelled, then deleted while it ran: its folder was left to this worker
                self._remove_folder(record)

    def _run_job(self, record: JobRecord, engine) -> None:
        """Run one job on ``engine`` and record how it ended (done, failed, cancelled or queued again)."""
        job_id = record.job.job_id

        def progress(stage: str, fraction: float, eta_s: float | None) -> None:
            with self._lock:
                if record.job.status == "running":
                    record.job.stage, record.job.progress, record.job.eta_s = stage, round(fraction, 4), eta_s

        try:
            output = engine.run(
                self.input_path(record),
                params_to_options(record.params),
                progress=progress,
                should_cancel=lambda: record.cancel.is_set() or self._stopping.is_set(),
                video_name=record.job.video_name,
            )
            # the job folder stays deleted if a DELETE removed it meanwhile
            atomic_write(self.result_path(job_id), lambda f: save_result(f, output.result), make_folder=False)
        except JobCancelled:
            with self._lock:  # looked at under the lock a DELETE takes: one just after finds it queued
                requeue = not record.cancel.is_set()  # the server stops: it runs after the restart
                if requeue:
                    self._requeue(record)
            if requeue:
                self._persist_or_log(record)
            else:
                self._end(record, "cancelled")
            return
        except VibeError as err:
            self._end(record, "failed", error=self._client_message(str(err), record))
            return
        done = len(output.result.tracks), [self._client_message(w, record) for w in output.warnings]
        if self._end(record, "done", done=done) == "cancelled":  # cancelled while the result was written, or since
            self.result_path(job_id).unlink(missing_ok=True)

    def _client_message(self, text: str, record: JobRecord) -> str:
        """A message names only what the client sent: the upload's own path becomes its file name,
        and no other path of the job store is shown."""
        return self.client_text(text, record.job.job_id, record.job.video_name if record.uploaded else None)

    def client_text(self, text: str, job_id: str, upload_name: str | None = None) -> str:
        """``text`` without the server's paths: a job's upload becomes ``upload_name``, its folder
        'the job folder', the store 'the job store', the model data folder words too."""
        folder = self.folder(job_id)
        if upload_name is not None:
            text = text.replace(str(job_store.upload_path(folder)), upload_name)
        text = text.replace(str(folder), "the job folder").replace(str(self.jobs_dir), "the job store")
        for data_dir in self._data_dirs:
            text = without_data_folder(text, data_dir)
        return text

    # -- retention -----------------------------------------------------------------------------
    def _tidy(self) -> None:
        """Remove finished jobs past the retention limits, .pkl files past ``KEPT_PKLS``, and now and
        then a killed server's leftovers."""
        with self._tidy_lock:
            self._remove_expired()
            self.remove_old_pkls()
            now = time.monotonic()
            with self._lock:  # an abandoned submit ends within its time limit: an hour is plenty
                for job_id in [k for k, t in self._discarded.items() if now - t > job_store.LEFTOVER_AGE_S]:
                    del self._discarded[job_id]
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + SWEEP_INTERVAL_S
                with self._lock:
                    known = set(self._records)
                job_store.delete_leftovers(self.jobs_dir, known)

    def _remove_expired(self) -> None:
        now = time.time()
        with self._lock:
            finished = sorted(
                (r for r in self._records.values() if r.job.status in FINAL_STATES), key=lambda r: r.finished_at
            )
            too_many = len(finished) - self.keep_finished_jobs
            expired = []
            for i, record in enumerate(finished):
                age_s = now - record.finished_at
                if age_s < MIN_KEEP_S and len(finished) - i <= MIN_KEEP_NEWEST:
                    break  # the rest finished later still
                if i < too_many or age_s > self.keep_finished_s:
                    expired.append(record)
            expired = [record for record in expired if self._unregister(record)]
        for record in expired:
            log.info("removing job %s, finished %s", record.job.job_id, _ago(now - record.finished_at))
            self._remove_folder(record)

    def remove_old_pkls(self) -> None:
        """Delete the .pkl files of all jobs but the ``KEPT_PKLS`` whose .pkl was made last (blocking:
        the disk). Each is made again from the result when asked for; kept for every job, they could
        fill the disk (one long clip's is over a gigabyte)."""
        with self._lock:
            job_ids = list(self._records)
        made = []
        for job_id in job_ids:
            try:
                made.append((self.pkl_path(job_id).stat().st_mtime_ns, job_id))
            except OSError:  # none made
                continue
        for _, job_id in sorted(made, reverse=True)[KEPT_PKLS:]:
            try:
                self.pkl_path(job_id).unlink(missing_ok=True)
            except OSError as err:  # (Windows: being sent at this moment) tried again at the next tidy
                log.warning("cannot delete the .pkl of job %s: %s", job_id, err)


def _ago(seconds: float) -> str:
    return f"{seconds / 86400:.1f} days ago" if seconds >= 86400 else f"{seconds / 3600:.1f} hours ago"

"""The job store on disk: one folder per job under the jobs folder.

``<jobs_dir>/<job_id>/`` holds ``job.json`` (the record, replaced whole), ``input.video`` (an
uploaded video, deleted when the job ends; a fixed name, so the client's file name never picks
FFmpeg's demuxer), ``result.npz`` and ``vibe_output.pkl`` (each written to a ``.part`` name and
renamed, so it is whole or absent).

The folder is the authority, never the record: a job's id is its folder's name and an upload is
always ``<folder>/input.video``, so a record planted in the store cannot make the server delete
another file. Only a local-path job's record names a file, and that file is only read. The jobs
folder must belong to the user and be closed to other accounts (``prepare_jobs_dir``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import get_args

from vibe_blender.core import safe_json
from vibe_blender.core.atomic_file import PART_SUFFIX, atomic_write_bytes
from vibe_blender.core.client import JOB_ID_PATTERN
from vibe_blender.core.errors import VibeError

from .schemas import FinalStatus, Job, JobParams, WaitingStatus

log = logging.getLogger("vibe_server.jobs")

RECORD_NAME, RESULT_NAME, PKL_NAME, UPLOAD_NAME = "job.json", "result.npz", "vibe_output.pkl", "input.video"
MAX_RECORD_BYTES = 1024**2  # a job.json is a few KiB: a larger one is damaged
FINAL_STATES = get_args(FinalStatus)
WAITING_STATES = get_args(WaitingStatus)
# A folder without a readable record, or a .part file, untouched for this long is left over from a
# server that was killed (an upload in progress writes to its folder all the time, and a stalled one
# is refused within a minute); younger ones may belong to another server using the same folder.
LEFTOVER_AGE_S = 3600.0
DISK_FULL_MESSAGE = "The server's disk is full; free some space (or delete finished jobs) and submit again."


@dataclass(eq=False)
class JobRecord:
    """A job as the server keeps it. Its fields change under ``JobManager``'s lock only."""

    job: Job
    params: JobParams
    local_path: Path | None = None  # a video on the server's disk (never deleted); None: an upload
    input_bytes: int = 0  # size of an upload (counts against the upload space while the job waits)
    finished_at: float | None = None  # time.time() when it reached a final state
    sequence: int | None = None  # its place in the submission order (None: a record from before it was kept)
    cancel: threading.Event = field(default_factory=threading.Event)
    write_lock: threading.Lock = field(default_factory=threading.Lock)  # one job.json write at a time
    removed: bool = False  # its folder is deleted (or being deleted): nothing more is written there

    @property
    def uploaded(self) -> bool:
        return self.local_path is None


def prepare_jobs_dir(jobs_dir: Path) -> Path:
    """Create the jobs folder (readable by the user only); VibeError when another account owns it or
    could write to it: it holds the user's footage, and the files in it are deleted and served."""
    jobs_dir = Path(jobs_dir)
    jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name != "posix":
        return jobs_dir
    st = jobs_dir.stat()
    if st.st_uid != os.geteuid():
        raise VibeError(
            f"The jobs folder {jobs_dir} belongs to another account; choose a folder of your own with --jobs-dir."
        )
    if st.st_mode & 0o022:
        raise VibeError(
            f"The jobs folder {jobs_dir} can be changed by other accounts (mode {st.st_mode & 0o777:o}); "
            f"make it private with 'chmod 700 {jobs_dir}', or choose another folder with --jobs-dir."
        )
    return jobs_dir


def upload_path(folder: Path) -> Path:
    return folder / UPLOAD_NAME


def input_path(folder: Path, record: JobRecord) -> Path:
    return upload_path(folder) if record.uploaded else record.local_path


def record_data(record: JobRecord) -> dict:
    """The record as job.json holds it (take it under the manager's lock, write it outside)."""
    return {
        "job": record.job.model_dump(),
        "input_owned": record.uploaded,
        "input_path": None if record.uploaded else str(record.local_path),
        "params": record.params.model_dump(),
        "finished_at": record.finished_at,
        "sequence": record.sequence,
    }


def write_record(folder: Path, data: dict) -> None:
    """job.json replaced whole (a reader sees the old record or the new one)."""
    atomic_write_bytes(folder / RECORD_NAME, json.dumps(data, indent=1).encode("utf-8"), make_folder=False)


def read_record(folder: Path) -> JobRecord:
    """The record in ``folder``; ValueError, KeyError, TypeError or OSError when it is damaged."""
    data = _record_json(folder)
    job = Job(**data["job"])
    if job.job_id != folder.name:
        raise ValueError(f"the record is for job '{job.job_id}'")
    if not isinstance(data["input_owned"], bool):
        raise TypeError("input_owned is not true or false")
    local_path = None
    if not data["input_owned"]:
        local_path = Path(data["input_path"])
        if not local_path.is_absolute():
            raise ValueError("the local video path is not absolute")
    finished_at = data.get("finished_at")
    if job.status in FINAL_STATES and not isinstance(finished_at, (int, float)):
        finished_at = (folder / RECORD_NAME).stat().st_mtime  # a record from before finish times were kept
    sequence = data.get("sequence")
    if sequence is not None and (isinstance(sequence, bool) or not isinstance(sequence, int)):
        raise TypeError("sequence is not a whole number")
    record = JobRecord(
        job=job,
        params=JobParams(**data["params"]),
        local_path=local_path,
        finished_at=finished_at,
        sequence=sequence,
    )
    if record.uploaded and upload_path(folder).is_file():
        record.input_bytes = upload_path(folder).stat().st_size
    return record


def load_records(jobs_dir: Path) -> list[JobRecord]:
    """Every readable job record in the store, in the order the jobs were submitted (folder names
    are random); links are never followed, and ``delete_leftovers`` deals with the folders that have
    no record."""
    ordered = []
    for folder in _job_folders(jobs_dir):
        try:
            record = read_record(folder)
            ordered.append((_submission_key(folder, record), record))
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("the job folder %s has no readable record: %s", folder, err)
    return [record for _, record in sorted(ordered, key=lambda pair: pair[0])]


def _submission_key(folder: Path, record: JobRecord) -> tuple[int, float]:
    """Records with a submission sequence come after those from before it was kept, which are taken
    in the order they were created (or, with no creation time that parses, last written)."""
    if record.sequence is not None:
        return 1, record.sequence
    try:
        return 0, datetime.fromisoformat(record.job.created).timestamp()
    except ValueError:
        return 0, (folder / RECORD_NAME).stat().st_mtime


def delete_leftovers(jobs_dir: Path, known_ids: set[str]) -> None:
    """Delete what a killed server left behind and nobody touched for ``LEFTOVER_AGE_S``: .part
    files, and folders of no known job without a record that parses (an upload cut off by the kill,
    a record cut short). Only in folders named as a server names them (a job id): the jobs folder may
    be one the user keeps other things in."""
    now = time.time()
    for folder in _job_folders(jobs_dir):
        if not JOB_ID_PATTERN.fullmatch(folder.name):
            continue
        try:
            _delete_old_part_files(folder, now)
            if folder.name in known_ids or now - _last_touched(folder) < LEFTOVER_AGE_S:
                continue
        except OSError as err:  # deleted meanwhile, or unreadable
            log.warning("cannot check the job folder %s for leftovers: %s", folder, err)
            continue
        if not _has_record_file(folder):  # a record this server cannot use may be another version's job
            log.warning("deleting the job folder %s, left over without a record", folder)
            remove_folder(folder)


def new_job_id() -> str:
    """A fresh job id, the name of its folder (``JOB_ID_PATTERN``)."""
    return uuid.uuid4().hex[:16]


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _job_folders(jobs_dir: Path) -> list[Path]:
    return [p for p in sorted(jobs_dir.iterdir()) if not p.is_symlink() and p.is_dir()]


def _has_record_file(folder: Path) -> bool:
    """Whether the folder holds a job.json that parses as JSON: one that fails this version's checks
    (an option renamed since, say) is kept with its result, never deleted as a leftover."""
    try:
        _record_json(folder)
    except (OSError, ValueError):
        return False
    return True


def _record_json(folder: Path) -> dict:
    """job.json's content (at most MAX_RECORD_BYTES, depth-checked); ValueError or OSError otherwise."""
    with open(folder / RECORD_NAME, "rb") as f:
        data = f.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError(f"the record is larger than {MAX_RECORD_BYTES} bytes")
    record = safe_json.loads(data.decode("utf-8"))
    if not isinstance(record, dict):
        raise ValueError("the record is not a JSON object")
    return record


def _delete_old_part_files(folder: Path, now: float) -> None:
    for path in folder.glob(f"*{PART_SUFFIX}"):
        if now - path.lstat().st_mtime >= LEFTOVER_AGE_S:
            path.unlink()  # a link is deleted, never what it points to


def _last_touched(folder: Path) -> float:
    """The newest modification time of the folder and the files in it."""
    times = [folder.lstat().st_mtime]
    for path in folder.iterdir():
        try:
            times.append(path.lstat().st_mtime)
        except OSError:  # deleted meanwhile
            pass
    return max(times)

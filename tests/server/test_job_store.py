"""The job manager and its store on disk, without HTTP: workers that survive any job, a stop that
leaves jobs queued, retention of finished jobs, leftovers of a killed server, and records that
cannot name other files."""

import errno
import json
import os
import threading
import time
from types import SimpleNamespace

import pytest

from vibe_blender.core import atomic_file
from vibe_blender.core.errors import VibeError
from vibe_server.api import job_store
from vibe_server.api import jobs as jobs_module
from vibe_server.api.job_store import DISK_FULL_MESSAGE, JobRecord, record_data, upload_path, write_record
from vibe_server.api.jobs import KEPT_PKLS, MIN_KEEP_NEWEST, MIN_KEEP_S, JobManager
from vibe_server.api.schemas import Job, JobParams
from vibe_server.pipeline.progress import JobCancelled

HOUR, DAY = 3600.0, 86400.0


class FakeEngine:
    """``run`` calls ``script(video_name, should_cancel)``, which returns nothing or raises."""

    def __init__(self, script=lambda name, should_cancel: None):
        self.script, self.started = script, []

    def run(self, path, options, *, progress, should_cancel, video_name):
        self.started.append(video_name)
        self.script(video_name, should_cancel)
        return SimpleNamespace(result=SimpleNamespace(tracks=[]), warnings=[])


@pytest.fixture(autouse=True)
def fake_result_files(monkeypatch):
    """The fake engine's empty results are written as a few bytes."""
    monkeypatch.setattr(jobs_module, "save_result", lambda file, result: file.write(b"result"))


def wait_for(condition, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def submit_upload(jobs: JobManager, name: str) -> str:
    job_id, folder = jobs.new_job_folder()
    upload_path(folder).write_bytes(b"video")
    jobs.submit(job_id, video_name=name, params=JobParams(), input_bytes=5)
    return job_id


def plant(jobs_dir, job_id: str, status: str, *, finished_ago_s: float | None = None, **record) -> object:
    """A job folder as an earlier server left it; -> the folder."""
    folder = jobs_dir / job_id
    folder.mkdir(parents=True, mode=0o700)
    job = Job(job_id=job_id, status=status, video_name=f"{job_id}.mp4", created="2024-01-01T00:00:00+00:00")
    finished_at = None if finished_ago_s is None else time.time() - finished_ago_s
    data = record_data(JobRecord(job=job, params=JobParams(), finished_at=finished_at))
    write_record(folder, {**data, **record})
    if status == "done":
        (folder / "result.npz").write_bytes(b"result")
    return folder


def age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_job_s_record_and_result_reach_the_disk_before_they_replace_the_old_ones(tmp_path, monkeypatch):
    """A power cut just after a job ends leaves the old record or the new one, never an empty file
    under the real name (a rename may reach the disk before the data written before it)."""
    synced, real_fsync = [], os.fsync

    def spy_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(atomic_file.os, "fsync", spy_fsync)
    jobs = JobManager(tmp_path / "jobs", [FakeEngine()])
    jobs.start()
    try:
        job_id = submit_upload(jobs, "clip")
        assert wait_for(lambda: jobs.get(job_id).status == "done")
    finally:
        jobs.stop()
    folder = jobs.folder(job_id)
    assert sorted(p.name for p in folder.iterdir()) == ["job.json", "result.npz"]
    assert {(folder / "job.json").stat().st_ino, (folder / "result.npz").stat().st_ino} <= set(synced)


def test_a_record_the_disk_refuses_leaves_the_old_one_and_no_part_file(tmp_path, monkeypatch):
    write_record(tmp_path, {"old": 1})

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_file.os, "fsync", disk_full)
    with pytest.raises(OSError) as err:
        write_record(tmp_path, {"new": 2})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "job.json")
    assert json.loads((tmp_path / "job.json").read_text()) == {"old": 1} and os.listdir(tmp_path) == ["job.json"]


# -- a worker survives any job ------------------------------------------------------------------


def test_a_full_disk_fails_the_job_with_one_message_and_the_worker_runs_the_next(tmp_path, monkeypatch):
    """The disk fills up while a job runs: its result and its record cannot be written. The job is
    failed (in memory: the disk refuses), its upload deleted, and the next job runs once space is free."""
    disk_full = threading.Event()

    def write(folder, data):
        if disk_full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        write_record(folder, data)

    def script(name, should_cancel):
        if name == "first":
            disk_full.set()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jobs_module, "write_record", write)
    jobs = JobManager(tmp_path / "jobs", [FakeEngine(script)])
    jobs.start()
    try:
        first = submit_upload(jobs, "first")
        assert wait_for(lambda: jobs.get(first).status == "failed")
        assert jobs.get(first).error == DISK_FULL_MESSAGE
        assert not upload_path(jobs.folder(first)).exists()  # the space comes back
        disk_full.clear()  # the user frees space
        second = submit_upload(jobs, "second")
        assert wait_for(lambda: jobs.get(second).status == "done"), jobs.get(second)
        assert all(worker.is_alive() for worker in jobs._workers)
        assert jobs.queue_length() == 0
    finally:
        jobs.stop()


def test_an_internal_error_fails_the_job_and_the_next_one_runs(tmp_path):
    def script(name, should_cancel):
        if name == "bad":
            raise RuntimeError("a bug")

    jobs = JobManager(tmp_path / "jobs", [FakeEngine(script)])
    jobs.start()
    try:
        bad, good = submit_upload(jobs, "bad"), submit_upload(jobs, "good")
        assert wait_for(lambda: jobs.get(good).status == "done")
        assert jobs.get(bad).status == "failed" and "internal error" in jobs.get(bad).error
    finally:
        jobs.stop()


# -- stopping ---------------------------------------------------------------------------------


def test_stop_leaves_queued_jobs_queued_and_puts_the_running_one_back(tmp_path):
    """Only the running job sees the stop; the queued ones are never started, and after a restart
    every job is queued again with its upload."""

    def script(name, should_cancel):
        time.sleep(0.3)  # opening the video
        while not should_cancel():
            time.sleep(0.01)
        raise JobCancelled()

    engine = FakeEngine(script)
    jobs = JobManager(tmp_path / "jobs", [engine])
    jobs.start()
    ids = [submit_upload(jobs, f"v{i}") for i in range(5)]
    assert wait_for(lambda: jobs.get(ids[0]).status == "running")
    jobs.stop()
    assert engine.started == ["v0"]
    restarted = JobManager(tmp_path / "jobs", [])
    assert [restarted.get(i).status for i in ids] == ["queued"] * 5
    assert all(upload_path(restarted.folder(i)).is_file() for i in ids)


def test_stop_has_one_deadline_for_all_workers_and_a_job_that_did_not_stop_runs_again(tmp_path):
    release = threading.Event()

    def script(name, should_cancel):  # deaf to the stop until released (a long decode pass)
        release.wait(30)
        raise JobCancelled()

    jobs = JobManager(tmp_path / "jobs", [FakeEngine(script), FakeEngine(script)])
    jobs.start()
    ids = [submit_upload(jobs, name) for name in ("a", "b")]
    try:
        assert wait_for(lambda: all(jobs.get(i).status == "running" for i in ids))
        t0 = time.monotonic()
        jobs.stop(timeout_s=3.0)
        assert time.monotonic() - t0 < 5.0  # one deadline, not one per worker (6 s)
        assert [JobManager(tmp_path / "jobs", []).get(i).status for i in ids] == ["queued", "queued"]
    finally:
        release.set()
        for worker in jobs._workers:
            worker.join(10)


def test_a_running_job_is_recorded_as_queued_as_soon_as_the_stop_begins(tmp_path):
    """A server killed while it stops (in its requests' grace time, or past its workers' deadline)
    runs the job again after the restart: its record says queued from the start of the stop, while
    the job still runs (a start after the kill marked a job recorded as running failed)."""
    release = threading.Event()

    def script(name, should_cancel):  # deaf to the stop until released (a long decode pass)
        release.wait(30)
        raise JobCancelled()

    jobs = JobManager(tmp_path / "jobs", [FakeEngine(script)])
    jobs.start()
    job_id = submit_upload(jobs, "a")
    try:
        assert wait_for(lambda: jobs.get(job_id).status == "running")
        jobs.begin_stop()
        assert jobs.get(job_id).status == "running"
        on_disk = job_store.read_record(jobs.folder(job_id))  # what a start after a kill finds
        assert (on_disk.job.status, on_disk.job.stage, on_disk.job.progress) == ("queued", None, 0.0)
        assert upload_path(jobs.folder(job_id)).is_file()
    finally:
        release.set()
        jobs.stop()
    assert jobs.get(job_id).status == "queued"


def run_after_a_restart(jobs_dir) -> list[str]:
    """The video names of the jobs a server started on ``jobs_dir`` runs, in the order it runs them."""
    engine = FakeEngine()
    jobs = JobManager(jobs_dir, [engine])
    jobs.start()
    try:
        assert wait_for(lambda: all(job.status == "done" for job in jobs.list()))
    finally:
        jobs.stop()
    return engine.started


def test_queued_jobs_run_in_the_order_they_were_submitted_after_a_restart(tmp_path, monkeypatch):
    """Folder names are random, so the store's order is not the submission order: here each job's
    folder sorts before the one submitted before it. The job that was running goes first."""

    def script(name, should_cancel):
        while not should_cancel():
            time.sleep(0.01)
        raise JobCancelled()

    folder_names = iter("fedcb")
    monkeypatch.setattr(job_store, "new_job_id", lambda: next(folder_names) * 16)
    jobs = JobManager(tmp_path / "jobs", [FakeEngine(script)])
    jobs.start()
    ids = [submit_upload(jobs, f"v{i}") for i in range(5)]
    assert wait_for(lambda: jobs.get(ids[0]).status == "running")
    jobs.stop()
    assert sorted(ids) == ids[::-1]
    assert run_after_a_restart(tmp_path / "jobs") == ["v0", "v1", "v2", "v3", "v4"]


def test_a_server_that_cancels_unfinished_jobs_runs_none_of_those_its_last_stop_left(tmp_path):
    """The Blender add-on's server: a capture ends when its server stops, so a job put back at the stop
    ran again at the next start for nobody, and the user's next capture waited behind it."""

    def script(name, should_cancel):
        while not should_cancel():
            time.sleep(0.01)
        raise JobCancelled()

    jobs = JobManager(tmp_path / "jobs", [FakeEngine(script)])
    jobs.start()
    ids = [submit_upload(jobs, f"v{i}") for i in range(2)]
    assert wait_for(lambda: jobs.get(ids[0]).status == "running")
    jobs.stop()
    engine = FakeEngine()
    restarted = JobManager(tmp_path / "jobs", [engine], cancel_unfinished=True)
    restarted.start()
    try:
        fresh = submit_upload(restarted, "new")
        assert wait_for(lambda: restarted.get(fresh).status == "done")
        assert [restarted.get(i).status for i in ids] == ["cancelled", "cancelled"]
        assert engine.started == ["new"]
    finally:
        restarted.stop()
    reloaded = JobManager(tmp_path / "jobs", [])
    assert [reloaded.get(i).status for i in ids] == ["cancelled", "cancelled"]
    # a client following the job is told why it ended, and what to do
    assert [reloaded.get(i).error for i in ids] == [
        "Cancelled: the server restarted with --cancel-unfinished-jobs; submit the video again."
    ] * 2
    assert not any(upload_path(restarted.folder(i)).exists() for i in ids)


def test_records_from_before_the_submission_order_was_kept_run_in_the_order_they_were_created(tmp_path):
    """Without a sequence number: by creation time, and without one that parses, by the last write."""
    jobs_dir = tmp_path / "jobs"
    for job_id, created in (("a", "2024-01-01T00:00:02+00:00"), ("b", "2024-01-01T00:00:01+00:00"), ("c", "?")):
        folder = plant(jobs_dir, job_id * 16, "queued")
        record = json.loads((folder / job_store.RECORD_NAME).read_text())
        record["job"]["created"] = created
        record.pop("sequence", None)  # as a record from before it was kept
        write_record(folder, record)
        upload_path(folder).write_bytes(b"video")
    os.utime(jobs_dir / ("c" * 16) / job_store.RECORD_NAME, (1.7e9, 1.7e9))  # written in November 2023
    assert run_after_a_restart(jobs_dir) == ["c" * 16 + ".mp4", "b" * 16 + ".mp4", "a" * 16 + ".mp4"]


# -- retention --------------------------------------------------------------------------------


def test_finished_jobs_past_the_retention_limits_are_removed_at_start(tmp_path):
    jobs_dir = tmp_path / "jobs"
    plant(jobs_dir, "old", "done", finished_ago_s=8 * DAY)
    for name, ago in (("h5", 5 * HOUR), ("h3", 3 * HOUR), ("h2", 2 * HOUR)):
        plant(jobs_dir, name, "failed", finished_ago_s=ago)
    plant(jobs_dir, "m10", "done", finished_ago_s=600)  # a client may still be fetching these
    plant(jobs_dir, "m5", "cancelled", finished_ago_s=300)
    queued = plant(jobs_dir, "queued", "queued")
    upload_path(queued).write_bytes(b"video")
    jobs = JobManager(jobs_dir, [], keep_finished_s=7 * DAY, keep_finished_jobs=1)
    assert sorted(j.job_id for j in jobs.list()) == ["m10", "m5", "queued"]
    assert sorted(p.name for p in jobs_dir.iterdir()) == ["m10", "m5", "queued"]


def test_the_oldest_finished_job_goes_when_a_new_one_finishes(tmp_path):
    jobs_dir = tmp_path / "jobs"
    plant(jobs_dir, "earlier", "done", finished_ago_s=2 * HOUR)
    jobs = JobManager(jobs_dir, [FakeEngine()], keep_finished_jobs=1)
    assert [j.job_id for j in jobs.list()] == ["earlier"]
    jobs.start()
    try:
        new = submit_upload(jobs, "new")
        assert wait_for(lambda: jobs.get("earlier") is None)
        assert jobs.get(new).status == "done" and (jobs_dir / new / "result.npz").is_file()
        assert not (jobs_dir / "earlier").exists()
    finally:
        jobs.stop()


def test_records_without_a_finish_time_age_from_their_last_write(tmp_path):
    """Records written before finish times were kept."""
    folder = plant(tmp_path / "jobs", "legacy", "done", finished_at=None)
    age(folder / "job.json", 30 * DAY)
    assert JobManager(tmp_path / "jobs", []).list() == []


def test_a_finished_job_is_kept_an_hour_whatever_the_limits(tmp_path):
    plant(tmp_path / "jobs", "recent", "done", finished_ago_s=MIN_KEEP_S - 60)
    jobs = JobManager(tmp_path / "jobs", [], keep_finished_s=1.0, keep_finished_jobs=1)
    assert [j.job_id for j in jobs.list()] == ["recent"]


def test_within_the_hour_only_the_newest_jobs_outlast_the_limit_on_their_number(tmp_path):
    """The hour is for a client fetching its result right after its job: a server finishing many jobs
    an hour still keeps no more than --keep-finished-jobs beyond the newest few."""
    jobs_dir = tmp_path / "jobs"
    recent = [f"m{minutes:02d}" for minutes in range(MIN_KEEP_NEWEST + 4, 0, -1)]  # oldest first
    for name in recent:
        plant(jobs_dir, name, "done", finished_ago_s=60 * int(name[1:]))
    jobs = JobManager(jobs_dir, [], keep_finished_jobs=1)
    assert sorted(j.job_id for j in jobs.list()) == sorted(recent[4:])
    assert sorted(p.name for p in jobs_dir.iterdir()) == sorted(recent[4:])


def test_only_the_pkls_made_last_are_kept(tmp_path):
    """A .pkl is about 90 times the size of its result; it is made again when asked for."""
    jobs_dir = tmp_path / "jobs"
    names = [f"job{i}" for i in range(KEPT_PKLS + 2)]
    for i, name in enumerate(names):
        folder = plant(jobs_dir, name, "done", finished_ago_s=2 * HOUR)
        (folder / "vibe_output.pkl").write_bytes(b"pkl")
        age(folder / "vibe_output.pkl", HOUR - 60 * i)  # job0's made first
    JobManager(jobs_dir, [])
    assert sorted(p.parent.name for p in jobs_dir.glob("*/vibe_output.pkl")) == names[2:]
    assert sorted(p.parent.name for p in jobs_dir.glob("*/result.npz")) == names  # the results stay


# -- leftovers of a killed server ----------------------------------------------------------------


CUT_OFF, DAMAGED, UPLOADING, DONE = "c0" * 8, "da" * 8, "0b" * 8, "d0" * 8  # job ids: a server's folder names


def test_leftovers_of_a_killed_server_are_deleted_at_start(tmp_path):
    jobs_dir = tmp_path / "jobs"
    cut_off = jobs_dir / CUT_OFF  # killed mid-upload: no record
    cut_off.mkdir(parents=True)
    upload_path(cut_off).write_bytes(b"\0" * 1000)
    damaged = jobs_dir / DAMAGED
    damaged.mkdir()
    (damaged / "job.json").write_text("{not json")
    for folder in (cut_off, damaged):
        for path in (*folder.iterdir(), folder):
            age(path, 2 * HOUR)
    in_progress = jobs_dir / UPLOADING  # another server's upload, or one a moment ago: kept
    in_progress.mkdir()
    upload_path(in_progress).write_bytes(b"\0")
    done = plant(jobs_dir, DONE, "done", finished_ago_s=HOUR)
    upload_path(done).write_bytes(b"video")  # killed between the record and the deletion
    for name in ("result.npz.part", ".vibe_output.pkl.0a1b2c3d.part", "job.json.part", ".0123456789ab.0a1b2c3d.part"):
        (done / name).write_bytes(b"half")
        age(done / name, 2 * HOUR)
    (done / "fresh.part").write_bytes(b"being written")

    jobs = JobManager(jobs_dir, [])
    assert sorted(p.name for p in jobs_dir.iterdir()) == sorted([UPLOADING, DONE])
    assert sorted(p.name for p in done.iterdir()) == ["fresh.part", "job.json", "result.npz"]
    assert jobs.get(DONE).status == "done"


def test_the_users_own_folders_in_the_jobs_folder_are_left_alone(tmp_path):
    """A jobs folder the user also keeps other things in (their home, the current folder): its old
    subfolders without a job record, and the .part files in them, were deleted as a killed server's
    leftovers."""
    jobs_dir = tmp_path / "jobs"
    footage = jobs_dir / "my_footage" / "day1"
    footage.mkdir(parents=True)
    (footage / "take1.mp4").write_bytes(b"the user's video")
    (jobs_dir / "my_footage" / "download.part").write_bytes(b"half a download")
    like_an_id = jobs_dir / "0123456789ABCDEF"  # upper case: no id of a server's
    like_an_id.mkdir()
    for path in (*jobs_dir.rglob("*"), like_an_id):
        age(path, 30 * DAY)
    JobManager(jobs_dir, [])
    assert sorted(p.relative_to(jobs_dir).as_posix() for p in jobs_dir.rglob("*")) == [
        "0123456789ABCDEF",
        "my_footage",
        "my_footage/day1",
        "my_footage/day1/take1.mp4",
        "my_footage/download.part",
    ]


def test_a_record_this_version_cannot_read_is_kept_with_its_result(tmp_path):
    """A record that parses but fails this version's checks (an option renamed since) is another
    version's job: skipped, never deleted as a leftover."""
    jobs_dir = tmp_path / "jobs"
    folder = plant(jobs_dir, "older", "done", finished_ago_s=2 * HOUR, params={"old_option": 1})
    for path in (*folder.iterdir(), folder):
        age(path, 2 * HOUR)
    jobs = JobManager(jobs_dir, [])
    assert jobs.get("older") is None  # not this version's job
    assert sorted(p.name for p in folder.iterdir()) == ["job.json", "result.npz"]


def test_an_idle_server_applies_the_retention_limits(tmp_path, monkeypatch):
    """With no job finishing (or no model, so no worker at all), finished jobs still expire."""
    monkeypatch.setattr(jobs_module, "TIDY_INTERVAL_S", 0.05)
    jobs_dir = tmp_path / "jobs"
    plant(jobs_dir, "recent", "done", finished_ago_s=MIN_KEEP_S - 60)
    jobs = JobManager(jobs_dir, [], keep_finished_s=MIN_KEEP_S)
    assert [j.job_id for j in jobs.list()] == ["recent"]
    monkeypatch.setattr(jobs_module.time, "time", lambda real=time.time: real() + 120)  # two minutes on
    jobs.start()
    try:
        assert wait_for(lambda: jobs.get("recent") is None)
        assert wait_for(lambda: not (jobs_dir / "recent").exists())  # deleted just after it is forgotten
    finally:
        jobs.stop()


def test_a_job_cancelled_while_running_stays_cancelled_whatever_the_run_says_after(tmp_path):
    cancelled = threading.Event()

    def script(name, should_cancel):
        assert wait_for(should_cancel)
        cancelled.set()
        raise VibeError("Nobody was found in the video.")  # before the run's next cancel check

    jobs = JobManager(tmp_path / "jobs", [FakeEngine(script)])
    jobs.start()
    try:
        job_id = submit_upload(jobs, "a.mp4")
        assert wait_for(lambda: jobs.get(job_id).status == "running")
        assert jobs.delete(job_id).status == "cancelled"
        assert wait_for(cancelled.is_set) and wait_for(
            lambda: not (tmp_path / "jobs" / job_id / "input.video").exists()
        )
        job = jobs.get(job_id)
        assert job.status == "cancelled" and job.error is None
    finally:
        jobs.stop()


def test_a_submission_its_request_gave_up_on_is_never_registered_afterwards(tmp_path, monkeypatch):
    """The request timed out (or the server stopped) while its submit still ran in a thread: the
    request discards the job after the record is written and before it is registered; no job appears
    and the folder goes."""
    jobs = JobManager(tmp_path / "jobs", [FakeEngine()])
    job_id, folder = jobs.new_job_folder()
    upload_path(folder).write_bytes(b"video")

    def write_then_give_up(folder, data):
        write_record(folder, data)
        jobs.discard(job_id)  # the request's clean-up, in the middle of the submit

    monkeypatch.setattr(jobs_module, "write_record", write_then_give_up)
    with pytest.raises(JobCancelled, match="abandoned"):
        jobs.submit(job_id, video_name="a.mp4", params=JobParams(), input_bytes=5)
    assert jobs.get(job_id) is None and jobs.queue_length() == 0 and not folder.exists()


def test_a_jobs_folder_deleted_while_the_server_runs_is_made_again(tmp_path):
    jobs = JobManager(tmp_path / "jobs", [])
    (tmp_path / "jobs").rmdir()  # a cache clean-up
    job_id, folder = jobs.new_job_folder()
    assert folder.is_dir() and (tmp_path / "jobs").stat().st_mode & 0o777 == 0o700


# -- records cannot name other files --------------------------------------------------------------


def test_a_planted_record_cannot_make_the_server_delete_another_file(tmp_path):
    victim = tmp_path / "thesis.docx"
    victim.write_text("precious")
    jobs_dir = tmp_path / "jobs"
    for job_id, status in (("running", "running"), ("queued", "queued"), ("done", "done")):
        plant(jobs_dir, job_id, status, finished_ago_s=HOUR, input_owned=True, input_path=str(victim))
    foreign = {"job_id": "../thesis", "status": "done", "video_name": "x.mp4", "created": "2024-01-01"}
    plant(jobs_dir, "other", "done", finished_ago_s=HOUR, job=foreign)
    jobs = JobManager(jobs_dir, [])
    assert victim.read_text() == "precious"
    assert jobs.get("running").status == "failed" and jobs.get("queued").status == "failed"
    assert jobs.get("../thesis") is None and jobs.get("other") is None  # a record for another folder


def test_a_jobs_folder_open_to_other_accounts_is_refused(tmp_path, monkeypatch):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    shared.chmod(0o777)
    with pytest.raises(VibeError, match="can be changed by other accounts.*chmod 700"):
        JobManager(shared, [])
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    with pytest.raises(VibeError, match="belongs to another account"):
        job_store.prepare_jobs_dir(tmp_path / "mine")


def test_serve_refuses_an_open_jobs_folder_in_one_message(tmp_path, monkeypatch, capsys):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    import uvicorn

    from vibe_server.cli import main

    monkeypatch.setenv("VIBE_MOCAP_TOKEN", "test-token-" + "t" * 16)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: pytest.fail("the server started"))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert main(["serve", "--jobs-dir", str(shared), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The jobs folder") and "chmod 700" in err and "Traceback" not in err


# -- limits -----------------------------------------------------------------------------------


def test_a_submitted_upload_holds_its_bytes_once_until_its_job_ends(tmp_path):
    from vibe_server.api.jobs import UploadSpaceFull

    jobs = JobManager(tmp_path / "jobs", [], max_queued_upload_bytes=1000)
    with jobs.admission() as admission:
        jobs.reserve_upload_bytes(admission, 600)
        job_id, folder = jobs.new_job_folder()
        upload_path(folder).write_bytes(b"\0" * 600)
        jobs.submit(job_id, video_name="a.mp4", params=JobParams(), input_bytes=600, admission=admission)
        with jobs.admission() as other:
            jobs.reserve_upload_bytes(other, 400)  # the job's 600 count once
            with pytest.raises(UploadSpaceFull):
                jobs.reserve_upload_bytes(other, 1)
    assert jobs.queue_length() == 1
    jobs.delete(job_id)
    with jobs.admission() as admission:
        jobs.reserve_upload_bytes(admission, 1000)
    assert jobs.queue_length() == 0


def test_a_delete_just_before_the_worker_ends_a_job_done_leaves_it_cancelled_without_its_result(tmp_path, monkeypatch):
    """DELETE answered "cancelled" after the worker had looked for a cancel and before it wrote
    "done": the job then said done, its result kept for the whole retention time."""
    jobs = JobManager(tmp_path / "jobs", [FakeEngine()])
    end = JobManager._end

    def delete_first(self, record, status, **kwargs):
        if status == "done":
            assert self.delete(record.job.job_id).status == "cancelled"  # the DELETE comes just now
        return end(self, record, status, **kwargs)

    monkeypatch.setattr(JobManager, "_end", delete_first)
    job_id = submit_upload(jobs, "a.mp4")
    jobs.start()
    try:
        assert wait_for(lambda: not upload_path(jobs.folder(job_id)).exists())  # the worker has ended it
        job = jobs.get(job_id)
        assert job.status == "cancelled" and job.num_tracks is None  # nothing of its run is said
        assert wait_for(lambda: not jobs.result_path(job_id).exists(), 5)
        assert JobManager(tmp_path / "jobs", []).get(job_id).status == "cancelled"  # on disk too
    finally:
        jobs.stop()


class _DeleteWhenLookedAt(threading.Event):
    """A job's cancel flag that, looked at once ``armed`` (the worker's own look once its run
    stopped), lets a DELETE of the job in: in another thread, as a request; when nothing holds the
    job lock, finished before it answers what it held when looked at, else once that lock is let go."""

    def __init__(self, jobs, job_id):
        super().__init__()
        self.jobs, self.job_id, self.armed, self.deleting = jobs, job_id, False, None

    def is_set(self):
        held = super().is_set()
        if self.armed:
            self.armed = False
            self.deleting = threading.Thread(target=self.jobs.delete, args=(self.job_id,))
            self.deleting.start()
            if not self.jobs._lock.locked():
                self.deleting.join()
        return held


def test_a_delete_as_the_server_stops_a_running_job_is_not_run_again_after_the_restart(tmp_path):
    """Blender quitting cancels its capture as its server stops: the worker, having seen no cancel,
    put the job back in the queue after the DELETE had answered "cancelled", and the restarted
    server ran the cancelled video."""

    def script(name, should_cancel):
        while not should_cancel():
            time.sleep(0.01)
        flag.armed = True  # the worker's next look at the flag is its own, after the run
        raise JobCancelled()

    jobs = JobManager(tmp_path / "jobs", [FakeEngine(script)])
    job_id = submit_upload(jobs, "a.mp4")
    flag = jobs._records[job_id].cancel = _DeleteWhenLookedAt(jobs, job_id)
    jobs.start()
    assert wait_for(lambda: jobs.get(job_id).status == "running")
    jobs.stop()
    flag.deleting.join(10)  # the DELETE has answered
    restarted = JobManager(tmp_path / "jobs", [])
    assert restarted.get(job_id).status == "cancelled"
    assert not upload_path(restarted.folder(job_id)).exists()


def test_a_job_deleted_while_running_is_not_back_after_a_restart_when_its_run_outlives_the_stop(tmp_path):
    """Deleted while running, its folder is left to the run (which may still write there); a run that
    did not stop in time left it, and the job came back, cancelled, after the restart."""
    release = threading.Event()

    def script(name, should_cancel):
        assert release.wait(10)  # between two looks at the cancel

    jobs = JobManager(tmp_path / "jobs", [FakeEngine(script)])
    jobs.start()
    job_id = submit_upload(jobs, "a.mp4")
    assert wait_for(lambda: jobs.get(job_id).status == "running")
    assert jobs.delete(job_id).status == "cancelled" and jobs.delete(job_id) is not None
    assert jobs.get(job_id) is None and jobs.folder(job_id).is_dir()  # kept while the run may write there
    jobs.stop(timeout_s=0.2)
    assert not jobs.folder(job_id).exists()
    release.set()
    assert JobManager(tmp_path / "jobs", []).get(job_id) is None

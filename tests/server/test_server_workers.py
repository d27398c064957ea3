"""The server's job workers: one per engine (one engine per visible GPU, else one), all taking jobs
from one queue, so jobs run side by side as in ``vibe-mocap batch``."""

import time

import pytest
from fastapi.testclient import TestClient

from vibe_server.api.app import create_app
from vibe_server.api.jobs import JobManager
from vibe_server.api.schemas import JobParams
from vibe_server.api.settings import Settings
from vibe_server.pipeline import devices


def wait_for(condition, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def submit_two_jobs(jobs: JobManager) -> list[str]:
    ids = []
    for name in ("a.mp4", "b.mp4"):
        job_id, folder = jobs.new_job_folder()
        (folder / name).write_bytes(b"video")
        jobs.submit(job_id, video_name=name, local_path=folder / name, params=JobParams(min_track_frames=5))
        ids.append(job_id)
    return ids


def test_two_engines_run_two_jobs_at_the_same_time(make_engine, tmp_path):
    jobs = JobManager(tmp_path / "jobs", [make_engine(delay_s=0.03), make_engine(delay_s=0.03)])
    jobs.start()
    try:
        ids = submit_two_jobs(jobs)
        assert wait_for(lambda: all(jobs.get(i).status == "running" for i in ids)), [
            jobs.get(i).status for i in ids
        ]  # side by side, not one after the other
        assert wait_for(lambda: all(jobs.get(i).status == "done" for i in ids))
    finally:
        jobs.stop()


def test_one_engine_runs_jobs_one_at_a_time(make_engine, tmp_path):
    jobs = JobManager(tmp_path / "jobs", [make_engine(delay_s=0.02)])
    jobs.start()
    try:
        ids = submit_two_jobs(jobs)
        assert wait_for(lambda: jobs.get(ids[0]).status == "running")
        assert jobs.get(ids[1]).status == "queued"
        assert wait_for(lambda: all(jobs.get(i).status == "done" for i in ids))
    finally:
        jobs.stop()


@pytest.mark.parametrize(
    "device, gpus, expected",
    [
        ("auto", 0, ["cpu"]),
        ("auto", 2, ["cuda:0", "cuda:1"]),
        ("cuda", 3, ["cuda:0", "cuda:1", "cuda:2"]),
        ("cuda:1", 2, ["cuda:1"]),
        ("cpu", 2, ["cpu"]),
    ],
)
def test_the_server_loads_one_engine_per_visible_gpu(make_engine, tmp_path, monkeypatch, device, gpus, expected):
    monkeypatch.setattr(devices, "gpu_count", lambda: gpus)
    loaded = []

    def loader(settings):
        loaded.append(settings.device)
        return make_engine()

    with TestClient(
        create_app(Settings(jobs_dir=tmp_path / "jobs", device=device, token="t"), engine_loader=loader),
        base_url="http://127.0.0.1:8765",
    ) as client:
        assert client.app.state.jobs.engines and len(client.app.state.jobs.engines) == len(expected)
    assert loaded == expected

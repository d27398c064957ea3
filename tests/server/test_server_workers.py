"""The server's job workers: one per engine (one engine per visible GPU, else one), all taking jobs
from one queue, so jobs run side by side as in ``vibe-mocap batch``."""

import logging
import time

import pytest
import torch
from fastapi.testclient import TestClient

from vibe_blender.core.errors import VibeError
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
    ids = submit_two_jobs(jobs)  # both waiting when the workers start: however slow a submission is
    jobs.start()
    try:
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


@pytest.mark.parametrize(
    "failing, error",
    [
        ({"cuda:1"}, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")),
        ({"cuda:0"}, VibeError("The model data on this GPU is damaged.")),
        ({"cuda:0", "cuda:1", "cuda:2"}, VibeError("Model data missing. Run 'vibe-mocap data install'.")),
    ],
)
def test_a_gpu_whose_model_does_not_load_is_left_out_and_the_others_serve(
    make_engine, tmp_path, monkeypatch, caplog, failing, error
):
    """One GPU out of memory (another program holds it) used to drop every engine, the loaded ones
    too: the server had no model. Only when no GPU loads does it have none."""
    monkeypatch.setattr(devices, "gpu_count", lambda: 3)

    def loader(settings):
        if settings.device in failing:
            raise error
        return make_engine()

    app = create_app(Settings(jobs_dir=tmp_path / "jobs", device="auto", token="t"), engine_loader=loader)
    with caplog.at_level(logging.ERROR, logger="vibe_server.api"):
        with TestClient(app, base_url="http://127.0.0.1:8765") as client:
            health = client.get("/api/v1/health").json()
            assert len(client.app.state.jobs.engines) == 3 - len(failing)
    if len(failing) == 3:
        assert health["model"] == "none (model data missing)"
    else:
        assert health["model"] == "tiny test model"
    for device in failing:
        assert f"The model did not load on {device}: " in caplog.text

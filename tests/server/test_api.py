"""The HTTP API with the tiny model and scripted front end: jobs end to end, parameter checks,
upload limits, local paths, Host/token/Origin checks, cancel, restart, failure isolation; the real
video reader where FFmpeg's behaviour is the point (containers, truncation)."""

import asyncio
import concurrent.futures
import contextlib
import errno
import http.client
import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from tests.server.threaded_server import free_port, served_in_a_thread
from vibe_blender.core.client import LOCAL_PATH_UNREADABLE, REFUSAL_HEADER
from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import load_result
from vibe_blender.core.smpl_model import load_body_model
from vibe_server.api.app import create_app
from vibe_server.api.blocking import MAX_PROBE_THREADS
from vibe_server.api.deps import get_settings
from vibe_server.api.routes.body_model import body_model_fingerprint
from vibe_server.api.settings import Settings
from vibe_server.data.synthetic import write_smpl_files

REPO = Path(__file__).resolve().parents[2]
BASE = "http://127.0.0.1:8765"
API = "/api/v1"
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(tmp_path):
    return Settings(jobs_dir=tmp_path / "jobs", token=TOKEN)


@pytest.fixture
def engine(make_engine):
    return make_engine()


def client_for(settings, engine, *, client_host="127.0.0.1", token=TOKEN):
    """A client that sends the token (token=None: sends none)."""
    app = create_app(settings, engine_loader=lambda s: engine)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return TestClient(app, base_url=BASE, client=(client_host, 50000), headers=headers)


@pytest.fixture
def client(settings, engine):
    with client_for(settings, engine) as c:
        yield c


def upload(client, name="clip.mp4", data=b"\x00fake video bytes", params=None, **kwargs):
    files = {"video": (name, io.BytesIO(data), "video/mp4")}
    form = {"params": params if isinstance(params, str) else json.dumps(params)} if params is not None else None
    return client.post(f"{API}/jobs", files=files, data=form, **kwargs)


def wait(client, job_id, until=("done", "failed", "cancelled"), timeout_s=30, **kwargs):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        job = client.get(f"{API}/jobs/{job_id}", **kwargs).json()
        if job["status"] in until:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']}")


def wait_until(condition, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def assert_detail(response, status, *words):
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail, detail


def leftover_files(settings):
    return [p for p in settings.jobs_dir.rglob("*") if p.is_file()]


# -- the happy path -----------------------------------------------------------------------------


def test_health(client, settings):
    r = client.get(f"{API}/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["api_version"] == 1 and body["model"] == "tiny test model"
    assert body["device"] == "cpu" and body["queue_length"] == 0 and body["torch"]
    assert body["probe_timeout_s"] == settings.probe_timeout_s  # how long a client waits for POST /jobs


def test_upload_job_runs_to_a_result_file(client, settings):
    r = upload(client, params={"min_track_frames": 30, "smoothing": 0.5})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "queued"
    job = wait(client, r.json()["job_id"])
    assert job["status"] == "done" and job["progress"] == 1.0 and job["num_tracks"] == 2
    assert job["video_name"] == "clip.mp4" and job["error"] is None
    r = client.get(f"{API}/jobs/{job['job_id']}/result")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    result = load_result(io.BytesIO(r.content))
    assert [t.track_id for t in result.tracks] == [1, 3]
    assert result.meta["smoothing"] == "0.5" and result.meta["min_track_frames"] == "30"
    # the uploaded input is deleted once the job is over; only the record and the result stay
    assert sorted(p.name for p in leftover_files(settings)) == ["job.json", "result.npz"]
    assert [j["job_id"] for j in client.get(f"{API}/jobs").json()["jobs"]] == [job["job_id"]]
    # the footage and the motion are the user's: no other account on the machine can read them
    for folder in (settings.jobs_dir, settings.jobs_dir / job["job_id"]):
        assert folder.stat().st_mode & 0o077 == 0, oct(folder.stat().st_mode)


def test_jobs_get_the_fast_defaults_and_official_restores_the_official_configuration(client):
    from vibe_server.pipeline.options import DEFAULT_DETECTION_STRIDE

    metas = []
    for params in ({}, {"official": True, "smoothing": 0.5}):
        job = wait(client, upload(client, params=params).json()["job_id"])
        metas.append(load_result(io.BytesIO(client.get(f"{API}/jobs/{job['job_id']}/result").content)).meta)
    fast, official = metas
    assert fast["detection_stride"] == str(DEFAULT_DETECTION_STRIDE) and fast["adaptive_detection"] == "True"
    assert (
        official["detection_stride"],
        official["adaptive_detection"],
        official["chunking"],
        official["precision"],
        official["smoothing"],
    ) == ("1", "False", "official", "fp32", "0.5")
    assert official["uncrop"] == "official 1.0x box"


def test_official_pkl_download_is_read_by_joblib(client):
    import joblib  # the test extra has it

    job = wait(client, upload(client).json()["job_id"])
    r = client.get(f"{API}/jobs/{job['job_id']}/result.pkl")
    assert r.status_code == 200
    data = joblib.load(io.BytesIO(r.content))
    assert sorted(data) == [1, 3]
    assert data[1]["verts"].shape == (60, 6890, 3) and data[1]["joints2d_img_coord"].shape == (60, 49, 2)


def test_only_the_newest_pkls_are_kept_and_an_older_one_is_made_again(client, settings, monkeypatch):
    """A .pkl is about 90 times the size of its result (1.7 GB for a long clip): one kept for every
    finished job could fill the disk."""
    from vibe_server.api import jobs as jobs_module

    monkeypatch.setattr(jobs_module, "KEPT_PKLS", 1)
    first, second = (wait(client, upload(client).json()["job_id"])["job_id"] for _ in range(2))
    pkl = {job_id: settings.jobs_dir / job_id / "vibe_output.pkl" for job_id in (first, second)}
    sent = client.get(f"{API}/jobs/{first}/result.pkl").content
    assert pkl[first].is_file()
    assert client.get(f"{API}/jobs/{second}/result.pkl").status_code == 200
    assert pkl[second].is_file() and not pkl[first].exists()
    assert client.get(f"{API}/jobs/{first}/result.pkl").content == sent  # made again from the result
    assert pkl[first].is_file() and not pkl[second].exists()


def test_result_is_409_until_done_and_404_for_unknown_jobs(settings, make_engine):
    slow = make_engine(delay_s=0.05)
    with client_for(settings, slow) as client:
        job_id = upload(client).json()["job_id"]
        assert_detail(client.get(f"{API}/jobs/{job_id}/result"), 409, "once it is done")
        client.delete(f"{API}/jobs/{job_id}")
    with client_for(settings, slow) as client:
        assert_detail(client.get(f"{API}/jobs/nope"), 404, "no job 'nope'")
        assert_detail(client.get(f"{API}/jobs/nope/result"), 404)
        assert_detail(client.delete(f"{API}/jobs/nope"), 404)


def test_progress_is_reported_while_running(settings, make_engine):
    with client_for(settings, make_engine(delay_s=0.02)) as client:
        job_id = upload(client).json()["job_id"]
        job = wait(client, job_id, until=("running",))
        seen = set()
        while job["status"] == "running":
            seen.add(job["stage"])
            assert 0.0 <= job["progress"] <= 1.0
            time.sleep(0.05)
            job = client.get(f"{API}/jobs/{job_id}").json()
        assert job["status"] == "done" and seen
        assert client.get(f"{API}/health").json()["queue_length"] == 0


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, words",
    [
        ({"smoothness": 0.5}, ["unknown parameter 'smoothness'"]),
        ({"smoothing": 3}, ["'smoothing'"]),
        ({"detector": "ssd"}, ["'detector'"]),
        ({"detection_stride": 0}, ["'detection_stride'"]),
        ({"min_track_frames": 100001}, ["'min_track_frames'", "less than or equal to 100000"]),
        ({"tracks_max": 10001}, ["'tracks_max'", "less than or equal to 10000"]),
        ({"chunking": "overlap"}, ["'chunking'"]),
        ("{not json", ["not valid JSON"]),
        ("[1, 2]", ["JSON object"]),
    ],
)
def test_bad_params_are_422_and_leave_nothing(client, settings, params, words):
    assert_detail(upload(client, params=params), 422, *words)
    assert leftover_files(settings) == []


def test_non_video_upload_is_415_and_leaves_nothing(client, settings):
    assert_detail(upload(client, name="bad.mp4", data=b"not a video, just text"), 415, "not a video", "bad.mp4")
    assert leftover_files(settings) == []


def test_upload_without_video_or_empty_is_400(client):
    r = client.post(f"{API}/jobs", files={"other": ("a.mp4", io.BytesIO(b"x"), "video/mp4")})
    assert_detail(r, 400, "'video'")
    assert_detail(upload(client, data=b""), 400, "empty")


def test_upload_size_cap_is_413_and_leaves_nothing(settings, engine):
    settings.max_upload_bytes = 1000
    with client_for(settings, engine) as client:
        assert_detail(upload(client, data=b"\x00" * 5000), 413, "limit")
        assert leftover_files(settings) == []
        accepted = upload(client, data=b"\x00" * 900)
        assert accepted.status_code == 201
    assert {p.parent.name for p in leftover_files(settings)} == {accepted.json()["job_id"]}


def test_an_upload_cut_off_closes_its_file_off_the_event_loop(settings, engine, monkeypatch):
    """Closing flushes the file's buffer, a disk write: a full or hung disk would stall every request,
    /health included, were it done on the event loop (as for the upload's other writes)."""
    import builtins

    from vibe_server.api import upload as upload_module

    closed_on = []

    class WatchedFile:
        def __init__(self, file):
            self.file = file

        def write(self, data):
            return self.file.write(data)

        def close(self):
            try:
                asyncio.get_running_loop()
                closed_on.append("the event loop")
            except RuntimeError:
                closed_on.append("a worker thread")
            self.file.close()

    monkeypatch.setattr(upload_module, "open", lambda *a, **k: WatchedFile(builtins.open(*a, **k)), raising=False)
    settings.max_upload_bytes = 1000
    with client_for(settings, engine) as client:
        assert_detail(upload(client, data=b"\x00" * 5000), 413, "limit")  # cut off at the cap
        assert upload(client, data=b"\x00" * 900).status_code == 201
    assert closed_on == ["a worker thread", "a worker thread"]


def test_size_cap_also_holds_without_content_length(settings, engine):
    """A chunked body has no Content-Length: the streaming parser counts the bytes itself."""
    settings.max_upload_bytes = 1000
    boundary = "XyZ"
    body = (
        (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"c.mp4\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n"
        ).encode()
        + b"\x00" * 5000
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunks():
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    with client_for(settings, engine) as client:
        r = client.post(
            f"{API}/jobs", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
        assert_detail(r, 413, "limit")
    assert leftover_files(settings) == []


@pytest.mark.parametrize("cut", ["in the video", "in the params", "before the params"])
def test_an_upload_cut_off_before_its_end_is_a_400_and_leaves_nothing(client, settings, cut):
    """Without its closing boundary an upload is not whole: no truncated video is queued, no params
    silently left at their defaults."""
    boundary = "XyZ"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="clip.mp4"\r\n\r\n'.encode()
    video = head + b"\x00fake video bytes" * 100
    params = f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n'.encode()
    bodies = {
        "in the video": video,
        "in the params": video + params + b'{"smoothing": 0.9}',
        "before the params": video + params,
    }
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    assert_detail(client.post(f"{API}/jobs", content=bodies[cut], headers=headers), 400, "cut off", "send it again")
    assert client.get(f"{API}/jobs").json() == {"jobs": []} and leftover_files(settings) == []
    whole = video + params + b'{"smoothing": 0.9}' + f"\r\n--{boundary}--\r\n".encode()
    assert client.post(f"{API}/jobs", content=whole, headers=headers).status_code == 201


def test_wrong_content_type_is_415(client):
    assert_detail(
        client.post(f"{API}/jobs", content=b"abc", headers={"content-type": "text/plain"}), 415, "multipart/form-data"
    )


def test_a_video_with_nobody_fails_with_a_reason_and_the_server_keeps_serving(client):
    job = wait(client, upload(client, data=b"nobody here").json()["job_id"])
    assert job["status"] == "failed" and "Nobody was found" in job["error"]
    assert_detail(client.get(f"{API}/jobs/{job['job_id']}/result"), 409, "failed", "Nobody")
    assert wait(client, upload(client).json()["job_id"])["status"] == "done"


def test_a_failed_job_never_loses_an_earlier_result(client):
    first = wait(client, upload(client).json()["job_id"])
    before = client.get(f"{API}/jobs/{first['job_id']}/result").content
    failed = wait(client, upload(client, data=b"nobody here").json()["job_id"])
    assert failed["status"] == "failed"
    after = client.get(f"{API}/jobs/{first['job_id']}/result")
    assert after.status_code == 200 and after.content == before


def test_missing_model_data_keeps_serving_with_a_reason(settings):
    def no_data(_settings):
        raise VibeError("Model data missing: /x/SMPL_NEUTRAL.pkl. Run 'vibe-mocap data install'.")

    with TestClient(create_app(settings, engine_loader=no_data), base_url=BASE, headers=AUTH) as client:
        health = client.get(f"{API}/health").json()
        assert health["model"].startswith("none")
        assert_detail(upload(client), 503, "data install")
        assert_detail(client.get(f"{API}/body_model"), 503)
        assert client.get(f"{API}/jobs").json() == {"jobs": []}


def test_the_reason_a_model_did_not_load_names_no_folder_of_the_server(settings, tmp_path, caplog):
    """Every client reads it, remote ones too on a --host 0.0.0.0 server; the server's log keeps the path."""
    settings.data_dir = tmp_path / "model data"

    def no_data(_settings):
        raise VibeError(f"Model data missing: {settings.data_dir / 'SMPL_NEUTRAL.pkl'}. Run 'vibe-mocap data install'.")

    with caplog.at_level(logging.ERROR, logger="vibe_server.api"):
        with TestClient(create_app(settings, engine_loader=no_data), base_url=BASE, headers=AUTH) as client:
            for answer in (upload(client), client.get(f"{API}/body_model")):
                assert_detail(answer, 503, "Model data missing: the server's model data folder/SMPL_NEUTRAL.pkl")
                assert str(tmp_path) not in answer.text
    assert str(settings.data_dir) in caplog.text


def test_a_damaged_smpl_file_is_a_503_naming_no_folder_of_the_server(settings, engine, tmp_path):
    engine.data_dir = tmp_path / "model data"
    engine.data_dir.mkdir()
    (engine.data_dir / "SMPL_NEUTRAL.pkl").write_bytes(b"not a pickle")
    with client_for(settings, engine) as client:
        answer = client.get(f"{API}/body_model")
    assert_detail(answer, 503, "the server's model data folder")
    assert str(tmp_path) not in answer.text


def test_a_server_without_model_data_still_applies_the_retention_limits(settings, engine, monkeypatch):
    """No model, so no job worker: finished jobs past --keep-finished-days still expire while it runs."""
    from vibe_server.api import jobs as jobs_module

    with client_for(settings, engine) as client:
        job_id = wait(client, upload(client).json()["job_id"])["job_id"]
    monkeypatch.setattr(jobs_module, "TIDY_INTERVAL_S", 0.05)

    def no_data(_settings):
        raise VibeError("Model data missing: /x/SMPL_NEUTRAL.pkl. Run 'vibe-mocap data install'.")

    with TestClient(create_app(settings, engine_loader=no_data), base_url=BASE, headers=AUTH) as client:
        assert client.get(f"{API}/jobs/{job_id}").status_code == 200  # within its days at start
        later = time.time() + settings.keep_finished_days * 86400 + 60
        monkeypatch.setattr(jobs_module.time, "time", lambda: later)
        deadline = time.monotonic() + 10
        while client.get(f"{API}/jobs/{job_id}").status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get(f"{API}/jobs/{job_id}").status_code == 404
        assert not (settings.jobs_dir / job_id).exists()


def test_a_gpu_out_of_memory_while_the_model_loads_keeps_serving_and_says_so(settings):
    """Another program holding the GPU's memory: the server stays up without a model, and /health and
    a submission say why and what to do (before: a traceback, and the server exited)."""
    import torch

    def no_memory(_settings):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    with TestClient(create_app(settings, engine_loader=no_memory), base_url=BASE, headers=AUTH) as client:
        health = client.get(f"{API}/health").json()
        assert health["model"] == "none (the GPU ran out of memory)"
        assert_detail(upload(client), 503, "GPU ran out of memory", "--device cpu")


def test_another_failure_while_the_model_loads_is_not_hidden(settings):
    def broken(_settings):
        raise RuntimeError("a defect")

    with pytest.raises(RuntimeError, match="a defect"):
        with TestClient(create_app(settings, engine_loader=broken), base_url=BASE, headers=AUTH):
            pass


def test_finished_results_stay_reachable_when_the_model_data_goes_missing(settings, engine):
    with client_for(settings, engine) as client:
        job_id = wait(client, upload(client).json()["job_id"])["job_id"]
        pkl_made = wait(client, upload(client).json()["job_id"])["job_id"]
        pkl = client.get(f"{API}/jobs/{pkl_made}/result.pkl").content

    def no_data(_settings):
        raise VibeError("Model data missing: /x/SMPL_NEUTRAL.pkl. Run 'vibe-mocap data install'.")

    with TestClient(create_app(settings, engine_loader=no_data), base_url=BASE, headers=AUTH) as client:
        assert client.get(f"{API}/jobs/{job_id}").json()["status"] == "done"
        assert client.get(f"{API}/jobs/{job_id}/result").status_code == 200
        assert client.get(f"{API}/jobs/{pkl_made}/result.pkl").content == pkl  # made before: no model needed
        assert_detail(client.get(f"{API}/jobs/{job_id}/result.pkl"), 503, "data install")  # to build: the model


# -- local paths ---------------------------------------------------------------------------------


def test_local_path_jobs_for_loopback_clients(client, tmp_path):
    video = tmp_path / "local.mp4"
    video.write_bytes(b"fake")
    r = client.post(f"{API}/jobs", json={"video_path": str(video), "params": {"tracks_max": 1}})
    assert r.status_code == 201, r.text
    job = wait(client, r.json()["job_id"])
    assert job["status"] == "done" and job["num_tracks"] == 1 and job["video_name"] == "local.mp4"
    assert video.exists()  # a local input is never deleted


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"video_path": "relative.mp4"}, 400, ["absolute"]),
        ({"video_path": "/x.mp4", "params": {"foo": 1}}, 422, ["unknown parameter 'params.foo'"]),
        ({"video_path": "/x.mp4", "extra": 1}, 422, ["unknown parameter 'extra'"]),
        ({"path": "/x.mp4"}, 422, ["video_path"]),
    ],
)
def test_bad_local_path_requests(client, body, status, words):
    assert_detail(client.post(f"{API}/jobs", json=body), status, *words)


@pytest.fixture
def real_video_client(settings, make_engine):
    """The real video reader (OpenCV/FFmpeg), scripted people."""
    with client_for(settings, make_engine(real_video=True, tracks={1: (0, 40)})) as c:
        yield c


def test_local_path_answers_never_tell_whether_a_file_exists(real_video_client, tmp_path):
    """Missing, a folder, a non-video, a name too long for the OS, a NUL byte: one status and one
    message shape, naming only the path the client sent (never a 500)."""
    client = real_video_client
    text = tmp_path / "bad.txt"
    text.write_text("not a video")
    answers = []
    for path in [
        str(text),
        str(tmp_path / "missing.mp4"),
        str(tmp_path),
        "/" + "x" * 5000 + ".mp4",
        "/" + "d/" * 3000 + "clip.mp4",
    ]:
        r = client.post(f"{API}/jobs", json={"video_path": path})
        assert_detail(r, 415, "is not a readable video file on this machine")
        detail = r.json()["detail"]
        assert detail.startswith(f"'{path[:200]}") and len(detail) < 400
        answers.append(detail.replace(path[:200], "<path>").replace("...", ""))
    assert len(set(answers)) == 1, answers
    assert_detail(client.post(f"{API}/jobs", json={"video_path": "/tmp/a\x00b.mp4"}), 400, "NUL")


def test_a_local_file_name_that_is_not_utf8_is_refused_as_unreadable_never_a_500(real_video_client, tmp_path):
    """Linux file names are bytes: one that is not UTF-8 reaches Python with a lone surrogate, which
    OpenCV crashes on and no JSON answer can encode. It gets the answer of an unreadable local file
    (the add-on then uploads the file), its name shown escaped."""

    def post(video_path):  # json.dumps escapes the surrogate ("\\udc80"), as any JSON client sends it
        body = json.dumps({"video_path": video_path})
        return real_video_client.post(f"{API}/jobs", content=body, headers={"content-type": "application/json"})

    raw = os.fsencode(tmp_path) + b"/clip\x80.avi"
    os.rename(write_clip(tmp_path / "clip.avi"), raw)
    for path in (os.fsdecode(raw), os.fsdecode(raw).replace("clip", "gone")):  # '.../clip\udc80.avi'
        r = post(path)
        assert_detail(r, 415, "\\udc80.avi' is not a readable video file")
        assert r.headers[REFUSAL_HEADER] == LOCAL_PATH_UNREADABLE
    assert_detail(post("clip\udc80.avi"), 400, "'clip\\udc80.avi' is not an absolute path")


def test_local_path_refused_for_other_clients(settings, engine, tmp_path):
    settings.host = "0.0.0.0"
    video = tmp_path / "local.mp4"
    video.write_bytes(b"fake")
    with client_for(settings, engine, client_host="192.168.1.7") as client:
        assert_detail(client.post(f"{API}/jobs", json={"video_path": str(video)}), 403, "same machine")
        assert upload(client).status_code == 201


@pytest.mark.parametrize(
    "source, status",
    [
        ("0", 403),
        ("/videos/clip.mp4", 403),
        ("rtsp://127.0.0.1:8554/cam", 403),  # an RTSP server can redirect FFmpeg to any host
        ("http://127.0.0.1:1/cam", 400),  # named from elsewhere too; nothing answers there: one message
    ],
)
def test_live_sources_only_a_client_on_the_servers_machine_may_name(settings, engine, source, status):
    settings.host = "0.0.0.0"
    with client_for(settings, engine, client_host="192.168.1.7") as client:
        r = client.post(f"{API}/live", json={"source": source})
        assert r.status_code == status, r.text
        if status == 403:
            assert "Only a client on the server's own machine may name a camera, a file or an RTSP" in r.text


# -- security -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host, ok",
    [
        ("127.0.0.1:8765", True),
        ("localhost:8765", True),
        ("127.0.0.1", True),
        ("localhost.attacker.example", False),
        ("localhost.attacker.example:8765", False),
        ("127.0.0.1:9999", False),
        ("evil.example", False),
        ("", False),
    ],
)
def test_host_header_must_match_the_bound_host(client, host, ok):
    r = client.get(f"{API}/health", headers={"host": host})
    assert (r.status_code == 200) == ok, (host, r.text)
    if not ok:
        assert_detail(r, 400, "Host header")
        assert_detail(client.get(f"{API}/jobs", headers={"host": host}), 400)
    # no token needed, but the same Host check
    assert (client.get(f"{API}/openapi.json", headers={"host": host}).status_code == 200) == ok


@pytest.mark.parametrize("path", ["/jobs/", "/health/", "/no-such-route"])
def test_the_host_is_checked_before_any_route_answers(client, path):
    """FastAPI's trailing-slash redirect answered before the Host check, naming the client's Host
    (307 to http://evil.example/api/v1/jobs); a route the server lacks is refused the same way."""
    r = client.get(f"{API}{path}", headers={"host": "evil.example"}, follow_redirects=False)
    assert_detail(r, 400, "Host header 'evil.example'")
    assert "location" not in r.headers
    r = client.get(f"{API}{path}", follow_redirects=False)  # its own address: no redirect either
    assert_detail(r, 404, f"no '{API}{path}'", "docs/server.md")
    assert "location" not in r.headers


def test_every_client_needs_the_token_loopback_too(settings, engine, tmp_path):
    """Other accounts on this machine reach 127.0.0.1 too: without the token they can neither
    submit (upload or local path), list, read nor delete jobs."""
    video = tmp_path / "local.mp4"
    video.write_bytes(b"fake")
    with client_for(settings, engine) as owner:
        job_id = wait(owner, upload(owner).json()["job_id"])["job_id"]
    for token in (None, "wrong"):
        with client_for(settings, engine, token=token) as other:
            health = other.get(f"{API}/health")
            assert health.status_code == 200
            assert str(settings.jobs_dir) not in health.text and job_id not in health.text
            assert_detail(other.get(f"{API}/jobs"), 401, "Bearer", "token file")
            assert_detail(upload(other), 401)
            assert_detail(other.post(f"{API}/jobs", json={"video_path": str(video)}), 401)
            for method, url in [
                ("GET", f"/jobs/{job_id}"),
                ("GET", f"/jobs/{job_id}/result"),
                ("DELETE", f"/jobs/{job_id}"),
                ("GET", "/body_model"),
            ]:
                assert_detail(other.request(method, f"{API}{url}"), 401)
    with client_for(settings, engine) as owner:
        assert owner.get(f"{API}/jobs/{job_id}/result").status_code == 200


def test_token_can_be_swapped_through_dependency_overrides(settings, engine):
    app = create_app(settings, engine_loader=lambda s: engine)
    app.dependency_overrides[get_settings] = lambda: Settings(jobs_dir=settings.jobs_dir, token="other")
    with TestClient(app, base_url=BASE, headers=AUTH) as client:
        assert client.get(f"{API}/jobs").status_code == 401
        assert client.get(f"{API}/jobs", headers={"Authorization": "Bearer other"}).status_code == 200


def test_an_upload_limit_over_the_space_for_waiting_uploads_is_refused(tmp_path):
    """An upload between the two got a 507 saying waiting jobs filled the space, with none waiting."""
    settings = Settings(token="t", jobs_dir=tmp_path, max_upload_bytes=2 * 1024**2, max_queued_upload_bytes=1024**2)
    with pytest.raises(VibeError, match=r"--max-upload-mb \(2\) is larger than --max-queued-upload-mb \(1\)"):
        create_app(settings)
    settings.max_queued_upload_bytes = settings.max_upload_bytes
    create_app(settings)


def test_every_server_needs_a_token(tmp_path):
    for host in ("127.0.0.1", "0.0.0.0", "192.168.1.5"):
        with pytest.raises(VibeError, match="token"):
            create_app(Settings(host=host, jobs_dir=tmp_path))
        create_app(Settings(host=host, token="t", jobs_dir=tmp_path))


@pytest.mark.parametrize("token", [" ", "two words", "tab\tin", "caf\u00e9", "line\nbreak", "x" * 257])
def test_a_token_no_client_could_send_is_refused(tmp_path, token):
    with pytest.raises(VibeError, match="printable ASCII without spaces, at most 256 characters"):
        create_app(Settings(token=token, jobs_dir=tmp_path))


def test_foreign_origin_cannot_change_state_and_no_cors_headers(client, settings):
    assert_detail(upload(client, headers={"Origin": "http://evil.example"}), 403, "web page")
    assert_detail(upload(client, headers={"Origin": "null"}), 403)
    assert leftover_files(settings) == []
    job_id = wait(client, upload(client, headers={"Origin": BASE}).json()["job_id"])["job_id"]
    assert_detail(client.delete(f"{API}/jobs/{job_id}", headers={"Origin": "http://evil.example"}), 403)
    r = client.get(f"{API}/jobs", headers={"Origin": "http://evil.example"})
    assert not any(h.lower().startswith("access-control-") for h in r.headers)
    pre = client.options(
        f"{API}/jobs", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in pre.headers


# -- cancel, delete, restart --------------------------------------------------------------------


def test_cancel_a_running_job_then_delete_it(settings, make_engine):
    with client_for(settings, make_engine(delay_s=0.05)) as client:
        job_id = upload(client).json()["job_id"]
        wait(client, job_id, until=("running",))
        r = client.delete(f"{API}/jobs/{job_id}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        deadline = time.monotonic() + 10
        while list(settings.jobs_dir.glob(f"{job_id}/input*")):  # the upload is cleaned up
            assert time.monotonic() < deadline, "the cancelled job's upload was not deleted"
            time.sleep(0.05)
        assert client.get(f"{API}/jobs/{job_id}").json()["status"] == "cancelled"
        assert client.delete(f"{API}/jobs/{job_id}").status_code == 200
        assert client.get(f"{API}/jobs/{job_id}").status_code == 404


class HeldAfterItsRun:
    """An engine whose run, once done, waits to be let go: a DELETE can come after the run's last look
    at its cancellation and before its result is written."""

    def __init__(self, engine):
        self.engine, self.ran, self.let_go = engine, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def run(self, *args, **kwargs):
        output = self.engine.run(*args, **kwargs)
        self.ran.set()
        assert self.let_go.wait(10)
        return output


def test_a_job_deleted_twice_while_it_runs_leaves_no_folder_and_no_failure(settings, make_engine, caplog):
    engine = HeldAfterItsRun(make_engine())
    with client_for(settings, engine) as client:
        job_id = upload(client).json()["job_id"]
        assert engine.ran.wait(10)
        assert client.delete(f"{API}/jobs/{job_id}").json()["status"] == "cancelled"
        assert client.delete(f"{API}/jobs/{job_id}").status_code == 200  # forgotten at once...
        assert client.get(f"{API}/jobs/{job_id}").status_code == 404
        assert (settings.jobs_dir / job_id).is_dir()  # ...its folder kept while the run may write there
        engine.let_go.set()
        deadline = time.monotonic() + 10
        while (settings.jobs_dir / job_id).exists():
            assert time.monotonic() < deadline, "the deleted job's folder stayed"
            time.sleep(0.02)
        assert leftover_files(settings) == []
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        assert wait(client, upload(client).json()["job_id"])["status"] == "done"  # the worker goes on


def test_cancel_a_queued_job(settings, make_engine):
    with client_for(settings, make_engine(delay_s=0.05)) as client:
        first = upload(client).json()["job_id"]
        second = upload(client).json()["job_id"]
        assert client.delete(f"{API}/jobs/{second}").json()["status"] == "cancelled"
        client.delete(f"{API}/jobs/{first}")
        assert wait(client, second)["status"] == "cancelled"


def test_deleting_a_finished_job_removes_its_result(client, settings):
    job_id = wait(client, upload(client).json()["job_id"])["job_id"]
    r = client.delete(f"{API}/jobs/{job_id}")
    assert r.status_code == 200 and r.json()["status"] == "done"
    assert client.get(f"{API}/jobs/{job_id}/result").status_code == 404
    assert not (settings.jobs_dir / job_id).exists()


def test_a_result_removed_before_it_is_sent_is_a_404_naming_no_path(client, settings):
    job_id = wait(client, upload(client).json()["job_id"])["job_id"]
    r = client.get(f"{API}/jobs/{job_id}/result")
    assert r.headers["content-disposition"] == 'attachment; filename="clip_vibe.npz"'
    assert int(r.headers["content-length"]) == len(r.content)
    (settings.jobs_dir / job_id / "result.npz").unlink()  # as a deletion between the check and the send does
    for name in ("result", "result.pkl"):
        r = client.get(f"{API}/jobs/{job_id}/{name}")
        assert_detail(r, 404, "is gone", "submit the video again")
        assert str(settings.jobs_dir) not in r.text


def full_disk(path) -> OSError:
    return OSError(errno.ENOSPC, "No space", str(path))


def test_a_full_disk_while_the_pkl_is_made_is_a_507(client, settings, monkeypatch):
    from vibe_server.pipeline import postprocess

    job_id = wait(client, upload(client).json()["job_id"])["job_id"]
    with monkeypatch.context() as m:
        m.setattr(postprocess, "atomic_write", lambda path, *args, **kwargs: raise_(full_disk(path)))
        r = client.get(f"{API}/jobs/{job_id}/result.pkl")
        assert_detail(r, 507, "disk is full")
        assert str(settings.jobs_dir) not in r.text
    assert client.get(f"{API}/jobs/{job_id}/result.pkl").status_code == 200


def test_a_pkl_too_large_to_build_in_memory_is_refused_before_the_build(client, settings, monkeypatch):
    """Its vertices would be held in memory whole (4.5 GB for 10 minutes of 3 people at 30 frames/s)."""
    from vibe_server.api.routes import jobs as jobs_routes

    job_id = wait(client, upload(client).json()["job_id"])["job_id"]  # tracks of 60 and 40 frames
    release, builds = held_pkl_builds(monkeypatch)
    monkeypatch.setattr(jobs_routes, "MAX_PKL_PERSON_FRAMES", 99)
    r = client.get(f"{API}/jobs/{job_id}/result.pkl")
    assert_detail(r, 413, "100 person-frames", "(99)", "vibe-mocap infer VIDEO --pkl")
    assert builds == [] and not (settings.jobs_dir / job_id / "vibe_output.pkl").exists()
    monkeypatch.setattr(jobs_routes, "MAX_PKL_PERSON_FRAMES", 100)
    release.set()
    assert client.get(f"{API}/jobs/{job_id}/result.pkl").status_code == 200 and len(builds) == 1


@pytest.mark.parametrize("deletion", ["removes the folder", "leaves the folder"])
def test_a_job_deleted_while_its_pkl_is_built_leaves_no_file(client, settings, monkeypatch, deletion):
    """The build never makes the job folder again, and a .pkl renamed into a folder whose job is gone
    (a deletion under way) is removed: the request gets the 404 of a result gone."""
    from vibe_server.api import job_store

    job_id = wait(client, upload(client).json()["job_id"])["job_id"]
    release, builds = held_pkl_builds(monkeypatch)
    answer = {}
    asking = threading.Thread(target=lambda: answer.update(r=client.get(f"{API}/jobs/{job_id}/result.pkl")))
    asking.start()
    try:
        assert wait_until(lambda: builds)
        with monkeypatch.context() as m:
            if deletion == "leaves the folder":  # as a deletion that listed the folder before the file came
                m.setattr(job_store, "remove_folder", lambda folder: None)
            assert client.delete(f"{API}/jobs/{job_id}").status_code == 200
    finally:
        release.set()
        asking.join(30)
    assert_detail(answer["r"], 404, "is gone", "submit the video again")
    assert not (settings.jobs_dir / job_id / "vibe_output.pkl").exists()
    assert not list(settings.jobs_dir.glob(f"{job_id}/*.part"))  # nor its temporary file
    assert (settings.jobs_dir / job_id).exists() == (deletion == "leaves the folder")


def test_finished_results_survive_a_restart(settings, engine):
    with client_for(settings, engine) as client:
        job_id = wait(client, upload(client).json()["job_id"])["job_id"]
        before = client.get(f"{API}/jobs/{job_id}/result").content
    # a job that was running when the server died
    record = json.loads((settings.jobs_dir / job_id / "job.json").read_text())
    record["job"].update(job_id="crashed0000000000", status="running")
    (settings.jobs_dir / "crashed0000000000").mkdir()
    (settings.jobs_dir / "crashed0000000000" / "job.json").write_text(json.dumps(record))
    with client_for(settings, engine) as client:
        assert client.get(f"{API}/jobs/{job_id}").json()["status"] == "done"
        assert client.get(f"{API}/jobs/{job_id}/result").content == before
        crashed = client.get(f"{API}/jobs/crashed0000000000").json()
        assert crashed["status"] == "failed" and "submit the video again" in crashed["error"]


def test_a_job_interrupted_by_shutdown_runs_again_after_restart(settings, make_engine):
    with client_for(settings, make_engine(delay_s=0.05)) as client:
        job_id = upload(client).json()["job_id"]
        wait(client, job_id, until=("running",))
    record = json.loads((settings.jobs_dir / job_id / "job.json").read_text())
    assert record["job"]["status"] == "queued"
    with client_for(settings, make_engine()) as client:
        assert wait(client, job_id)["status"] == "done"


def test_body_model_download(settings, make_engine, tmp_path):
    engine = make_engine()
    smpl_dir = tmp_path / "smpl"
    write_smpl_files(smpl_dir)
    engine.data_dir = smpl_dir
    with client_for(settings, engine) as client:
        r = client.get(f"{API}/body_model")
        assert r.status_code == 200
        model = load_body_model(io.BytesIO(r.content))
        assert model.v_template.shape == (6890, 3) and model.shapedirs.shape == (6890, 3, 10)
        # /health names what /body_model sends, so that the add-on knows when its copy is out of date
        assert client.get(f"{API}/health").json()["body_model"] == body_model_fingerprint(model)
    engine.data_dir = None
    with client_for(settings, engine) as client:
        assert_detail(client.get(f"{API}/body_model"), 503, "data install")
        assert client.get(f"{API}/health").json()["body_model"] is None


def test_first_requests_for_the_body_model_at_once_build_it_once(settings, make_engine, tmp_path, monkeypatch):
    """Each used to load the SMPL file and build the npz in a thread of its own."""
    from vibe_server.api.routes import body_model as route

    engine = make_engine()
    engine.data_dir = tmp_path / "smpl"
    write_smpl_files(engine.data_dir)
    builds = []

    def slow_npz(*args):
        builds.append(args)
        time.sleep(0.5)  # long enough for every request to arrive meanwhile
        return real_npz(*args)

    real_npz = route._npz
    monkeypatch.setattr(route, "_npz", slow_npz)
    with live_server(settings, engine) as base:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: httpx.get(f"{base}/body_model", headers=AUTH, timeout=30), range(6)))
    assert [a.status_code for a in answers] == [200] * 6 and len({a.content for a in answers}) == 1
    assert len(builds) == 1


def test_the_body_model_fingerprint_follows_the_model_not_the_start(settings, make_engine, tmp_path):
    engine = make_engine()
    engine.data_dir = tmp_path / "smpl"
    fingerprints = []
    for seed in (0, 0, 1):  # the same model on a second start, then another model
        write_smpl_files(engine.data_dir, seed=seed)
        with client_for(settings, engine) as client:
            fingerprints.append(client.get(f"{API}/health").json()["body_model"])
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", fingerprints[0])
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]


def test_the_fingerprint_is_noted_for_the_next_start_and_a_bad_note_is_not_trusted(
    settings, make_engine, tmp_path, monkeypatch
):
    """Reading and hashing the SMPL file took about 0.4 s of every start: the next start reads the
    note the last one left in the jobs folder, while the file is the same one."""
    from vibe_server.api.app import FINGERPRINT_NOTE
    from vibe_server.api.routes import body_model as route

    engine = make_engine()
    engine.data_dir = tmp_path / "smpl"
    write_smpl_files(engine.data_dir, seed=0)
    settings.jobs_dir.mkdir(parents=True)
    with client_for(settings, engine) as client:
        first = client.get(f"{API}/health").json()["body_model"]
    note = settings.jobs_dir / FINGERPRINT_NOTE
    assert json.loads(note.read_text())["fingerprint"] == first
    reads = []
    real_load = route.load_smpl_pkl
    monkeypatch.setattr(route, "load_smpl_pkl", lambda path: reads.append(path) or real_load(path))
    with client_for(settings, engine) as client:
        assert client.get(f"{API}/health").json()["body_model"] == first and reads == []
    # a note that is not this file's, or not a fingerprint, is computed again (and corrected)
    for bad in (dict(json.loads(note.read_text()), size=1), dict(json.loads(note.read_text()), fingerprint="x")):
        note.write_text(json.dumps(bad))
        with client_for(settings, engine) as client:
            assert client.get(f"{API}/health").json()["body_model"] == first
    assert len(reads) == 2 and json.loads(note.read_text())["fingerprint"] == first


def test_a_body_model_replaced_after_the_start_is_not_sent_under_the_old_fingerprint(
    settings, make_engine, tmp_path, caplog
):
    engine = make_engine()
    engine.data_dir = tmp_path / "smpl"
    write_smpl_files(engine.data_dir, seed=0)
    with client_for(settings, engine) as client:
        write_smpl_files(engine.data_dir, seed=1)  # the model data installed again while the server runs
        r = client.get(f"{API}/body_model")
    assert_detail(r, 503, "SMPL model file changed after this server started", "restart")
    assert str(tmp_path) not in r.text  # the server's folders are named in its log only
    assert str(engine.data_dir / "SMPL_NEUTRAL.pkl") in caplog.text


# -- only real video containers reach FFmpeg ---------------------------------------------------


def write_clip(path, num_frames=60, fourcc="MJPG", size=(64, 48)):
    """A small real video file (random frames, so every frame differs)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), 25, size)
    rng = np.random.default_rng(0)
    for _ in range(num_frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def not_a_video_files(folder):
    """Files that make FFmpeg read OTHER files: an HLS playlist, a concat list, an image-sequence
    pattern (a file literally named like the pattern, so that the path exists)."""
    clip = write_clip(folder / "secret.avi")
    playlist = folder / "list.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{clip}\n#EXT-X-ENDLIST\n")
    concat = folder / "concat.txt"
    concat.write_text(f"ffconcat version 1.0\nfile '{clip}'\nfile '{clip}'\n")
    for i in range(5):
        cv2.imwrite(str(folder / f"img{i:03d}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    pattern = folder / "img%03d.png"
    pattern.write_bytes((folder / "img000.png").read_bytes())
    return {"playlist": playlist, "concat": concat, "pattern": pattern}


@pytest.mark.parametrize("kind", ["playlist", "concat", "pattern"])
def test_playlists_concat_lists_and_image_patterns_are_refused(real_video_client, settings, tmp_path, kind):
    """Uploaded (whatever the client names it) or named by a local path: never decoded."""
    path = not_a_video_files(tmp_path)[kind]
    for name in (path.name, "clip.mp4"):
        r = upload(real_video_client, name=name, data=path.read_bytes())
        assert_detail(r, 415, name, "Playlists (.m3u8), concat lists, image sequences")
        assert str(settings.jobs_dir) not in r.text
    assert_detail(
        real_video_client.post(f"{API}/jobs", json={"video_path": str(path)}), 415, "not a readable video file"
    )
    assert leftover_files(settings) == []


def test_an_upload_is_saved_under_a_fixed_name_whatever_the_client_calls_it(real_video_client, settings, tmp_path):
    data = write_clip(tmp_path / "clip.avi").read_bytes()
    job_id = upload(real_video_client, name="clip.m3u8", data=data).json()["job_id"]
    assert [p.name for p in (settings.jobs_dir / job_id).glob("input*")] in (["input.video"], [])
    job = wait(real_video_client, job_id)
    assert job["status"] == "done" and job["video_name"] == "clip.m3u8", job


def test_error_answers_name_only_what_the_client_sent(real_video_client, settings, tmp_path):
    r = upload(real_video_client, name="notes.mp4", data=b"these are not frames\n" * 50)
    assert_detail(r, 415, "notes.mp4")
    assert str(settings.jobs_dir) not in r.text and "input" not in r.text
    long_name = "n" * 1000 + ".mp4"
    r = upload(real_video_client, name=long_name, data=b"these are not frames\n" * 50)
    assert r.status_code == 415 and len(r.json()["detail"]) < 1000


def test_a_failed_job_names_the_upload_by_its_file_name_not_the_server_path(settings, make_engine, scripted):
    engine = make_engine()
    opened = []

    def open_then_fail(path, stopped=None):  # the probe opens it; the run finds it damaged
        opened.append(path)
        if len(opened) > 1:
            raise VibeError(f"{path} is damaged in the middle; export it again.")
        return scripted.open_video(path)

    engine.open_video = open_then_fail
    with client_for(settings, engine) as client:
        job = wait(client, upload(client, name="holiday.mp4").json()["job_id"])
    assert job["status"] == "failed" and job["error"] == "holiday.mp4 is damaged in the middle; export it again."


# -- the event loop never blocks --------------------------------------------------------------


@contextlib.contextmanager
def live_server(settings, engine):
    """The app under uvicorn on 127.0.0.1 in a thread (one event loop, as in production)."""
    settings.port = free_port()
    app = create_app(settings, engine_loader=lambda s: engine)
    with served_in_a_thread(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning")):
        yield f"http://127.0.0.1:{settings.port}{API}"


def test_a_probe_that_never_ends_does_not_block_health(settings, make_engine, tmp_path):
    """Opening a submitted video runs in a worker thread with a time limit: /health answers in
    well under a second meanwhile, and the stuck submissions get a 415 at the limit."""
    engine = make_engine()
    release, stuck = threading.Event(), []

    def stuck_open_video(path, stopped=None):  # like FFmpeg stuck in one call it cannot leave
        stuck.append(path)
        release.wait(20)
        raise VibeError("released")

    engine.open_video = stuck_open_video
    settings.probe_timeout_s = 6.0
    video = tmp_path / "local.mp4"
    video.write_bytes(b"fake")
    answers = {}

    def submit(name, **kwargs):
        answers[name] = httpx.post(f"{base}/jobs", headers=AUTH, timeout=30, **kwargs)

    try:
        with live_server(settings, engine) as base:
            submitters = [
                threading.Thread(
                    target=submit, args=("upload1",), kwargs={"files": {"video": ("a.mp4", b"\x00video", "video/mp4")}}
                ),
                threading.Thread(
                    target=submit, args=("upload2",), kwargs={"files": {"video": ("b.mp4", b"\x00video", "video/mp4")}}
                ),
                threading.Thread(target=submit, args=("local",), kwargs={"json": {"video_path": str(video)}}),
            ]
            for t in submitters:
                t.start()
            deadline = time.monotonic() + 5
            while len(stuck) < 3:  # every probe is stuck now
                assert time.monotonic() < deadline, stuck
                time.sleep(0.01)
            slowest = 0.0
            with httpx.Client(timeout=10) as health_client:
                for _ in range(5):
                    t0 = time.perf_counter()
                    assert health_client.get(f"{base}/health").status_code == 200
                    slowest = max(slowest, time.perf_counter() - t0)
                    time.sleep(0.2)
            for t in submitters:
                t.join(30)
            assert slowest < 2.5, f"/health took {slowest:.2f} s during the probes"  # blocked: ~5 s
            for name in ("upload1", "upload2"):
                assert_detail(answers[name], 415, "within 6 s", "Remux it to mp4", "--probe-timeout-s")
            assert_detail(answers["local"], 415, "not a readable video file")
    finally:
        release.set()


def test_live_playlist_uploads_are_refused_and_health_stays_fast(settings, make_engine, tmp_path):
    """The real server and the real video reader: two uploads of a playlist without an end marker."""
    clip = write_clip(tmp_path / "clip.avi")
    live = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{clip}\n".encode()
    answers = []
    with live_server(settings, make_engine(real_video=True)) as base:
        posts = [
            threading.Thread(
                target=lambda: answers.append(
                    httpx.post(
                        f"{base}/jobs",
                        headers=AUTH,
                        timeout=30,
                        files={"video": ("live.m3u8", live, "application/x-mpegurl")},
                    )
                )
            )
            for _ in range(2)
        ]
        for t in posts:
            t.start()
        time.sleep(0.5)  # the uploads are in (a live playlist used to hang here)
        t0 = time.perf_counter()
        health = httpx.get(f"{base}/health", timeout=5)
        took = time.perf_counter() - t0
        for t in posts:
            t.join(30)
    assert health.status_code == 200 and took < 2.5  # blocked: until the 30 s timeout
    assert [a.status_code for a in answers] == [415, 415] and "Playlists" in answers[0].json()["detail"]


def held_pkl_builds(monkeypatch) -> tuple[threading.Event, list]:
    """Every .pkl build waits for the event it returns once it has read its result (as a long video's
    build takes minutes); the list counts the builds."""
    from vibe_server.pipeline import postprocess

    release, builds = threading.Event(), []
    real_output = postprocess.official_output

    def held_output(result, smpl_fn):
        builds.append(result)
        release.wait(60)
        return real_output(result, smpl_fn)

    monkeypatch.setattr(postprocess, "official_output", held_output)
    return release, builds


def test_requests_waiting_for_a_pkl_build_hold_no_worker_thread(settings, engine, monkeypatch):
    """48 requests for one job's .pkl while it is built (more than the 40 threads of plain-function
    routes): they share one build, and /health, GET /jobs/{id} and another job's .pkl, already made,
    still answer at once."""
    with live_server(settings, engine) as base:
        ids = []
        for name in ("a.mp4", "b.mp4"):
            r = httpx.post(f"{base}/jobs", headers=AUTH, files={"video": (name, b"\x00video", "video/mp4")})
            ids.append(r.json()["job_id"])
        for job_id in ids:
            while httpx.get(f"{base}/jobs/{job_id}", headers=AUTH).json()["status"] != "done":
                time.sleep(0.05)
        built, other = ids
        assert httpx.get(f"{base}/jobs/{other}/result.pkl", headers=AUTH, timeout=30).status_code == 200
        release, builds = held_pkl_builds(monkeypatch)
        answers = []
        waiting = [
            threading.Thread(
                target=lambda: answers.append(httpx.get(f"{base}/jobs/{built}/result.pkl", headers=AUTH, timeout=60))
            )
            for _ in range(48)
        ]
        try:
            for t in waiting:
                t.start()
            deadline = time.monotonic() + 30
            while not builds:  # the one build has begun, and the requests wait for it
                assert time.monotonic() < deadline
                time.sleep(0.01)
            time.sleep(1.0)  # the other 47 requests arrive (none holds a worker thread, or the ones below wait)
            took = {}
            with httpx.Client(headers=AUTH, timeout=10) as checking:
                for path in ("/health", f"/jobs/{built}", f"/jobs/{other}/result.pkl"):
                    t0 = time.perf_counter()
                    assert checking.get(f"{base}{path}").status_code == 200
                    took[path] = time.perf_counter() - t0
        finally:
            release.set()
            for t in waiting:
                t.join(60)
    assert max(took.values()) < 2.5, took  # blocked: until the build is released, after their 10 s timeout
    assert len(builds) == 1 and [a.status_code for a in answers] == [200] * 48
    assert len({a.content for a in answers}) == 1


def test_a_slow_disk_never_holds_up_health_or_the_job_list(settings, engine, monkeypatch):
    """Writing a job's record takes 3 s (a stalled disk): /health (on the event loop) and GET /jobs
    answer at once meanwhile; no route waits on a lock held during disk work."""
    from vibe_server.api import jobs as jobs_module
    from vibe_server.api.job_store import write_record

    stalled_disk, writing = threading.Event(), threading.Event()

    def slow_write(folder, data):
        if data["job"]["status"] == "queued" and stalled_disk.is_set():
            writing.set()
            time.sleep(6)
        write_record(folder, data)

    monkeypatch.setattr(jobs_module, "write_record", slow_write)
    with client_for(settings, engine) as client:
        first = wait(client, upload(client).json()["job_id"])
        stalled_disk.set()
        submitting = threading.Thread(target=upload, args=(client,))
        submitting.start()
        assert writing.wait(30)  # the second job's record is being written
        took = {}
        for path in ("/health", "/jobs"):
            t0 = time.perf_counter()
            assert client.get(f"{API}{path}").status_code == 200
            took[path] = time.perf_counter() - t0
        submitting.join(30)
    assert first["status"] == "done"
    assert max(took.values()) < 2.5, took  # blocked: until the 6 s write ends


def test_probe_slots_limit_time_and_threads():
    """Results and errors come back; past the time limit the caller is answered and the probe is
    asked to stop (its thread keeps the slot until it ends); with every slot taken a reservation is
    a 503; a slot reserved but never used is given back at the end of its block."""
    from fastapi import HTTPException

    from vibe_server.api.blocking import BlockingTimeout, ProbeSlots

    slots, release, stop_seen = ProbeSlots(max_threads=1), threading.Event(), []

    def slow_probe(stop):  # a probe that cannot leave the call it is in until released
        release.wait(10)
        stop_seen.append(stop.is_set())

    async def scenario():
        with slots.reserved() as slot:
            assert await slot.run(lambda stop: 5, timeout_s=5) == 5
        with slots.reserved() as slot, pytest.raises(VibeError, match="bad file"):
            await slot.run(lambda stop: (_ for _ in ()).throw(VibeError("bad file")), timeout_s=5)
        with slots.reserved():  # not used: given back here
            pass
        t0 = time.perf_counter()
        with slots.reserved() as slot, pytest.raises(BlockingTimeout, match="longer than 0.3 s"):
            await slot.run(slow_probe, timeout_s=0.3)
        assert time.perf_counter() - t0 < 1.0
        with pytest.raises(HTTPException) as busy, slots.reserved():
            pass
        assert busy.value.status_code == 503 and "retry" in busy.value.detail
        release.set()
        for _ in range(100):  # the abandoned thread ends and frees its slot
            try:
                with slots.reserved() as slot:
                    return await slot.run(lambda stop: 7, timeout_s=5)
            except HTTPException:
                await asyncio.sleep(0.02)

    assert asyncio.run(scenario()) == 7
    assert stop_seen == [True]


def test_a_probe_past_its_limit_stops(settings, engine):
    """The probe of a video that takes too long to open (a container decoded whole to count its
    frames) is asked to stop at the limit, and stops: it no longer holds a thread, nor the upload."""
    ended = threading.Event()

    def counting_open_video(path, stopped=None):  # decodes frame after frame until stopped
        deadline = time.monotonic() + 30
        while not (stopped and stopped()) and time.monotonic() < deadline:
            time.sleep(0.01)
        ended.set()
        raise VibeError("stopped")

    engine.open_video = counting_open_video
    settings.probe_timeout_s = 0.5
    with client_for(settings, engine) as client:
        assert_detail(upload(client, name="long.mkv"), 415, "'long.mkv' did not open within 0.5 s")
        assert ended.wait(3), "the probe ran on past its time limit"
    assert leftover_files(settings) == []


def test_a_received_upload_is_not_thrown_away_when_probes_are_stuck(settings, engine, tmp_path):
    """An upload holds its probe's slot from before its body: probes stuck past their limit (in a
    call they cannot leave) may take every other slot meanwhile, and once every byte has arrived it
    is still checked and queued, not refused with a 503 and deleted. With every slot taken, the next
    upload is refused before its body is sent."""
    release = threading.Event()

    def open_video(path, stopped=None):
        if Path(path).read_bytes().startswith(b"slow"):
            release.wait(30)
        return engine.frontend.open_video(path)

    engine.open_video = open_video
    settings.probe_timeout_s = 1.0
    stuck = tmp_path / "stuck.mp4"
    stuck.write_bytes(b"slow to open")

    def upload_request(port, video: bytes) -> tuple[http.client.HTTPConnection, bytes, bytes]:
        """A multipart upload of ``video`` whose headers are sent: (connection, body, closing boundary)."""
        head = b'--XyZ\r\nContent-Disposition: form-data; name="video"; filename="clip.mp4"\r\n\r\n'
        body, closing = head + video, b"\r\n--XyZ--\r\n"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.putrequest("POST", f"{API}/jobs")
        connection.putheader("Authorization", f"Bearer {TOKEN}")
        connection.putheader("Content-Type", "multipart/form-data; boundary=XyZ")
        connection.putheader("Content-Length", str(len(body) + len(closing)))
        connection.endheaders()
        return connection, body, closing

    answers = []

    def submit_stuck():
        answers.append(httpx.post(f"{base}/jobs", headers=AUTH, json={"video_path": str(stuck)}, timeout=30))

    try:
        with live_server(settings, engine) as base:
            connection, body, closing = upload_request(settings.port, b"\x00video" * 100_000)
            connection.send(body)
            assert wait_until(lambda: any(settings.jobs_dir.glob("*/input.video"))), "the upload did not begin"
            submitters = [threading.Thread(target=submit_stuck) for _ in range(MAX_PROBE_THREADS)]
            for t in submitters:
                t.start()
            for t in submitters:
                t.join(30)
            assert sorted({r.status_code for r in answers}) == [415, 503], [r.text for r in answers]
            late, _, _ = upload_request(settings.port, b"\x00video")
            refused = late.getresponse()  # answered before its body is sent
            assert refused.status == 503 and "busy" in json.loads(refused.read())["detail"]

            connection.send(closing)
            r = connection.getresponse()
            assert r.status == 201, r.read()
            job_id = json.loads(r.read())["job_id"]
            assert wait_until(lambda: httpx.get(f"{base}/jobs/{job_id}", headers=AUTH).json()["status"] == "done")
    finally:
        release.set()


def test_a_pkl_build_under_way_does_not_keep_a_stopping_server_alive(tmp_path):
    """The event loop ends (the server stopped: requests cut off) while a .pkl build still runs: the
    process exits at once. The build ran in asyncio's thread pool, which Python waits for at exit,
    so a big .pkl held a stopped server (and a second Ctrl-C) for as long as the build took."""
    script = tmp_path / "stop_during_build.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, time
            from vibe_server.api.routes.jobs import PklBuilds

            async def main():
                builds = PklBuilds()
                request = asyncio.ensure_future(builds.build("job", lambda: time.sleep(60)))
                await asyncio.sleep(0.5)
                request.cancel()  # the stop cuts the request off

            asyncio.run(main())
            print("stopped")
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "server"), str(REPO)]))
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "stopped", done.stderr
    assert time.monotonic() - t0 < 40  # not the build's 60 s (starting Python and the server: a few)


# -- request bodies: bounded memory, 4xx -------------------------------------------------------


def test_deeply_nested_json_is_a_422(client, settings):
    for depth in (20_000, 33):
        nested = "[" * depth + "]" * depth
        r = client.post(
            f"{API}/jobs",
            content=f'{{"video_path": "/x.mp4", "params": {nested}}}',
            headers={"content-type": "application/json"},
        )
        assert_detail(r, 422, "deeper than")
        assert_detail(upload(client, params=f'{{"smoothing": {nested}}}'), 422, "deeper than")
    assert_detail(
        client.post(f"{API}/jobs", content="[" * 60_000, headers={"content-type": "application/json"}),
        422,
        "deeper than",
    )
    assert leftover_files(settings) == []


def post_chunks_to_the_app(
    client, path, chunks, headers, *, token=TOKEN, stall=False, answer=None, every_s=0.0
) -> tuple[int, int]:
    """POST ``chunks`` straight to the ASGI app (TestClient would read the whole body first), with
    ``token`` (None: none); ``stall``: the client then stops sending without ending the body;
    ``every_s``: the time between two chunks. -> (status, number of chunks the app pulled).
    ``answer`` (a dict) gets the answer's "body"."""
    pulled, status = 0, {}
    answer = {} if answer is None else answer
    answer["body"] = b""
    chunks = iter(chunks)

    async def receive():
        nonlocal pulled
        await asyncio.sleep(every_s)
        chunk = next(chunks, None)
        if chunk is None and stall:
            await asyncio.sleep(3600)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        if message["type"] == "http.response.start":
            status["code"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    auth = {"Authorization": f"Bearer {token}"} if token else {}
    all_headers = {"host": "127.0.0.1:8765", **auth, **headers}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in all_headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8765),
    }

    async def call():
        await client.app(scope, receive, send)

    client.portal.call(call)
    return status["code"], pulled


def test_a_chunked_json_body_is_refused_before_it_is_read_whole(client):
    """No Content-Length: the server counts the bytes and stops at 64 KiB (it does not read on)."""
    body = (b'{"video_path": "/x.mp4", "pad": "' if i == 0 else b"x" * 65536 for i in range(2000))  # 128 MB
    status, pulled = post_chunks_to_the_app(client, f"{API}/jobs", body, {"content-type": "application/json"})
    assert status == 413 and pulled < 10, (status, pulled)


@pytest.mark.parametrize(
    "params, status, words",
    [('{"smothing": 0.5}', 422, ["unknown parameter", "smothing"]), ('{"smoothing": ', 422, ["The 'params' part"])],
)
def test_wrong_params_sent_first_are_refused_before_the_video_is_read(client, settings, params, status, words):
    """The add-on sends the params part first: a typo is answered then, not after gigabytes of video."""
    boundary = "XyZ"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{params}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="c.mp4"\r\n\r\n'
    ).encode()
    body = (head if i == 0 else b"\x00" * 65536 for i in range(2000))  # 128 MB of video after the params
    answer = {}
    code, pulled = post_chunks_to_the_app(
        client, f"{API}/jobs", body, {"content-type": f"multipart/form-data; boundary={boundary}"}, answer=answer
    )
    assert code == status and pulled < 5, (code, pulled)
    detail = json.loads(answer["body"])["detail"]
    assert all(word in detail for word in words), detail
    assert leftover_files(settings) == []


def test_oversized_multipart_part_headers_are_refused(client, settings):
    """A part's headers are kept in memory while parsed: they are capped like the params part."""
    boundary = "XyZ"
    for padding in ([f"X-Padding: {'p' * 200_000}"], [f"X-Pad-{i}: {'p' * 100}" for i in range(2000)]):
        head = "\r\n".join(['Content-Disposition: form-data; name="video"; filename="c.mp4"', *padding])
        body = f"--{boundary}\r\n{head}\r\n\r\n".encode() + b"\x00video" + f"\r\n--{boundary}--\r\n".encode()
        r = client.post(
            f"{API}/jobs", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
        assert_detail(r, 400, "header")
    assert leftover_files(settings) == []


# -- limits: queued jobs and upload space ------------------------------------------------------


def test_queued_jobs_are_limited_with_429(settings, make_engine):
    settings.max_queued_jobs = 2
    with client_for(settings, make_engine(delay_s=0.05)) as client:
        first, second = upload(client).json()["job_id"], upload(client).json()["job_id"]
        r = upload(client)
        assert_detail(r, 429, "2 jobs waiting", "limit is 2")
        assert r.headers["retry-after"]
        assert_detail(client.post(f"{API}/jobs", json={"video_path": "/x.mp4"}), 429)
        client.delete(f"{API}/jobs/{first}")
        client.delete(f"{API}/jobs/{second}")
        wait(client, first)
        assert upload(client).status_code == 201
    assert len([p for p in settings.jobs_dir.iterdir()]) == 3


def test_disk_held_by_queued_uploads_is_limited_with_507(settings, make_engine):
    settings.max_upload_bytes, settings.max_queued_upload_bytes = 1000, 1500
    with client_for(settings, make_engine(delay_s=0.05)) as client:
        first = upload(client, data=b"\x00" * 1000).json()["job_id"]
        assert_detail(upload(client, data=b"\x00" * 1000), 507, "upload space")
        assert len(list(settings.jobs_dir.iterdir())) == 1  # the refused upload left nothing
        assert upload(client, data=b"\x00" * 400).status_code == 201
        client.delete(f"{API}/jobs/{first}")
        wait(client, first)
        assert upload(client, data=b"\x00" * 1000).status_code == 201


def test_a_full_disk_is_a_507_and_leaves_nothing(client, settings, monkeypatch):
    """(A full disk cannot be made here: the upload's file write is made to fail as it would.)"""
    import builtins

    from vibe_server.api import upload as upload_module

    class FullDiskFile:
        def __init__(self, path, mode):
            self._file = builtins.open(path, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self._file.close()

    monkeypatch.setattr(upload_module, "open", FullDiskFile, raising=False)
    assert_detail(upload(client), 507, "disk is full")
    assert leftover_files(settings) == []


def raise_(err: Exception):
    raise err


@pytest.mark.parametrize("step", ["folder", "record"])
def test_a_full_disk_while_a_job_is_stored_is_a_507_and_leaves_no_job(settings, engine, monkeypatch, tmp_path, step):
    """A job is registered only once its record is written: no ghost job keeps a queue slot."""
    from vibe_server.api import jobs as jobs_module

    full = OSError(errno.ENOSPC, "No space left on device")
    video = tmp_path / "local.mp4"
    video.write_bytes(b"fake")
    settings.max_queued_jobs = 1
    with client_for(settings, engine) as client:
        with monkeypatch.context() as m:
            if step == "record":
                m.setattr(jobs_module, "write_record", lambda folder, data: raise_(full))
            else:
                m.setattr(client.app.state.jobs, "new_job_folder", lambda: raise_(full))
            for _ in range(2):
                assert_detail(upload(client), 507, "disk is full")
            assert_detail(client.post(f"{API}/jobs", json={"video_path": str(video)}), 507, "disk is full")
        assert client.get(f"{API}/jobs").json() == {"jobs": []}
        assert leftover_files(settings) == []
        assert wait(client, upload(client).json()["job_id"])["status"] == "done"  # space freed: the slot is free


@pytest.mark.parametrize("kind", ["upload", "local path"])
def test_a_body_that_stops_arriving_is_a_408_and_frees_its_slot(settings, engine, kind):
    """A client that stalls mid-body (hung, suspended, a dead link) would hold its job slot for ever."""
    settings.body_idle_timeout_s, settings.max_queued_jobs = 0.5, 1
    if kind == "upload":
        head = b'--XyZ\r\nContent-Disposition: form-data; name="video"; filename="c.mp4"\r\n\r\n\x00video'
        headers = {"content-type": "multipart/form-data; boundary=XyZ"}
    else:
        head, headers = b'{"video_path": "/x.mp4", ', {"content-type": "application/json"}
    with client_for(settings, engine) as client:
        answer = {}
        t0 = time.monotonic()
        status, _ = post_chunks_to_the_app(client, f"{API}/jobs", [head], headers, stall=True, answer=answer)
        assert status == 408 and time.monotonic() - t0 < 10
        assert "stopped arriving" in json.loads(answer["body"])["detail"]
        assert leftover_files(settings) == []
        assert upload(client).status_code == 201  # the slot is free again


def multipart_upload(*parts: tuple[str, bytes], boundary: str = "XyZ", after: bytes = b"\r\n") -> bytes:
    """A multipart body of (name, content) parts, then ``after`` the closing boundary."""
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="c.mp4"\r\n\r\n'.encode()
        + content
        + b"\r\n"
        for name, content in parts
    )
    return body + f"--{boundary}--".encode() + after


MULTIPART = {"content-type": "multipart/form-data; boundary=XyZ"}


def test_an_upload_part_of_another_name_is_refused_before_it_is_read(client, settings):
    """Only 'video' was capped: a part of any other name was read to its end, however large."""
    head = multipart_upload(("video", b"\x00video"), after=b"")[: -len(b"--XyZ--")]
    head += b'--XyZ\r\nContent-Disposition: form-data; name="notes"\r\n\r\n'
    body = (head if i == 0 else b"\x00" * 65536 for i in range(2000))  # 128 MB in the unknown part
    answer = {}
    status, pulled = post_chunks_to_the_app(client, f"{API}/jobs", body, MULTIPART, answer=answer)
    assert status == 400 and pulled < 5, (status, pulled)
    detail = json.loads(answer["body"])["detail"]
    assert "part named 'notes'" in detail and "'video'" in detail and "'params'" in detail, detail
    assert leftover_files(settings) == []


def test_a_second_params_part_is_refused(client, settings):
    """Each params part parsed all of them again: 30 000 empty parts after one of 62 KB cost the server
    16 s of CPU for 1.7 MB sent."""
    params = json.dumps({"smoothing": 0.5}).encode()
    body = multipart_upload(("params", params), ("params", b""), ("video", b"\x00video"))
    answer = {}
    status, _ = post_chunks_to_the_app(client, f"{API}/jobs", iter([body]), MULTIPART, answer=answer)
    assert status == 400 and "more than one 'params' part" in json.loads(answer["body"])["detail"]
    assert leftover_files(settings) == []


@pytest.mark.parametrize("sent", ["in the same chunk", "in chunks after it"])
def test_data_after_the_closing_boundary_is_refused(client, settings, sent):
    """The parser drops what follows the closing boundary unseen: it was read to its end, however large."""
    whole = multipart_upload(("video", b"\x00video"), after=b"\r\n")
    if sent == "in the same chunk":
        body = iter([whole + b"more data"])
    else:
        body = (whole if i == 0 else b"\x00" * 65536 for i in range(2000))
    answer = {}
    status, pulled = post_chunks_to_the_app(client, f"{API}/jobs", body, MULTIPART, answer=answer)
    assert status == 400 and pulled < 5, (status, pulled)
    assert "after its closing boundary" in json.loads(answer["body"])["detail"]
    assert leftover_files(settings) == []
    assert client.post(f"{API}/jobs", content=whole + b"\r\n  \r\n", headers=MULTIPART).status_code == 201


@pytest.mark.parametrize("length", [71, 300])
def test_a_boundary_over_70_characters_is_a_400(client, settings, length):
    """RFC 2046 allows 70; python-multipart raised on one over 256 before any check (a 500)."""
    boundary = "b" * length
    body = multipart_upload(("video", b"\x00video"), boundary=boundary)
    r = client.post(f"{API}/jobs", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert_detail(r, 400, f"boundary is {length} characters long", "70")
    assert leftover_files(settings) == []
    boundary = "b" * 70
    body = multipart_upload(("video", b"\x00video"), boundary=boundary)
    r = client.post(f"{API}/jobs", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 201, r.text


def test_every_byte_of_an_upload_counts_against_its_cap(settings, engine):
    """Line ends after the closing boundary are allowed, but not without bound: the whole body is
    capped (the video's cap, plus the params part's and the multipart overhead)."""
    from vibe_server.api.upload import MAX_PARAMS_BYTES, MULTIPART_OVERHEAD_BYTES

    settings.max_upload_bytes = 1000
    whole = multipart_upload(("video", b"\x00" * 1000), after=b"\r\n")
    over = MAX_PARAMS_BYTES + MULTIPART_OVERHEAD_BYTES
    with client_for(settings, engine) as client:
        answer = {}
        body = iter([whole, *[b"\r\n" * 8192] * (over // 16384 + 2)])
        status, _ = post_chunks_to_the_app(client, f"{API}/jobs", body, MULTIPART, answer=answer)
        assert status == 413 and "larger than this server's limit" in json.loads(answer["body"])["detail"]
        assert leftover_files(settings) == []
        assert client.post(f"{API}/jobs", content=whole, headers=MULTIPART).status_code == 201


@pytest.mark.parametrize("kind", ["upload", "local path"])
def test_a_body_that_trickles_is_a_408_and_frees_its_slot(settings, engine, monkeypatch, kind):
    """A byte now and then keeps a body from ever stalling for the idle limit: past a grace time it
    must arrive at a minimum average rate."""
    from vibe_server.api import request_body

    monkeypatch.setattr(request_body, "MIN_RATE_GRACE_S", 0.3)
    monkeypatch.setattr(request_body, "MIN_AVERAGE_BYTES_PER_S", 1000)
    settings.max_queued_jobs = 1
    if kind == "upload":
        body, headers = multipart_upload(("video", b"\x00video")), MULTIPART
    else:
        body, headers = b'{"video_path": "/x.mp4"}', {"content-type": "application/json"}
    with client_for(settings, engine) as client:
        answer = {}
        chunks = (body[i : i + 2] for i in range(0, len(body), 2))  # 40 bytes/s
        status, pulled = post_chunks_to_the_app(client, f"{API}/jobs", chunks, headers, answer=answer, every_s=0.05)
        assert status == 408 and pulled < len(body) // 2, (status, pulled)
        assert "arrives too slowly" in json.loads(answer["body"])["detail"]
        assert leftover_files(settings) == []
        assert upload(client).status_code == 201  # the slot is free again


def test_uploads_in_progress_count_against_the_upload_space(tmp_path):
    from vibe_server.api.jobs import JobManager, UploadSpaceFull

    jobs = JobManager(tmp_path, [], max_queued_jobs=4, max_queued_upload_bytes=1000)
    with jobs.admission() as a, jobs.admission() as b:
        jobs.reserve_upload_bytes(a, 600)
        with pytest.raises(UploadSpaceFull):
            jobs.reserve_upload_bytes(b, 600)
        jobs.reserve_upload_bytes(b, 400)
    with jobs.admission() as c:  # both finished (refused): their bytes are free again
        jobs.reserve_upload_bytes(c, 1000)


# -- a body is read only after the request's checks -----------------------------------------


@pytest.mark.parametrize("path", ["/live", "/jobs"])
def test_a_client_without_the_token_cannot_make_the_server_read_a_body(client, path):
    """FastAPI reads a declared body before any check runs: POST /live did, so a client without the
    token could make the server hold a JSON body of any size."""
    body = (b"[" * 2**20 for _ in range(1024))  # 1 GiB of JSON
    headers = {"content-type": "application/json"}
    status, pulled = post_chunks_to_the_app(client, f"{API}{path}", body, headers, token=None)
    assert status == 401 and pulled == 0, (status, pulled)


def test_live_json_body_is_bounded_and_each_problem_is_one_sentence(client):
    big = {"source": "0" * (70 * 1024)}
    assert_detail(client.post(f"{API}/live", json=big), 413, "The JSON body is too large")
    deep = "[" * 100 + "]" * 100
    assert_detail(client.post(f"{API}/live", content=deep), 422, "nests deeper than 32 levels")
    assert_detail(client.post(f"{API}/live", json=["0"]), 422, "must be a JSON object")
    assert_detail(client.post(f"{API}/live", json={"source": "0", "speed": 2}), 422, "unknown parameter 'speed'")
    assert_detail(client.post(f"{API}/live", json={}), 422, "'source': Field required")


@pytest.mark.parametrize("source", ["http://[", "rtsp://[::1"])
def test_a_malformed_stream_url_is_a_400_naming_it(client, source):
    assert_detail(client.post(f"{API}/live", json={"source": source}), 400, f"'{source}'", "not a valid URL")


@pytest.mark.parametrize("source", ["", "  "])
def test_a_blank_source_is_a_400_naming_the_kinds_of_source(client, source):
    """It was taken as a file, the current folder: "'.' is not a regular video file (a folder, ...)"."""
    r = client.post(f"{API}/live", json={"source": source})
    assert_detail(r, 400, "The source is empty", "camera index (0), a video file, or a stream URL")


def test_a_live_file_that_is_missing_unreadable_or_no_video_gets_the_one_answer_of_a_jobs_path(
    settings, make_engine, tmp_path
):
    """As POST /jobs with a local path: a client learns nothing about files it could not read itself."""
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "folder.mp4").mkdir()
    with client_for(settings, make_engine(real_video=True)) as client:
        for name in ("missing.mp4", "notes.txt", "folder.mp4"):
            path = str(tmp_path / name)
            for route, body in (("live", {"source": path}), ("jobs", {"video_path": path})):
                assert_detail(
                    client.post(f"{API}/{route}", json=body),
                    415,
                    f"'{path}' is not a readable video file on this machine; check the path",
                )


def test_a_long_live_source_is_shortened_in_its_refusal(client, tmp_path):
    path = str(tmp_path / ("x" * 250 + ".mp4"))
    for source in (path, "tcp://127.0.0.1:5000?" + "x" * 300):
        r = client.post(f"{API}/live", json={"source": source})
        assert r.status_code in (400, 415) and f"'{source[:200]}...'" in r.json()["detail"]
        assert source not in r.json()["detail"]


def test_a_warning_about_the_model_data_names_no_folder_of_the_server(settings, engine, tmp_path):
    """Without yolov3.weights 'auto' falls back to HOG, and the job's warning says where it is missing."""
    engine.data_dir = tmp_path / "model data"
    engine.data_dir.mkdir()
    with client_for(settings, engine) as client:
        job = wait(client, upload(client).json()["job_id"])
    [warning] = job["warnings"]
    assert "yolov3.weights is not in the model data (the server's model data folder)" in warning
    assert str(tmp_path) not in warning


@pytest.mark.parametrize("path", ["/jobs/", "/live/"])
def test_an_unknown_id_comes_back_shortened_with_what_to_do(client, path):
    unknown = "f" * 5000
    answer = client.get(f"{API}{path}{unknown}")
    assert_detail(answer, 404, f"'{'f' * 200}...'", "POST /api/v1/live" if "live" in path else "GET /api/v1/jobs")
    assert len(answer.text) < 500


def test_a_method_a_route_does_not_take_is_a_sentence_saying_what_to_do(client):
    assert_detail(client.put(f"{API}/health"), 405, f"'{API}/health' does not take PUT", "docs/server.md")


def test_an_unexpected_error_is_a_json_500_naming_no_class_or_path_and_logged(client, monkeypatch, caplog):
    """Every error is {"detail": ...}, also one no route expected; the log keeps the traceback."""
    monkeypatch.setattr(client.app.state.jobs, "list", lambda: raise_(RuntimeError("/srv/secret/jobs broke")))
    with caplog.at_level(logging.ERROR, logger="vibe_server.api"):
        r = client.get(f"{API}/jobs")
    assert_detail(r, 500, "internal error", "server log")
    assert "RuntimeError" not in r.text and "/srv/secret" not in r.text
    assert "Traceback" in caplog.text and "RuntimeError: /srv/secret/jobs broke" in caplog.text
    assert client.get(f"{API}/health").status_code == 200


# -- OpenAPI describes both forms of POST /jobs ------------------------------------------------


def test_openapi_describes_the_upload_and_the_local_path_forms(client):
    spec = client.get(f"{API}/openapi.json").json()
    body = spec["paths"][f"{API}/jobs"]["post"]["requestBody"]["content"]
    schemas = spec["components"]["schemas"]

    def resolve(schema):
        return schemas[schema["$ref"].rsplit("/", 1)[1]]

    form = resolve(body["multipart/form-data"]["schema"])
    assert form["properties"]["video"]["format"] == "binary" and "params" in form["properties"]
    assert form["required"] == ["video"]
    local = resolve(body["application/json"]["schema"])
    assert local["required"] == ["video_path"] and resolve(local["properties"]["params"]) == schemas["JobParams"]
    assert "smoothing" in schemas["JobParams"]["properties"]
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    live = resolve(spec["paths"][f"{API}/live"]["post"]["requestBody"]["content"]["application/json"]["schema"])
    assert live["required"] == ["source"] and "params" in live["properties"]


def test_no_page_runs_third_party_scripts_in_the_servers_origin(client):
    # a Swagger page would load a CDN's scripts here, past the Origin check, where the token is typed
    for path in (f"{API}/docs", "/docs", f"{API}/redoc", "/redoc"):
        assert client.get(path, headers=AUTH).status_code == 404, path


# -- a truncated video: the frames that decode are used, with a warning ------------------------


def test_a_truncated_video_gives_a_result_with_a_warning(real_video_client, tmp_path):
    whole = write_clip(tmp_path / "whole.avi", num_frames=120).read_bytes()
    job = wait(
        real_video_client,
        upload(real_video_client, name="phone.avi", data=whole[: len(whole) * 3 // 5]).json()["job_id"],
    )
    assert job["status"] == "done", job
    assert len(job["warnings"]) == 1 and "truncated" in job["warnings"][0] and "of the 120" in job["warnings"][0]
    assert str(tmp_path) not in job["warnings"][0]
    result = load_result(io.BytesIO(real_video_client.get(f"{API}/jobs/{job['job_id']}/result").content))
    assert result.meta["warnings"] == job["warnings"][0]
    assert 41 < result.video.frame_count < 120 and result.tracks[0].frame_ids.max() == 40

"""The add-on's client (vibe_blender.core.client / capture) against the REAL server: uvicorn on
127.0.0.1 in a subprocess (tests/server/tiny_server.py: the real app, the tiny model, the scripted
front end), with the token the way ``vibe-mocap serve`` keeps it. Also checks that the fake server
(tests/fake_vibe_server.py, kept for hostile answers and the torch-free Blender tests) still answers
as the real one does."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/fake_vibe_server.py
from fake_vibe_server import (
    JOB_PARAM_NAMES,
    LOCAL_PATH_REFUSED,
    TOKEN_REFUSED,
    FakeVibeServer,
    local_path_unreadable,
    no_job,
    not_done,
    unknown_params,
)
from server_process import running_server

from vibe_blender.core import capture, server_proof, user_dirs
from vibe_blender.core import client as client_module
from vibe_blender.core.capture import CaptureJob
from vibe_blender.core.client import LocalPathRefused, ServerClient
from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import load_result
from vibe_blender.core.smpl_model import load_body_model

REPO = Path(__file__).resolve().parents[2]
FRAME_DELAY_S = 0.08  # 60 frames: a job runs ~4.8 s, long enough to be cancelled on a loaded machine
SLOW_PROBE_S = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def config_home(tmp_path_factory):
    """A config folder of our own, for the server process and this one (never the user's token)."""
    folder = tmp_path_factory.mktemp("config")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(folder))
        mp.delenv(user_dirs.TOKEN_ENV_VAR, raising=False)
        yield folder


@pytest.fixture(autouse=True)
def isolated_config(config_home, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.delenv(user_dirs.TOKEN_ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def server(config_home, tmp_path_factory):
    """The real server's URL; it takes its token from the token file in config_home."""
    yield from _tiny_server(config_home, tmp_path_factory)


@pytest.fixture(scope="module")
def slow_probe_server(config_home, tmp_path_factory):
    """The real server, whose check of each video before POST /jobs answers takes SLOW_PROBE_S."""
    yield from _tiny_server(config_home, tmp_path_factory, open_delay_s=SLOW_PROBE_S)


def _tiny_server(config_home, tmp_path_factory, *, open_delay_s: float = 0.0):
    from vibe_server.data.synthetic import write_smpl_files

    smpl_dir = tmp_path_factory.mktemp("smpl")
    write_smpl_files(smpl_dir)
    token = user_dirs.ensure_token()  # made here, read by the server as 'vibe-mocap serve' would
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != user_dirs.TOKEN_ENV_VAR}
    env.update(
        XDG_CONFIG_HOME=str(config_home),
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO / "server"), str(REPO)]),
    )
    log_path = tmp_path_factory.mktemp("server_log") / "server.log"
    command = [sys.executable, str(Path(__file__).with_name("tiny_server.py")), str(port)]
    command += [str(tmp_path_factory.mktemp("jobs")), str(smpl_dir), str(FRAME_DELAY_S), "-", "", str(open_delay_s)]
    with running_server(command, port=port, token=token, log_path=log_path, env=env) as url:
        yield url


def _status_of(url, method, path, body=None, headers=None) -> tuple[int, dict]:
    """(status, JSON body) of one raw request; (0, {}) when nothing answers."""
    host_port = url.split("//")[1]
    conn = http.client.HTTPConnection(host_port, timeout=10)
    try:
        conn.request(method, "/api/v1" + path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}
    except OSError:
        return 0, {}
    finally:
        conn.close()


@pytest.fixture
def server_files(tmp_path):
    """What the fake serves as result and body model (the answers compared here are JSON), and a video."""
    (tmp_path / "result.npz").write_bytes(b"result")
    (tmp_path / "body_model.npz").write_bytes(b"body model")
    (tmp_path / "video.mp4").write_bytes(b"video")
    return tmp_path / "result.npz", tmp_path / "body_model.npz", tmp_path / "video.mp4"


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "walk.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
    return path


def _capture(client, video, tmp_path, **kw) -> CaptureJob:
    return CaptureJob(
        client,
        video,
        tmp_path / "results",
        body_model_path=tmp_path / "cache" / "body_model.npz",
        poll_interval_s=0.05,
        **kw,
    )


def _no_upload(client):
    def refuse(*args, **kwargs):
        raise AssertionError("the client fell back to an upload")

    client.submit_upload = refuse
    return client


def test_the_token_file_is_what_both_sides_use(server):
    assert user_dirs.token_path().is_file()
    assert oct(user_dirs.token_path().stat().st_mode & 0o777) == "0o600"
    assert ServerClient(server).token == user_dirs.read_token()
    assert _status_of(server, "GET", "/jobs")[0] == 401  # the server does require it


def test_local_path_capture(server, video, tmp_path):
    job = _capture(_no_upload(ServerClient(server)), video, tmp_path, params={"smoothing": 0.5})
    status = job.run()
    assert status.state == "done", status.message
    assert job.upload is False and status.result_path.parent == tmp_path / "results"
    assert status.result_path.name.startswith("walk_") and status.job_id not in status.result_path.name
    result = load_result(status.result_path)
    assert result.video.name == "walk.mp4" and len(result.tracks) >= 1
    assert load_body_model(status.body_model_path).faces.shape[1] == 3
    assert status.message.startswith(f"Captured {len(result.tracks)} person(s)")


def test_upload_capture_with_the_token_from_the_environment(server, video, tmp_path, monkeypatch):
    monkeypatch.setenv(user_dirs.TOKEN_ENV_VAR, user_dirs.read_token())
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))  # no file: only the variable
    status = _capture(ServerClient(server), video, tmp_path, upload=True).run()
    assert status.state == "done", status.message
    assert load_result(status.result_path).video.name == "walk.mp4"


def test_progress_is_visible_while_running(server, video, tmp_path):
    job = _capture(ServerClient(server), video, tmp_path).start()
    seen = set()
    deadline = time.monotonic() + 60
    while not job.snapshot().finished:
        s = job.snapshot()
        seen.add((s.state, s.stage, s.progress))
        assert time.monotonic() < deadline, s
        time.sleep(0.01)
    assert job.snapshot().state == "done", job.snapshot().message
    assert any(state == "running" and stage and 0.0 < progress < 1.0 for state, stage, progress in seen), seen


def test_failed_job_shows_the_servers_reason(server, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"nobody in this scripted video")
    status = _capture(ServerClient(server), empty, tmp_path).run()
    assert status.state == "failed" and status.result_path is None
    assert status.message.startswith("The capture failed on the server: ") and "empty.mp4" in status.message


def test_the_real_server_proves_it_holds_the_token(server):
    token = user_dirs.read_token()
    challenge = server_proof.new_challenge()
    port = int(server.rsplit(":", 1)[1])
    status, health = _status_of(server, "GET", f"/health?challenge={challenge}")
    assert status == 200 and server_proof.proof_ok(token, challenge, port, health["proof"])
    assert not server_proof.proof_ok("another-token", challenge, port, health["proof"])
    assert not server_proof.proof_ok(token, challenge, port + 1, health["proof"])  # bound to the port reached
    assert _status_of(server, "GET", "/health")[1]["proof"] is None
    for bad in ("short", "x" * 129, "not/url/safe/but/long/enough"):
        assert _status_of(server, "GET", f"/health?challenge={bad}")[0] == 422


def test_wrong_token_is_explained(server, video, tmp_path):
    status = _capture(ServerClient(server, "not-the-token"), video, tmp_path).run()
    assert status.state == "failed" and "did not prove that it holds this add-on's access token" in status.message
    assert "or the server uses another token" in status.message
    assert str(user_dirs.token_path()) in status.message


def test_bad_parameter_fails_without_an_upload(server, video, tmp_path):
    status = _capture(_no_upload(ServerClient(server)), video, tmp_path, params={"bogus": 1}).run()
    assert status.state == "failed" and "unknown parameter 'params.bogus'" in status.message


def test_a_local_path_the_server_cannot_read_is_uploaded_and_the_upload_answers(server, tmp_path):
    """The server says the same for a path it cannot see and for a file that is no video (it reveals
    nothing about files); the add-on then uploads, and the upload's answer is the final one."""
    notes = tmp_path / "notes.txt"  # the scripted front end cannot read .txt files
    notes.write_text("not a video")
    client = ServerClient(server)
    with pytest.raises(LocalPathRefused, match="notes.txt' is not a readable video file on this machine"):
        client.submit_local(notes)
    status = _capture(client, notes, tmp_path).run()
    assert status.state == "failed" and "notes.txt" in status.message and "not a video" in status.message


def test_cancel_stops_the_real_job(server, video, tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "CANCEL_TIMEOUT_S", 10.0)  # what is timed is the worker, not a slow socket
    client = ServerClient(server)
    job = _capture(client, video, tmp_path).start()
    deadline = time.monotonic() + 60
    while job.snapshot().state != "running":
        assert time.monotonic() < deadline and not job.snapshot().finished, job.snapshot()
        time.sleep(0.01)
    started = time.monotonic()
    job.cancel()
    job.join(5)
    assert time.monotonic() - started < 3.0 and job.snapshot().state == "cancelled"  # not the job's 4.8 s
    job_id = job.snapshot().job_id
    assert client.job(job_id)["status"] == "cancelled"
    assert not (tmp_path / "results").exists()


def test_a_cancel_while_the_server_checks_the_upload_cancels_the_job_it_makes(
    slow_probe_server, video, tmp_path, monkeypatch
):
    monkeypatch.setattr(capture, "CANCEL_TIMEOUT_S", 10.0)  # what is tested is that it asks, not how fast
    client = ServerClient(slow_probe_server)
    job = _capture(client, video, tmp_path, upload=True).start()
    deadline = time.monotonic() + 60
    # sent whole: the last block read and the request no longer one a cancel cuts off (before that, a
    # cancel aborts the upload and the server makes no job: the test below); the server now checks it
    while job.snapshot().progress < 1.0 or client._in_flight:
        assert time.monotonic() < deadline and not job.snapshot().finished, job.snapshot()
        time.sleep(0.005)
    job.cancel()
    job.join(SLOW_PROBE_S + 10)
    assert not job._thread.is_alive()
    [made] = client.jobs()
    assert made["status"] == "cancelled"  # not left to run with nobody to follow it


def test_a_cancel_during_the_upload_leaves_no_job(slow_probe_server, video, tmp_path, monkeypatch):
    monkeypatch.setattr(client_module, "CHUNK_BYTES", 1024)  # many blocks: the cancel comes between two
    captures = []

    class CancelledAtTheFirstBlock(ServerClient):  # the user's click, the moment the first block is read
        def submit_upload(self, *args, on_progress, **kwargs):
            def progress(fraction):
                on_progress(fraction)
                captures[0].cancel()

            return super().submit_upload(*args, on_progress=progress, **kwargs)

    client = CancelledAtTheFirstBlock(slow_probe_server)
    before = _job_ids(client)
    captures.append(_capture(client, video, tmp_path, upload=True))
    status = captures[0].run()
    assert status.state == "cancelled" and status.progress < 1.0
    time.sleep(SLOW_PROBE_S + 1)  # what the server would take to check a video it had whole
    assert _job_ids(client) == before


def _job_ids(client) -> set[str]:
    return {job["job_id"] for job in client.jobs()}


@pytest.mark.parametrize("upload", [False, True], ids=["local path", "upload"])
def test_a_server_that_checks_the_video_longer_than_the_clients_timeout_takes_the_job(slow_probe_server, video, upload):
    """POST /jobs answers once the video is checked: the client waits for that (the server's limit is in
    /health), not only for its own timeout, which used to call a busy server unreachable."""
    client = ServerClient(slow_probe_server, timeout_s=SLOW_PROBE_S / 4)
    patient = ServerClient(slow_probe_server)  # the listing and cancels, apart from what is tested
    before = _job_ids(patient)
    created = (client.submit_upload if upload else client.submit_local)(video)
    assert _job_ids(patient) - before == {created["job_id"]}
    patient.cancel(created["job_id"])
    patient.cancel(created["job_id"])  # (finished now: removed)


@pytest.mark.parametrize("upload", [False, True], ids=["local path", "upload"])
def test_a_client_that_leaves_while_the_video_is_checked_leaves_no_job(slow_probe_server, video, upload, monkeypatch):
    """A client that gives up before the answer (an older add-on's 10 s) gets no job id: the server
    makes no job for it, which would run with nobody to follow it or delete it."""
    monkeypatch.setattr(client_module, "MAX_PROBE_WAIT_S", 0.0)  # waits only its own timeout, as before
    client = ServerClient(slow_probe_server, timeout_s=SLOW_PROBE_S / 4)
    patient = ServerClient(slow_probe_server)  # the listing, apart from what is tested
    before = _job_ids(patient)
    with pytest.raises(VibeError, match="Cannot reach|answered too slowly"):
        (client.submit_upload if upload else client.submit_local)(video)
    deadline = time.monotonic() + SLOW_PROBE_S + 4  # the check ends, and the job would be made
    while time.monotonic() < deadline:
        assert _job_ids(patient) == before
        time.sleep(0.2)


def test_result_of_an_unknown_job_is_a_clear_error(server, tmp_path):
    client = ServerClient(server)
    with pytest.raises(VibeError, match="There is no job '0123456789abcdef'"):
        client.download_result("0123456789abcdef", tmp_path / "r.npz")
    assert client.health()["api_version"] == 1
    assert all(len(j["job_id"]) == 16 for j in client.jobs())


# ---------------------------------------------------------------- the fake answers as the real server does
def test_the_fakes_parameter_list_is_the_schemas():
    from vibe_server.api.schemas import JobParams

    assert set(JOB_PARAM_NAMES) == set(JobParams.model_fields)


def test_the_fake_answers_like_the_real_server(server, video, tmp_path, server_files):
    token = {"Authorization": f"Bearer {user_dirs.read_token()}"}
    json_type = {"Content-Type": "application/json"}
    missing = str(tmp_path / "missing.txt")  # refused by the scripted front end as by the fake
    local = lambda path, params: json.dumps({"video_path": path, "params": params})
    with FakeVibeServer(server_files[0], server_files[1], token=user_dirs.read_token()) as fake:
        cases = [
            (("GET", "/jobs"), 401, TOKEN_REFUSED),
            (
                ("POST", "/jobs", local(str(video), {"bogus": 1}), {**token, **json_type}),
                422,
                unknown_params(["bogus"], "request", "params."),
            ),
            (("POST", "/jobs", local(missing, {}), {**token, **json_type}), 415, local_path_unreadable(missing)),
            (("GET", "/jobs/0123456789abcdef", None, token), 404, no_job("0123456789abcdef")),
        ]
        for request, status, detail in cases:
            for url in (server, fake.url):
                assert _status_of(url, *request) == (status, {"detail": detail}), (url, request)
        for url in (server, fake.url):  # a job just submitted has no result yet
            code, created = _status_of(url, "POST", "/jobs", local(str(video), {}), {**token, **json_type})
            assert code == 201 and set(created) == {"job_id", "status"} and len(created["job_id"]) == 16
            code, answer = _status_of(url, "GET", f"/jobs/{created['job_id']}/result", None, token)
            state = _status_of(url, "GET", f"/jobs/{created['job_id']}", None, token)[1]["status"]
            assert code == 409 and answer["detail"] in {
                not_done(created["job_id"], s) for s in ("queued", "running")
            }, (url, answer, state)


def test_the_fakes_local_path_refusal_is_the_real_one(tmp_path, make_engine, server_files):
    """The real server refuses local paths from other machines with 403 (the fake used to say 400)."""
    from fastapi.testclient import TestClient

    from vibe_server.api.app import create_app
    from vibe_server.api.settings import Settings

    app = create_app(
        Settings(host="0.0.0.0", token="t", jobs_dir=tmp_path / "jobs"), engine_loader=lambda s: make_engine()
    )
    body = {"video_path": str(server_files[2]), "params": {}}
    with TestClient(app, base_url="http://127.0.0.1:8765", client=("192.0.2.7", 50000)) as remote:
        real = remote.post("/api/v1/jobs", json=body, headers={"Authorization": "Bearer t"})
    with FakeVibeServer(server_files[0], server_files[1], token="t", accept_local=False) as fake:
        fake_answer = _status_of(
            fake.url,
            "POST",
            "/jobs",
            json.dumps(body),
            {"Authorization": "Bearer t", "Content-Type": "application/json"},
        )
    assert (real.status_code, real.json()) == fake_answer == (403, {"detail": LOCAL_PATH_REFUSED})

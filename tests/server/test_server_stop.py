"""How a server stops: on Ctrl-C (once, or twice to cut off the requests still running), SIGTERM,
POST /shutdown (the add-on's Stop Server for a server it left running) and the end of standard input
(its parent gone). Each way ends in one line on standard output and no traceback, with the running
jobs kept for the next start."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from vibe_blender.core import user_dirs
from vibe_blender.core.client import ServerClient
from vibe_blender.core.local_server import free_port
from vibe_server.api.app import create_app
from vibe_server.api.settings import Settings
from vibe_server.api.uvicorn_server import CUT_OFF_MESSAGE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/server_process.py
from server_process import health_answers  # noqa: E402
from testdata import REAL_CLIPS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-" + "t" * 16  # serve refuses a token shorter than 22 characters
CLIP = REAL_CLIPS / "asl-walk.mkv"


class ServerProcess:
    """A server subprocess: its standard input a pipe, its output kept in files."""

    def __init__(self, command: list[str], env: dict, folder: Path):
        self.out_path, self.err_path = folder / "server.out", folder / "server.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env, cwd=REPO)

    def wait(self, timeout_s: float = 30) -> int:
        return self.process.wait(timeout_s)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def last_line(self) -> str:
        return self.stdout.strip().splitlines()[-1]


@pytest.fixture
def start_server(tmp_path, monkeypatch):
    """start(command, port) -> (ServerProcess, url), once /health answers on 127.0.0.1:port; every
    process still running at the end is killed."""
    monkeypatch.setenv(user_dirs.TOKEN_ENV_VAR, TOKEN)
    servers = []

    def start(command: list[str], port: int) -> tuple[ServerProcess, str]:
        folder = tmp_path / f"server{len(servers)}"
        folder.mkdir()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "server"), str(REPO)]), OMP_NUM_THREADS="1")
        server = ServerProcess(command, env, folder)
        servers.append(server)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not health_answers(url, TOKEN):
            assert server.process.poll() is None, f"the server did not start:\n{server.stderr}"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        return server, url

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(30)


@pytest.fixture
def start_tiny_server(start_server, tmp_path):
    """start(*extra, frame_delay_s="0") -> (ServerProcess, url): tests/server/tiny_server.py (the
    real app and ``run_app``, the tiny model, FRAME_DELAY_S per frame); extra:
    stop-on-stdin-close|-, GRACE_S."""
    from vibe_server.data.synthetic import write_smpl_files

    smpl = tmp_path / "smpl"
    write_smpl_files(smpl)

    def start(*extra: str, frame_delay_s: str = "0") -> tuple[ServerProcess, str]:
        port = free_port()
        command = [sys.executable, str(Path(__file__).with_name("tiny_server.py")), str(port)]
        command += [str(tmp_path / "jobs"), str(smpl), frame_delay_s, *extra]
        return start_server(command, port)

    return start


def post_shutdown(url: str) -> None:
    request = urllib.request.Request(
        f"{url}/api/v1/shutdown", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def wait_until_running(client: ServerClient, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while client.job(job_id)["status"] != "running":
        assert time.monotonic() < deadline, client.job(job_id)
        time.sleep(0.1)


def job_record_status(jobs_dir: Path, job_id: str) -> str:
    return json.loads((jobs_dir / job_id / "job.json").read_text())["job"]["status"]


@pytest.mark.parametrize(
    "stop, cause",
    [
        (lambda server, url: server.process.send_signal(signal.SIGINT), "Ctrl-C"),
        (lambda server, url: server.process.send_signal(signal.SIGTERM), "SIGTERM"),
        (lambda server, url: post_shutdown(url), "POST /shutdown"),
    ],
    ids=["ctrl-c", "sigterm", "shutdown request"],
)
def test_each_way_a_user_stops_vibe_mocap_serve_ends_in_one_line(start_server, tmp_path, stop, cause):
    """The real command (no model data here: it serves all the same, and starts fast). uvicorn alone
    raised the signal again once stopped: Ctrl-C ended in 'interrupted' (130), SIGTERM killed it."""
    (tmp_path / "no model data").mkdir()
    port = free_port()
    command = [sys.executable, "-m", "vibe_server", "serve", "--port", str(port), "--device", "cpu"]
    command += ["--data-dir", str(tmp_path / "no model data"), "--jobs-dir", str(tmp_path / "jobs")]
    server, url = start_server(command, port)
    stop(server, url)
    assert server.wait() == 0, server.stderr
    assert server.last_line() == f"VIBE Mocap server stopped ({cause})."
    assert "Traceback" not in server.stderr and "interrupted" not in server.stderr, server.stderr


def test_a_client_sending_requests_without_the_token_again_and_again_does_not_fill_the_log(start_server, tmp_path):
    """The real command's access log: each refused request wrote a line, so a loop of them (from any
    account on this machine) grew the log, the add-on's server.log, without bound."""
    (tmp_path / "no model data").mkdir()
    port = free_port()
    command = [sys.executable, "-m", "vibe_server", "serve", "--port", str(port), "--device", "cpu"]
    command += ["--data-dir", str(tmp_path / "no model data"), "--jobs-dir", str(tmp_path / "jobs")]
    server, url = start_server(command, port)
    for _ in range(60):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/v1/jobs", timeout=10)
        assert refused.value.code == 401
        with pytest.raises(InvalidStatus):  # a WebSocket handshake without the token: refused, on uvicorn's error log
            connect(url.replace("http", "ws", 1) + "/api/v1/live/x/stream", open_timeout=10).close()
    assert health_answers(url, TOKEN)
    post_shutdown(url)
    assert server.wait() == 0, server.stderr
    access_lines = [line for line in server.stdout.splitlines() if '"GET /api/v1/' in line]
    assert sum(line.endswith(" 401 Unauthorized") for line in access_lines) == 10
    assert access_lines[-1].endswith('"GET /api/v1/health HTTP/1.1" 200 OK')
    errors = server.stderr.splitlines()
    assert sum('"WebSocket /api/v1/live/x/stream" 403' in line for line in errors) == 10
    assert sum("connection rejected (403 Forbidden)" in line for line in errors) == 10  # the websockets library's


def test_serve_cancel_unfinished_jobs_cancels_those_its_last_stop_left(start_server, tmp_path):
    """`vibe-mocap serve --cancel-unfinished-jobs` (as the Blender add-on starts it) on the jobs folder
    of a server stopped while a job waited: the job is cancelled, not run for a capture long gone."""
    from tests.server.test_job_store import plant
    from vibe_server.api.job_store import upload_path

    (tmp_path / "no model data").mkdir()
    job_id = "0123456789abcdef"
    upload_path(plant(tmp_path / "jobs", job_id, "queued")).write_bytes(b"video")
    port = free_port()
    command = [sys.executable, "-m", "vibe_server", "serve", "--port", str(port), "--device", "cpu"]
    command += ["--data-dir", str(tmp_path / "no model data"), "--jobs-dir", str(tmp_path / "jobs")]
    server, url = start_server([*command, "--cancel-unfinished-jobs"], port)
    job = ServerClient(url, TOKEN).job(job_id)
    assert job["status"] == "cancelled" and "--cancel-unfinished-jobs" in job["error"], job
    server.process.terminate()
    assert server.wait() == 0, server.stderr


@pytest.mark.parametrize("cancel_unfinished", [False, True])
def test_the_stop_line_says_what_becomes_of_the_unfinished_jobs(tmp_path, cancel_unfinished):
    """A server started with --cancel-unfinished-jobs said its unfinished jobs 'will run at the next start'."""
    from tests.server.test_job_store import submit_upload
    from vibe_server.api.jobs import JobManager
    from vibe_server.commands.serve import _stop_message

    jobs = JobManager(tmp_path / "jobs", [], cancel_unfinished=cancel_unfinished)
    for name in ("a.mp4", "b.mp4"):
        submit_upload(jobs, name)
    fate = (
        "will be cancelled at the next start (--cancel-unfinished-jobs)"
        if cancel_unfinished
        else "will run at the next start"
    )
    assert _stop_message("Ctrl-C", forced=False, jobs=jobs) == (
        f"VIBE Mocap server stopped (Ctrl-C). 2 unfinished jobs are kept and {fate}."
    )
    assert _stop_message(None, forced=False, jobs=None) == "VIBE Mocap server stopped."  # stopped while starting


def test_ctrl_c_while_a_job_runs_and_a_live_session_streams(start_tiny_server, tmp_path):
    """The job goes back to the queue (it runs at the next start), the live viewer's connection ends
    without a traceback (closing a WebSocket the stop had already closed raised one)."""
    server, url = start_tiny_server(frame_delay_s="0.2")  # 60 frames, 0.2 s each: still running when stopped
    client = ServerClient(url, TOKEN)
    job_id = client.submit_local(CLIP)["job_id"]
    wait_until_running(client, job_id)
    live_id = client.start_live(str(CLIP), {"detector": "hog"})["live_id"]
    viewer = client.open_live_stream(live_id)
    assert json.loads(viewer.recv_text())["type"] == "frame"
    server.process.send_signal(signal.SIGINT)
    assert server.wait() == 0, server.stderr
    assert server.last_line() == (
        "VIBE Mocap server stopped (Ctrl-C). 1 unfinished job is kept and will run at the next start."
    )
    assert "Traceback" not in server.stderr, server.stderr
    assert job_record_status(tmp_path / "jobs", job_id) == "queued"
    viewer.close()


def test_a_second_ctrl_c_cuts_off_a_stalled_request_and_still_keeps_the_running_job(start_tiny_server, tmp_path):
    """uvicorn's own forced exit skipped the app's shutdown (the job workers were never told) and
    printed the cancelled tasks' tracebacks. Here the stalled upload is cut off (its folder deleted),
    the running job goes back to the queue, one line says so, and the status is 130."""
    with a_running_job_and_a_stalled_upload(start_tiny_server, tmp_path / "jobs") as (server, job_id):
        t0 = time.monotonic()
        server.process.send_signal(signal.SIGINT)
        time.sleep(1.0)  # the server waits for the stalled upload (15 s at most)
        server.process.send_signal(signal.SIGINT)
        assert server.wait() == 130, server.stderr
    assert time.monotonic() - t0 < 10  # not the whole grace time
    assert server.last_line() == (
        "VIBE Mocap server stopped at once (Ctrl-C while stopping): requests still running were cut off. "
        "1 unfinished job is kept and will run at the next start."
    )
    assert "Traceback" not in server.stderr and CUT_OFF_MESSAGE in server.stderr, server.stderr
    assert job_record_status(tmp_path / "jobs", job_id) == "queued"
    assert [p.name for p in (tmp_path / "jobs").iterdir() if p.is_dir()] == [job_id]  # no upload left


def test_a_server_killed_while_it_stops_still_runs_its_running_job_after_the_restart(start_tiny_server, tmp_path):
    """The add-on kills a server that has not stopped in time (when Blender quits: after 10 s). Here a
    stalled upload holds the stop in the requests' grace time (15 s), before the job workers are
    told: the running job's record says queued all the same, so the next start runs it (it said
    running, and the next start marked it failed)."""
    jobs_dir = tmp_path / "jobs"
    with a_running_job_and_a_stalled_upload(start_tiny_server, jobs_dir) as (server, job_id):
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10.0  # the add-on's kill when Blender quits
        while job_record_status(jobs_dir, job_id) != "queued" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.process.poll() is None  # still in the grace time
        server.process.kill()
        server.wait()
    assert job_record_status(jobs_dir, job_id) == "queued"
    _, url = start_tiny_server()
    assert ServerClient(url, TOKEN).job(job_id)["status"] in ("queued", "running", "done")


@contextlib.contextmanager
def a_running_job_and_a_stalled_upload(start_tiny_server, jobs_dir: Path):
    """(server, job id) of a tiny server (on ``jobs_dir``) running a job while a client's upload stalls."""

    server, url = start_tiny_server(frame_delay_s="0.2")
    client = ServerClient(url, TOKEN)
    job_id = client.submit_local(CLIP)["job_id"]
    wait_until_running(client, job_id)
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as stalled:
        send_stalled_upload(stalled, url, jobs_dir)
        yield server, job_id


def send_stalled_upload(sock, url: str, jobs_dir: Path) -> None:
    """The start of a 10 MB multipart upload, then nothing (a client that stopped sending); returns
    once the server has begun receiving it (its job folder in ``jobs_dir`` made)."""
    folders_before = set(jobs_dir.iterdir())
    port = url.rsplit(":", 1)[1]
    head = 'Content-Disposition: form-data; name="video"; filename="a.mp4"'
    sock.sendall(
        (
            f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 10000000\r\n\r\n"
            f"--XyZ\r\n{head}\r\n\r\n"
        ).encode()
        + b"\0" * 1000
    )
    deadline = time.monotonic() + 30
    while not set(jobs_dir.iterdir()) - folders_before:
        assert time.monotonic() < deadline, "the server did not begin receiving the upload"
        time.sleep(0.05)


def test_the_server_stops_when_its_standard_input_closes(start_tiny_server):
    server, _ = start_tiny_server("stop-on-stdin-close")
    time.sleep(0.5)
    assert server.process.poll() is None  # an open input keeps it running
    server.process.stdin.close()  # what the system does when the add-on's Blender exits or crashes
    assert server.wait() == 0
    assert server.last_line() == "VIBE Mocap server stopped (the end of standard input)."


def test_shutdown_stops_the_server(start_tiny_server):
    server, url = start_tiny_server()
    post_shutdown(url)
    assert server.wait() == 0
    assert server.last_line() == "VIBE Mocap server stopped (POST /shutdown)."


def test_a_stalled_upload_does_not_keep_a_stopping_server_alive(start_tiny_server, tmp_path):
    """A client that stops sending mid-upload: after POST /shutdown the server gives running
    requests their grace time (here 1 s), then cuts them off with one line (uvicorn logged the
    cancelled request's traceback)."""

    server, url = start_tiny_server("-", "1")
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as stalled:
        send_stalled_upload(stalled, url, tmp_path / "jobs")
        post_shutdown(url)
        assert server.wait(15) == 0
    assert "Traceback" not in server.stderr and CUT_OFF_MESSAGE in server.stderr, server.stderr


@pytest.mark.parametrize(
    "client_host, headers, status",
    [
        ("127.0.0.1", {}, 401),  # no token
        ("192.0.2.7", {"Authorization": f"Bearer {TOKEN}"}, 403),  # another machine
        ("127.0.0.1", {"Authorization": f"Bearer {TOKEN}"}, 503),  # not run by 'vibe-mocap serve'
    ],
)
def test_shutdown_is_refused_unless_it_can_be_done(tmp_path, client_host, headers, status):
    app = create_app(Settings(jobs_dir=tmp_path / "jobs", token=TOKEN), engine_loader=lambda s: object())
    with TestClient(app, base_url="http://127.0.0.1:8765", client=(client_host, 50000)) as client:
        assert client.post("/api/v1/shutdown", headers=headers).status_code == status

"""How a server stops besides Ctrl-C: with its parent (the end of standard input), and on POST
/shutdown (the add-on's Stop Server for a server it left running)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from vibe_blender.core import user_dirs
from vibe_blender.core.local_server import free_port
from vibe_server.api.app import create_app
from vibe_server.api.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/server_process.py
from server_process import health_answers  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token"


@pytest.fixture
def start_tiny_server(tmp_path, monkeypatch):
    """start(*extra) -> (process with a standard input pipe, url), once /health answers."""
    monkeypatch.setenv(user_dirs.TOKEN_ENV_VAR, TOKEN)
    processes = []

    def start(*extra):
        from vibe_server.data.synthetic import write_smpl_files

        smpl = tmp_path / "smpl"
        write_smpl_files(smpl)
        port = free_port()
        command = [sys.executable, str(Path(__file__).with_name("tiny_server.py")), str(port)]
        command += [str(tmp_path / "jobs"), str(smpl), "0", *extra]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "server"), str(REPO)]), OMP_NUM_THREADS="1")
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not health_answers(url, TOKEN):
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        return process, url

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def test_the_server_stops_when_its_standard_input_closes(start_tiny_server):
    process, _ = start_tiny_server("stop-on-stdin-close")
    time.sleep(0.5)
    assert process.poll() is None  # an open input keeps it running
    process.stdin.close()  # what the system does when the add-on's Blender exits or crashes
    assert process.wait(30) == 0


def test_shutdown_stops_the_server(start_tiny_server):
    import urllib.request

    process, url = start_tiny_server()
    request = urllib.request.Request(
        f"{url}/api/v1/shutdown", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
    assert process.wait(30) == 0


def test_a_stalled_upload_does_not_keep_a_stopping_server_alive(start_tiny_server):
    """A client that stops sending mid-upload: after POST /shutdown the server gives running
    requests their grace time (here 1 s), then stops all the same."""
    import socket
    import urllib.request

    process, url = start_tiny_server("-", "1")
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as stalled:
        head = 'Content-Disposition: form-data; name="video"; filename="a.mp4"'
        stalled.sendall(
            (
                f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 10000000\r\n\r\n"
                f"--XyZ\r\n{head}\r\n\r\n"
            ).encode()
            + b"\0" * 1000
        )
        time.sleep(0.5)
        request = urllib.request.Request(
            f"{url}/api/v1/shutdown", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
        assert process.wait(15) == 0


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

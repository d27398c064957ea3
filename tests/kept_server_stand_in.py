"""A server an earlier Blender session kept running, which stops answering: for Stop Kept Server.

Run as ``vibe-mocap serve`` by the add-on's own LocalServer (so its record, command line and jobs
folder are the real ones), it holds its jobs folder's lock as the server does and answers /health
(proving its token) and POST /shutdown (it then exits). While the file $STAND_IN_HOLD exists it
proves nothing (the request waits), as a server too busy to answer. $STAND_IN_ON_TERM: "ignore" (a
server stuck past its handler) or a number of seconds it takes to exit after SIGTERM (a slow
graceful stop); with $STAND_IN_STUCK_STOPPING set it accepts POST /shutdown but never exits (a
stop stuck on something). Only the standard library and the add-on's core: the Blender suite uses
it too (tests/ is on its path).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _serve(args: list[str]) -> None:
    import fcntl  # POSIX: the tests that run this stand-in skip Windows
    import signal

    from vibe_blender.core.server_proof import server_proof

    jobs = Path(args[args.index("--jobs-dir") + 1])
    jobs.mkdir(parents=True, exist_ok=True)
    lock = os.open(jobs / ".server.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)
    on_term = os.environ.get("STAND_IN_ON_TERM")
    if on_term == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif on_term:
        signal.signal(signal.SIGTERM, lambda *_: (time.sleep(float(on_term)), os._exit(0)))
    stuck_stopping = bool(os.environ.get("STAND_IN_STUCK_STOPPING"))
    port, token, hold = int(args[args.index("--port") + 1]), os.environ["VIBE_MOCAP_TOKEN"], os.environ["STAND_IN_HOLD"]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # the proof and the request share one connection

        def answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def do_GET(self):  # noqa: N802 (http.server's name)
            health = {"status": "ok", "api_version": 1, "device": "cpu", "model": "stand-in"}
            challenge = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("challenge")
            if challenge:
                while os.path.exists(hold):
                    time.sleep(0.05)
                health["proof"] = server_proof(token, challenge[0], port)
            self.answer(200, health)

        def do_POST(self):  # noqa: N802
            if self.path == "/api/v1/shutdown" and self.headers.get("Authorization") == f"Bearer {token}":
                self.answer(202, {"status": "stopping"})
                if not stuck_stopping:
                    os._exit(0)
                return
            self.answer(401, {"detail": "This server needs its token."})

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


@contextlib.contextmanager
def kept_stand_in(
    folder: Path, addon_folder: Path, monkeypatch, *, on_term: str = "", stuck_stopping: bool = False
) -> Iterator[tuple]:
    """(the process, its record): the stand-in, launched by a Blender's LocalServer on the add-on
    folder ``addon_folder`` and kept running as that Blender quit; the next start gets no answer in
    time (0.5 s) while ``folder / "hold"`` exists. ``on_term``, ``stuck_stopping``: see the module's
    text. Stop Kept Server waits 0.5 s for the shutdown request (a test where it answers makes that
    longer) and 2 s for a graceful stop (the server's GRACEFUL_STOP_S). It is ended at the end,
    whatever happened."""
    from vibe_blender.core import local_server

    hold = folder / "hold"
    monkeypatch.setenv("STAND_IN_HOLD", str(hold))
    monkeypatch.setenv("STAND_IN_ON_TERM", on_term)
    monkeypatch.setenv("STAND_IN_STUCK_STOPPING", "1" if stuck_stopping else "")
    monkeypatch.setattr(local_server, "KEPT_CHECK_TIMEOUT_S", 0.5)
    monkeypatch.setattr(local_server, "KEPT_SHUTDOWN_TIMEOUT_S", 0.5)
    monkeypatch.setattr(local_server, "GRACEFUL_STOP_S", 2.0)
    program = folder / "stand-in" / local_server.PROGRAM_NAME
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text(f"#!{sys.executable}\nimport runpy\nrunpy.run_path({__file__!r}, run_name='__main__')\n")
    program.chmod(0o755)
    earlier = local_server.LocalServer(log_dir=addon_folder, stop_with_parent=False)
    earlier.start(program)
    assert earlier.wait_ready(30).state == "ready", earlier.snapshot()
    deadline = time.monotonic() + 30
    while not earlier.kept_path.exists():  # noted once it answers
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process, record = earlier._process, earlier.kept_path
    os.close(earlier._instance_fd)  # that Blender quits, keeping its server
    earlier._instance_fd = None
    hold.touch()
    try:
        yield process, record
    finally:
        hold.unlink(missing_ok=True)
        if process.poll() is None:
            process.kill()
        process.wait(10)


if __name__ == "__main__":
    sys.path[:0] = [str(REPO), str(REPO / "server")]  # fake_vibe_server reads the option names there
    _serve(sys.argv[1:])

"""The add-on's HTTP client and capture worker against a fake server, for what the real server never
does: hostile ids, redirects, huge, malformed or slow answers, and (the server runs on this machine
in tests) refusing a local path as from another machine. Also the token lookup. The normal flow
runs against the real server in tests/server/test_client_real_server.py."""

import copy
import http.server
import json
import os
import socket
import threading
import time
import urllib.parse

import numpy as np
import pytest
from fake_vibe_server import FakeVibeServer, count_body_model_reads
from hostile_files import NOT_REGULAR_KINDS, call_with_deadline, make_not_regular
from stalling_server import STALLS, StallingServer, endless_trailer, paced_download, trickle

from vibe_blender.core import capture, local_server, user_dirs
from vibe_blender.core import client as client_module
from vibe_blender.core.capture import CaptureJob
from vibe_blender.core.client import (
    START_SERVER_HINT,
    ServerClient,
    check_online_access,
    is_loopback_url,
)
from vibe_blender.core.errors import VibeError
from vibe_blender.core.model_data import cached_body_model_note, load_served_body_model, read_cached_body_model
from vibe_blender.core.server_proof import server_proof
from vibe_blender.core.smpl_model import load_body_model, save_body_model

TOKEN = "fake-token"


@pytest.fixture(autouse=True)
def config_home(tmp_path, monkeypatch):
    """No test sees the user's own token file or $VIBE_MOCAP_TOKEN."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(user_dirs.TOKEN_ENV_VAR, raising=False)
    return tmp_path / "config"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(client, files, tmp_path, **kw):
    return CaptureJob(
        client,
        files[2],
        tmp_path / "results",
        body_model_path=tmp_path / "cache" / "body_model.npz",
        poll_interval_s=0.01,
        **kw,
    )


def _files_under(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*")) if folder.exists() else []


def _fake(server_files, **kw):
    return FakeVibeServer(server_files[0], server_files[1], **kw)


# ---------------------------------------------------------------- what the server sends is checked
@pytest.mark.parametrize("created_id", ["../../escaped", "/tmp/vibe-escaped", "..", "job1", "A" * 16])
def test_job_ids_outside_the_servers_format_are_refused(server_files, tmp_path, created_id):
    with _fake(server_files, created_id=created_id) as server:
        status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
    assert status.state == "failed" and "invalid answer" in status.message and "job id" in status.message
    assert _files_under(tmp_path) == [] and not (tmp_path.parent / "escaped.npz").exists()
    assert not any("escaped" in path for _, path in server.requests)


@pytest.mark.parametrize(
    "patch, what",
    [
        ({"status": "exploded"}, "job status"),
        ({"progress": 7}, "progress"),
        ({"progress": float("nan")}, "JSON"),
        ({"progress": "half"}, "progress"),
        ({"stage": "s" * 500}, "stage"),
        ({"stage": "a\nb"}, "stage"),
        ({"eta_s": -5}, "time left"),
        ({"num_tracks": "many"}, "number of people"),
        ({"num_tracks": True}, "number"),
        ({"job_id": "0123456789abcdef"}, "another job"),
    ],
)
def test_bad_job_fields_are_refused(server_files, tmp_path, patch, what):
    with _fake(server_files, job_patch=patch) as server:
        status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
    assert status.state == "failed" and "invalid answer" in status.message and what in status.message
    assert status.progress <= 1.0 and _files_under(tmp_path) == []


def test_long_error_text_is_cut_and_cleaned(server_files, tmp_path):
    with _fake(server_files, fail_with="bad\x1b[31m" + "x" * 50_000) as server:
        status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
    assert status.state == "failed" and len(status.message) < 1100 and "\x1b" not in status.message


def test_oversized_json_is_refused(server_files, tmp_path):
    with _fake(server_files, json_padding=3 << 20) as server:
        status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
    assert status.state == "failed" and "more than 1 MiB" in status.message


def test_result_with_the_wrong_content_type_is_not_written(server_files, tmp_path):
    with _fake(server_files, content_type="text/html") as server:
        status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
    assert status.state == "failed" and "content type 'text/html'" in status.message
    assert _files_under(tmp_path / "results") == []


@pytest.mark.parametrize("served", ["html", "body model"])
def test_a_result_that_is_not_a_vibe_mocap_result_is_not_saved(server_files, tmp_path, served):
    """A proxy's error page sent as application/octet-stream (or any .npz but a result) was renamed into
    the results folder and the capture reported "done"; the import then failed, and its message sent the
    user to File > Import the same file, which could never load."""
    junk = tmp_path / "served.npz"
    if served == "html":
        junk.write_bytes(b"<html>502 Bad Gateway</html>" * 100)
    else:
        junk.write_bytes(server_files[1].read_bytes())
    with FakeVibeServer(junk, server_files[1]) as server:
        status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
    assert status.state == "failed" and "not a VIBE Mocap result" in status.message
    assert "nothing was saved" in status.message and ".part" not in status.message
    assert "Choose a VIBE Mocap result" not in status.message  # the user chose no file
    assert _files_under(tmp_path / "results") == [] and status.result_path is None


def test_redirects_are_refused_and_the_token_stays_home(server_files, tmp_path):
    with _fake(server_files, token="elsewhere") as other, _fake(server_files, redirect_to=other.url) as server:
        status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
    assert status.state == "failed" and "does not follow redirects" in status.message
    assert other.requests == [] and other.authorizations == []


def test_a_program_that_cannot_prove_the_token_never_receives_it(server_files, tmp_path):
    """Another program on the address answers /health like a VIBE server, but not the challenge."""
    with _fake(server_files, token="a-squatters-own") as squatter:
        status = _job(ServerClient(squatter.url, TOKEN), server_files, tmp_path).run()
    assert status.state == "failed" and "did not prove that it holds this add-on's access token" in status.message
    assert squatter.requests == [("GET", squatter.requests[0][1])] and "challenge=" in squatter.requests[0][1]
    assert squatter.authorizations == [None]


class Listener:
    """A program on a loopback port that records every byte sent to it (port=0: a free one)."""

    def __init__(self, port=0, forward_to=None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.port, self.forward_to, self.received = self.sock.getsockname()[1], forward_to, b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.forward_to is None:
                threading.Thread(target=self._pipe, args=(client, None), daemon=True).start()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.forward_to))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source, target, record=True):
        try:
            while chunk := source.recv(65536):
                if record:
                    self.received += chunk
                if target is not None:
                    target.sendall(chunk)
        except OSError:
            pass

    def close(self):
        self.sock.close()


def test_a_relay_to_the_real_server_from_another_port_never_sees_the_token(server_files, tmp_path):
    with _fake(server_files) as server:
        relay = Listener(forward_to=int(server.url.rsplit(":", 1)[1]))
        try:
            with pytest.raises(VibeError, match="did not prove that it holds"):
                ServerClient(f"http://127.0.0.1:{relay.port}", TOKEN).jobs()
        finally:
            relay.close()
    assert b"challenge=" in relay.received and TOKEN.encode() not in relay.received


def test_a_program_that_takes_the_port_after_the_server_stopped_gets_no_token(server_files, tmp_path):
    with _fake(server_files) as server:
        client = ServerClient(server.url, TOKEN)
        assert client.jobs() == []  # proved and sent the token to the real server
        port = int(server.url.rsplit(":", 1)[1])
    taker = Listener(port=port)
    try:
        with pytest.raises(VibeError):
            ServerClient(server.url, TOKEN, timeout_s=1.0).jobs()
        with pytest.raises(VibeError):
            client.jobs()  # the same client: a new connection proves again
    finally:
        taker.close()
    assert TOKEN.encode() not in taker.received


def test_an_older_server_without_proofs_is_named_as_such(server_files, tmp_path):
    with _fake(server_files, prove=False) as server:
        with pytest.raises(VibeError, match="older than this add-on"):
            ServerClient(server.url, TOKEN).jobs()
    assert f"Bearer {TOKEN}" not in server.authorizations


def test_a_huge_declared_download_is_refused_before_writing(server_files, tmp_path):
    with _fake(server_files, result_bytes_sent=4 << 20, declared_length=3 << 30) as server:
        status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
    assert status.state == "failed" and "more than 2048 MiB" in status.message
    assert _files_under(tmp_path / "results") == []


def test_an_endless_download_stops_at_the_cap(server_files, tmp_path):
    with _fake(server_files, result_bytes_sent=64 << 20, chunked=True, polls_per_job=1) as server:
        client = ServerClient(server.url, TOKEN)
        job_id = client.submit_local(server_files[2])["job_id"]
        assert client.job(job_id)["status"] == "done"
        with pytest.raises(VibeError, match="more than 4 MiB"):
            client.download_result(job_id, tmp_path / "r.npz", max_bytes=4 << 20)
    assert _files_under(tmp_path) == []


def test_a_download_removes_the_parts_that_cut_off_downloads_of_other_results_left(server_files, tmp_path):
    """A download cut off by Blender quitting (its thread is a daemon: no clean-up runs) left a hidden
    part of up to 2 GiB; each result has a new random name, so the next capture's never removed it."""
    results = tmp_path / "results"
    results.mkdir()
    left = results / ".clip_1a2b3c4d.npz.09477872.part"
    left.write_bytes(b"\0" * 4096)
    days_old = time.time() - 3 * 86400
    os.utime(left, (days_old, days_old))
    with _fake(server_files, polls_per_job=1) as server:
        client = ServerClient(server.url, TOKEN)
        job_id = client.submit_local(server_files[2])["job_id"]
        assert client.job(job_id)["status"] == "done"
        client.download_result(job_id, results / "clip_9f8e7d6c.npz")
    assert _files_under(results) == [results.joinpath("clip_9f8e7d6c.npz").relative_to(results)]


def test_cancel_against_a_slow_server_takes_effect_at_once(server_files, tmp_path):
    with _fake(server_files, slow_s=8.0, polls_per_job=10_000) as server:
        job = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).start()
        deadline = time.monotonic() + 10
        while job.snapshot().state != "running":
            assert time.monotonic() < deadline
            time.sleep(0.002)
        time.sleep(0.2)  # the worker is now waiting on a slow poll
        started = time.monotonic()
        job.cancel()
        assert job.snapshot().state == "cancelled"
        job.join(5)
        took = time.monotonic() - started
        assert not job._thread.is_alive() and took < 3.0, took  # not the slow poll's 8 s
        assert job.snapshot().message == "Capture cancelled."
    assert _files_under(tmp_path / "results") == []


@pytest.mark.parametrize("upload", [False, True])
def test_a_cancel_while_the_server_checks_the_video_still_cancels_its_job(server_files, tmp_path, upload, monkeypatch):
    """The server answers POST /jobs once it has probed the video (up to a minute): a cancel then must
    wait for the job's id and delete the job, or the job runs on unseen and holds the next capture up."""
    monkeypatch.setattr(capture, "CANCEL_TIMEOUT_S", 10.0)  # what is tested is that it asks, not how fast
    with _fake(server_files, submit_delay_s=1.0, polls_per_job=10_000) as server:
        client = ServerClient(server.url, TOKEN)
        job = _job(client, server_files, tmp_path, upload=upload).start()
        deadline = time.monotonic() + 10
        # the job is made and the request sent whole (a cancel no longer cuts it off); its answer is to come
        while not server.jobs or client._in_flight:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        job.cancel()
        assert job.snapshot().state == "cancelled"  # at once, for the panel
        job.join(10)
        assert not job._thread.is_alive()
        [server_job] = server.jobs.values()
        assert server_job["status"] == "cancelled"
        assert ("DELETE", f"/api/v1/jobs/{server_job['job_id']}") in server.requests


@pytest.mark.parametrize("upload", [False, True], ids=["local path", "upload"])
def test_a_server_that_checks_the_video_longer_than_the_timeout_gets_its_job(server_files, upload):
    """POST /jobs answers once the video is checked, within the probe_timeout_s /health states: the
    answer is awaited that long, beyond the client's own timeout_s (a slow check is no lost server)."""
    with _fake(server_files, submit_delay_s=2.0, probe_timeout_s=5.0) as server:
        client = ServerClient(server.url, TOKEN, timeout_s=0.4)  # a whole answer: 1.2 s otherwise
        created = (client.submit_upload if upload else client.submit_local)(server_files[2])
        assert [created["job_id"]] == list(server.jobs)


@pytest.mark.parametrize("stated", ["60", -1.0, True, [60]])
def test_a_time_limit_for_checking_videos_that_is_no_number_of_seconds_is_refused(server_files, stated):
    with _fake(server_files, probe_timeout_s=stated) as server:
        with pytest.raises(VibeError, match="time limit for checking a video that is not a number of seconds"):
            ServerClient(server.url, TOKEN).submit_local(server_files[2])
        assert not server.jobs  # refused before the request went out


def test_the_wait_for_a_servers_check_of_the_video_is_capped(server_files, monkeypatch):
    monkeypatch.setattr(client_module, "MAX_PROBE_WAIT_S", 0.5)
    with _fake(server_files, submit_delay_s=4.0, probe_timeout_s=1e9) as server:
        client = ServerClient(server.url, TOKEN, timeout_s=0.4)
        err, took = _timed(lambda: client.submit_local(server_files[2]))
    assert isinstance(err, VibeError) and 0.8 < took < 3.0, (err, took)


def test_a_server_out_of_reach_for_a_moment_does_not_lose_the_job(server_files, tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "POLL_RETRY_WAIT_S", 0.01)
    with _fake(server_files, unanswered_polls=3) as server:
        job = _job(ServerClient(server.url, TOKEN), server_files, tmp_path)
        messages = []
        record = job._set

        def kept(**changes):
            messages.append(changes.get("message"))
            record(**changes)

        monkeypatch.setattr(job, "_set", kept)
        status = job.run()
        assert status.state == "done", status.message
        assert server.unanswered_polls == 0
        assert "The server does not answer; asking again for up to 60 s" in messages


def test_a_server_out_of_reach_too_long_fails_the_capture_and_its_job_is_cancelled(server_files, tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "POLL_RETRY_WAIT_S", 0.01)
    monkeypatch.setattr(capture, "POLL_OUTAGE_S", 0.2)
    with _fake(server_files, unanswered_polls=10**6) as server:
        status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
        assert status.state == "failed" and status.message.startswith("Cannot reach the VIBE Mocap server")
        [server_job] = server.jobs.values()
        assert server_job["status"] == "cancelled"  # it no longer holds the server's worker


def test_interrupt_ends_a_download_in_flight(server_files, tmp_path):
    with _fake(server_files, result_bytes_sent=1 << 40, chunked=True, polls_per_job=1) as server:
        client = ServerClient(server.url, TOKEN)
        job_id = client.submit_local(server_files[2])["job_id"]
        client.job(job_id)
        stop = threading.Event()
        threading.Timer(0.3, lambda: (stop.set(), client.interrupt())).start()
        from vibe_blender.core.client import Cancelled

        with pytest.raises(Cancelled):
            client.download_result(job_id, tmp_path / "r.npz", should_stop=stop.is_set)
    assert _files_under(tmp_path) == []


DEEP_JSON = b"[" * 300_000 + b"]" * 300_000  # 600 kB, under the 1 MiB cap: json.loads alone recurses out


class _DeepAnswer(http.server.BaseHTTPRequestHandler):
    """Answers every request with JSON nested 300,000 levels deep, with the status the test asks for."""

    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(DEEP_JSON)))
        self.end_headers()
        self.wfile.write(DEEP_JSON)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    "status, message",
    [
        (200, "sent an invalid answer (JSON nested deeper than 64 levels); it is not a compatible"),
        (500, "The server answered HTTP 500"),
    ],
)
def test_deeply_nested_json_is_one_clear_error(status, message):
    handler = type("Handler", (_DeepAnswer,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(VibeError) as err:
            ServerClient(f"http://127.0.0.1:{server.server_port}", TOKEN).health()
    finally:
        server.shutdown()
        server.server_close()
    assert message in str(err.value)


# ---------------------------------------------------------------- answers that never end
TOO_SLOW = "answered too slowly or never finished its answer"


def _timed(call, timeout_s=10):
    """call() -> (its exception, seconds taken); fails when it returns, or still runs after timeout_s."""
    started = time.monotonic()
    ok, outcome = call_with_deadline(call, timeout_s=timeout_s)
    assert not ok, outcome
    return outcome, time.monotonic() - started


@pytest.mark.parametrize("stall", STALLS.values(), ids=list(STALLS))
@pytest.mark.parametrize("proved", [False, True], ids=["the proof", "after the proof"])
def test_an_answer_that_never_ends_is_cut_off(stall, proved):
    """Each socket operation stays under timeout_s; the whole answer may take 3 times that. Before the
    proof, any program on the port can do this: it needs no token."""
    with StallingServer(stall, token=TOKEN if proved else None) as program:
        client = ServerClient(program.url, TOKEN, timeout_s=0.5)
        err, took = _timed(client.jobs if proved else client.health)
    assert isinstance(err, VibeError) and f"{program.url} {TOO_SLOW} (no whole answer within 1.5 s)" in str(err)
    assert took < 5.0, took


def test_a_download_that_trickles_is_cut_off_and_nothing_is_saved(tmp_path, monkeypatch):
    monkeypatch.setattr(client_module, "DOWNLOAD_GRACE_S", 0.5)
    with StallingServer(trickle("application/octet-stream"), token=TOKEN) as program:
        client = ServerClient(program.url, TOKEN, timeout_s=0.5)
        err, took = _timed(lambda: client.download_body_model(_cache(tmp_path)))
    assert isinstance(err, VibeError) and "(a download must come at 16 KiB/s on average)" in str(err)
    assert took < 5.0, took
    assert _files_under(tmp_path / "cache") == []


def test_a_whole_download_whose_trailer_never_ends_is_not_saved(tmp_path, monkeypatch):
    """Trailer lines are no progress: the body's 2 bytes are all that came."""
    monkeypatch.setattr(client_module, "DOWNLOAD_GRACE_S", 0.5)
    with StallingServer(endless_trailer("application/octet-stream"), token=TOKEN) as program:
        client = ServerClient(program.url, TOKEN, timeout_s=0.5)
        err, took = _timed(lambda: client.download_result("0123456789abcdef", tmp_path / "results" / "r.npz"))
    assert isinstance(err, VibeError) and TOO_SLOW in str(err)
    assert took < 5.0, took
    assert _files_under(tmp_path / "results") == []


def test_a_slow_download_above_the_floor_is_whole(tmp_path, monkeypatch):
    """It takes longer than any JSON answer may (1.5 s here), at 2.5 times the floor. (The download
    itself: its bytes are no result file, which download_result would then refuse.)"""
    monkeypatch.setattr(client_module, "DOWNLOAD_GRACE_S", 1.0)
    monkeypatch.setattr(client_module, "MIN_DOWNLOAD_BYTES_PER_S", 64 << 10)
    body = os.urandom(400 << 10)
    with StallingServer(paced_download(body, 160 << 10), token=TOKEN) as program:
        client = ServerClient(program.url, TOKEN, timeout_s=0.5)
        started = time.monotonic()
        dest = client._download("/jobs/0123456789abcdef/result", tmp_path / "r.npz", max_bytes=1 << 20)
        took = time.monotonic() - started
    assert dest.read_bytes() == body and took > 2.0, took


# ---------------------------------------------------------------- upload fallback
def test_upload_only_when_the_server_refuses_the_local_path(server_files, tmp_path):
    with _fake(server_files, accept_local=False) as server:
        status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
    assert status.state == "done", status.message
    assert server.local_paths == [] and [u[0] for u in server.uploads] == ["video.mp4"]


# ---------------------------------------------------------------- token
def test_the_environment_variable_beats_the_file_and_a_typed_token_beats_both(monkeypatch):
    from_file = user_dirs.ensure_token()
    assert ServerClient("http://127.0.0.1:1").token == from_file
    monkeypatch.setenv(user_dirs.TOKEN_ENV_VAR, "from-env")
    assert ServerClient("http://127.0.0.1:1").token == "from-env"
    assert ServerClient("http://127.0.0.1:1", "  typed ").token == "typed"


def test_a_missing_token_says_where_it_is_expected():
    with pytest.raises(VibeError) as err:
        ServerClient("http://127.0.0.1:8765")
    message = str(err.value)
    assert (
        str(user_dirs.token_path()) in message and user_dirs.TOKEN_ENV_VAR in message and "vibe-mocap serve" in message
    )


@pytest.mark.parametrize("token", ["two words", "line\r\nX-Injected: 1", "é" * 5, "x" * 300])
def test_a_token_that_cannot_be_one_is_refused(token):
    with pytest.raises(VibeError, match="access token has characters"):
        ServerClient("http://127.0.0.1:8765", token)


# ---------------------------------------------------------------- the rest of the flow
def test_server_down_says_how_to_start_it(server_files, tmp_path):
    status = _job(ServerClient(f"http://127.0.0.1:{_free_port()}", TOKEN), server_files, tmp_path).run()
    assert status.state == "failed"
    assert "Cannot reach the VIBE Mocap server" in status.message and START_SERVER_HINT in status.message


def test_missing_video_is_reported(tmp_path):
    job = CaptureJob(
        ServerClient(f"http://127.0.0.1:{_free_port()}", TOKEN),
        tmp_path / "nope.mp4",
        tmp_path,
        body_model_path=tmp_path / "b.npz",
    )
    status = job.run()
    assert status.state == "failed" and "does not exist" in status.message


def test_a_lost_server_is_explained_by_the_hook_and_other_failures_are_not(tmp_path):
    """The add-on says its own server stopped (CaptureJob's explain_lost_server) instead of 'Cannot reach
    ... Start it with vibe-mocap serve'; without a hook, or when the hook has nothing to say, the
    client's message stays."""
    video = tmp_path / "take.mp4"
    video.write_bytes(b"\x00" * 4096)
    url = f"http://127.0.0.1:{_free_port()}"
    asked = []

    def run(explain) -> str:
        job = CaptureJob(
            ServerClient(url, TOKEN), video, tmp_path, body_model_path=tmp_path / "b.npz", explain_lost_server=explain
        )
        status = job.run()
        assert status.state == "failed"
        return status.message

    assert run(lambda at: asked.append(at) or "The add-on's server stopped.") == "The add-on's server stopped."
    assert asked == [url]
    assert run(lambda at: None).startswith(f"Cannot reach the VIBE Mocap server at {url}")
    assert run(None).startswith(f"Cannot reach the VIBE Mocap server at {url}")
    missing = CaptureJob(
        ServerClient(url, TOKEN),
        tmp_path / "nope.mp4",
        tmp_path,
        body_model_path=tmp_path / "b.npz",
        explain_lost_server=lambda at: asked.append(at) or "never this",
    )
    assert "does not exist" in missing.run().message and len(asked) == 1  # not a lost server


@pytest.mark.parametrize("kind", NOT_REGULAR_KINDS)
def test_a_video_that_is_no_regular_file_is_named_before_any_server_work(tmp_path, kind):
    video = make_not_regular(tmp_path / "take.mp4", kind)
    job = CaptureJob(
        ServerClient(f"http://127.0.0.1:{_free_port()}", TOKEN), video, tmp_path, body_model_path=tmp_path / "b.npz"
    )
    ran, status = call_with_deadline(job.run, fifo=video)
    assert ran and status.state == "failed"
    assert status.message == (
        f"The video '{video}' is not a regular file (a device, FIFO or socket), so it was not read. "
        "Choose a video file."
    )


@pytest.mark.parametrize("kind", NOT_REGULAR_KINDS)
def test_an_upload_of_a_fifo_or_a_device_is_refused_unsent(server_files, tmp_path, kind):
    """A FIFO would block the upload for ever, /dev/zero would stream without end."""
    video = make_not_regular(tmp_path / "take.mp4", kind)
    with _fake(server_files) as server:
        ran, err = call_with_deadline(lambda: ServerClient(server.url, TOKEN).submit_upload(video), fifo=video)
    assert not ran and isinstance(err, VibeError), err
    assert "take.mp4' is not a regular file (a device, FIFO or socket), so it was not read" in str(err)
    assert server.uploads == []


def test_an_upload_sends_the_bytes_the_video_held_when_opened(server_files, tmp_path, monkeypatch):
    """A file that grows while it is sent (a recording still being written) sends what it held: the
    Content-Length stated, then the form's end."""
    monkeypatch.setattr(client_module, "CHUNK_BYTES", 1 << 16)
    video = tmp_path / "take.mp4"
    video.write_bytes(os.urandom(200_000))
    sent = video.read_bytes()

    def grow(_fraction):
        if video.stat().st_size == len(sent):
            with open(video, "ab") as f:
                f.write(os.urandom(100_000))

    with _fake(server_files) as server:
        client = ServerClient(server.url, TOKEN, timeout_s=5)
        ran, created = call_with_deadline(lambda: client.submit_upload(video, on_progress=grow))
    assert ran, created
    assert [u[1] for u in server.uploads] == [sent]


def test_a_video_that_shrinks_while_it_is_sent_is_one_message(server_files, tmp_path, monkeypatch):
    monkeypatch.setattr(client_module, "CHUNK_BYTES", 1 << 16)
    video = tmp_path / "take.mp4"
    video.write_bytes(os.urandom(200_000))

    def shrink(_fraction):
        os.truncate(video, min(video.stat().st_size, 100_000))

    with _fake(server_files) as server:
        client = ServerClient(server.url, TOKEN, timeout_s=5)
        ran, err = call_with_deadline(lambda: client.submit_upload(video, on_progress=shrink))
    assert not ran and str(err) == (
        f"The video '{video}' became shorter while it was uploaded (100,000 of 200,000 bytes); "
        "upload it again once it is written."
    )


@pytest.mark.parametrize(
    "url, loopback",
    [
        ("http://127.0.0.1:8765", True),
        ("http://localhost:1", True),
        ("http://[::1]:8765", True),
        ("http://127.8.9.10", True),
        ("http://192.168.1.5:8765", False),
        ("https://gpu.example.org", False),
    ],
)
def test_loopback_detection(url, loopback):
    assert is_loopback_url(url) is loopback


def test_online_access_is_needed_for_other_hosts():
    check_online_access("http://127.0.0.1:8765", online_access=False)
    check_online_access("http://192.168.1.5:8765", online_access=True)
    with pytest.raises(VibeError, match="online access is off"):
        check_online_access("http://192.168.1.5:8765", online_access=False)


@pytest.mark.parametrize(
    "url, warned",
    [
        ("", None),  # the default, on this machine
        ("http://localhost:8765", None),
        ("http://[::1]:8765", None),
        ("https://gpu.example.org:8765", None),
        ("http://192.168.1.5:8765", "cross the network unencrypted"),
        ("http://gpu.example.org", "cross the network unencrypted"),
        ("http://127.0.0.1:99999", "not a server URL"),
        ("localhost:8765", "not a server URL"),
    ],
)
def test_the_preferences_warn_of_a_url_that_is_refused_or_sends_the_token_in_clear(url, warned):
    warning = client_module.server_url_warning(url)
    assert warning is None if warned is None else warned in warning


@pytest.mark.parametrize("url", ["ftp://x", "http://127.0.0.1:99999", "http://user:pw@127.0.0.1", "http://h/?a=1"])
def test_bad_url_is_refused(url):
    with pytest.raises(VibeError, match="not a server URL"):
        ServerClient(url, TOKEN)


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://127.0.0.1:99999", "http://127.0.0.1:abc", "http://127.0.0.1:0", "localhost:8765"]
)
def test_a_malformed_url_is_named_before_anything_else(url):
    """The online-access check ran first and parsed the URL on its own: a bad bracket or port was a
    ValueError (a traceback, or "Please report it"), and a URL without http:// was "The server None is
    on another machine". It now says the URL is wrong, which setting holds it, and what one looks like."""
    for check in (
        lambda: check_online_access(url, online_access=False),
        lambda: local_server.listens(url),
        lambda: ServerClient(url, TOKEN),
    ):
        with pytest.raises(VibeError, match="not a server URL: set the Server URL .*http://127.0.0.1:8765"):
            check()


def test_a_bad_job_id_never_reaches_a_request():
    with pytest.raises(VibeError, match="not a VIBE Mocap job id"):
        ServerClient("http://127.0.0.1:1", TOKEN).download_result("../x", "/tmp/x.npz")


# ---------------------------------------------------------------- the body model the server sends
def _cache(tmp_path):
    return tmp_path / "cache" / "body_model.npz"


def test_a_body_model_that_does_not_read_is_never_cached(server_files, tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a body model")
    with FakeVibeServer(server_files[0], junk) as server:
        status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
    assert status.state == "failed" and "sent a body model that cannot be used" in status.message
    assert _files_under(tmp_path / "cache") == []  # neither the file nor its .part
    # the result came before the body model: it is kept, and the message says where and how to import it
    (result,) = (tmp_path / "results").iterdir()
    assert status.result_path == result and result.stat().st_size > 0
    assert "nothing was saved" not in status.message
    assert f"The captured result is saved in '{result}'" in status.message
    assert "File > Import > VIBE Mocap once the model-data folder" in status.message


@pytest.mark.parametrize("cached", [b"not a body model", b""])
def test_an_unreadable_cached_body_model_is_downloaded_again_once(server_files, tmp_path, cached):
    _cache(tmp_path).parent.mkdir()
    _cache(tmp_path).write_bytes(cached)
    with _fake(server_files) as server:
        status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
    assert status.state == "done", status.message
    assert load_body_model(_cache(tmp_path)).num_vertices == 6890
    assert [p for _, p in server.requests if p.endswith("/body_model")] == ["/api/v1/body_model"]


def _body_model_downloads(server) -> int:
    return sum(p.endswith("/body_model") for _, p in server.requests)


def test_a_cached_body_model_with_the_servers_fingerprint_is_not_downloaded_again(server_files, tmp_path):
    with _fake(server_files) as server:
        for _ in range(2):
            assert _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run().state == "done"
    assert _body_model_downloads(server) == 1
    assert cached_body_model_note(_cache(tmp_path)).fingerprint == server.body_model_fingerprint


def test_a_capture_reads_the_body_model_once_and_hands_it_on(server_files, tmp_path, monkeypatch):
    """Downloaded (the first capture) or cached (the next), the body model file is read once, by the
    check that it reads, and the capture hands that model to the import, which reads it no more."""
    reads = count_body_model_reads(monkeypatch)
    with _fake(server_files) as server:
        for downloads in (1, 1):  # the second capture finds it cached
            reads.clear()
            status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
            assert status.state == "done", status.message
            assert len(reads) == 1 and _body_model_downloads(server) == downloads
            on_disk = load_body_model(server_files[1])
            for name, array in vars(on_disk).items():
                np.testing.assert_array_equal(getattr(status.body_model, name), array)


@pytest.fixture
def placeholder_and_real(tmp_path, body_model):
    """(placeholder body-model file, the real one's): what a --synthetic server sends before the model
    data is installed, and after."""
    from vibe_server.data.synthetic import make_body_model

    save_body_model(tmp_path / "placeholder.npz", body_model)
    save_body_model(tmp_path / "real.npz", make_body_model(1))
    return tmp_path / "placeholder.npz", tmp_path / "real.npz"


def test_the_placeholder_cached_before_the_model_data_is_replaced_by_the_real_one(
    server_files, tmp_path, placeholder_and_real
):
    placeholder, real = placeholder_and_real
    with FakeVibeServer(server_files[0], placeholder, token=TOKEN, model="synthetic placeholder") as server:
        load_served_body_model(ServerClient(server.url, TOKEN), _cache(tmp_path))
    assert cached_body_model_note(_cache(tmp_path)).placeholder
    # the model data was installed: the server (restarted) sends the real model, with another fingerprint
    with FakeVibeServer(server_files[0], real, token=TOKEN, model="vibe_model_wo_3dpw") as server:
        for _ in range(2):
            load_served_body_model(ServerClient(server.url, TOKEN), _cache(tmp_path))
    assert _body_model_downloads(server) == 1
    assert _cache(tmp_path).read_bytes() == real.read_bytes()
    assert not cached_body_model_note(_cache(tmp_path)).placeholder


def test_the_same_body_model_from_a_server_that_now_runs_the_placeholder_is_noted_as_the_placeholder(
    server_files, tmp_path, placeholder_and_real
):
    """Model data whose body model is the placeholder's (the synthetic bundle): kept by its fingerprint,
    the cached body model stayed noted as the real model's, and a live session on the placeholder server
    never said its motion was random (nor the other way round)."""
    placeholder, _ = placeholder_and_real
    servers = (("vibe_model_wo_3dpw", False), ("synthetic placeholder", True), ("vibe_model_wo_3dpw", False))
    downloads = []
    for model, is_placeholder in servers:
        with FakeVibeServer(server_files[0], placeholder, token=TOKEN, model=model) as server:
            load_served_body_model(ServerClient(server.url, TOKEN), _cache(tmp_path))
        downloads.append(_body_model_downloads(server))
        assert cached_body_model_note(_cache(tmp_path)).placeholder is is_placeholder
    assert downloads == [1, 0, 0]  # the same body model: downloaded once, from the first server


def test_a_body_model_cached_without_a_note_is_downloaded_again_once(server_files, tmp_path, placeholder_and_real):
    """Cached by an earlier version, which noted nothing: it may be the placeholder."""
    placeholder, real = placeholder_and_real
    _cache(tmp_path).parent.mkdir()
    _cache(tmp_path).write_bytes(placeholder.read_bytes())
    with FakeVibeServer(server_files[0], real, token=TOKEN, model="vibe_model_wo_3dpw") as server:
        for _ in range(2):
            load_served_body_model(ServerClient(server.url, TOKEN), _cache(tmp_path))
    assert _body_model_downloads(server) == 1 and _cache(tmp_path).read_bytes() == real.read_bytes()


@pytest.mark.parametrize("fingerprint", [None, "not a fingerprint", 5])
def test_a_server_that_gives_no_fingerprint_keeps_the_cached_body_model(
    server_files, tmp_path, placeholder_and_real, fingerprint
):
    """Servers before the fingerprint (or one sending something else): the cached body model is used,
    as before, unless it is the placeholder's and the server now runs the real model."""
    placeholder, real = placeholder_and_real
    _cache(tmp_path).parent.mkdir()
    _cache(tmp_path).write_bytes(real.read_bytes())  # no note: cached by an earlier version
    with FakeVibeServer(server_files[0], placeholder, token=TOKEN, body_model_fingerprint=fingerprint) as server:
        load_served_body_model(ServerClient(server.url, TOKEN), _cache(tmp_path))
    assert _body_model_downloads(server) == 0 and _cache(tmp_path).read_bytes() == real.read_bytes()

    _cache(tmp_path).unlink()
    with FakeVibeServer(server_files[0], placeholder, token=TOKEN, body_model_fingerprint=fingerprint) as server:
        load_served_body_model(ServerClient(server.url, TOKEN), _cache(tmp_path))  # the placeholder, noted as such
    with FakeVibeServer(
        server_files[0], real, token=TOKEN, model="vibe_model_wo_3dpw", body_model_fingerprint=fingerprint
    ) as server:
        for _ in range(2):
            load_served_body_model(ServerClient(server.url, TOKEN), _cache(tmp_path))
    assert _body_model_downloads(server) == 1 and _cache(tmp_path).read_bytes() == real.read_bytes()


def test_an_unreadable_cached_body_model_and_a_bad_download_leave_nothing_cached(server_files, tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"still not a body model")
    _cache(tmp_path).parent.mkdir()
    _cache(tmp_path).write_bytes(b"not a body model")
    with FakeVibeServer(server_files[0], junk) as server:
        with pytest.raises(VibeError, match="sent a body model that cannot be used"):
            load_served_body_model(ServerClient(server.url, TOKEN), _cache(tmp_path))
    assert _files_under(tmp_path / "cache") == []
    assert sum(p.endswith("/body_model") for _, p in server.requests) == 1


def test_reading_an_unreadable_cache_deletes_it_and_says_how_to_get_it_again(tmp_path):
    path = _cache(tmp_path)
    assert read_cached_body_model(path) is None
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 damaged")
    with pytest.raises(VibeError, match="was unreadable and was deleted.*Capture once through the server"):
        read_cached_body_model(path)
    assert not path.exists() and read_cached_body_model(path) is None


def test_a_cached_body_model_of_the_wrong_structure_is_deleted_too(tmp_path, body_model):
    """A 2-D 'shapedirs' raised an IndexError, not a VibeError: the cache was kept, and every later
    capture failed on it with the same traceback."""
    model = copy.copy(body_model)
    model.shapedirs = body_model.shapedirs[:, :, 0]
    path = _cache(tmp_path)
    path.parent.mkdir()
    save_body_model(path, model)
    with pytest.raises(VibeError, match="was unreadable and was deleted.*'shapedirs' has shape"):
        read_cached_body_model(path)
    assert not path.exists()


def test_a_download_of_unknown_length_is_refused(server_files, tmp_path):
    """No Content-Length and no chunked encoding: the body ends when the connection does, so a cut-off
    transfer would look whole."""
    with _fake(server_files, result_bytes_sent=1000, polls_per_job=1) as server:
        client = ServerClient(server.url, TOKEN)
        job_id = client.submit_local(server_files[2])["job_id"]
        client.job(job_id)
        with pytest.raises(VibeError, match="without its length.*nothing was saved"):
            client.download_result(job_id, tmp_path / "r.npz")
    assert _files_under(tmp_path) == []


@pytest.mark.parametrize("length", ["²", "1²", "³"])  # str.isdigit says yes, int() no
def test_a_content_length_that_is_not_ascii_digits_is_an_invalid_answer(server_files, tmp_path, length):
    with _fake(server_files, declared_length=length) as server:
        status = _job(ServerClient(server.url, TOKEN), server_files, tmp_path).run()
    assert status.state == "failed" and "a Content-Length that is not a number" in status.message
    assert _files_under(tmp_path / "results") == []


class _ChunkedBodyModel(http.server.BaseHTTPRequestHandler):
    """/health with the proof; /body_model in chunked encoding, cut before its last chunk when ``cut``."""

    protocol_version = "HTTP/1.1"
    body, cut = b"", False

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.startswith("/api/v1/health"):
            challenge = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["challenge"][0]
            proof = server_proof(TOKEN, challenge, self.server.server_address[1])
            data = json.dumps({"status": "ok", "api_version": 1, "device": "cpu", "proof": proof}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        step = 1 << 20
        for start in range(0, len(self.body) // 2 if self.cut else len(self.body), step):
            part = self.body[start : start + step]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        if not self.cut:
            self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("cut", [False, True])
def test_a_chunked_download_is_whole_or_refused(server_files, tmp_path, cut):
    handler = type("Handler", (_ChunkedBodyModel,), {"body": server_files[1].read_bytes(), "cut": cut})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ServerClient(f"http://127.0.0.1:{server.server_port}", TOKEN)
        if cut:
            with pytest.raises(VibeError):
                client.download_body_model(_cache(tmp_path))
            assert _files_under(tmp_path / "cache") == []
        else:
            client.download_body_model(_cache(tmp_path))
            assert load_body_model(_cache(tmp_path)).num_vertices == 6890
    finally:
        server.shutdown()
        server.server_close()


def test_two_downloads_of_the_body_model_at_once_both_succeed(server_files, tmp_path, monkeypatch):
    """A capture and a live session download the body model at the same time: they shared one .part
    file, and the second to finish failed with "Cannot write the download ... free some disk space"."""
    both_written = threading.Barrier(2, timeout=30)
    check = ServerClient._check_body_model

    def check_once_both_are_written(self, partial):
        both_written.wait()  # each download has written its whole file; neither is renamed yet
        return check(self, partial)

    monkeypatch.setattr(ServerClient, "_check_body_model", check_once_both_are_written)
    errors = []

    def download():
        try:
            ServerClient(server.url, TOKEN).download_body_model(_cache(tmp_path))
        except VibeError as err:
            errors.append(str(err))

    with _fake(server_files) as server:
        threads = [threading.Thread(target=download) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert errors == [] and _body_model_downloads(server) == 2
    assert _files_under(tmp_path / "cache") == [_cache(tmp_path).relative_to(tmp_path / "cache")]
    assert load_body_model(_cache(tmp_path)).num_vertices == 6890


class _BodyModelWithoutLength(_ChunkedBodyModel):
    """/body_model with neither a length nor chunked encoding, whose body waits for ``release``."""

    release = threading.Event()

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.startswith("/api/v1/health"):
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.flush()
        self.release.wait(30)
        self.close_connection = True


def test_a_download_of_unknown_length_is_refused_without_waiting_for_its_body(tmp_path):
    """Refused on its headers: a client that read the body first would wait here until its timeout."""
    handler = type("Handler", (_BodyModelWithoutLength,), {"release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ServerClient(f"http://127.0.0.1:{server.server_port}", TOKEN, timeout_s=3.0)
        with pytest.raises(VibeError, match="without its length.*nothing was saved"):
            client.download_body_model(_cache(tmp_path))
        assert _files_under(tmp_path) == []
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()

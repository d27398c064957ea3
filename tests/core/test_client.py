"""The add-on's HTTP client and capture worker against a fake server that follows the API v1 contract."""
import socket
import time

import pytest
from fake_vibe_server import FakeVibeServer

from vibe_blender.core.capture import CaptureJob
from vibe_blender.core.client import START_SERVER_HINT, ServerClient, check_online_access, is_loopback_url
from vibe_blender.core.errors import VibeError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(client, files, tmp_path, **kw):
    result, body, video = files
    return CaptureJob(client, video, tmp_path / "results", body_model_path=tmp_path / "cache" / "body_model.npz",
                      poll_interval_s=0.01, **kw)


def test_capture_with_local_path(server_files, tmp_path):
    with FakeVibeServer(server_files[0], server_files[1]) as server:
        status = _job(ServerClient(server.url), server_files, tmp_path, params={"smoothing": 0.5}).run()
    assert status.state == "done", status.message
    assert status.result_path.read_bytes() == server_files[0].read_bytes()
    assert status.body_model_path.read_bytes() == server_files[1].read_bytes()
    assert server.local_paths == [str(server_files[2].resolve())] and server.uploads == []
    assert ("GET", "/api/v1/jobs/job1/result") in server.requests


def test_capture_with_upload_and_token(server_files, tmp_path):
    with FakeVibeServer(server_files[0], server_files[1], token="s3cret") as server:
        status = _job(ServerClient(server.url, token="s3cret"), server_files, tmp_path, upload=True,
                      params={"detector": "hog"}).run()
    assert status.state == "done", status.message
    ((name, content, params),) = server.uploads
    assert name == "video.mp4" and content == server_files[2].read_bytes() and params == {"detector": "hog"}


def test_upload_when_the_server_cannot_see_the_file(server_files, tmp_path):
    with FakeVibeServer(server_files[0], server_files[1], accept_local=False) as server:
        status = _job(ServerClient(server.url), server_files, tmp_path).run()
    assert status.state == "done", status.message
    assert server.local_paths == [] and [u[0] for u in server.uploads] == ["video.mp4"]


def test_progress_is_visible_while_running(server_files, tmp_path):
    with FakeVibeServer(server_files[0], server_files[1], polls_per_job=40) as server:
        job = _job(ServerClient(server.url), server_files, tmp_path).start()
        seen = set()
        while not job.snapshot().finished:
            s = job.snapshot()
            seen.add((s.state, s.stage))
            time.sleep(0.002)
        job.join(5)
    assert job.snapshot().state == "done"
    assert any(state == "running" and stage for state, stage in seen)


def test_server_down_says_how_to_start_it(server_files, tmp_path):
    status = _job(ServerClient(f"http://127.0.0.1:{_free_port()}"), server_files, tmp_path).run()
    assert status.state == "failed"
    assert "Cannot reach the VIBE Mocap server" in status.message and START_SERVER_HINT in status.message


def test_wrong_token_is_explained(server_files, tmp_path):
    with FakeVibeServer(server_files[0], server_files[1], token="right") as server:
        status = _job(ServerClient(server.url, token="wrong"), server_files, tmp_path).run()
    assert status.state == "failed" and "refused the access token" in status.message


def test_failed_job_shows_the_servers_reason(server_files, tmp_path):
    with FakeVibeServer(server_files[0], server_files[1], fail_with="No person was found in the video.") as server:
        status = _job(ServerClient(server.url), server_files, tmp_path).run()
    assert status.state == "failed"
    assert status.message == "The capture failed on the server: No person was found in the video."
    assert status.result_path is None


def test_bad_parameter_detail_is_passed_on(server_files, tmp_path):
    with FakeVibeServer(server_files[0], server_files[1]) as server:
        status = _job(ServerClient(server.url), server_files, tmp_path, params={"bogus": 1}).run()
    assert status.state == "failed" and "bogus" in status.message


def test_cancel_stops_the_server_job(server_files, tmp_path):
    with FakeVibeServer(server_files[0], server_files[1], polls_per_job=10_000) as server:
        job = _job(ServerClient(server.url), server_files, tmp_path).start()
        while job.snapshot().state not in ("running",):
            time.sleep(0.002)
        job.cancel()
        job.join(5)
        assert job.snapshot().state == "cancelled"
        assert server.jobs["job1"]["status"] == "cancelled"
        assert ("DELETE", "/api/v1/jobs/job1") in server.requests
    assert not (tmp_path / "results" / "job1.npz").exists()


def test_missing_video_is_reported(server_files, tmp_path):
    with FakeVibeServer(server_files[0], server_files[1]) as server:
        job = CaptureJob(ServerClient(server.url), tmp_path / "nope.mp4", tmp_path, body_model_path=tmp_path / "b.npz")
        status = job.run()
    assert status.state == "failed" and "does not exist" in status.message


def test_result_before_done_is_a_clear_error(server_files, tmp_path):
    with FakeVibeServer(server_files[0], server_files[1], polls_per_job=100) as server:
        client = ServerClient(server.url)
        job_id = client.submit_local(server_files[2])["job_id"]
        with pytest.raises(VibeError, match="not done"):
            client.download_result(job_id, tmp_path / "r.npz")
        assert client.health()["api_version"] == 1
        assert [j["job_id"] for j in client.jobs()] == [job_id]


@pytest.mark.parametrize("url, loopback", [
    ("http://127.0.0.1:8765", True), ("http://localhost:1", True), ("http://[::1]:8765", True),
    ("http://127.8.9.10", True), ("http://192.168.1.5:8765", False), ("https://gpu.example.org", False),
])
def test_loopback_detection(url, loopback):
    assert is_loopback_url(url) is loopback


def test_online_access_is_needed_for_other_hosts():
    check_online_access("http://127.0.0.1:8765", online_access=False)
    check_online_access("http://192.168.1.5:8765", online_access=True)
    with pytest.raises(VibeError, match="online access is off"):
        check_online_access("http://192.168.1.5:8765", online_access=False)


def test_bad_url_is_refused():
    with pytest.raises(VibeError, match="not a server URL"):
        ServerClient("ftp://x")

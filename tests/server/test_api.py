"""The HTTP API with the tiny model and scripted front end: jobs end to end, parameter checks,
upload limits, local paths, Host/token/Origin checks, cancel, restart, failure isolation."""
import io
import json
import time

import pytest
from fastapi.testclient import TestClient

from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import load_result
from vibe_blender.core.smpl_model import load_body_model
from vibe_server.api.app import create_app
from vibe_server.api.deps import get_settings
from vibe_server.api.settings import Settings

from vibe_server.data.synthetic import write_smpl_files

BASE = "http://127.0.0.1:8765"
API = "/api/v1"


@pytest.fixture
def settings(tmp_path):
    return Settings(jobs_dir=tmp_path / "jobs")


@pytest.fixture
def engine(make_engine):
    return make_engine()


def client_for(settings, engine, *, client_host="127.0.0.1"):
    app = create_app(settings, engine_loader=lambda s: engine)
    return TestClient(app, base_url=BASE, client=(client_host, 50000))


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


def assert_detail(response, status, *words):
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail, detail


def leftover_files(settings):
    return [p for p in settings.jobs_dir.rglob("*") if p.is_file()]


# -- the happy path -----------------------------------------------------------------------------

def test_health(client):
    r = client.get(f"{API}/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["api_version"] == 1 and body["model"] == "tiny test model"
    assert body["device"] == "cpu" and body["queue_length"] == 0 and body["torch"]


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


def test_jobs_get_the_fast_defaults_and_official_restores_the_official_configuration(client):
    from vibe_server.pipeline.run import DEFAULT_DETECTION_STRIDE

    metas = []
    for params in ({}, {"official": True, "smoothing": 0.5}):
        job = wait(client, upload(client, params=params).json()["job_id"])
        metas.append(load_result(io.BytesIO(client.get(f"{API}/jobs/{job['job_id']}/result").content)).meta)
    fast, official = metas
    assert fast["detection_stride"] == str(DEFAULT_DETECTION_STRIDE) and fast["adaptive_detection"] == "True"
    assert (official["detection_stride"], official["adaptive_detection"], official["chunking"],
            official["precision"], official["smoothing"]) == ("1", "False", "official", "fp32", "0.5")
    assert official["uncrop"] == "official 1.0x box"


def test_official_pkl_download_is_read_by_joblib(client):
    joblib = pytest.importorskip("joblib")
    job = wait(client, upload(client).json()["job_id"])
    r = client.get(f"{API}/jobs/{job['job_id']}/result.pkl")
    assert r.status_code == 200
    data = joblib.load(io.BytesIO(r.content))
    assert sorted(data) == [1, 3]
    assert data[1]["verts"].shape == (60, 6890, 3) and data[1]["joints2d_img_coord"].shape == (60, 49, 2)


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

@pytest.mark.parametrize("params, words", [
    ({"smoothness": 0.5}, ["unknown parameter 'smoothness'"]),
    ({"smoothing": 3}, ["'smoothing'"]),
    ({"detector": "ssd"}, ["'detector'"]),
    ({"detection_stride": 0}, ["'detection_stride'"]),
    ({"chunking": "overlap"}, ["'chunking'"]),
    ("{not json", ["not valid JSON"]),
    ("[1, 2]", ["JSON object"]),
])
def test_bad_params_are_422_and_leave_nothing(client, settings, params, words):
    assert_detail(upload(client, params=params), 422, *words)
    assert leftover_files(settings) == []


def test_non_video_upload_is_415_and_leaves_nothing(client, settings):
    assert_detail(upload(client, name="bad.txt", data=b"hello"), 415, "not a video", "bad.txt")
    assert leftover_files(settings) == []


def test_upload_without_video_or_empty_is_400(client):
    r = client.post(f"{API}/jobs", files={"other": ("a.mp4", io.BytesIO(b"x"), "video/mp4")})
    assert_detail(r, 400, "'video'")
    assert_detail(upload(client, data=b""), 400, "empty")


def test_upload_size_cap_is_413_and_leaves_nothing(settings, engine):
    settings.max_upload_bytes = 1000
    with client_for(settings, engine) as client:
        assert_detail(upload(client, data=b"\x00" * 5000), 413, "limit")
        assert upload(client, data=b"\x00" * 900).status_code == 201
    assert all(p.name != "input.mp4" for p in leftover_files(settings) if p.parent.name == "")


def test_size_cap_also_holds_without_content_length(settings, engine):
    """A chunked body has no Content-Length: the streaming parser counts the bytes itself."""
    settings.max_upload_bytes = 1000
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"c.mp4\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n").encode() + b"\x00" * 5000 + f"\r\n--{boundary}--\r\n".encode()

    def chunks():
        for i in range(0, len(body), 512):
            yield body[i:i + 512]

    with client_for(settings, engine) as client:
        r = client.post(f"{API}/jobs", content=chunks(),
                        headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert_detail(r, 413, "limit")
    assert leftover_files(settings) == []


def test_wrong_content_type_is_415(client):
    assert_detail(client.post(f"{API}/jobs", content=b"abc", headers={"content-type": "text/plain"}), 415,
                  "multipart/form-data")


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

    with TestClient(create_app(settings, engine_loader=no_data), base_url=BASE) as client:
        health = client.get(f"{API}/health").json()
        assert health["model"].startswith("none")
        assert_detail(upload(client), 503, "data install")
        assert_detail(client.get(f"{API}/body_model"), 503)
        assert client.get(f"{API}/jobs").json() == {"jobs": []}


def test_finished_results_stay_reachable_when_the_model_data_goes_missing(settings, engine):
    with client_for(settings, engine) as client:
        job_id = wait(client, upload(client).json()["job_id"])["job_id"]

    def no_data(_settings):
        raise VibeError("Model data missing: /x/SMPL_NEUTRAL.pkl. Run 'vibe-mocap data install'.")

    with TestClient(create_app(settings, engine_loader=no_data), base_url=BASE) as client:
        assert client.get(f"{API}/jobs/{job_id}").json()["status"] == "done"
        assert client.get(f"{API}/jobs/{job_id}/result").status_code == 200
        assert_detail(client.get(f"{API}/jobs/{job_id}/result.pkl"), 503, "data install")


# -- local paths ---------------------------------------------------------------------------------

def test_local_path_jobs_for_loopback_clients(client, tmp_path):
    video = tmp_path / "local.mp4"
    video.write_bytes(b"fake")
    r = client.post(f"{API}/jobs", json={"video_path": str(video), "params": {"tracks_max": 1}})
    assert r.status_code == 201, r.text
    job = wait(client, r.json()["job_id"])
    assert job["status"] == "done" and job["num_tracks"] == 1 and job["video_name"] == "local.mp4"
    assert video.exists()                                     # a local input is never deleted


@pytest.mark.parametrize("body, status, words", [
    ({"video_path": "relative.mp4"}, 400, ["absolute"]),
    ({"video_path": "/no/such/file.mp4"}, 400, ["no file"]),
    ({"video_path": "/x.mp4", "params": {"foo": 1}}, 422, ["unknown parameter 'params.foo'"]),
    ({"video_path": "/x.mp4", "extra": 1}, 422, ["unknown parameter 'extra'"]),
    ({"path": "/x.mp4"}, 422, ["video_path"]),
])
def test_bad_local_path_requests(client, body, status, words):
    assert_detail(client.post(f"{API}/jobs", json=body), status, *words)


def test_local_path_must_be_a_video(client, tmp_path):
    text = tmp_path / "bad.txt"
    text.write_text("not a video")
    assert_detail(client.post(f"{API}/jobs", json={"video_path": str(text)}), 415, "not a video")


def test_local_path_refused_for_other_clients(settings, engine, tmp_path):
    settings.host, settings.token = "0.0.0.0", "s3cret"
    video = tmp_path / "local.mp4"
    video.write_bytes(b"fake")
    with client_for(settings, engine, client_host="192.168.1.7") as client:
        r = client.post(f"{API}/jobs", json={"video_path": str(video)}, headers={"Authorization": "Bearer s3cret"})
        assert_detail(r, 403, "same machine")
        assert upload(client, headers={"Authorization": "Bearer s3cret"}).status_code == 201


# -- security -----------------------------------------------------------------------------------

@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1:8765", True), ("localhost:8765", True), ("127.0.0.1", True),
    ("localhost.attacker.example", False), ("localhost.attacker.example:8765", False),
    ("127.0.0.1:9999", False), ("evil.example", False), ("", False),
])
def test_host_header_must_match_the_bound_host(client, host, ok):
    r = client.get(f"{API}/health", headers={"host": host})
    assert (r.status_code == 200) == ok, (host, r.text)
    if not ok:
        assert_detail(r, 400, "Host header")
        assert_detail(client.get(f"{API}/jobs", headers={"host": host}), 400)


def test_token_is_required_when_set(settings, engine):
    settings.token = "s3cret"
    with client_for(settings, engine) as client:
        assert client.get(f"{API}/health").status_code == 200
        assert_detail(client.get(f"{API}/jobs"), 401, "Bearer")
        assert_detail(client.get(f"{API}/jobs", headers={"Authorization": "Bearer wrong"}), 401)
        assert_detail(upload(client), 401)
        assert client.get(f"{API}/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_token_can_be_swapped_through_dependency_overrides(settings, engine):
    app = create_app(settings, engine_loader=lambda s: engine)
    app.dependency_overrides[get_settings] = lambda: Settings(jobs_dir=settings.jobs_dir, token="other")
    with TestClient(app, base_url=BASE) as client:
        assert client.get(f"{API}/jobs").status_code == 401
        assert client.get(f"{API}/jobs", headers={"Authorization": "Bearer other"}).status_code == 200


def test_non_loopback_bind_needs_a_token(tmp_path):
    with pytest.raises(VibeError, match="--token"):
        create_app(Settings(host="0.0.0.0", jobs_dir=tmp_path))
    with pytest.raises(VibeError, match="--token"):
        create_app(Settings(host="192.168.1.5", jobs_dir=tmp_path))
    create_app(Settings(host="192.168.1.5", token="t", jobs_dir=tmp_path))


def test_foreign_origin_cannot_change_state_and_no_cors_headers(client, settings):
    assert_detail(upload(client, headers={"Origin": "http://evil.example"}), 403, "web page")
    assert_detail(upload(client, headers={"Origin": "null"}), 403)
    assert leftover_files(settings) == []
    job_id = wait(client, upload(client, headers={"Origin": BASE}).json()["job_id"])["job_id"]
    assert_detail(client.delete(f"{API}/jobs/{job_id}", headers={"Origin": "http://evil.example"}), 403)
    r = client.get(f"{API}/jobs", headers={"Origin": "http://evil.example"})
    assert not any(h.lower().startswith("access-control-") for h in r.headers)
    pre = client.options(f"{API}/jobs", headers={"Origin": "http://evil.example",
                                                 "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers


# -- cancel, delete, restart --------------------------------------------------------------------

def test_cancel_a_running_job_then_delete_it(settings, make_engine):
    with client_for(settings, make_engine(delay_s=0.05)) as client:
        job_id = upload(client).json()["job_id"]
        wait(client, job_id, until=("running",))
        r = client.delete(f"{API}/jobs/{job_id}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        time.sleep(0.3)
        assert client.get(f"{API}/jobs/{job_id}").json()["status"] == "cancelled"
        assert not list(settings.jobs_dir.glob(f"{job_id}/input*"))     # the upload is cleaned up
        assert client.delete(f"{API}/jobs/{job_id}").status_code == 200
        assert client.get(f"{API}/jobs/{job_id}").status_code == 404


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
    engine.data_dir = None
    with client_for(settings, engine) as client:
        assert_detail(client.get(f"{API}/body_model"), 503, "data install")

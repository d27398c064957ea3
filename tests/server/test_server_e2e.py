"""End to end: the real server (uvicorn in a subprocess, full-size random-weight model, the real
video/detector/tracker/crop front end) on 127.0.0.1, fed with cuts of the real clips."""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import time
from pathlib import Path

import cv2
import httpx
import pytest
from server_process import running_server
from testdata import REAL_CLIPS as REAL

from vibe_blender.core.result_file import load_result

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TOKEN = "e2e-test-token-" + "e" * 16  # serve refuses a token shorter than 22 characters
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def cut_clip(src: Path, dst: Path, start: int, frames: int) -> Path:
    cap = cv2.VideoCapture(str(src))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    writer = None
    for _ in range(frames):
        ok, frame = cap.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(
                str(dst), cv2.VideoWriter.fourcc(*"mp4v"), cap.get(cv2.CAP_PROP_FPS), (frame.shape[1], frame.shape[0])
            )
        writer.write(frame)
    writer.release()
    cap.release()
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(synthetic_bundle, tmp_path_factory):
    """The server on a free port, with the synthetic bundle plus random Darknet weights for YOLO."""
    from vibe_server.pipeline.detect.darknet_weights import write_random_darknet_weights

    data_dir = tmp_path_factory.mktemp("e2e_data")
    for f in synthetic_bundle.iterdir():
        (data_dir / f.name).symlink_to(f)
    write_random_darknet_weights(data_dir / "yolov3.weights")
    port = free_port()
    log_path = tmp_path_factory.mktemp("e2e_log") / "server.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "server"), str(REPO)]),
        "VIBE_MOCAP_TOKEN": TOKEN,  # never the real user's token file
        "XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("e2e_config")),
    }
    command = [sys.executable, "-m", "vibe_server", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    command += ["--jobs-dir", str(tmp_path_factory.mktemp("e2e_jobs"))]
    with running_server(command, port=port, token=TOKEN, log_path=log_path, env=env) as url:
        yield f"{url}/api/v1"


def wait_for(base: str, job_id: str, timeout_s: float = 300) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        job = httpx.get(f"{base}/jobs/{job_id}", headers=AUTH, timeout=10).json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(1.0)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_real_clip_upload_to_result(server, tmp_path):
    health = httpx.get(f"{server}/health", headers=AUTH).json()
    assert health["api_version"] == 1 and health["model"] == "vibe_model_wo_3dpw" and health["device"] == "cpu"
    clip = cut_clip(REAL / "one-by-one-person-detection.mp4", tmp_path / "walk.mp4", start=262, frames=66)
    params = {"detector": "hog", "detection_stride": 2, "min_track_frames": 20, "smoothing": 0.3}
    with open(clip, "rb") as f:
        r = httpx.post(
            f"{server}/jobs",
            headers=AUTH,
            files={"video": ("walk.mp4", f, "video/mp4")},
            data={"params": json.dumps(params)},
            timeout=60,
        )
    assert r.status_code == 201, r.text
    job = wait_for(server, r.json()["job_id"])
    assert job["status"] == "done", job
    assert job["num_tracks"] >= 1 and job["progress"] == 1.0

    r = httpx.get(f"{server}/jobs/{job['job_id']}/result", headers=AUTH, timeout=60)
    assert r.status_code == 200
    result = load_result(io.BytesIO(r.content))
    assert result.video.name == "walk.mp4" and (result.video.width, result.video.height) == (768, 432)
    assert result.video.frame_count == 66 and result.video.fps == pytest.approx(10.0)
    track = max(result.tracks, key=lambda t: t.num_frames)
    assert track.num_frames >= 20 and track.frame_ids.max() < 66
    assert (track.trans_cam_m[:, 2] > 0).all()  # in front of the camera
    assert result.meta["detector"] == "hog" and result.meta["smoothing"] == "0.3"

    import joblib  # the test extra has it

    r = httpx.get(f"{server}/jobs/{job['job_id']}/result.pkl", headers=AUTH, timeout=120)
    assert r.status_code == 200
    official = joblib.load(io.BytesIO(r.content))
    assert official[track.track_id]["verts"].shape == (track.num_frames, 6890, 3)


def test_video_with_nobody_fails_with_a_reason(server, tmp_path):
    """An empty room (a lit wall, a slow pan, sensor noise), as a local-path job, with HOG, the
    detector that finds the person in the walk clip above: nobody, so the job fails and says so."""
    import numpy as np

    clip = tmp_path / "empty-room.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (640, 360))
    rng = np.random.default_rng(0)
    wall = np.linspace(60, 200, 640 + 60)[None, :, None].repeat(360, 0).repeat(3, 2)
    for i in range(30):
        frame = wall[:, 2 * i : 2 * i + 640] + rng.normal(0, 3, (360, 640, 3))
        writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    writer.release()
    r = httpx.post(
        f"{server}/jobs",
        headers=AUTH,
        json={"video_path": str(clip), "params": {"detector": "hog", "detection_stride": 1}},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    job = wait_for(server, r.json()["job_id"])
    assert job["status"] == "failed" and "Nobody was found in 'empty-room.mp4'" in job["error"]
    assert httpx.get(f"{server}/jobs/{job['job_id']}/result", headers=AUTH).status_code == 409
    assert clip.exists()


def test_bad_files_are_refused_and_the_server_keeps_serving(server, tmp_path):
    text = b"this is not a video\n" * 100
    r = httpx.post(f"{server}/jobs", headers=AUTH, files={"video": ("notes.mp4", text, "video/mp4")}, timeout=30)
    assert r.status_code == 415 and "notes.mp4" in r.json()["detail"]
    whole = cut_clip(REAL / "one-by-one-person-detection.mp4", tmp_path / "whole.mp4", start=262, frames=40)
    truncated = whole.read_bytes()[:3000]
    r = httpx.post(f"{server}/jobs", headers=AUTH, files={"video": ("cut.mp4", truncated, "video/mp4")}, timeout=30)
    if r.status_code == 201:  # the container opened: the job must fail
        job = wait_for(server, r.json()["job_id"])
        assert job["status"] == "failed" and job["error"]
    else:
        assert r.status_code == 415 and r.json()["detail"]
    r = httpx.post(f"{server}/jobs", headers=AUTH, files={"video": ("empty.mp4", b"", "video/mp4")}, timeout=30)
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    r = httpx.post(
        f"{server}/jobs",
        headers=AUTH,
        files={"video": ("a.mp4", text, "video/mp4")},
        data={"params": json.dumps({"speed": "max"})},
        timeout=30,
    )
    assert r.status_code == 422 and "speed" in r.json()["detail"]
    r = httpx.get(f"{server}/health", headers={**AUTH, "Host": "localhost.attacker.example"})
    assert r.status_code == 400
    assert httpx.get(f"{server}/health", headers=AUTH).json()["status"] == "ok"
    assert httpx.get(f"{server}/jobs").status_code == 401  # loopback needs the token too

"""End to end: the add-on captures the bundled real clip through the REAL inference server.

The server runs in the main .venv (torch) as a subprocess on 127.0.0.1 with a synthetic model-data
bundle (official-size random weights) and OpenCV's HOG detector, which finds real people without any
weights; the add-on side (this bpy venv) sends the video, follows the job and builds the scene.
"""

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import bpy
import numpy as np
import pytest
from server_process import running_server  # tests/, on the path (conftest.py)

from vibe_blender import jobs, keyframes
from vibe_blender.core.result_file import load_result
from vibe_blender.importer import ImportOptions

pytestmark = pytest.mark.blender
REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "samples" / "one-person-walk.mp4"


def _main_python() -> Path:
    python = Path(os.environ.get("VIBE_SERVER_PYTHON", REPO / ".venv" / "bin" / "python"))
    if not python.exists():
        pytest.fail(f"The server's Python ({python}) is missing: run scripts/setup.sh first.")
    return python


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    # the server and the add-on share a token through the environment, never the user's token file
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIBE_MOCAP_TOKEN", "capture-e2e-token")
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("server_config")))
        yield from _serve(tmp_path_factory)


def _serve(tmp_path_factory):
    python = _main_python()
    data_dir, jobs_dir = tmp_path_factory.mktemp("server_data"), tmp_path_factory.mktemp("server_jobs")
    # The token reaches the server and the add-on through $VIBE_MOCAP_TOKEN (never a command line),
    # with a config folder of the test's own (never the user's token file).
    token = secrets.token_urlsafe(16)
    config_home = tmp_path_factory.mktemp("config")
    env = dict(
        os.environ,
        PYTHONPATH=f"{REPO / 'server'}{os.pathsep}{REPO}",
        XDG_CONFIG_HOME=str(config_home),
        VIBE_MOCAP_TOKEN=token,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(config_home))
        patch.setenv("VIBE_MOCAP_TOKEN", token)
        subprocess.run(
            [
                str(python),
                "-c",
                "import sys; from vibe_server.data.synthetic import write_synthetic_bundle;"
                " write_synthetic_bundle(sys.argv[1])",
                str(data_dir),
            ],
            check=True,
            env=env,
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [str(python), "-m", "vibe_server", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        command += ["--jobs-dir", str(jobs_dir)]
        log_path = tmp_path_factory.mktemp("server_log") / "server.log"
        with running_server(command, port=port, token=token, log_path=log_path, env=env, timeout_s=180) as url:
            yield url


@pytest.fixture(scope="module")
def registered():
    import vibe_blender

    vibe_blender.register()
    yield
    vibe_blender.unregister()


def test_capture_real_clip_through_the_real_server(registered, real_server, empty_scene):
    params = {"detector": "hog", "detection_stride": 2, "min_track_frames": 20}
    jobs.start_capture(
        str(CLIP), ImportOptions(), server_url=real_server, params=params, use_timer=False, poll_interval_s=0.2
    )
    deadline = time.monotonic() + 600
    stages = set()
    while jobs.tick() is not None:  # what Blender's timer does (timers never fire in bpy)
        status = jobs.current_job().snapshot()
        stages.add(status.state)
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    status = jobs.current_job().snapshot()
    assert status.state == "done", status.message
    assert "running" in stages or "queued" in stages

    result = load_result(status.result_path)
    assert result.video.frame_count == 150 and result.video.fps == pytest.approx(10.0)
    characters = jobs.last_import()
    assert len(characters) == len(result.tracks) >= 1
    scene = bpy.context.scene
    assert scene.render.fps / scene.render.fps_base == pytest.approx(10.0)
    assert (scene.frame_start, scene.frame_end) == (1, 150)
    for (armature, mesh), track in zip(characters, result.tracks):
        assert armature.type == "ARMATURE" and mesh.parent == armature
        assert armature.name == f"track_{track.track_id}"
        frames, _ = keyframes.read_fcurve(
            keyframes.channels_of(armature), 'pose.bones["pelvis"].rotation_quaternion', 0
        )
        np.testing.assert_array_equal(frames, track.frame_ids + 1)  # one key per tracked frame
        assert len(mesh.data.shape_keys.key_blocks) >= 11  # basis + 10 betas

"""Pure-core fixtures: a synthetic body model and a small result file, made with numpy only."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/fake_vibe_server.py

from vibe_blender.core.result_file import MocapResult, Track, VideoInfo, save_result  # noqa: E402
from vibe_blender.core.smpl_model import save_body_model  # noqa: E402


@pytest.fixture(scope="session")
def body_model():
    from vibe_server.data.synthetic import make_body_model

    return make_body_model(0)


def make_result(rng, frame_ids_per_track=((0, 1, 2, 3), (2, 3, 7, 8))) -> MocapResult:
    tracks = []
    for track_id, frame_ids in enumerate(frame_ids_per_track, start=1):
        T = len(frame_ids)
        pose = rng.normal(0, 0.3, (T, 72))
        pose[:, :3] = [np.pi, 0, 0]
        betas = rng.normal(0, 1, 10)
        tracks.append(
            Track(
                track_id=track_id,
                frame_ids=np.array(frame_ids),
                pose=pose,
                betas=np.tile(betas, (T, 1)),
                betas_track=betas,
                pred_cam=np.ones((T, 3)),
                orig_cam=np.ones((T, 4)),
                bboxes=np.ones((T, 4)),
                joints3d=np.zeros((T, 49, 3)),
                trans_cam_m=np.tile([0.0, 0.2, 5.0], (T, 1)),
            )
        )
    return MocapResult(
        video=VideoInfo("clip.mp4", 25.0, 320, 240, 12),
        tracks=tracks,
        model_name="synthetic placeholder",
        focal_length_px=400.0,
    )


@pytest.fixture(scope="session")
def server_files(tmp_path_factory, body_model):
    """(result.npz, body_model.npz, video.mp4) on disk, for the fake server and readers."""
    folder = tmp_path_factory.mktemp("server_files")
    save_result(folder / "result.npz", make_result(np.random.default_rng(0)))
    save_body_model(folder / "body_model.npz", body_model)
    (folder / "video.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 5000)
    return folder / "result.npz", folder / "body_model.npz", folder / "video.mp4"

"""Write the smplx reference the Blender suite compares against (run with the main .venv: torch + smplx).

    python tests/blender/make_smplx_reference.py OUT_DIR

OUT_DIR gets: body_model.npz (the synthetic SMPL-format model), result.npz (a two-track result file
in the camera frame, one track with a gap), amass.npz (Z-up motion), and reference.npz with smplx's
vertices and joints for every row, with pose correctives (``*_corr``) and without (``*_nocorr``:
SMPL with posedirs set to zero). The bpy venvs have no torch, so they only read these arrays.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import smplx
import torch

warnings.filterwarnings("ignore", message=".*You are using a SMPL model.*")

from vibe_blender.core.result_file import MocapResult, Track, VideoInfo, save_result
from vibe_blender.core.smpl_model import load_body_model, save_body_model
from vibe_server.data.synthetic import make_body_model

SEED = 7


def smplx_forward(model, pose, betas, trans, *, correctives: bool):
    struct = model.to_smplx_struct()
    if not correctives:
        struct.posedirs = np.zeros_like(model.posedirs)
    layer = smplx.SMPL("", data_struct=struct, num_betas=10, batch_size=len(pose), dtype=torch.float64)
    t = lambda a: torch.tensor(np.array(a, dtype=np.float64))  # noqa: E731
    with torch.no_grad():
        out = layer(
            global_orient=t(pose[:, :3]),
            body_pose=t(pose[:, 3:]),
            betas=t(np.broadcast_to(betas, (len(pose), 10))),
            transl=t(trans),
        )
    return out.vertices.numpy(), out.joints[:, :24].numpy()


def random_camera_motion(rng, T):
    """Upright-ish people facing the camera (root ~180° about x), random limbs, in front of it."""
    pose = rng.normal(0.0, 0.45, (T, 72))
    root = np.array([np.pi, 0.0, 0.0]) + rng.normal(0.0, 0.3, (T, 3))
    pose[:, :3] = root
    trans = np.array([0.2, 0.3, 4.0]) + rng.normal(0.0, 0.3, (T, 3))
    return pose, trans


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    save_body_model(out_dir / "body_model.npz", make_body_model(0))
    model = load_body_model(out_dir / "body_model.npz")  # the float32 arrays Blender will see
    ref = {}
    tracks = []
    for track_id, frame_ids in ((1, np.arange(5)), (2, np.array([0, 1, 2, 6, 7, 8]))):
        T = len(frame_ids)
        pose, trans = random_camera_motion(rng, T)
        betas = rng.normal(0.0, 1.5, 10)
        tracks.append(
            Track(
                track_id=track_id,
                frame_ids=frame_ids,
                pose=pose,
                betas=np.tile(betas, (T, 1)),
                betas_track=betas,
                pred_cam=np.tile([1.0, 0.0, 0.0], (T, 1)),
                orig_cam=np.tile([0.5, 0.5, 0.0, 0.0], (T, 1)),
                bboxes=np.tile([64, 64, 100, 100], (T, 1)),
                joints3d=np.zeros((T, 49, 3)),
                trans_cam_m=trans,
            )
        )
        for corr in (True, False):
            v, j = smplx_forward(
                model,
                pose.astype(np.float32).astype(np.float64),
                betas.astype(np.float32),
                trans.astype(np.float32),
                correctives=corr,
            )
            tag = "corr" if corr else "nocorr"
            ref[f"track_{track_id}/verts_{tag}"], ref[f"track_{track_id}/joints_{tag}"] = v, j
    result = MocapResult(
        video=VideoInfo(name="reference_clip", fps=29.97, width=640, height=480, frame_count=10),
        tracks=tracks,
        model_name="synthetic placeholder",
        focal_length_px=600.0,
    )
    save_result(out_dir / "result.npz", result)

    # AMASS: Z-up world, SMPL-H sized pose vectors (156), 16 betas.
    T = 4
    poses = rng.normal(0.0, 0.4, (T, 156))
    poses[:, :3] = np.array([np.pi / 2, 0.0, 0.0]) + rng.normal(0.0, 0.2, (T, 3))  # stand up in Z-up
    trans = rng.normal(0.0, 0.5, (T, 3))
    betas16 = rng.normal(0.0, 1.0, 16)
    np.savez(
        out_dir / "amass.npz",
        poses=poses,
        trans=trans,
        betas=betas16,
        mocap_framerate=np.array(120.0),
        gender=np.array("neutral"),
    )
    smpl_pose = np.zeros((T, 72))
    smpl_pose[:, :66] = poses[:, :66]
    for corr in (True, False):
        v, j = smplx_forward(model, smpl_pose, betas16[:10], trans, correctives=corr)
        tag = "corr" if corr else "nocorr"
        ref[f"amass/verts_{tag}"], ref[f"amass/joints_{tag}"] = v, j
    np.savez(out_dir / "reference.npz", **ref)
    print(f"smplx reference written to {out_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

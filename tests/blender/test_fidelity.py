"""The character Blender evaluates is SMPL: vertices and joints match smplx within 1e-5 m."""

import numpy as np
import pytest
from blender_eval import evaluated_joints, evaluated_vertices

from vibe_blender.core.motion import ground_offset
from vibe_blender.core.readers import read_motion_file
from vibe_blender.core.skeleton import CAMERA_TO_BLENDER
from vibe_blender.core.smpl_math import smpl_forward
from vibe_blender.importer import ImportOptions, import_motion_file

pytestmark = pytest.mark.blender
TOLERANCE_M = 1e-5


@pytest.mark.parametrize("correctives", ["off", "drivers", "baked"])
def test_result_import_matches_smplx(empty_scene, reference_dir, reference, body_model, correctives, fidelity_log):
    characters = import_motion_file(reference_dir / "result.npz", body_model, ImportOptions(correctives=correctives))
    motion = read_motion_file(reference_dir / "result.npz")
    offset = ground_offset(body_model, motion.tracks)
    tag = "nocorr" if correctives == "off" else "corr"  # no correctives == SMPL without pose blend shapes
    worst_v = worst_j = 0.0
    for (armature_obj, mesh_obj), track in zip(characters, motion.tracks):
        assert armature_obj.name == track.name and mesh_obj.name == f"{track.name}_body"
        for row, frame_id in enumerate(track.frame_ids):
            empty_scene.frame_set(int(frame_id) + 1)
            v_ref = reference[f"{track.name}/verts_{tag}"][row] @ CAMERA_TO_BLENDER.T + offset
            j_ref = reference[f"{track.name}/joints_{tag}"][row] @ CAMERA_TO_BLENDER.T + offset
            worst_v = max(worst_v, np.abs(evaluated_vertices(mesh_obj) - v_ref).max())
            worst_j = max(worst_j, np.abs(evaluated_joints(armature_obj) - j_ref).max())
    fidelity_log[f"result/{correctives}"] = (worst_v, worst_j)
    assert worst_v <= TOLERANCE_M and worst_j <= TOLERANCE_M


@pytest.mark.parametrize("correctives", ["off", "drivers"])
def test_amass_import_matches_smplx(empty_scene, reference_dir, reference, body_model, correctives, fidelity_log):
    ((armature_obj, mesh_obj),) = import_motion_file(
        reference_dir / "amass.npz", body_model, ImportOptions(correctives=correctives)
    )
    tag = "nocorr" if correctives == "off" else "corr"
    assert empty_scene.render.fps == 120 and empty_scene.frame_end == 4
    worst_v = worst_j = 0.0
    for row in range(4):
        empty_scene.frame_set(row + 1)
        worst_v = max(worst_v, np.abs(evaluated_vertices(mesh_obj) - reference[f"amass/verts_{tag}"][row]).max())
        worst_j = max(worst_j, np.abs(evaluated_joints(armature_obj) - reference[f"amass/joints_{tag}"][row]).max())
    fidelity_log[f"amass/{correctives}"] = (worst_v, worst_j)
    assert worst_v <= TOLERANCE_M and worst_j <= TOLERANCE_M


def test_numpy_smpl_forward_matches_smplx(reference_dir, reference, body_model):
    """The add-on's own numpy SMPL (used for the ground height) agrees with smplx too."""
    motion = read_motion_file(reference_dir / "result.npz")
    for track in motion.tracks:
        verts, joints = smpl_forward(body_model, track.pose, track.betas, track.trans_m)
        assert np.abs(verts - reference[f"{track.name}/verts_corr"]).max() < 1e-6
        assert np.abs(joints - reference[f"{track.name}/joints_corr"]).max() < 1e-6

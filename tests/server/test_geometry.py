"""Rotations and cameras against the official utility functions' recorded outputs."""

import numpy as np
import torch

from vibe_server import geometry


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def test_rot6d_interleaved_layout(unit_reference):
    out = geometry.rot6d_to_rotmat(t(unit_reference["fn_rot6d_in"])).numpy()
    np.testing.assert_allclose(out, unit_reference["fn_rot6d_out"], atol=1e-6)


def test_rot6d_degenerate_columns_use_the_official_floor():
    # a first column of norm 1e-8 is divided by 1e-6, not scaled to unit length
    x = torch.tensor([[1e-8, 0.0, 0.0, 1.0, 0.0, 0.0]])
    R = geometry.rot6d_to_rotmat(x)
    assert torch.allclose(R[0, :, 0], torch.tensor([1e-2, 0.0, 0.0]))
    # a second column parallel to the first leaves a zero second axis
    R = geometry.rot6d_to_rotmat(torch.tensor([[1.0, 2.0, 0.0, 0.0, 0.0, 0.0]]))
    assert torch.allclose(R[0, :, 1], torch.zeros(3)) and torch.allclose(R[0, :, 2], torch.zeros(3))


def test_rotmat_to_axis_angle_official_semantics_at_0_and_pi(unit_reference):
    R = t(unit_reference["fn_rotmat_in"])
    aa = geometry.rotation_matrix_to_angle_axis(R)
    np.testing.assert_allclose(aa.numpy(), unit_reference["fn_rotmat_to_aa_out"], atol=1e-6)
    assert float(aa.norm(dim=1).max()) <= np.pi + 1e-6
    # round trip through the loss-side Rodrigues, as the official harness measured it
    err = (geometry.batch_rodrigues(aa) - R).abs().amax(dim=(1, 2)).numpy()
    assert err.max() <= unit_reference["fn_aa_roundtrip_err"].max() + 1e-6


def test_batch_rodrigues(unit_reference):
    out = geometry.batch_rodrigues(t(unit_reference["fn_batch_rodrigues_in"])).numpy()
    np.testing.assert_allclose(out, unit_reference["fn_batch_rodrigues_out"], atol=1e-6)


def test_crop_projection(unit_reference):
    out = geometry.projection(t(unit_reference["fn_proj_joints"]), t(unit_reference["fn_proj_cam"])).numpy()
    np.testing.assert_allclose(out, unit_reference["fn_proj_out"], atol=1e-6)


def test_crop_camera_to_image_camera_official(unit_reference):
    out = geometry.convert_crop_cam_to_orig_img(
        unit_reference["fn_orig_cam_in_cam"], unit_reference["fn_orig_cam_in_bbox"], 1280, 720
    )
    np.testing.assert_allclose(out, unit_reference["fn_orig_cam_out"], atol=1e-6)


def test_crop_keypoints_to_pixels_official(unit_reference):
    out = geometry.convert_crop_coords_to_orig_img(
        unit_reference["fn_orig_cam_in_bbox"], unit_reference["fn_kp_uncrop_in"]
    )
    np.testing.assert_allclose(out, unit_reference["fn_kp_uncrop_out"], atol=1e-4)


def test_corrected_uncrop_scales_about_the_box_centre(unit_reference):
    bbox = unit_reference["fn_orig_cam_in_bbox"]
    kp = unit_reference["fn_kp_uncrop_in"]
    official = geometry.convert_crop_coords_to_orig_img(bbox, kp)
    corrected = geometry.convert_crop_coords_to_orig_img(bbox, kp, bbox_scale=1.1)
    centre = bbox[:, None, :2]
    np.testing.assert_allclose(corrected[..., :2] - centre, 1.1 * (official[..., :2] - centre), rtol=1e-4, atol=1e-3)

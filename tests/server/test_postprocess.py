"""Post-processing: official camera parity (fixture), the corrected 1.1x un-crop, root translation
from the crop camera, robust betas, and the official vibe_output.pkl export."""

import builtins

import numpy as np
import pytest
import torch

from vibe_blender.core.result_file import MocapResult, VideoInfo
from vibe_server.geometry import projection
from vibe_server.pipeline import postprocess

W, H = 1280, 720


def test_official_uncrop_matches_the_fixture(unit_reference):
    ref = unit_reference
    orig_cam = postprocess.crop_cam_to_orig_cam(
        ref["fn_orig_cam_in_cam"], ref["fn_orig_cam_in_bbox"], W, H, official_uncrop=True
    )
    np.testing.assert_allclose(orig_cam, ref["fn_orig_cam_out"], rtol=1e-12, atol=1e-9)
    kp = postprocess.crop_coords_to_image_px(ref["fn_kp_uncrop_in"], ref["fn_orig_cam_in_bbox"], official_uncrop=True)
    np.testing.assert_allclose(kp, ref["fn_kp_uncrop_out"], atol=1e-4)


def test_corrected_uncrop_is_1_1_times_larger_around_the_box_centre(unit_reference):
    ref = unit_reference
    bbox = ref["fn_orig_cam_in_bbox"]
    official = postprocess.crop_coords_to_image_px(ref["fn_kp_uncrop_in"], bbox, official_uncrop=True)
    corrected = postprocess.crop_coords_to_image_px(ref["fn_kp_uncrop_in"], bbox)
    centre = bbox[:, None, :2]
    np.testing.assert_allclose(corrected - centre, 1.1 * (official - centre), rtol=1e-5, atol=1e-3)
    cam_official = postprocess.crop_cam_to_orig_cam(ref["fn_orig_cam_in_cam"], bbox, W, H, official_uncrop=True)
    cam_corrected = postprocess.crop_cam_to_orig_cam(ref["fn_orig_cam_in_cam"], bbox, W, H)
    np.testing.assert_allclose(cam_corrected[:, :2], 1.1 * cam_official[:, :2], rtol=1e-12)


def scene(seed=0, T=5):
    rng = np.random.default_rng(seed)
    joints = rng.normal(0, 0.4, (T, 49, 3)).astype(np.float32)
    pred_cam = np.stack([rng.uniform(0.7, 1.1, T), rng.normal(0, 0.1, T), rng.normal(0.2, 0.1, T)], 1).astype(
        np.float32
    )
    side = rng.uniform(150, 400, T)
    bboxes = np.stack([rng.uniform(300, 900, T), rng.uniform(200, 500, T), side, side], 1)
    return joints, pred_cam, bboxes


@pytest.mark.parametrize("flat", [True, False])
def test_trans_cam_m_reprojects_like_the_uncropped_model_camera(flat):
    """A pinhole with the crop's own focal length (5000 px on 224 px, scaled to the image) and the
    body at trans_cam_m puts every joint where the model's crop projection, un-cropped, puts it:
    exactly for joints at the root's depth, and within the weak-perspective error (the crop camera
    looks through the box centre, the image camera through the image centre) for the others."""
    joints, pred_cam, bboxes = scene()
    if flat:
        joints[..., 2] = 0.0
    kp_crop = projection(torch.from_numpy(joints), torch.from_numpy(pred_cam)).numpy()
    kp_image = postprocess.crop_coords_to_image_px(kp_crop, bboxes)
    for t in range(len(joints)):
        focal_px = 5000.0 * 1.1 * bboxes[t, 2] / 224
        orig_cam = postprocess.crop_cam_to_orig_cam(pred_cam[t : t + 1], bboxes[t : t + 1], W, H)
        trans = postprocess.trans_cam_from_orig_cam(orig_cam, W, focal_px)[0]
        points = joints[t].astype(np.float64) + trans
        pinhole = focal_px * points[:, :2] / points[:, 2:] + [W / 2, H / 2]
        # off-depth error bound: |box centre - image centre| * |Z| / (depth of the root + Z)
        offset_px = np.abs(bboxes[t, :2] - [W / 2, H / 2]).max()
        depth = np.abs(joints[t, :, 2]).max()
        tolerance_px = 1e-2 + offset_px * depth / (trans[2] - depth)
        assert flat or tolerance_px < 0.05 * bboxes[t, 2]
        np.testing.assert_allclose(pinhole, kp_image[t], atol=tolerance_px)


def test_trans_cam_m_depth_scales_with_focal_length_and_box_size():
    orig_cam = np.array([[0.2, 0.4, 0.1, -0.3]])
    near = postprocess.trans_cam_from_orig_cam(orig_cam, W, focal_px=1000.0)
    far = postprocess.trans_cam_from_orig_cam(orig_cam, W, focal_px=2000.0)
    assert far[0, 2] == pytest.approx(2 * near[0, 2])
    assert near[0, 2] == pytest.approx(2 * 1000.0 / (0.2 * W))
    np.testing.assert_array_equal(near[0, :2], [0.1, -0.3])
    assert postprocess.default_focal_length_px(768, 432) == 768.0


def test_robust_betas_ignore_outlier_frames():
    betas = np.tile(np.linspace(-1, 1, 10, dtype=np.float32), (21, 1))
    betas[3] = 50.0
    np.testing.assert_allclose(postprocess.robust_betas(betas), betas[0])


def make_result(official_uncrop=False):
    joints, pred_cam, bboxes = scene(T=6)
    rng = np.random.default_rng(3)
    theta = np.concatenate([pred_cam, rng.normal(0, 0.2, (6, 72)), rng.normal(0, 1, (6, 10))], 1)
    track = postprocess.build_track(
        4, np.arange(10, 16), theta, joints, bboxes, width=W, height=H, focal_px=1000.0, official_uncrop=official_uncrop
    )
    meta = {
        postprocess.UNCROP_META_KEY: postprocess.UNCROP_OFFICIAL if official_uncrop else postprocess.UNCROP_CORRECTED
    }
    return MocapResult(
        video=VideoInfo("clip.mp4", 30.0, W, H, 20),
        tracks=[track],
        model_name="test",
        focal_length_px=1000.0,
        meta=meta,
    ), theta


def test_build_track_splits_theta_and_fills_cameras():
    result, theta = make_result()
    track = result.tracks[0]
    np.testing.assert_allclose(track.pred_cam, theta[:, :3], rtol=1e-6)
    np.testing.assert_allclose(track.pose, theta[:, 3:75], rtol=1e-6)
    np.testing.assert_allclose(track.betas, theta[:, 75:], rtol=1e-6)
    np.testing.assert_allclose(track.trans_cam_m, postprocess.trans_cam_from_orig_cam(track.orig_cam, W, 1000.0))
    assert track.orig_cam.shape == (6, 4) and track.joints3d.shape == (6, 49, 3)


def test_build_track_leaves_out_the_rows_a_result_file_cannot_hold(tmp_path):
    """A camera scale of 0 or less put the person ~1e9 m away, and a NaN went through: the result was
    saved, and no reader opened it ("the file is damaged")."""
    from vibe_blender.core.result_file import load_result, save_result

    joints, pred_cam, bboxes = scene(T=40)
    theta = np.concatenate([pred_cam, np.zeros((40, 72)), np.zeros((40, 10))], 1).astype(np.float32)
    theta[7, 0] = -0.05  # a camera scale below 0
    theta[8, 0] = 0.0
    theta[21, 5] = np.nan  # a pose
    joints[30, 2, 1] = np.inf
    bad = [7, 8, 21, 30]
    track = postprocess.build_track(1, np.arange(100, 140), theta, joints, bboxes, width=W, height=H, focal_px=1000.0)
    kept = np.setdiff1d(np.arange(40), bad)
    np.testing.assert_array_equal(track.frame_ids, 100 + kept)
    np.testing.assert_array_equal(track.pred_cam, theta[kept, :3])
    np.testing.assert_array_equal(track.joints3d, joints[kept])
    assert track.trans_cam_m.shape == (36, 3) and np.abs(track.trans_cam_m).max() < 100
    save_result(tmp_path / "r.npz", MocapResult(VideoInfo("clip.mp4", 30.0, W, H, 140), [track], "test", 1000.0))
    assert load_result(tmp_path / "r.npz").tracks[0].num_frames == 36
    assert postprocess.build_track(2, [5], theta[7:8], joints[:1], bboxes[:1], width=W, height=H, focal_px=1.0) is None


def test_refused_rows_checks_the_values_as_saved_in_float32():
    """A value past float32's range is finite in float64 but saved as infinite, which no reader opens."""
    frames, betas = np.arange(3), np.zeros((3, 10))
    pred_cam = np.array([[1.0, 0.0, 0.0], [1.0, 1e39, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(postprocess.refused_rows(frames, betas, pred_cam=pred_cam), [False, True, False])
    betas[2, 4] = 10.5  # beyond the ±10 of Blender's shape keys
    np.testing.assert_array_equal(postprocess.refused_rows(frames, betas, pred_cam=pred_cam), [False, True, True])


def fake_smpl(pose, betas):
    T = len(pose)
    return np.full((T, 6890, 3), 0.5, np.float32), np.zeros((T, 49, 3), np.float32)


@pytest.mark.parametrize("official_uncrop", [False, True])
def test_official_pkl_is_read_by_joblib_with_the_official_layout(tmp_path, official_uncrop):
    import joblib  # the test extra has it

    result, _ = make_result(official_uncrop)
    path = tmp_path / "vibe_output.pkl"
    postprocess.write_official_pkl(path, postprocess.official_output(result, fake_smpl))
    data = joblib.load(path)
    assert list(data) == [4]
    entry = data[4]
    assert set(entry) == {
        "pred_cam",
        "orig_cam",
        "verts",
        "pose",
        "betas",
        "joints3d",
        "joints2d",
        "joints2d_img_coord",
        "bboxes",
        "frame_ids",
    }
    assert entry["joints2d"] is None
    assert entry["verts"].shape == (6, 6890, 3) and entry["joints2d_img_coord"].shape == (6, 49, 2)
    np.testing.assert_array_equal(entry["frame_ids"], np.arange(10, 16))
    track = result.tracks[0]
    kp = projection(torch.from_numpy(track.joints3d), torch.from_numpy(track.pred_cam)).numpy()
    expected = postprocess.crop_coords_to_image_px(kp, track.bboxes, official_uncrop=official_uncrop)
    np.testing.assert_allclose(entry["joints2d_img_coord"], expected, rtol=1e-6)


def test_official_pkl_without_joblib_is_a_plain_pickle_joblib_can_read(tmp_path, monkeypatch):
    import joblib  # the test extra has it

    real_import = builtins.__import__

    def no_joblib(name, *args, **kwargs):
        if name == "joblib":
            raise ImportError("no joblib")
        return real_import(name, *args, **kwargs)

    result, _ = make_result()
    monkeypatch.setattr(builtins, "__import__", no_joblib)
    path = tmp_path / "vibe_output.pkl"
    postprocess.write_official_pkl(path, postprocess.official_output(result, fake_smpl))
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert joblib.load(path)[4]["pose"].shape == (6, 72)
    assert not list(tmp_path.glob("*.part"))

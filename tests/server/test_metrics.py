"""The metrics against the official functions' outputs (fixture made with the official code)."""

import numpy as np
import pytest
import torch

from vibe_server.evaluate import metrics


@pytest.fixture(scope="module")
def ref(unit_reference):
    return unit_reference


def test_compute_errors_matches_official(ref):
    mpjpe, pa_mpjpe = metrics.compute_errors(ref["fn_metric_gt"], ref["fn_metric_pred"])
    np.testing.assert_allclose(mpjpe, ref["fn_metric_mpjpe_np"], atol=1e-6)
    np.testing.assert_allclose(pa_mpjpe, ref["fn_metric_pampjpe_np"], atol=1e-9)


def test_batch_procrustes_matches_official(ref):
    aligned = metrics.batch_similarity_transform(
        torch.from_numpy(ref["fn_metric_pred"]), torch.from_numpy(ref["fn_metric_gt"])
    )
    # float32 SVD on coordinates up to ~3 m: a few ulp of noise
    np.testing.assert_allclose(aligned.numpy(), ref["fn_metric_batch_procrustes"], atol=1e-5)


def test_torch_per_frame_errors_agree_with_numpy_path(ref):
    pred, gt = torch.from_numpy(ref["fn_metric_pred"]), torch.from_numpy(ref["fn_metric_gt"])
    np.testing.assert_allclose(metrics.mpjpe_per_frame(pred, gt).numpy(), ref["fn_metric_mpjpe_np"], atol=1e-6)
    np.testing.assert_allclose(metrics.pa_mpjpe_per_frame(pred, gt).numpy(), ref["fn_metric_pampjpe_np"], atol=1e-6)


def test_accelerations_match_official(ref):
    np.testing.assert_allclose(metrics.compute_accel(ref["fn_metric_pred"]), ref["fn_metric_accel"], atol=1e-6)
    np.testing.assert_allclose(
        metrics.compute_error_accel(ref["fn_metric_gt"], ref["fn_metric_pred"]), ref["fn_metric_accel_err"], atol=1e-6
    )


def test_procrustes_undoes_a_similarity_transform():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(5, 14, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))  # a proper rotation
    pred = 1.7 * target @ q.T + np.array([0.3, -0.2, 4.0])
    aligned = metrics.batch_similarity_transform(torch.from_numpy(pred), torch.from_numpy(target))
    np.testing.assert_allclose(aligned.numpy(), target, atol=1e-9)
    assert metrics.pa_mpjpe_per_frame(torch.from_numpy(pred), torch.from_numpy(target)).max() < 1e-9
    assert metrics.mpjpe_per_frame(torch.from_numpy(pred), torch.from_numpy(target)).min() > 0.1


def test_constant_velocity_has_no_acceleration():
    t = np.arange(10, dtype=float)[:, None, None]
    joints = np.zeros((10, 14, 3)) + t * np.array([0.01, 0.0, 0.02])
    np.testing.assert_allclose(metrics.compute_accel(joints), 0.0, atol=1e-12)
    assert metrics.compute_accel(joints).shape == (8,)

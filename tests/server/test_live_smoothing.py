"""The causal rotation filter used in live capture."""

import numpy as np
import pytest

from vibe_blender.core.rotations import axis_angle_to_quat
from vibe_server.pipeline.smooth import CausalRotationFilter


def angle_between(pose_a, pose_b):
    qa, qb = axis_angle_to_quat(pose_a.reshape(-1, 24, 3)), axis_angle_to_quat(pose_b.reshape(-1, 24, 3))
    return 2 * np.arccos(np.clip(np.abs(np.sum(qa * qb, axis=-1)), 0, 1))


def noisy_motion(rng, frames=120, fps=30.0):
    t = np.arange(frames) / fps
    clean = np.zeros((frames, 72))
    clean[:, 0] = np.pi  # the root near 180°: axis-angle breaks here
    clean[:, 3 * 18 + 2] = 0.8 * np.sin(2 * np.pi * 0.5 * t)
    return t, clean, clean + rng.normal(0, 0.03, clean.shape)


def test_it_reduces_jitter_and_keeps_the_motion():
    t, clean, noisy = noisy_motion(np.random.default_rng(0))
    f = CausalRotationFilter(1.0)
    out = np.stack([f(ti, p) for ti, p in zip(t, noisy)])
    assert angle_between(out, clean)[20:].mean() < 0.6 * angle_between(noisy, clean)[20:].mean()
    assert np.all(angle_between(out, clean) < 0.3)  # no flip at the 180° root


def test_it_is_causal():
    t, _, noisy = noisy_motion(np.random.default_rng(1))
    changed = noisy.copy()
    changed[60:] += 0.5
    a, b = CausalRotationFilter(0.7), CausalRotationFilter(0.7)
    out_a = np.stack([a(ti, p) for ti, p in zip(t, noisy)])
    out_b = np.stack([b(ti, p) for ti, p in zip(t, changed)])
    np.testing.assert_array_equal(out_a[:60], out_b[:60])
    assert not np.allclose(out_a[60:], out_b[60:])


def test_strength_zero_passes_through():
    t, _, noisy = noisy_motion(np.random.default_rng(2), frames=10)
    f = CausalRotationFilter(0.0)
    np.testing.assert_allclose(np.stack([f(ti, p) for ti, p in zip(t, noisy)]), noisy, atol=1e-6)


def test_bad_strength_is_refused():
    from vibe_blender.core.errors import VibeError

    with pytest.raises(VibeError, match="between 0 and 1"):
        CausalRotationFilter(2.0)

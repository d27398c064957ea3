import numpy as np

from vibe_blender.core.rotations import (
    axis_angle_to_quat,
    axis_angle_to_rotmat,
    make_continuous,
    quat_conjugate,
    quat_multiply,
    quat_slerp,
    quat_to_axis_angle,
    quat_to_rotmat,
    rotmat_to_quat,
)


def _random_axis_angle(rng, n):
    aa = rng.normal(0, 1.5, (n, 3))
    aa[:4] = [[0, 0, 0], [1e-9, 0, 0], [np.pi, 0, 0], [0, -np.pi + 1e-7, 0]]  # zero, tiny, half turns
    return aa


def test_axis_angle_quat_and_matrix_agree():
    aa = _random_axis_angle(np.random.default_rng(0), 200)
    np.testing.assert_allclose(quat_to_rotmat(axis_angle_to_quat(aa)), axis_angle_to_rotmat(aa), atol=1e-12)
    R = axis_angle_to_rotmat(aa)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)


def test_rotmat_to_quat_round_trip_including_half_turns():
    rng = np.random.default_rng(1)
    R = axis_angle_to_rotmat(_random_axis_angle(rng, 300))
    R = np.concatenate([R, np.diag([1.0, -1, -1])[None], np.diag([-1.0, 1, -1])[None], np.diag([-1.0, -1, 1])[None]])
    q = rotmat_to_quat(R)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quat_to_rotmat(q), R, atol=1e-12)
    assert np.all(q[:, 0] >= 0)


def test_quaternion_product_composes_rotations():
    rng = np.random.default_rng(2)
    a, b = axis_angle_to_quat(rng.normal(size=(50, 3))), axis_angle_to_quat(rng.normal(size=(50, 3)))
    np.testing.assert_allclose(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b), atol=1e-12)
    np.testing.assert_allclose(quat_multiply(a, quat_conjugate(a)), np.tile([1.0, 0, 0, 0], (50, 1)), atol=1e-12)


def test_make_continuous_removes_sign_flips_without_changing_rotations():
    rng = np.random.default_rng(3)
    t = np.linspace(0, 4 * np.pi, 400)  # a root spinning through 720°
    q = axis_angle_to_quat(np.stack([np.zeros_like(t), t, np.zeros_like(t)], -1))[:, None]
    q = q * rng.choice([-1.0, 1.0], size=(400, 1, 1))  # random signs, as from a converter
    c = make_continuous(q)
    assert np.all(np.sum(c[1:] * c[:-1], -1) > 0)
    np.testing.assert_allclose(quat_to_rotmat(c), quat_to_rotmat(q), atol=1e-12)
    assert np.sum(np.sum(q[1:] * q[:-1], -1) < 0) > 50  # the input really had flips


def test_quaternion_to_axis_angle_round_trip_including_zero_and_pi():
    from vibe_blender.core.rotations import axis_angle_to_quat, quat_to_axis_angle

    rng = np.random.default_rng(5)
    axes = rng.normal(size=(200, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, np.pi, 194), [0.0, 1e-9, 1e-5, np.pi - 1e-7, np.pi, np.pi]])
    aa = axes * angles[:, None]
    back = quat_to_axis_angle(axis_angle_to_quat(aa))
    np.testing.assert_allclose(axis_angle_to_rotmat(back), axis_angle_to_rotmat(aa), atol=1e-9)
    assert np.linalg.norm(back, axis=1).max() <= np.pi + 1e-12
    np.testing.assert_allclose(quat_to_axis_angle(-axis_angle_to_quat(aa[:10])), back[:10], atol=1e-12)


def test_slerp_goes_the_short_way_at_constant_speed():
    axis = np.array([0.0, 0.0, 1.0])
    q0 = axis_angle_to_quat(np.zeros(3))
    q1 = -axis_angle_to_quat(axis * 1.2)  # the same rotation with the other sign
    for w in (0.0, 0.25, 0.5, 1.0):
        q = quat_slerp(q0, q1, np.array([w]))
        np.testing.assert_allclose(quat_to_axis_angle(q), axis * 1.2 * w, atol=1e-9)
    same = quat_slerp(q0, q0, np.array([0.3]))  # no 0/0 between equal rotations
    np.testing.assert_allclose(same, q0, atol=1e-12)

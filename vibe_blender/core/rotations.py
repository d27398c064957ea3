"""Rotation maths in numpy: axis-angle, rotation matrices and unit quaternions (w, x, y, z).

Stateless, vectorised over any leading dimensions ``...``; float64 throughout.
"""

from __future__ import annotations

import numpy as np


def axis_angle_to_rotmat(aa: np.ndarray) -> np.ndarray:
    """aa (..., 3) axis-angle (radians) -> rotmat (..., 3, 3) by Rodrigues' formula."""
    aa = np.asarray(aa, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)  # (..., 1)
    k = aa / np.where(angle < 1e-12, 1.0, angle)  # unit axis (..., 3)
    K = np.zeros(aa.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2] = -k[..., 2], k[..., 1]
    K[..., 1, 0], K[..., 1, 2] = k[..., 2], -k[..., 0]
    K[..., 2, 0], K[..., 2, 1] = -k[..., 1], k[..., 0]
    angle = angle[..., None]  # (..., 1, 1)
    return np.eye(3) + np.sin(angle) * K + (1.0 - np.cos(angle)) * (K @ K)


def axis_angle_to_quat(aa: np.ndarray) -> np.ndarray:
    """aa (..., 3) -> unit quaternion (..., 4) wxyz; exact near zero angle (series for sin(θ/2)/θ)."""
    aa = np.asarray(aa, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    small = angle < 1e-6
    k = np.where(small, 0.5 - angle * angle / 48.0, np.sin(0.5 * angle) / np.where(small, 1.0, angle))
    return np.concatenate([np.cos(0.5 * angle), aa * k], axis=-1)


def quat_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """Unit q (..., 4) wxyz -> axis-angle (..., 3) with angle in [0, π] (q and -q give the same)."""
    q = np.asarray(q, dtype=np.float64)
    q = q * np.where(q[..., :1] < 0, -1.0, 1.0)  # w >= 0: angle <= π
    sin_half = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., :1])
    small = sin_half < 1e-8
    scale = np.where(small, 2.0, angle / np.where(small, 1.0, sin_half))  # series: angle/sin(angle/2) -> 2
    return q[..., 1:] * scale


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a·b of quaternions (..., 4) wxyz (broadcasting)."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_slerp(q0: np.ndarray, q1: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Unit q0, q1 (..., 4), weight (..., 1) in [0, 1] -> the unit quaternion a fraction ``weight``
    of the shortest way from q0 to q1 (q and -q are the same rotation)."""
    q0, q1 = np.asarray(q0, dtype=np.float64), np.asarray(q1, dtype=np.float64)
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    angle = np.arccos(np.clip(np.abs(dot), 0.0, 1.0))
    sin = np.sin(angle)
    close = sin < 1e-6  # (nearly) the same rotation: the linear blend is exact and has no 0/0
    k0 = np.where(close, 1.0 - weight, np.sin((1.0 - weight) * angle) / np.where(close, 1.0, sin))
    k1 = np.where(close, weight, np.sin(weight * angle) / np.where(close, 1.0, sin))
    q = k0 * q0 + k1 * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """q (..., 4) -> conjugate (the inverse of a unit quaternion)."""
    return np.asarray(q, dtype=np.float64) * np.array([1.0, -1.0, -1.0, -1.0])


def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Unit q (..., 4) wxyz -> rotmat (..., 3, 3)."""
    w, x, y, z = np.moveaxis(np.asarray(q, dtype=np.float64), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def rotmat_to_quat(R: np.ndarray) -> np.ndarray:
    """rotmat (..., 3, 3) -> unit quaternion (..., 4) wxyz with w >= 0 (Shepperd's method, stable)."""
    R = np.asarray(R, dtype=np.float64)
    m = R.reshape(-1, 3, 3)
    trace = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    # Four candidate formulas; use the one with the largest pivot for each matrix.
    cand = np.stack([trace, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], -1)
    pick = np.argmax(cand, axis=-1)
    q = np.empty((len(m), 4))
    for i in range(4):
        sel = pick == i
        if not np.any(sel):
            continue
        s = m[sel]
        if i == 0:
            r = np.sqrt(1.0 + trace[sel]) * 2
            q[sel] = np.stack(
                [0.25 * r, (s[:, 2, 1] - s[:, 1, 2]) / r, (s[:, 0, 2] - s[:, 2, 0]) / r, (s[:, 1, 0] - s[:, 0, 1]) / r],
                -1,
            )
        elif i == 1:
            r = np.sqrt(1.0 + s[:, 0, 0] - s[:, 1, 1] - s[:, 2, 2]) * 2
            q[sel] = np.stack(
                [(s[:, 2, 1] - s[:, 1, 2]) / r, 0.25 * r, (s[:, 0, 1] + s[:, 1, 0]) / r, (s[:, 0, 2] + s[:, 2, 0]) / r],
                -1,
            )
        elif i == 2:
            r = np.sqrt(1.0 + s[:, 1, 1] - s[:, 0, 0] - s[:, 2, 2]) * 2
            q[sel] = np.stack(
                [(s[:, 0, 2] - s[:, 2, 0]) / r, (s[:, 0, 1] + s[:, 1, 0]) / r, 0.25 * r, (s[:, 1, 2] + s[:, 2, 1]) / r],
                -1,
            )
        else:
            r = np.sqrt(1.0 + s[:, 2, 2] - s[:, 0, 0] - s[:, 1, 1]) * 2
            q[sel] = np.stack(
                [(s[:, 1, 0] - s[:, 0, 1]) / r, (s[:, 0, 2] + s[:, 2, 0]) / r, (s[:, 1, 2] + s[:, 2, 1]) / r, 0.25 * r],
                -1,
            )
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return q.reshape(R.shape[:-2] + (4,))


def make_continuous(q: np.ndarray) -> np.ndarray:
    """q (T, ..., 4) -> same rotations with signs flipped so that consecutive frames have dot >= 0.

    q and -q are the same rotation, but linear/Bezier interpolation between keys of opposite sign
    takes the long way round (a visible spin), and so does any Euler conversion on export.
    """
    q = np.asarray(q, dtype=np.float64)
    if len(q) < 2:
        return q.copy()
    dots = np.sum(q[1:] * q[:-1], axis=-1)
    flips = np.cumprod(np.where(dots < 0, -1.0, 1.0), axis=0)
    sign = np.concatenate([np.ones((1,) + q.shape[1:-1]), flips], axis=0)
    return q * sign[..., None]

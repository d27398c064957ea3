"""Temporal smoothing of a track's pose (T, 72) axis-angle, SMPL joint order.

Two methods:
- ``smooth_rotations`` (default): each joint's rotation becomes a unit quaternion, the quaternion
  signs are made continuous over time (q and -q are the same rotation), the four components are
  filtered with a zero-phase Gaussian and renormalised. It never filters axis-angle components, so
  it does not break where a rotation angle crosses 180° (an upright person's root sits right there).
- ``one_euro_pose``: the official demo's One-Euro filter, component-wise on axis-angle, kept for
  parity with ``--smooth`` of the original code (it does break near 180°).

Betas and cameras are not smoothed (as in the official code).
"""

from __future__ import annotations

import math

import numpy as np

from vibe_blender.core.cleanup import gaussian_smooth_quaternions
from vibe_blender.core.errors import VibeError
from vibe_blender.core.rotations import axis_angle_to_quat, quat_to_axis_angle

# Strength 1 is a Gaussian of this standard deviation in time; strength scales it linearly.
MAX_SIGMA_S = 0.1
# Official demo defaults (--smooth_min_cutoff, --smooth_beta; d_cutoff is fixed at 1).
ONE_EURO_MIN_CUTOFF = 0.004
ONE_EURO_BETA = 0.7


def smooth_pose(pose: np.ndarray, strength: float, *, fps: float, method: str = "rotation") -> np.ndarray:
    """pose (T, 72) axis-angle -> smoothed (T, 72) float32; strength 0..1 (0 returns a copy).

    method "rotation": Gaussian on sign-continuous quaternions, sigma = strength * 0.1 s.
    method "one_euro": the official One-Euro filter; any strength > 0 switches it on with the
    official cutoffs (the original has no strength knob).
    """
    if not 0.0 <= strength <= 1.0:
        raise VibeError(f"Smoothing strength must be between 0 and 1; got {strength}.")
    pose = np.asarray(pose, dtype=np.float32)
    if strength == 0.0 or len(pose) < 2:
        return pose.copy()
    if method == "rotation":
        return smooth_rotations(pose, sigma_frames=strength * MAX_SIGMA_S * fps)
    if method == "one_euro":
        return one_euro_pose(pose)
    raise VibeError(f"Unknown smoothing method '{method}'; use 'rotation' or 'one_euro'.")


def smooth_rotations(pose: np.ndarray, sigma_frames: float) -> np.ndarray:
    """pose (T, 72) axis-angle -> (T, 72) float32, Gaussian of sigma_frames on quaternions."""
    T = len(pose)
    if sigma_frames <= 0 or T < 2:
        return np.asarray(pose, np.float32).copy()
    quat = gaussian_smooth_quaternions(axis_angle_to_quat(np.asarray(pose, np.float64).reshape(T, 24, 3)), sigma_frames)
    return quat_to_axis_angle(quat).reshape(T, 72).astype(np.float32)


class OneEuroFilter:
    """The official One-Euro filter (``lib/utils/one_euro_filter.py``): built on the first sample,
    then called once per later sample with its time stamp. Works on arrays, element-wise."""

    def __init__(
        self,
        t0: float,
        x0: np.ndarray,
        dx0: float = 0.0,
        *,
        min_cutoff: float = 1.0,
        beta: float = 0.0,
        d_cutoff: float = 1.0,
    ):
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.x_prev = x0
        self.dx_prev = np.full_like(x0, dx0)
        self.t_prev = float(t0)

    @staticmethod
    def _alpha(t_e: float, cutoff):
        r = 2 * math.pi * cutoff * t_e
        return r / (r + 1)

    def __call__(self, t: float, x: np.ndarray) -> np.ndarray:
        t_e = t - self.t_prev
        a_d = self._alpha(t_e, self.d_cutoff)
        dx = (x - self.x_prev) / t_e
        dx_hat = a_d * dx + (1 - a_d) * self.dx_prev
        cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
        a = self._alpha(t_e, cutoff)
        x_hat = a * x + (1 - a) * self.x_prev
        self.x_prev, self.dx_prev, self.t_prev = x_hat, dx_hat, float(t)
        return x_hat


def one_euro_pose(
    pose: np.ndarray, *, min_cutoff: float = ONE_EURO_MIN_CUTOFF, beta: float = ONE_EURO_BETA
) -> np.ndarray:
    """pose (T, 72) -> (T, 72) float32, exactly as the official demo's ``smooth_pose``: time stamp =
    row index (gaps ignored), the first frame passes through."""
    pose = np.asarray(pose, dtype=np.float32)
    out = np.empty_like(pose)
    out[0] = pose[0]
    one_euro = OneEuroFilter(0, pose[0], min_cutoff=min_cutoff, beta=beta)
    for t in range(1, len(pose)):
        out[t] = one_euro(t, pose[t])
    return out


# -- causal (live) ----------------------------------------------------------------------------------
# Live smoothing: strength 1 gives this minimum cutoff; lower strengths raise it (less smoothing).
LIVE_MIN_CUTOFF_HZ = 1.0
LIVE_BETA = 0.5  # cutoff rise per rad/s of joint speed: fast moves lag less


class CausalRotationFilter:
    """One-Euro on rotations, for live capture: each output depends only on the frames so far.

    Per joint, the new rotation is sign-aligned with the last output, its angular speed (rad/s)
    is low-pass filtered, and the output moves toward the input by One-Euro's alpha along the
    shortest arc (normalised lerp of unit quaternions). Still poses are smoothed hard, fast moves
    pass with little lag; nothing breaks where an angle crosses 180°, as it would on axis-angle.
    strength: 0 (off) .. 1 (strongest).
    """

    def __init__(
        self,
        strength: float,
        *,
        min_cutoff_hz: float = LIVE_MIN_CUTOFF_HZ,
        beta: float = LIVE_BETA,
        d_cutoff_hz: float = 1.0,
    ):
        if not 0.0 <= strength <= 1.0:
            raise VibeError(f"Smoothing strength must be between 0 and 1; got {strength}.")
        self.strength = float(strength)
        self.min_cutoff_hz = min_cutoff_hz / max(self.strength, 1e-6)
        self.beta, self.d_cutoff_hz = beta, d_cutoff_hz
        self._quat: np.ndarray | None = None  # (24, 4) last output
        self._speed: np.ndarray | None = None  # (24,) filtered rad/s
        self._t: float | None = None

    def __call__(self, t_s: float, pose: np.ndarray) -> np.ndarray:
        """pose (72,) axis-angle at time t_s (seconds, increasing) -> smoothed (72,) float32."""
        pose = np.asarray(pose, dtype=np.float64).reshape(24, 3)
        if self.strength == 0.0:
            return pose.reshape(72).astype(np.float32)
        quat = axis_angle_to_quat(pose)
        if self._quat is None or t_s <= self._t:
            self._quat, self._speed, self._t = quat, np.zeros(24), float(t_s)
            return pose.reshape(72).astype(np.float32)
        dt = float(t_s) - self._t
        dot = np.sum(quat * self._quat, axis=1)
        quat = np.where(dot[:, None] < 0, -quat, quat)  # the shortest arc
        angle = 2.0 * np.arccos(np.clip(np.abs(dot), 0.0, 1.0))  # (24,) rad since last output
        a_d = OneEuroFilter._alpha(dt, self.d_cutoff_hz)
        self._speed = a_d * (angle / dt) + (1 - a_d) * self._speed
        a = OneEuroFilter._alpha(dt, self.min_cutoff_hz + self.beta * self._speed)[:, None]
        out = self._quat + a * (quat - self._quat)
        self._quat = out / np.linalg.norm(out, axis=1, keepdims=True)
        self._t = float(t_s)
        return quat_to_axis_angle(self._quat).reshape(72).astype(np.float32)

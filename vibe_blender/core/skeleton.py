"""SMPL -> Blender armature maths: frames, bone layout, pose channels, root motion, correctives.

Frames (all right-handed, metres):
- SMPL's own frame: Y up, the body faces +Z in its rest pose.
- Blender's world: Z up, "front" is -Y.  ``SMPL_TO_BLENDER = Rx(+90°)``: (x, y, z) -> (x, -z, y).
- VIBE's camera frame: x right, y down, z forward (OpenCV). ``CAMERA_TO_BLENDER = SMPL_TO_BLENDER ·
  Rx(180°)`` puts the camera at the origin looking along Blender +Y with the image's up along +Z, so
  a person filmed upright stands upright and faces where they faced (towards the camera: -Y).

Blender evaluates a pose bone as  D_j = D_parent · B_j · Basis_j · B_j⁻¹  (B_j = the bone's rest
matrix in armature space) while SMPL composes  A_j = A_parent · T(J_j) R_j T(-J_j).  Equating the two
gives, with q_rest_j the rotation of B_j and q_C that of SMPL_TO_BLENDER,
    Basis_j = q_rest_j⁻¹ · (q_C · R_j · q_C⁻¹) · q_rest_j            (joints 1..23)
and, for the root, R_0 is first taken from its source frame S (camera, AMASS world ...) to Blender:
    Basis_0 = q_rest_0⁻¹ · (S · R_0 · q_C⁻¹) · q_rest_0,
    location_0 = R_rest_0ᵀ · (S · (J_0 + trans) + ground_offset - q_C · J_0).
"""

from __future__ import annotations

import numpy as np

from .rotations import (
    axis_angle_to_quat,
    make_continuous,
    quat_conjugate,
    quat_multiply,
    quat_to_rotmat,
    rotmat_to_quat,
)
from .smpl_model import PARENTS

SMPL_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # Rx(+90°)
CAMERA_TO_SMPL = np.diag([1.0, -1.0, -1.0])  # Rx(180°)
CAMERA_TO_BLENDER = SMPL_TO_BLENDER @ CAMERA_TO_SMPL  # x, z, -y
ZUP_TO_BLENDER = np.eye(3)  # AMASS and other Z-up worlds already match Blender's axes

# Bones point at their child joint; where a joint has several children, at the one along the spine.
_MAIN_CHILD = {0: 3, 9: 12}
LEAF_BONE_SCALE = 0.5  # a leaf bone continues its parent's direction at half length


def bone_layout(J: np.ndarray, parents: np.ndarray = PARENTS) -> tuple[np.ndarray, np.ndarray]:
    """J (24, 3) rest joints, SMPL frame -> heads, tails (24, 3) in Blender armature space.

    Heads sit at the joints; each tail at the bone's (main) child, so bones point along the limb,
    as animators and retargeting tools expect. Leaves (feet, head, hands) extend their parent's bone.
    """
    heads = J @ SMPL_TO_BLENDER.T
    tails = np.empty_like(heads)
    for j in range(len(parents)):
        children = np.flatnonzero(parents == j)
        child = _MAIN_CHILD.get(j, children[0] if len(children) else None)
        if child is not None:
            tails[j] = heads[child]
        else:
            tails[j] = heads[j] + LEAF_BONE_SCALE * (heads[j] - heads[parents[j]])
    return heads, tails


def bone_basis_quats(pose: np.ndarray, q_rest: np.ndarray, source_to_blender: np.ndarray) -> np.ndarray:
    """pose (T, 72) SMPL axis-angle, q_rest (24, 4) bone rest rotations (armature space, wxyz),
    source_to_blender (3, 3) frame of the root rotation -> pose-bone quaternions (T, 24, 4), with
    sign continuity along T."""
    pose = np.asarray(pose, dtype=np.float64)
    T = len(pose)
    q_smpl = axis_angle_to_quat(pose.reshape(T, -1, 3))  # (T, 24, 4)
    q_c = rotmat_to_quat(SMPL_TO_BLENDER)
    q_arm = quat_multiply(quat_multiply(q_c, q_smpl), quat_conjugate(q_c))  # C R_j C⁻¹
    q_s = rotmat_to_quat(np.asarray(source_to_blender, dtype=np.float64))
    q_arm[:, 0] = quat_multiply(quat_multiply(q_s, q_smpl[:, 0]), quat_conjugate(q_c))  # S R_0 C⁻¹
    q_rest = np.asarray(q_rest, dtype=np.float64)
    q_basis = quat_multiply(quat_multiply(quat_conjugate(q_rest)[None], q_arm), q_rest[None])
    return make_continuous(q_basis)


def root_locations(
    trans: np.ndarray,
    J0: np.ndarray,
    q_rest0: np.ndarray,
    source_to_blender: np.ndarray,
    ground_offset: np.ndarray | None = None,
    *,
    in_place: bool = False,
) -> np.ndarray:
    """trans (T, 3) SMPL transl in the source frame, J0 (3,) rest pelvis joint (SMPL frame),
    q_rest0 (4,) pelvis rest rotation -> pelvis pose-bone locations (T, 3), bone-local metres.

    in_place: keep the pelvis over the world origin (height still follows the motion)."""
    trans = np.asarray(trans, dtype=np.float64)
    S = np.asarray(source_to_blender, dtype=np.float64)
    world = (np.asarray(J0) + trans) @ S.T  # pelvis in Blender world
    if ground_offset is not None:
        world = world + ground_offset
    if in_place:
        world[:, :2] = 0.0
    rest_head = SMPL_TO_BLENDER @ np.asarray(J0)
    return (world - rest_head) @ quat_to_rotmat(q_rest0)  # R_rest0ᵀ (world - head)


def refit_basis_quats(q_basis: np.ndarray, q_rest_old: np.ndarray, q_rest_new: np.ndarray) -> np.ndarray:
    """q_basis (T, J, 4) keyed against rest rotations q_rest_old (J, 4) -> the same armature-space
    rotations expressed against q_rest_new (used when bones move because betas changed)."""
    to_arm = quat_multiply(quat_multiply(q_rest_old[None], q_basis), quat_conjugate(q_rest_old)[None])
    return make_continuous(quat_multiply(quat_multiply(quat_conjugate(q_rest_new)[None], to_arm), q_rest_new[None]))


def refit_root_locations(
    loc: np.ndarray, head_old: np.ndarray, q_rest0_old: np.ndarray, head_new: np.ndarray, q_rest0_new: np.ndarray
) -> np.ndarray:
    """loc (T, 3) pelvis locations -> the ones that keep the pelvis where it was in the world."""
    world = np.asarray(loc) @ quat_to_rotmat(q_rest0_old).T + head_old
    return (world - head_new) @ quat_to_rotmat(q_rest0_new)


def bone_to_smpl_rotations(q_rest: np.ndarray) -> np.ndarray:
    """q_rest (24, 4) -> M (24, 3, 3) = C⁻¹ · R_rest_j, taking a bone's rest frame to SMPL's frame.

    SMPL's local rotation of joint j is R_j = M_j · Basis_j · M_jᵀ (the inverse of bone_basis_quats).
    """
    return SMPL_TO_BLENDER.T[None] @ quat_to_rotmat(q_rest)


def smpl_rotations_from_basis(q_basis: np.ndarray, q_rest: np.ndarray) -> np.ndarray:
    """q_basis (T, 24, 4) pose-bone quaternions, q_rest (24, 4) -> SMPL's local rotations R_j
    (T, 24, 3, 3) for joints 1..23, the inverse of :func:`bone_basis_quats` (row 0, the root, is its
    rotation in Blender's world, not SMPL's). They do not depend on the rest pose, so pose
    correctives computed from them hold for any shape (and for motion moved from another body)."""
    M = bone_to_smpl_rotations(q_rest)
    return M[None] @ quat_to_rotmat(np.asarray(q_basis, dtype=np.float64)) @ np.swapaxes(M, -1, -2)[None]


# R(q) of a unit quaternion as homogeneous quadratics: R[a][b] = sum over monomials of coef * q_i q_j.
_MONOMIALS = ("w*w", "x*x", "y*y", "z*z", "w*x", "w*y", "w*z", "x*y", "x*z", "y*z")
_R_COEFFS = np.zeros((3, 3, 10))
for (_a, _b), _terms in {
    (0, 0): {"w*w": 1, "x*x": 1, "y*y": -1, "z*z": -1},
    (0, 1): {"x*y": 2, "w*z": -2},
    (0, 2): {"x*z": 2, "w*y": 2},
    (1, 0): {"x*y": 2, "w*z": 2},
    (1, 1): {"w*w": 1, "x*x": -1, "y*y": 1, "z*z": -1},
    (1, 2): {"y*z": 2, "w*x": -2},
    (2, 0): {"x*z": 2, "w*y": -2},
    (2, 1): {"y*z": 2, "w*x": 2},
    (2, 2): {"w*w": 1, "x*x": -1, "y*y": -1, "z*z": 1},
}.items():
    for _m, _k in _terms.items():
        _R_COEFFS[_a, _b, _MONOMIALS.index(_m)] = _k


def corrective_driver_expression(M: np.ndarray, r: int, c: int) -> str:
    """Element (r, c) of  M · R(q) · Mᵀ - I  as a driver expression in the bone's local quaternion
    variables w, x, y, z: a sum of ten quadratic terms (under Blender's 256-character limit).
    Only + - * and numbers: Blender evaluates it as a "simple expression", without Python, so it
    needs no "Auto Run Scripts" permission."""
    coeffs = np.einsum("a,b,abm->m", M[r], M[c], _R_COEFFS)
    terms = [f"{k:+.9g}*{m}" for k, m in zip(coeffs, _MONOMIALS) if abs(k) > 1e-10]
    expr = "".join(terms).lstrip("+") or "0"
    return expr + ("-1" if r == c else "")


def fps_to_blender(fps: float) -> tuple[int, float]:
    """Video frame rate -> Blender's (render.fps, render.fps_base): 29.97 -> (30, 1.001)."""
    if not fps or fps <= 0 or not np.isfinite(fps):
        raise ValueError(f"frame rate must be positive, got {fps}")
    whole = max(1, int(round(fps)))
    base = whole / fps
    return whole, (1.0 if abs(base - 1.0) < 1e-6 else base)

"""Retargeting maths on rotation matrices: forward kinematics of a Blender-style armature, rest-pose
and roll correction, root motion scaled by leg length.

All arrays are float64; T frames, N bones of one armature, M mapped bone pairs. Rest matrices are
4x4 in armature space (``Bone.matrix_local``). Blender evaluates a pose bone (default bone options)
as  pose_j = pose_parent · rest_parent⁻¹ · rest_j · basis_j  with basis_j = T(location) R(rotation)
S(scale) (:func:`pose_from_basis`, the project's one forward kinematics).

Retarget rule: the source's world rotation G_s(t) of a mapped bone is carried to its target bone as
    G_t(t) = G_s(t) · O,        O = G_s,restᵀ · A · G_t,rest                 (:func:`rest_offsets`)
with A the smallest rotation that turns the target's rest bone direction onto the source's (T-pose
vs A-pose, bent rest knees ...). O is then a pure twist about the bone axis (the roll difference), so
the target bone points where the source bone points in every frame, whatever the rest poses and rolls.
The hips follow  p_t(t) = h_t + s · (p_s(t) - h_s)  with h each rig's rest hips and s the ratio of
the legs' real chain lengths, hip → knee → ankle → ground contact (:func:`leg_length`), averaged over
both sides: the stride then scales with the leg, not with the hip height, which also holds the
hip-to-pelvis offset and whatever the lowest bone tip of the rig happens to be.
"""

from __future__ import annotations

import numpy as np

from .errors import VibeError
from .rotations import make_continuous, quat_to_rotmat, rotmat_to_quat

_AXES = {"X": 0, "Y": 1, "Z": 2}


def axis_rotations(angle: np.ndarray, axis: int) -> np.ndarray:
    """angle (...,) radians -> rotation about coordinate axis 0/1/2, (..., 3, 3)."""
    c, s = np.cos(angle), np.sin(angle)
    R = np.zeros(np.shape(angle) + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R[..., axis, axis] = 1.0
    R[..., i, i], R[..., i, j], R[..., j, i], R[..., j, j] = c, -s, s, c
    return R


def euler_to_rotmat(euler: np.ndarray, order: str = "XYZ") -> np.ndarray:
    """euler (..., 3) radians in Blender's rotation_mode ``order`` ('XYZ' = X first) -> (..., 3, 3)."""
    if sorted(order) != ["X", "Y", "Z"]:
        raise VibeError(f"Euler order must be a permutation of XYZ; got '{order}'.")
    euler = np.asarray(euler, dtype=np.float64)
    R = np.broadcast_to(np.eye(3), euler.shape[:-1] + (3, 3))
    for axis in order:  # later axes multiply from the left
        R = axis_rotations(euler[..., _AXES[axis]], _AXES[axis]) @ R
    return R


def compose_basis(location: np.ndarray, rotmat: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """location (..., 3), rotmat (..., 3, 3), scale (..., 3) -> basis T·R·S (..., 4, 4)."""
    out = np.zeros(rotmat.shape[:-2] + (4, 4))
    out[..., :3, :3] = rotmat if scale is None else rotmat * np.asarray(scale)[..., None, :]
    out[..., :3, 3] = location
    out[..., 3, 3] = 1.0
    return out


def topological_order(parents: np.ndarray) -> list[int]:
    """parents (N,) with -1 for roots -> bone indices, every parent before its children."""
    parents = np.asarray(parents)
    order, placed = [], np.zeros(len(parents), bool)
    while len(order) < len(parents):
        progress = False
        for j, p in enumerate(parents):
            if not placed[j] and (p < 0 or placed[p]):
                order.append(j)
                placed[j] = progress = True
        if not progress:
            raise VibeError("The armature's bone hierarchy has a cycle; it cannot be evaluated.")
    return order


def _local_rest(parents: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """rest (N, 4, 4) armature space -> rest relative to the parent (N, 4, 4)."""
    local = rest.copy()
    has_parent = parents >= 0
    local[has_parent] = np.linalg.inv(rest[parents[has_parent]]) @ rest[has_parent]
    return local


def pose_from_basis(parents: np.ndarray, rest: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """parents (N,), rest (N, 4, 4), basis (T, N, 4, 4) -> pose matrices (T, N, 4, 4), armature space.

    Forward kinematics: pose_j = pose_parent · rest_parent⁻¹ · rest_j · basis_j. SMPL's own chain is
    the special case of rest = translations to the rest joints and basis = the local rotations."""
    parents = np.asarray(parents)
    local = _local_rest(parents, np.asarray(rest, dtype=np.float64))
    pose = np.empty_like(basis, dtype=np.float64)
    for j in topological_order(parents):
        p = parents[j]
        pose[:, j] = (local[j] if p < 0 else pose[:, p] @ local[j]) @ basis[:, j]
    return pose


def rotation_part(matrix: np.ndarray) -> np.ndarray:
    """(..., 4, 4) or (..., 3, 3) with positive scale -> pure rotation (..., 3, 3), columns normalised."""
    R = np.asarray(matrix, dtype=np.float64)[..., :3, :3]
    return R / np.linalg.norm(R, axis=-2, keepdims=True)


def swing_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unit vectors a, b (..., 3) -> the smallest rotation (..., 3, 3) taking a onto b."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    v = np.cross(a, b)
    c = np.sum(a * b, axis=-1)
    # Opposite vectors: any axis perpendicular to a works; use a's cross with the least aligned axis.
    opposite = c < -1.0 + 1e-9
    if np.any(opposite):
        helper = np.eye(3)[np.argmin(np.abs(a[opposite]), axis=-1)]
        axis = np.cross(a[opposite], helper)
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    K = np.zeros(v.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = v[..., 2], -v[..., 1], v[..., 0]
    R = np.eye(3) + K + (K @ K) / np.where(opposite, 1.0, 1.0 + c)[..., None, None]
    if np.any(opposite):
        R[opposite] = 2.0 * axis[..., :, None] * axis[..., None, :] - np.eye(3)
    return R


def rest_offsets(source_rest_rot: np.ndarray, target_rest_rot: np.ndarray) -> np.ndarray:
    """source_rest_rot, target_rest_rot (M, 3, 3) world rest rotations of mapped pairs (column 1 =
    bone direction) -> O (M, 3, 3) such that G_t = G_s · O (see the module docstring)."""
    A = swing_rotation(target_rest_rot[..., :, 1], source_rest_rot[..., :, 1])
    return np.swapaxes(source_rest_rot, -1, -2) @ A @ target_rest_rot


def solve_basis(
    parents: np.ndarray,
    rest: np.ndarray,
    target_rot: np.ndarray,
    mapped: np.ndarray,
    root_index: int,
    root_head: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Pose-bone channels that give bones wanted armature-space rotations.

    parents (N,), rest (N, 4, 4) armature space; target_rot (T, N, 3, 3) wanted armature-space
    rotations, used where mapped (N,) bool is True (other bones keep their rest pose: identity
    basis); root_head (T, 3) wanted armature-space head of bone ``root_index``.
    -> basis quaternions (T, N, 4) wxyz with sign continuity, root location (T, 3) bone-local.
    """
    parents = np.asarray(parents)
    T, N = target_rot.shape[:2]
    local = _local_rest(parents, np.asarray(rest, dtype=np.float64))
    pose = np.empty((T, N, 4, 4))
    basis_rot = np.broadcast_to(np.eye(3), (T, N, 3, 3)).copy()
    root_loc = np.zeros((T, 3))
    for j in topological_order(parents):
        p = parents[j]
        chain = np.broadcast_to(local[j], (T, 4, 4)) if p < 0 else pose[:, p] @ local[j]
        if mapped[j]:
            basis_rot[:, j] = np.swapaxes(rotation_part(chain), -1, -2) @ target_rot[:, j]
        location = np.zeros((T, 3))
        if j == root_index:
            head = np.concatenate([root_head, np.ones((T, 1))], axis=-1)
            location = np.einsum("tab,tb->ta", np.linalg.inv(chain), head)[:, :3]
            root_loc = location
        pose[:, j] = chain @ compose_basis(location, basis_rot[:, j])
    return make_continuous(rotmat_to_quat(basis_rot)), root_loc


def hip_height(root_head_world: np.ndarray, floor_z: float) -> float:
    """Rest height of the hips over the rig's floor (metres); raises when the rig has no legs below."""
    height = float(root_head_world[2] - floor_z)
    if height <= 1e-4:
        raise VibeError(
            "The hip bone is not above the rest of the rig, so leg length cannot be measured; "
            "map the hips to a bone above the feet."
        )
    return height


def leg_length(hip: np.ndarray, knee: np.ndarray, ankle: np.ndarray, ground_z: float) -> float:
    """Rest heads hip, knee, ankle (3,) in the world (Z up) and the height of the foot's ground
    contact -> chain length hip → knee → ankle plus the ankle's height over the contact (metres)."""
    hip, knee, ankle = (np.asarray(p, dtype=np.float64) for p in (hip, knee, ankle))
    length = float(np.linalg.norm(knee - hip) + np.linalg.norm(ankle - knee) + max(ankle[2] - ground_z, 0.0))
    if length <= 1e-4:
        raise VibeError(
            "A leg of the rig has no length (hip, knee and ankle bones at one point); check the "
            "bones mapped to the legs."
        )
    return length


def leg_scale(source_legs: list[float], target_legs: list[float]) -> float:
    """Leg lengths of each rig (one per side) -> the root motion scale: ratio of the mean lengths."""
    return float(np.mean(target_legs) / np.mean(source_legs))


def scale_root_motion(
    source_root_world: np.ndarray, source_origin: np.ndarray, target_origin: np.ndarray, scale: float
) -> np.ndarray:
    """source_root_world (T, 3) hips positions -> target hips (T, 3): o_t + s·(p_s - o_s), with o the
    rigs' rest hips (or any pair of corresponding points)."""
    return np.asarray(target_origin) + scale * (np.asarray(source_root_world) - np.asarray(source_origin))


def retarget_rotations(source_world_rot: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """source_world_rot (T, M, 3, 3), offsets (M, 3, 3) -> target world rotations (T, M, 3, 3)."""
    return source_world_rot @ offsets[None]


def quats_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Un-normalised quaternions (..., 4) as keyed by users -> rotations (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    return quat_to_rotmat(q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12))


def bone_rest_matrices(heads: np.ndarray, tails: np.ndarray) -> np.ndarray:
    """heads, tails (N, 3) armature space -> rest matrices (N, 4, 4) of roll-0 bones (Y along the
    bone, the smallest rotation from +Y, as Blender builds edit bones away from the -Y direction)."""
    heads = np.asarray(heads, dtype=np.float64)
    rest = np.tile(np.eye(4), (len(heads), 1, 1))
    rest[:, :3, :3] = swing_rotation(np.tile([0.0, 1.0, 0.0], (len(heads), 1)), np.asarray(tails) - heads)
    rest[:, :3, 3] = heads
    return rest

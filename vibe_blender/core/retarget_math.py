"""Retargeting maths on rotation matrices: forward kinematics of a Blender-style armature, rest-pose
and roll correction, root motion scaled by leg length.

All arrays are float64; T frames, N bones of one armature, M mapped bone pairs. Rest matrices are
4x4 in armature space (``Bone.matrix_local``). Blender evaluates a pose bone (default bone options)
as  pose_j = pose_parent · rest_parent⁻¹ · rest_j · basis_j  with basis_j = T(location) R(rotation)
S(scale) (:func:`pose_from_basis`, the project's one forward kinematics). That holds with Inherit
Rotation and Local Location on, and for any Inherit Scale mode while the parents are unscaled; the
add-on refuses rigs that differ before baking. Keys go back in each bone's own rotation mode
(:func:`rotation_keys`, :func:`rotmat_to_euler`: Euler angles continuous from frame to frame).

Retarget rule: the source's world rotation G_s(t) of a mapped bone is carried to its target bone as
    G_t(t) = G_s(t) · O,        O = G_s,restᵀ · A · G_t,rest                 (:func:`rest_offsets`)
with A the smallest rotation that turns the target's rest bone direction onto the source's (T-pose
vs A-pose, bent rest knees ...). O is then a pure twist about the bone axis (the roll difference), so
the target bone points where the source bone points in every frame, whatever the rest poses and rolls.
The hips follow  p_t(t) = h_t + s · (p_s(t) - h_s)  with h each rig's rest hips and s the ratio of
the legs' real chain lengths, hip → knee → ankle → ground contact (:func:`leg_length`), averaged over
both sides: the stride then scales with the leg, not with the hip height, which also holds the
hip-to-pelvis offset and whatever the lowest bone tip of the rig happens to be.
Both rules work on the source as turned to face where the target faces: Y, the turn about the world's
Z axis between the rigs' rest headings (:func:`heading_turn`), multiplies G_s, G_s,rest and p_s - h_s.
A rig turned in the scene (by its object or in its bones) then keeps its own facing, left limbs on
its left, and walks its own forward; a tilt that only makes the rig stand up (an FBX rig's 90° about
X) turns no heading.
"""

from __future__ import annotations

import numpy as np

from .errors import VibeError
from .rotations import axis_angle_to_rotmat, make_continuous, quat_to_rotmat, rotmat_to_quat

_AXES = {"X": 0, "Y": 1, "Z": 2}
EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")


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


def _euler_angles(R: np.ndarray, order: str) -> np.ndarray:
    """R (..., 3, 3) -> one Euler triple (..., 3) for ``order``, middle angle in [-pi/2, pi/2]."""
    i, j, k = (_AXES[a] for a in order)
    s = 1.0 if order in ("XYZ", "YZX", "ZXY") else -1.0  # even permutations of XYZ
    cos_b = np.hypot(R[..., i, i], R[..., j, i])
    gimbal = cos_b < 1e-9  # first and last axes line up: only their sum is defined, put it all on the first
    out = np.empty(R.shape[:-2] + (3,))
    out[..., i] = np.where(
        gimbal, np.arctan2(-s * R[..., j, k], R[..., j, j]), np.arctan2(s * R[..., k, j], R[..., k, k])
    )
    out[..., j] = np.arctan2(-s * R[..., k, i], cos_b)
    out[..., k] = np.where(gimbal, 0.0, np.arctan2(s * R[..., j, i], R[..., i, i]))
    return out


def rotmat_to_euler(R: np.ndarray, order: str = "XYZ") -> np.ndarray:
    """R (T, ..., 3, 3) over T frames -> Euler angles (T, ..., 3) in Blender's ``order``, continuous
    in time: each frame takes whichever of the two equivalent triples is nearer the previous frame,
    and whole turns are added where an angle wraps (keys that jump by 2*pi spin between frames)."""
    if order not in EULER_ORDERS:
        raise VibeError(f"Euler order must be a permutation of XYZ; got '{order}'.")
    i, j, k = (_AXES[a] for a in order)
    first = _euler_angles(np.asarray(R, dtype=np.float64), order)
    second = first.copy()  # (a, b, c) ~ (a + pi, pi - b, c + pi)
    second[..., i] += np.pi
    second[..., j] = np.pi - first[..., j]
    second[..., k] += np.pi
    if len(first) > 1:
        # Keeping or switching the triple between two frames costs the same from either triple, so
        # the choice of each frame is the running parity of the switches.
        def step(d):
            return np.abs((d + np.pi) % (2 * np.pi) - np.pi).sum(-1)

        switch = step(second[1:] - first[:-1]) < step(first[1:] - first[:-1])
        parity = np.concatenate([np.zeros_like(switch[:1]), np.cumsum(switch, axis=0) % 2 == 1])
        first = np.where(parity[..., None], second, first)
    return np.unwrap(first, axis=0)


def rotation_keys(q: np.ndarray, mode: str) -> np.ndarray:
    """Sign-continuous quaternions (T, ..., 4) wxyz -> key values for a pose bone's ``rotation_mode``:
    the quaternions (T, ..., 4), continuous Euler angles (T, ..., 3), or axis-angle (angle, x, y, z)."""
    q = np.asarray(q, dtype=np.float64)
    if mode == "QUATERNION":
        return q.copy()
    if mode == "AXIS_ANGLE":
        sin_half = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
        angle = 2.0 * np.arctan2(sin_half, q[..., :1])
        # No turn has no axis: take the latest frame's (or the first one's) so the axis does not jump.
        defined = sin_half[..., 0] > 1e-9
        latest = np.where(defined, np.arange(len(q)).reshape((-1,) + (1,) * (defined.ndim - 1)), -1)
        latest = np.maximum.accumulate(latest, axis=0)
        latest = np.where(latest < 0, np.argmax(defined, axis=0), latest)
        axis = np.take_along_axis(q[..., 1:] / np.maximum(sin_half, 1e-12), latest[..., None], axis=0)
        axis = np.where(defined.any(axis=0)[..., None], axis, [0.0, 1.0, 0.0])  # Blender's default axis
        if len(q) > 1:  # (angle, axis) ~ (-angle, -axis): keep the axis from flipping between frames
            flip = np.sum(axis[1:] * axis[:-1], axis=-1, keepdims=True) < 0
            sign = np.where(np.concatenate([np.zeros_like(flip[:1]), np.cumsum(flip, axis=0) % 2 == 1]), -1.0, 1.0)
            angle, axis = np.unwrap(angle * sign, axis=0), axis * sign
        return np.concatenate([angle, axis], axis=-1)
    return rotmat_to_euler(quat_to_rotmat(q / np.linalg.norm(q, axis=-1, keepdims=True)), mode)


def rotation_matrices(values: np.ndarray, mode: str) -> np.ndarray:
    """Key values of a pose bone's ``rotation_mode`` (quaternion, Euler or axis-angle, as Blender
    reads them: quaternions and axes need not be unit) -> rotations (..., 3, 3)."""
    values = np.asarray(values, dtype=np.float64)
    if mode == "QUATERNION":
        return quats_to_rotmat(values)
    if mode == "AXIS_ANGLE":
        length = np.linalg.norm(values[..., 1:], axis=-1, keepdims=True)
        unit = np.where(length > 1e-12, values[..., 1:] / np.maximum(length, 1e-12), 0.0)  # no axis: no turn
        return axis_angle_to_rotmat(unit * values[..., :1])
    return euler_to_rotmat(values, mode)


def rotation_quats(values: np.ndarray, mode: str) -> np.ndarray:
    """Key values of a pose bone's ``rotation_mode`` -> quaternions (..., 4) wxyz: the inverse of
    :func:`rotation_keys` (quaternion keys are taken as they are)."""
    if mode == "QUATERNION":
        return np.asarray(values, dtype=np.float64)
    return rotmat_to_quat(rotation_matrices(values, mode))


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


def sub_skeleton(parents: np.ndarray, keep) -> np.ndarray:
    """parents (N,) and the indices ``keep`` (K,) of some bones with all their parents -> the parents
    (K,) of the kept bones as indices into ``keep`` (-1 for roots): the same chains without the other
    bones, which move none of the kept ones (a mapped bone's pose depends on its parents alone)."""
    parents, keep = np.asarray(parents), np.asarray(keep, dtype=np.int64)
    position = {int(j): k for k, j in enumerate(keep)}
    missing = [int(p) for p in parents[keep] if p >= 0 and int(p) not in position]
    if missing:
        raise ValueError(f"bones {missing} are parents of kept bones but not kept")
    return np.array([position[int(p)] if p >= 0 else -1 for p in parents[keep]], dtype=np.int64)


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


def pose_matrices(parents, rest, quats, root_loc, root: int = 0) -> np.ndarray:
    """Keyed pose-bone quaternions quats (T, N, 4) wxyz and the root bone's location root_loc (T, 3)
    -> (T, N, 4, 4) armature-space pose matrices (:func:`pose_from_basis`)."""
    location = np.zeros(quats.shape[:2] + (3,))
    location[:, root] = root_loc
    return pose_from_basis(parents, rest, compose_basis(location, quat_to_rotmat(quats)))


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


HEADING_MIN_SHARE = 0.01  # a left-right pair closer than this share of its rig's size tells no heading


def heading_turn(source_pairs, target_pairs, sizes: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The rigs' rest left-minus-right vectors in the world (Z up), pairs of corresponding joints
    (hips, then shoulders ...) as (K, 3) each -> the turn (3, 3) about Z taking the source's heading
    onto the target's, from the first pair that lies level enough in both rigs and is at least
    HEADING_MIN_SHARE of each rig's size (``sizes``: source, target) long: two bones at nearly one
    point give a direction of rounding noise. Identity when no pair does."""

    def tells(v: np.ndarray, size: float) -> bool:
        across = np.linalg.norm(v[:2])
        return across > 0.5 * np.linalg.norm(v) and across > HEADING_MIN_SHARE * size

    for s, t in zip(np.asarray(source_pairs, dtype=np.float64), np.asarray(target_pairs, dtype=np.float64)):
        if tells(s, sizes[0]) and tells(t, sizes[1]):
            return axis_rotations(np.arctan2(t[1], t[0]) - np.arctan2(s[1], s[0]), 2)
    return np.eye(3)


def scale_root_motion(
    source_root_world: np.ndarray,
    source_origin: np.ndarray,
    target_origin: np.ndarray,
    scale: float,
    turn: np.ndarray | None = None,
) -> np.ndarray:
    """source_root_world (T, 3) hips positions -> target hips (T, 3): o_t + s·Y(p_s - o_s), with o the
    rigs' rest hips (or any pair of corresponding points) and Y the ``turn`` between their headings."""
    travel = np.asarray(source_root_world) - np.asarray(source_origin)
    if turn is not None:
        travel = travel @ np.asarray(turn).T
    return np.asarray(target_origin) + scale * travel


def retarget_rotations(source_world_rot: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """source_world_rot (T, M, 3, 3), offsets (M, 3, 3) -> target world rotations (T, M, 3, 3)."""
    return source_world_rot @ offsets[None]


def quats_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Un-normalised quaternions (..., 4) as keyed by users -> rotations (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    return quat_to_rotmat(q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12))

"""SMPL's forward pass in numpy (the same steps as smplx's ``lbs``), for placing a body on the ground.

The add-on lets Blender do the skinning; this is only used where the numbers are needed before the
scene exists (the ground height of a track) and by tests as an independent reference.
"""

from __future__ import annotations

import numpy as np

from .retarget_math import compose_basis, pose_from_basis
from .rotations import axis_angle_to_rotmat
from .smpl_model import BodyModel


def pose_feature(rotmat: np.ndarray) -> np.ndarray:
    """rotmat (..., 24, 3, 3) -> pose-corrective weights (..., 207) = (R_j - I) for joints 1..23.

    Same order as smplx's ``pose_feature`` and the official posedirs: k = 9 (j - 1) + 3 r + c.
    """
    lead = rotmat.shape[:-3]
    return (rotmat[..., 1:, :, :] - np.eye(3)).reshape(lead + (-1,))


def joint_transforms(rotmat: np.ndarray, J: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """rotmat (T, J, 3, 3) local rotations, J (J, 3) rest joints -> world transforms G (T, J, 4, 4).

    G[:, j] maps joint j's rest-aligned local frame (origin at the joint) to the posed world: the
    armature forward kinematics with rest = translations to J and basis = the rotations."""
    rest = np.tile(np.eye(4), (len(J), 1, 1))
    rest[:, :3, 3] = J
    return pose_from_basis(parents, rest, compose_basis(np.zeros(rotmat.shape[:-1]), rotmat))


def smpl_forward(
    model: BodyModel,
    pose: np.ndarray,
    betas: np.ndarray,
    trans: np.ndarray | None = None,
    *,
    pose_correctives: bool = True,
    vertex_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """pose (T, 72) axis-angle, betas (10,) or (T, 10), trans (T, 3) ->
    (vertices (T, V, 3), joints (T, 24, 3)), metres, in the frame of the root rotation (SMPL's own).

    vertex_ids: only skin these vertices (V' of them), e.g. the feet when looking for the floor.
    """
    pose = np.asarray(pose, dtype=np.float64).reshape(len(pose), -1, 3)
    T = len(pose)
    betas = np.asarray(betas, dtype=np.float64)
    per_frame_shape = betas.ndim == 2
    v_shaped = model.v_shaped(betas)  # (V, 3) or (T, V, 3)
    J = np.einsum("jv,...vk->...jk", model.J_regressor, v_shaped)  # (24, 3) or (T, 24, 3)
    if vertex_ids is not None:
        v_shaped = v_shaped[..., vertex_ids, :]
    weights = model.lbs_weights if vertex_ids is None else model.lbs_weights[vertex_ids]
    rotmat = axis_angle_to_rotmat(pose)  # (T, 24, 3, 3)
    v_posed = np.broadcast_to(v_shaped, (T,) + v_shaped.shape[-2:])
    if pose_correctives:
        posedirs = model.posedirs if vertex_ids is None else model.posedirs[vertex_ids]
        v_posed = v_posed + np.einsum("tp,vkp->tvk", pose_feature(rotmat), posedirs)
    verts, joints = np.empty(v_posed.shape), np.empty((T, len(model.parents), 3))
    for t in range(T):
        J_t = J[t] if per_frame_shape else J
        G = joint_transforms(rotmat[t : t + 1], J_t, model.parents)[0]  # (24, 4, 4)
        A = G.copy()
        A[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], J_t)  # remove the rest joint offset
        W = np.einsum("vj,jab->vab", weights, A)  # (V, 4, 4)
        verts[t] = np.einsum("vab,vb->va", W[:, :3, :3], v_posed[t]) + W[:, :3, 3]
        joints[t] = G[:, :3, 3]
    if trans is not None:
        trans = np.asarray(trans, dtype=np.float64)[:, None, :]
        verts, joints = verts + trans, joints + trans
    return verts, joints

"""SMPL through ``smplx``, extended as VIBE does (``lib/models/smpl.py``) to 49 keypoints.

smplx gives 24 skeleton joints + 21 vertex landmarks (face, feet, finger tips) = 45; VIBE adds
9 joints regressed from the vertices with ``J_regressor_extra`` (54) and reorders them into the
49 ``JOINT_NAMES`` below (25 OpenPose BODY_25, then 24 ground-truth joints). With an H36M joint
regressor the 14 LSP-ordered evaluation joints are given instead.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import smplx
import torch

from vibe_blender.core.smpl_model import BodyModel

JOINT_NAMES = (
    "OP Nose",
    "OP Neck",
    "OP RShoulder",
    "OP RElbow",
    "OP RWrist",
    "OP LShoulder",
    "OP LElbow",
    "OP LWrist",
    "OP MidHip",
    "OP RHip",
    "OP RKnee",
    "OP RAnkle",
    "OP LHip",
    "OP LKnee",
    "OP LAnkle",
    "OP REye",
    "OP LEye",
    "OP REar",
    "OP LEar",
    "OP LBigToe",
    "OP LSmallToe",
    "OP LHeel",
    "OP RBigToe",
    "OP RSmallToe",
    "OP RHeel",
    "Right Ankle",
    "Right Knee",
    "Right Hip",
    "Left Hip",
    "Left Knee",
    "Left Ankle",
    "Right Wrist",
    "Right Elbow",
    "Right Shoulder",
    "Left Shoulder",
    "Left Elbow",
    "Left Wrist",
    "Neck (LSP)",
    "Top of Head (LSP)",
    "Pelvis (MPII)",
    "Thorax (MPII)",
    "Spine (H36M)",
    "Jaw (H36M)",
    "Head (H36M)",
    "Nose",
    "Left Eye",
    "Right Eye",
    "Left Ear",
    "Right Ear",
)
# Index into the 54 joints [smplx 24 | landmarks 21 | extra 9] for each of the 49 names above.
JOINT_MAP = (
    24,
    12,
    17,
    19,
    21,
    16,
    18,
    20,
    0,
    2,
    5,
    8,
    1,
    4,
    7,
    25,
    26,
    27,
    28,
    29,
    30,
    31,
    32,
    33,
    34,
    8,
    5,
    45,
    46,
    4,
    7,
    21,
    19,
    17,
    16,
    18,
    20,
    47,
    48,
    49,
    50,
    51,
    52,
    53,
    24,
    26,
    25,
    28,
    27,
)
H36M_TO_J14 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
NUM_EXTRA_JOINTS = 9


class SMPL(smplx.SMPL):
    """smplx.SMPL without per-batch parameters, plus ``J_regressor_extra`` and the 49-joint map.

    Buffers carry the official names (``v_template``, ``shapedirs``, ``posedirs``, ``J_regressor``,
    ``lbs_weights``, ``parents``, ``faces_tensor``, ``J_regressor_extra``,
    ``vertex_joint_selector.extra_joints_idxs``) so that the copy of SMPL embedded in the official
    VIBE checkpoint loads onto them.
    """

    def __init__(self, body_model: BodyModel, J_regressor_extra: np.ndarray):
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a benign note about 10 betas
            super().__init__(
                model_path="",
                data_struct=body_model.to_smplx_struct(),
                create_betas=False,
                create_global_orient=False,
                create_body_pose=False,
                create_transl=False,
            )
        self.register_buffer("J_regressor_extra", torch.tensor(J_regressor_extra, dtype=torch.float32))
        self.register_buffer("joint_map", torch.tensor(JOINT_MAP, dtype=torch.long), persistent=False)

    def forward_joints(self, betas: torch.Tensor, rotmat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """betas (B, 10), rotmat (B, 24, 3, 3) -> (vertices (B, 6890, 3), joints (B, 49, 3)), metres."""
        out = super().forward(
            betas=betas, body_pose=rotmat[:, 1:], global_orient=rotmat[:, 0].unsqueeze(1), pose2rot=False
        )
        extra = torch.einsum("bik,ji->bjk", out.vertices, self.J_regressor_extra)
        joints = torch.cat([out.joints, extra], dim=1)[:, self.joint_map]
        return out.vertices, joints

"""The iterative SMPL regressor of SPIN/VIBE (``lib/models/spin.py: Regressor``).

Starting from the mean parameters, three iterations of error feedback (IEF):
``xc = [x | pose6d (144) | betas (10) | cam (3)] -> fc1 -> fc2 -> (decpose, decshape, deccam)``
each added to the current estimate. No nonlinearity in the MLP; dropout only while training.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..geometry import projection, rot6d_to_rotmat, rotation_matrix_to_angle_axis
from .backbone import FEATURE_DIM
from .smpl import H36M_TO_J14, SMPL

NUM_JOINTS = 24
POSE_6D_DIM = NUM_JOINTS * 6


class Regressor(nn.Module):
    def __init__(self, smpl: SMPL, mean_params: dict[str, np.ndarray], n_iter: int = 3):
        super().__init__()
        self.n_iter = n_iter
        npose = POSE_6D_DIM
        self.fc1 = nn.Linear(FEATURE_DIM + npose + 13, 1024)
        self.drop1 = nn.Dropout()
        self.fc2 = nn.Linear(1024, 1024)
        self.drop2 = nn.Dropout()
        self.decpose = nn.Linear(1024, npose)
        self.decshape = nn.Linear(1024, 10)
        self.deccam = nn.Linear(1024, 3)
        for layer, gain in ((self.decpose, 0.01), (self.decshape, 0.01), (self.deccam, 0.01)):
            nn.init.xavier_uniform_(layer.weight, gain=gain)
        self.smpl = smpl
        self.register_buffer("init_pose", torch.tensor(mean_params["pose"][:], dtype=torch.float32).unsqueeze(0))
        self.register_buffer("init_shape", torch.tensor(mean_params["shape"][:], dtype=torch.float32).unsqueeze(0))
        self.register_buffer("init_cam", torch.tensor(mean_params["cam"][:], dtype=torch.float32).unsqueeze(0))

    def iterate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, 2048) -> (pose6d (B, 144), betas (B, 10), cam (B, 3)) after ``n_iter`` IEF steps."""
        b = x.shape[0]
        pose6d, betas, cam = self.init_pose.expand(b, -1), self.init_shape.expand(b, -1), self.init_cam.expand(b, -1)
        for _ in range(self.n_iter):
            xc = torch.cat([x, pose6d, betas, cam], 1)
            xc = self.drop2(self.fc2(self.drop1(self.fc1(xc))))
            pose6d = self.decpose(xc) + pose6d
            betas = self.decshape(xc) + betas
            cam = self.deccam(xc) + cam
        return pose6d, betas, cam

    def forward(self, x: torch.Tensor, j_regressor: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """x (B, 2048) temporal features -> dict of theta (B, 85), verts (B, 6890, 3), kp_2d (B, J, 2),
        kp_3d (B, J, 3), rotmat (B, 24, 3, 3); J = 49, or 14 with an H36M ``j_regressor`` (17, 6890)."""
        pose6d, betas, cam = self.iterate(x)
        rotmat = rot6d_to_rotmat(pose6d).view(x.shape[0], NUM_JOINTS, 3, 3)
        verts, joints = self.smpl.forward_joints(betas, rotmat)
        if j_regressor is not None:
            j_regressor = torch.as_tensor(j_regressor, dtype=verts.dtype, device=verts.device)
            joints = torch.matmul(j_regressor[None].expand(verts.shape[0], -1, -1), verts)[:, list(H36M_TO_J14)]
        kp_2d = projection(joints, cam)
        pose = rotation_matrix_to_angle_axis(rotmat.reshape(-1, 3, 3)).reshape(-1, NUM_JOINTS * 3)
        return {
            "theta": torch.cat([cam, pose, betas], dim=1),
            "verts": verts,
            "kp_2d": kp_2d,
            "kp_3d": joints,
            "rotmat": rotmat,
        }

"""The VIBE network (``lib/models/vibe.py: VIBE_Demo``): backbone -> temporal encoder -> regressor.

    images (N, T, 3, 224, 224) --ResNet-50--> features (N, T, 2048) --GRU + residual-->
    (N, T, 2048) --IEF regressor + SMPL--> theta, verts, kp_2d, kp_3d, rotmat

The module gets arrays, never paths: :func:`vibe_server.data.loading.load_model` reads the model
data and the official checkpoints and builds it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vibe_blender.core.smpl_model import BodyModel

from .backbone import FEATURE_DIM, ResNet50Features
from .encoder import TemporalEncoder
from .regressor import Regressor
from .smpl import SMPL


class VIBE(nn.Module):
    """VIBE_Demo with the official sizes (2-layer unidirectional GRU of 1024, linear, residual)."""

    def __init__(self, body_model: BodyModel, J_regressor_extra: np.ndarray, mean_params: dict[str, np.ndarray]):
        super().__init__()
        self.backbone = ResNet50Features()
        self.encoder = TemporalEncoder(n_layers=2, hidden_size=1024, add_linear=True, use_residual=True)
        self.regressor = Regressor(SMPL(body_model, J_regressor_extra), mean_params)
        self.model_name = "VIBE"

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, T, 3, 224, 224) -> features (N, T, 2048)."""
        n, t = images.shape[:2]
        return self.backbone(images.reshape(n * t, *images.shape[2:])).reshape(n, t, FEATURE_DIM)

    def forward_features(
        self, features: torch.Tensor, j_regressor: torch.Tensor | None = None, h0: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """features (N, T, 2048) -> dict: theta (N, T, 85), verts (N, T, 6890, 3), kp_2d (N, T, J, 2),
        kp_3d (N, T, J, 3), rotmat (N, T, 24, 3, 3), gru_state (2, N, 1024).

        J = 49, or 14 (LSP order) when ``j_regressor`` is the H36M regressor (17, 6890).
        h0: the ``gru_state`` of the previous chunk of the same sequences (None = start).
        """
        n, t = features.shape[:2]
        encoded, gru_state = self.encoder(features, h0)
        out = self.regressor(encoded.reshape(n * t, -1), j_regressor=j_regressor)
        out = {k: v.reshape(n, t, *v.shape[1:]) for k, v in out.items()}
        out["gru_state"] = gru_state
        return out

    def forward(
        self, images: torch.Tensor, j_regressor: torch.Tensor | None = None, h0: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """images (N, T, 3, 224, 224) ImageNet-normalised RGB crops -> the dict of :meth:`forward_features`."""
        return self.forward_features(self.extract_features(images), j_regressor=j_regressor, h0=h0)

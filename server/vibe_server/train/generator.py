"""The generator that training and evaluation use: VIBE without its backbone (features in).

The original trains and evaluates on precomputed backbone features, so the ResNet-50 is left out
here; its `encoder.*` and `regressor.*` keys are those of the official `gen_state_dict`, so the
checkpoints written from it load unchanged into :func:`vibe_server.load_model`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data import loading
from ..model.vibe import VIBE


class FeatureGenerator(nn.Module):
    """features (N, T, 2048) -> VIBE's output dict (theta, verts, kp_2d, kp_3d, rotmat, gru_state)."""

    def __init__(self, vibe: VIBE):
        super().__init__()
        self.encoder = vibe.encoder
        self.regressor = vibe.regressor

    def forward(self, features: torch.Tensor, j_regressor: torch.Tensor | None = None) -> dict:
        # VIBE.forward_features only touches .encoder and .regressor, which this module shares
        return VIBE.forward_features(self, features, j_regressor=j_regressor)


def build_generator(
    model_data_dir: str | Path | None = None, *, init_from_spin: bool = False, vibe_checkpoint: str | Path | None = None
) -> FeatureGenerator:
    """The generator of :func:`vibe_server.data.loading.load_training_model` (same arguments)."""
    vibe = loading.load_training_model(
        model_data_dir or None, init_from_spin=init_from_spin, vibe_checkpoint=vibe_checkpoint
    )
    return FeatureGenerator(vibe)

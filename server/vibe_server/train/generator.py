"""The generator that training and evaluation use: VIBE without its backbone (features in).

The original trains and evaluates on precomputed backbone features, so the ResNet-50 is left out
here; its `encoder.*` and `regressor.*` keys are those of the official `gen_state_dict`, so the
checkpoints written from it load unchanged into :func:`vibe_server.load_model`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vibe_blender.core.errors import VibeError

from .. import checkpoints
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
    """The generator with SMPL from the model-data folder; regressor head from SPIN's checkpoint
    (as the original's `PRETRAINED_REGRESSOR`) and/or all weights from a VIBE checkpoint."""
    data_dir = loading.resolve_data_dir(model_data_dir or None)
    loading.require_files(data_dir, loading.MODEL_FILES)
    vibe = loading.build_model(data_dir)
    if init_from_spin:
        spin_path = data_dir / loading.SPIN_CHECKPOINT
        spin_state = checkpoints.load_spin_checkpoint(spin_path)
        missing = [k for k in checkpoints.SPIN_HEAD_KEYS if k not in spin_state]
        if missing:
            raise VibeError(f"'{spin_path}' lacks SPIN's regressor head ({', '.join(missing[:3])}).")
        # SPIN's head (fc1, fc2, dec*, init_*) has the regressor's own key names
        vibe.regressor.load_state_dict({k: spin_state[k] for k in checkpoints.SPIN_HEAD_KEYS}, strict=False)
    if vibe_checkpoint:
        state = checkpoints.load_vibe_checkpoint(vibe_checkpoint)["gen_state_dict"]
        checkpoints.load_vibe_into(vibe, state, source=vibe_checkpoint)
    return FeatureGenerator(vibe)


def load_h36m_regressor(model_data_dir: str | Path | None = None) -> torch.Tensor:
    """(17, 6890) `J_regressor_h36m.npy` of the model-data folder: the 14 evaluation joints."""
    data_dir = loading.resolve_data_dir(model_data_dir or None)
    loading.require_files(data_dir, (loading.H36M_REGRESSOR,))
    return torch.from_numpy(loading.load_joint_regressor(data_dir / loading.H36M_REGRESSOR, 17))

"""The VIBE network (``lib/models/vibe.py: VIBE_Demo``): backbone -> temporal encoder -> regressor.

    images (N, T, 3, 224, 224) --ResNet-50--> features (N, T, 2048) --GRU + residual-->
    (N, T, 2048) --IEF regressor + SMPL--> theta, verts, kp_2d, kp_3d, rotmat

:func:`load_model` builds it from the model-data folder with the official checkpoints unchanged:
backbone from SPIN's checkpoint, encoder + regressor (including its embedded copy of SMPL, which
takes precedence over ``SMPL_NEUTRAL.pkl`` as in the original) from VIBE's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from vibe_blender.core.errors import VibeError
from vibe_blender.core.safe_npz import read_npy, read_npz
from vibe_blender.core.smpl_model import BodyModel, load_smpl_pkl

from .backbone import FEATURE_DIM, ResNet50Features
from .encoder import TemporalEncoder
from .regressor import Regressor
from .smpl import NUM_EXTRA_JOINTS, SMPL

OUTPUT_KEYS = ("theta", "verts", "kp_2d", "kp_3d", "rotmat")


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

    def forward_features(self, features: torch.Tensor, j_regressor=None,
                         h0: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
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

    def forward(self, images: torch.Tensor, j_regressor=None, h0: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """images (N, T, 3, 224, 224) ImageNet-normalised RGB crops -> the dict of :meth:`forward_features`."""
        return self.forward_features(self.extract_features(images), j_regressor=j_regressor, h0=h0)


def load_mean_params(path: str | Path) -> dict[str, np.ndarray]:
    """``smpl_mean_params.npz`` -> {'pose': (144,), 'shape': (10,), 'cam': (3,)} float32 (bounded read)."""
    hint = "Reinstall the model data with 'vibe-mocap data install'."
    arrays = read_npz(path, names=("pose", "shape", "cam"), label=f"'{path}' (smpl_mean_params.npz)",
                      hint=hint, allow_text=False)
    for k, n in (("pose", 144), ("shape", 10), ("cam", 3)):
        if k not in arrays:
            raise VibeError(f"'{path}' is not a valid smpl_mean_params.npz: it has no '{k}'. {hint}")
        if arrays[k].shape != (n,) or not np.all(np.isfinite(arrays[k])):
            raise VibeError(f"'{path}': '{k}' has shape {arrays[k].shape}, expected ({n},) finite numbers. {hint}")
    return {k: a.astype(np.float32) for k, a in arrays.items()}


def load_joint_regressor(path: str | Path, num_joints: int) -> np.ndarray:
    """A (num_joints, 6890) joint regressor ``.npy`` with a clear error when it is not one (bounded read)."""
    reg = read_npy(path, label=f"the joint regressor '{path}'",
                   hint="Reinstall the model data with 'vibe-mocap data install'.")
    if reg.shape != (num_joints, 6890) or not np.all(np.isfinite(reg)):
        raise VibeError(f"'{path}' has shape {reg.shape}, expected ({num_joints}, 6890) finite numbers.")
    return reg.astype(np.float32)


def build_model(data_dir: str | Path) -> VIBE:
    """The VIBE architecture with SMPL, extra-joint regressor and mean parameters from ``data_dir``
    (random network weights)."""
    data_dir = Path(data_dir)
    return VIBE(
        load_smpl_pkl(data_dir / "SMPL_NEUTRAL.pkl"),
        load_joint_regressor(data_dir / "J_regressor_extra.npy", NUM_EXTRA_JOINTS),
        load_mean_params(data_dir / "smpl_mean_params.npz"),
    )


def load_model(data_dir=None, *, vibe_checkpoint=None, spin_checkpoint=None, device="cpu") -> VIBE:
    """The VIBE network in eval mode with the official checkpoints loaded (see module docstring)."""
    from .. import checkpoints
    from ..data import bundle

    data_dir = bundle.resolve_data_dir(data_dir)
    vibe_checkpoint = Path(vibe_checkpoint) if vibe_checkpoint else data_dir / bundle.VIBE_CHECKPOINT
    spin_checkpoint = Path(spin_checkpoint) if spin_checkpoint else data_dir / bundle.SPIN_CHECKPOINT
    bundle.require_files(data_dir, bundle.MODEL_FILES, extra_paths=(vibe_checkpoint, spin_checkpoint))

    model = build_model(data_dir)
    checkpoints.load_spin_into(model, checkpoints.load_spin_checkpoint(spin_checkpoint), source=spin_checkpoint)
    vibe = checkpoints.load_vibe_checkpoint(vibe_checkpoint)
    checkpoints.load_vibe_into(model, vibe["gen_state_dict"], source=vibe_checkpoint)
    model.model_name = vibe_checkpoint.name.removesuffix(".pth.tar")
    model.performance = vibe.get("performance")
    h36m = data_dir / bundle.H36M_REGRESSOR
    model.register_buffer("j_regressor_h36m", torch.from_numpy(load_joint_regressor(h36m, 17))
                          if h36m.exists() else None, persistent=False)
    return model.to(device).eval()

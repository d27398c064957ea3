"""VIBE Mocap inference server: the VIBE model, the video pipeline, the HTTP API, training and evaluation.

Top-level Python API (see docs/python_api.md)::

    from vibe_server import load_model
    model = load_model()                      # model-data folder: flag > $VIBE_DATA_DIR > user default
    out = model(images)                       # images (N, T, 3, 224, 224), ImageNet-normalised RGB crops
    out["theta"]                              # (N, T, 85) = [cam s, tx, ty | 72 axis-angle | 10 betas]

Heavy imports (torch, smplx) happen on first use, so ``import vibe_server`` stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__version__ = "0.1.0"
__all__ = ["load_model", "__version__"]


def load_model(
    data_dir: str | os.PathLike | None = None,
    *,
    vibe_checkpoint: str | os.PathLike | None = None,
    spin_checkpoint: str | os.PathLike | None = None,
    device: str = "cpu",
) -> torch.nn.Module:
    """The VIBE network in eval mode, with the official checkpoints loaded unchanged.

    data_dir: model-data folder (None: $VIBE_DATA_DIR, then the platform default).
    vibe_checkpoint / spin_checkpoint: override the files in data_dir.
    Returns a ``torch.nn.Module``; see :class:`vibe_server.model.vibe.VIBE`.
    """
    from .data.loading import load_model as _load_model  # start-up: `import vibe_server` must not import torch

    return _load_model(data_dir, vibe_checkpoint=vibe_checkpoint, spin_checkpoint=spin_checkpoint, device=device)

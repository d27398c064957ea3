"""VIBE's temporal encoder (``lib/models/vibe.py: TemporalEncoder``): a GRU over per-frame features.

features (N, T, 2048) -> GRU (2 layers, 1024, unidirectional) -> ReLU -> Linear(1024 -> 2048)
-> + features (residual) -> (N, T, 2048). Frame t sees frames <= t only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .backbone import FEATURE_DIM


class TemporalEncoder(nn.Module):
    def __init__(
        self,
        n_layers: int = 2,
        hidden_size: int = 1024,
        add_linear: bool = True,
        use_residual: bool = True,
        bidirectional: bool = False,
    ):
        super().__init__()
        self.gru = nn.GRU(
            input_size=FEATURE_DIM, hidden_size=hidden_size, bidirectional=bidirectional, num_layers=n_layers
        )
        out_size = hidden_size * (2 if bidirectional else 1)
        self.linear = nn.Linear(out_size, FEATURE_DIM) if add_linear else None
        self.use_residual = use_residual

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, T, 2048), h0 (layers, N, hidden) or None (zeros) -> (y (N, T, 2048), h_T).

        Passing the returned state as ``h0`` of the next chunk makes a long sequence processed in
        chunks identical to one pass (the official demo starts each 450-frame chunk from zeros).
        """
        n, t, f = x.shape
        x = x.permute(1, 0, 2)  # (T, N, F): the GRU is sequence-first
        y, h_t = self.gru(x, h0)
        if self.linear is not None:
            y = self.linear(F.relu(y).reshape(-1, y.size(-1))).view(t, n, f)
        if self.use_residual and y.shape[-1] == FEATURE_DIM:
            y = y + x
        return y.permute(1, 0, 2), h_t  # (N, T, F)

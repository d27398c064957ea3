"""The motion discriminator D_M: is a 16-frame sequence of body poses real (AMASS) or generated?

Official release (`config.yaml`): GRU 69 -> 1024 x 2 layers over the body pose theta[6:75] (23 joints
axis-angle, no camera, no global orientation), self-attention pooling over time (3 layers, 1024,
tanh, dropout 0.2), then `fc` 1024 -> 1. State-dict keys match the released `disc_motion_state_dict`:
`gru.*`, `attention.attention.{0,3,6}.*`, `fc.*`. The paper's variant pools the hidden states by
average and max and concatenates them (`feature_pool="concat"`, `fc` 2048 -> 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BODY_POSE_SLICE = slice(6, 75)  # theta = [cam 3 | global orient 3 | body pose 69 | betas 10]


class SelfAttention(nn.Module):
    """Scores each time step with an MLP, softmax over time, weighted sum of the inputs.

    Layout as in the release: (layers - 1) x [Linear(H, H), tanh, Dropout] + [Linear(H, 1), tanh,
    Dropout], so the Linear layers sit at indices 0, 3, 6 of `attention`."""

    def __init__(self, attention_size: int = 1024, layers: int = 3, dropout: float = 0.2):
        super().__init__()
        modules: list[nn.Module] = []
        for _ in range(layers - 1):
            modules += [nn.Linear(attention_size, attention_size), nn.Tanh(), nn.Dropout(dropout)]
        modules += [nn.Linear(attention_size, 1), nn.Tanh(), nn.Dropout(dropout)]
        self.attention = nn.Sequential(*modules)
        for module in self.attention:
            if isinstance(module, nn.Linear):  # the release's init
                nn.init.uniform_(module.weight, -0.1, 0.1)
                nn.init.constant_(module.bias, 0.01)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (N, T, H) -> pooled (N, H), attention weights (N, T)."""
        scores = torch.softmax(self.attention(inputs).squeeze(-1), dim=-1)  # (N, T)
        pooled = (inputs * scores.unsqueeze(-1)).sum(dim=1)
        return pooled, scores


class MotionDiscriminator(nn.Module):
    """body_pose (N, T, 69) axis-angle -> realness score (N, 1) (LSGAN: real -> 1, fake -> 0)."""

    def __init__(
        self,
        rnn_size: int = 1024,
        input_size: int = 69,
        num_layers: int = 2,
        output_size: int = 1,
        feature_pool: str = "attention",
        attention_size: int = 1024,
        attention_layers: int = 3,
        attention_dropout: float = 0.2,
    ):
        super().__init__()
        if feature_pool not in ("attention", "concat", "last"):
            raise ValueError(f"feature_pool must be 'attention', 'concat' or 'last'; got {feature_pool!r}")
        if feature_pool == "attention" and attention_size != rnn_size:
            raise ValueError(
                f"attention_size ({attention_size}) must equal rnn_size ({rnn_size}): "
                "attention pools the GRU's hidden states"
            )
        self.feature_pool = feature_pool
        self.gru = nn.GRU(input_size, rnn_size, num_layers=num_layers)  # sequence-first, as released
        if feature_pool == "attention":
            self.attention = SelfAttention(attention_size, attention_layers, attention_dropout)
        self.fc = nn.Linear(rnn_size * 2 if feature_pool == "concat" else rnn_size, output_size)

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.gru(body_pose.transpose(0, 1))  # (T, N, H)
        if self.feature_pool == "attention":
            pooled, _ = self.attention(outputs.transpose(0, 1))  # (N, H)
        elif self.feature_pool == "concat":
            outputs = F.relu(outputs)
            pooled = torch.cat([outputs.mean(dim=0), outputs.amax(dim=0)], dim=1)  # (N, 2H)
        else:
            pooled = outputs[-1]
        return self.fc(pooled)

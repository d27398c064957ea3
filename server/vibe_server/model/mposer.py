"""MPoser: a sequential VAE of body motion, the paper's ablation alternative to the motion discriminator.

The paper describes it only in outline (VPoser extended to sequences: trained on AMASS, GRU encoder
and decoder, one latent z_t in R^32 per time step, used as a prior by adding |z| of the encoded
predicted sequence to the generator loss). No official code exists; the choices here are ours:
- input = the 69-d body pose theta[6:75] (what D_M sees), T-frame windows;
- encoder: bidirectional GRU, so q(z_t | x_1..T) sees the whole window, then Linear -> (mu, logvar);
- decoder: unidirectional GRU over z_1..t, then Linear -> x_t;
- loss = reconstruction MSE * 4 + KL(q || N(0, I)) * 0.005 (VPoser V02_05 weights);
- prior loss = mean over frames of |mu_t|_2 (the mean, not a sample: a deterministic regulariser).
"""

from __future__ import annotations

import torch
from torch import nn


class MPoser(nn.Module):
    """body_pose (N, T, 69) -> reconstruction (N, T, 69), mu (N, T, Z), logvar (N, T, Z)."""

    def __init__(self, input_size: int = 69, hidden_size: int = 512, latent_size: int = 32, num_layers: int = 2):
        super().__init__()
        self.encoder_gru = nn.GRU(input_size, hidden_size, num_layers=num_layers, batch_first=True, bidirectional=True)
        self.encoder_out = nn.Linear(2 * hidden_size, 2 * latent_size)
        self.decoder_gru = nn.GRU(latent_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.decoder_out = nn.Linear(hidden_size, input_size)
        self.latent_size = latent_size

    def encode(self, body_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """body_pose (N, T, 69) -> mu, logvar (N, T, Z)."""
        hidden, _ = self.encoder_gru(body_pose)  # (N, T, 2H)
        mu, logvar = self.encoder_out(hidden).chunk(2, dim=-1)
        return mu, logvar.clamp(-20.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, T, Z) -> body_pose (N, T, 69)."""
        hidden, _ = self.decoder_gru(z)
        return self.decoder_out(hidden)

    def forward(self, body_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(body_pose)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, seqlen: int) -> torch.Tensor:
        """-> (n, seqlen, 69) body poses decoded from z ~ N(0, I)."""
        z = torch.randn(n, seqlen, self.latent_size, device=self.decoder_out.weight.device)
        return self.decode(z)


def mposer_vae_loss(
    reconstruction: torch.Tensor,
    body_pose: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    reconstruction_weight: float = 4.0,
    kl_weight: float = 0.005,
) -> dict[str, torch.Tensor]:
    """All (N, T, .) -> `loss_recon`, `loss_kl` (each weighted) and their sum `loss`."""
    recon = ((reconstruction - body_pose) ** 2).mean() * reconstruction_weight
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=-1)).mean() * kl_weight
    return {"loss_recon": recon, "loss_kl": kl, "loss": recon + kl}


def mposer_prior_loss(mposer: MPoser, body_pose: torch.Tensor) -> torch.Tensor:
    """body_pose (N, T, 69) generated -> mean |mu_t|_2, differentiable w.r.t. body_pose only
    (the prior is frozen: its parameters should have requires_grad False)."""
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN's GRU backward refuses eval mode
        mu, _ = mposer.encode(body_pose)
    return mu.norm(dim=-1).mean()

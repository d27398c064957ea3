"""Motion discriminator: the released key names and shapes, both pooling variants, and that it
learns to tell smooth motion from noise."""

import pytest
import torch

from vibe_server.model.discriminator import MotionDiscriminator

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


RELEASED_SHAPES = {
    "gru.weight_ih_l0": (3072, 69),
    "gru.weight_hh_l0": (3072, 1024),
    "gru.bias_ih_l0": (3072,),
    "gru.bias_hh_l0": (3072,),
    "gru.weight_ih_l1": (3072, 1024),
    "gru.weight_hh_l1": (3072, 1024),
    "gru.bias_ih_l1": (3072,),
    "gru.bias_hh_l1": (3072,),
    "attention.attention.0.weight": (1024, 1024),
    "attention.attention.0.bias": (1024,),
    "attention.attention.3.weight": (1024, 1024),
    "attention.attention.3.bias": (1024,),
    "attention.attention.6.weight": (1, 1024),
    "attention.attention.6.bias": (1,),
    "fc.weight": (1, 1024),
    "fc.bias": (1,),
}


def test_official_sizes_have_the_released_keys_and_shapes():
    disc = MotionDiscriminator()
    shapes = {k: tuple(v.shape) for k, v in disc.state_dict().items()}
    assert shapes == RELEASED_SHAPES
    assert sum(v.numel() for v in disc.state_dict().values()) == 11_762_690


@pytest.mark.parametrize("pool, fc_in", [("attention", 32), ("concat", 64), ("last", 32)])
def test_pooling_variants_give_one_score_per_sequence(pool, fc_in):
    disc = MotionDiscriminator(rnn_size=32, attention_size=32, feature_pool=pool)
    assert disc.fc.in_features == fc_in
    assert disc(torch.randn(5, 16, 69)).shape == (5, 1)
    assert disc(torch.randn(1, 16, 69)).shape == (1, 1)  # batch of one keeps its batch axis


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="feature_pool"):
        MotionDiscriminator(feature_pool="mean")
    with pytest.raises(ValueError, match="attention_size"):
        MotionDiscriminator(rnn_size=32, attention_size=64)


def smooth_motion(n, t=16, generator=None):
    """(n, t, 69) sinusoidal joint angles: what real motion looks like to a tiny D."""
    phase = torch.rand(n, 1, 69, generator=generator) * 6.28
    freq = 0.1 + 0.2 * torch.rand(n, 1, 69, generator=generator)
    amp = 0.5 * torch.rand(n, 1, 69, generator=generator)
    return amp * torch.sin(freq * torch.arange(t).view(1, t, 1) + phase)


@pytest.mark.parametrize("pool", ["attention", "concat"])
def test_discriminator_learns_real_motion_from_noise(pool):
    from vibe_server.train.losses import discriminator_loss

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    disc = MotionDiscriminator(rnn_size=32, attention_size=32, feature_pool=pool, attention_dropout=0.0)
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3)
    for _ in range(60):
        real, fake = smooth_motion(32, generator=g), 0.5 * torch.randn(32, 16, 69, generator=g)
        _, _, loss = discriminator_loss(disc(real), disc(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
    disc.eval()
    with torch.no_grad():
        real_score = disc(smooth_motion(64, generator=g)).mean().item()
        fake_score = disc(0.5 * torch.randn(64, 16, 69, generator=g)).mean().item()
    print(f"D({pool}) after 60 steps: real motion {real_score:.3f}, noise {fake_score:.3f}")
    assert real_score > 0.8 and fake_score < 0.2, (real_score, fake_score)

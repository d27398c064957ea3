"""MPoser: the sequential VAE learns AMASS-like motion, round-trips through its checkpoint, and its
prior loss drives the generator's motion and nothing else."""

import pytest
import torch

from vibe_blender.core.errors import VibeError
from vibe_server.model.mposer import MPoser, mposer_prior_loss, mposer_vae_loss
from vibe_server.train.config import MPoserConfig, parse_overrides
from vibe_server.train.mposer import load_mposer, train_mposer
from vibe_server.train.synthetic_db import write_synthetic_db

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def test_shapes_one_latent_per_frame():
    assert MPoser().latent_size == 32  # the paper's z_t in R^32
    model = MPoser(hidden_size=16, latent_size=8)
    reconstruction, mu, logvar = model(torch.randn(3, 16, 69))
    assert reconstruction.shape == (3, 16, 69) and mu.shape == logvar.shape == (3, 16, 8)
    assert model.sample(2, 16).shape == (2, 16, 69)
    losses = mposer_vae_loss(reconstruction, torch.randn(3, 16, 69), mu, logvar)
    assert set(losses) == {"loss_recon", "loss_kl", "loss"} and losses["loss_kl"] >= 0


def test_reconstruction_error_falls_and_checkpoint_round_trips(tmp_path):
    db = write_synthetic_db(tmp_path / "db")
    config = parse_overrides(
        MPoserConfig,
        [
            f"--db_dir={db}",
            f"--out_dir={tmp_path / 'mposer'}",
            "--hidden_size=32",
            "--latent_size=8",
            "--batch_size=2",
            "--epochs=15",
            "--lr=1e-2",
            "--num_workers=0",
            "--device=cpu",
            "--val_fraction=0.34",
        ],
    )
    history = train_mposer(config)["history"]
    first, last = history[0]["train_recon"], history[-1]["train_recon"]
    print(
        f"mposer train reconstruction {first:.4f} -> {last:.4f}; val {history[0]['val_recon']:.4f} -> "
        f"{history[-1]['val_recon']:.4f}"
    )
    assert last < 0.7 * first

    model = load_mposer(tmp_path / "mposer" / "mposer.pth.tar")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.latent_size == 8

    config.epochs = 16  # resumes: only one more epoch runs
    assert len(train_mposer(config)["history"]) == 1


def test_prior_loss_gives_gradient_to_the_motion_only():
    prior = MPoser(hidden_size=16, latent_size=8).eval().requires_grad_(False)
    motion = torch.randn(2, 16, 69, requires_grad=True)
    loss = mposer_prior_loss(prior, motion)
    loss.backward()
    assert loss > 0 and motion.grad is not None and motion.grad.abs().sum() > 0
    assert all(p.grad is None for p in prior.parameters())


def test_training_vibe_with_the_mposer_prior(tmp_path, synthetic_bundle):
    """motion_prior=mposer: the loss has loss_mposer, no discriminator is built or saved."""
    import csv

    from vibe_server.train.config import TrainConfig
    from vibe_server.train.train import train

    db = write_synthetic_db(tmp_path / "db")
    train_mposer(
        parse_overrides(
            MPoserConfig,
            [
                f"--db_dir={db}",
                f"--out_dir={tmp_path / 'mp'}",
                "--hidden_size=16",
                "--latent_size=8",
                "--epochs=1",
                "--num_workers=0",
                "--device=cpu",
            ],
        )
    )
    data = synthetic_bundle
    config = parse_overrides(
        TrainConfig,
        [
            f"--db_dir={db}",
            f"--model_data_dir={data}",
            f"--out_dir={tmp_path / 'vibe'}",
            "--motion_prior=mposer",
            f"--mposer_checkpoint={tmp_path / 'mp' / 'mposer.pth.tar'}",
            "--datasets_2d=",
            "--datasets_3d=mpii3d",
            "--dataset_val=none",
            "--batch_size=2",
            "--epochs=1",
            "--iters_per_epoch=2",
            "--num_workers=0",
            "--device=cpu",
            "--log_interval=1",
        ],
    )
    summary = train(config)
    assert "loss_mposer" in summary["last_losses"] and "d_m_disc_loss" not in summary["last_losses"]
    with open(tmp_path / "vibe" / "train_log.csv") as f:
        assert all(float(r["loss_mposer"]) > 0 for r in csv.DictReader(f))
    ckpt = torch.load(tmp_path / "vibe" / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["disc_motion_state_dict"] is None


def test_missing_or_wrong_checkpoint_is_explained(tmp_path):
    with pytest.raises(VibeError, match="not found"):
        load_mposer(tmp_path / "none.pth.tar")
    torch.save({"weights": 1}, tmp_path / "other.pth.tar")
    with pytest.raises(VibeError, match="not an MPoser checkpoint"):
        load_mposer(tmp_path / "other.pth.tar")

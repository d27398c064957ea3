"""Train MPoser, the sequential motion VAE, on AMASS windows (one process; it is small).

    vibe-mocap train mposer --db_dir=data/vibe_db --out_dir=runs/mposer

Then train VIBE with it as the motion prior (the discriminator is then off):
    vibe-mocap train vibe --motion_prior=mposer --mposer_checkpoint=runs/mposer/mposer.pth.tar

Writes out_dir/mposer.pth.tar (`model`, `optimizer`, `scheduler`, `epoch`, `best_val_loss`, `config`)
and out_dir/mposer_log.csv; re-running resumes after the last finished epoch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from vibe_blender.core.errors import VibeError

from ..model.discriminator import BODY_POSE_SLICE
from ..model.mposer import MPoser, mposer_vae_loss
from .config import MPoserConfig, config_from_dict, parse_overrides
from .datasets import SequenceDataset
from .run_log import append_csv, log, show_progress_on_console

LOG_COLUMNS = ("epoch", "train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl", "lr", "time_s")


def split_by_sequence(dataset: SequenceDataset, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Hold out whole AMASS sequences (never windows of a training sequence) for validation."""
    names = sorted({dataset.window_track(i) for i in range(len(dataset))})
    rng = np.random.default_rng(seed)
    n_val = max(1, round(len(names) * val_fraction)) if len(names) > 1 else 0
    held_out = set(rng.choice(names, size=n_val, replace=False)) if n_val else set()
    train_idx = [i for i in range(len(dataset)) if dataset.window_track(i) not in held_out]
    val_idx = [i for i in range(len(dataset)) if dataset.window_track(i) in held_out]
    return Subset(dataset, train_idx), Subset(dataset, val_idx)


def run_epoch(
    model: MPoser,
    loader: DataLoader,
    config: MPoserConfig,
    device: str | torch.device,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict:
    """One pass; trains when an optimizer is given. -> mean 'loss', 'loss_recon', 'loss_kl'."""
    model.train(optimizer is not None)
    totals, count = {"loss": 0.0, "loss_recon": 0.0, "loss_kl": 0.0}, 0
    with torch.set_grad_enabled(optimizer is not None):
        for batch in loader:
            body_pose = batch["theta"][:, :, BODY_POSE_SLICE].to(device)
            reconstruction, mu, logvar = model(body_pose)
            losses = mposer_vae_loss(reconstruction, body_pose, mu, logvar, config.reconstruction_w, config.kl_w)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                optimizer.step()
            for k in totals:
                totals[k] += losses[k].item() * len(body_pose)
            count += len(body_pose)
    return {k: v / max(count, 1) for k, v in totals.items()}


def train_mposer(config: MPoserConfig) -> dict:
    """-> {'history': [per-epoch dicts], 'checkpoint': path}."""
    device = torch.device(
        "cuda"
        if config.device == "auto" and torch.cuda.is_available()
        else ("cpu" if config.device == "auto" else config.device)
    )
    torch.manual_seed(config.seed)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = SequenceDataset(config.db_dir, "amass", "train", seqlen=config.seqlen)
    train_set, val_set = split_by_sequence(dataset, config.val_fraction, config.seed)
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, num_workers=config.num_workers)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, num_workers=config.num_workers)

    model = MPoser(hidden_size=config.hidden_size, latent_size=config.latent_size, num_layers=config.num_layers).to(
        device
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.1, patience=config.lr_patience
    )
    checkpoint_path = out_dir / "mposer.pth.tar"
    start_epoch, best_val_loss = 0, math.inf
    if config.resume and checkpoint_path.exists():
        ckpt = torch.load(checkpoint_path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best_val_loss = ckpt["epoch"] + 1, ckpt["best_val_loss"]
        log.info(f"resumed from {checkpoint_path} at epoch {start_epoch}")

    history = []
    for epoch in range(start_epoch, config.epochs):
        started = time.time()
        train_stats = run_epoch(model, train_loader, config, device, optimizer)
        val_stats = run_epoch(model, val_loader, config, device) if len(val_set) else train_stats
        scheduler.step(val_stats["loss"])
        best_val_loss = min(best_val_loss, val_stats["loss"])
        row = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "time_s": f"{time.time() - started:.2f}",
            **{f"train_{k.removeprefix('loss_')}": v for k, v in train_stats.items()},
            **{f"val_{k.removeprefix('loss_')}": v for k, v in val_stats.items()},
        }
        history.append(row)
        append_csv(out_dir / "mposer_log.csv", LOG_COLUMNS, row)
        if epoch % config.log_interval == 0 or epoch == config.epochs - 1:
            log.info(
                f"mposer epoch {epoch}: train {train_stats['loss']:.4f} "
                f"(recon {train_stats['loss_recon']:.4f}) val {val_stats['loss']:.4f}"
            )
        tmp = checkpoint_path.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "best_val_loss": best_val_loss,
                "config": dataclasses.asdict(config),
            },
            tmp,
        )
        os.replace(tmp, checkpoint_path)
    return {"history": history, "checkpoint": checkpoint_path}


def load_mposer(path: str | Path, device: str | torch.device = "cpu") -> MPoser:
    """A trained MPoser, frozen (eval mode, no gradients to its parameters), for the prior loss."""
    if not path or not Path(path).is_file():
        raise VibeError(
            f"MPoser checkpoint {path!r} not found. Train one with 'vibe-mocap train mposer' "
            "and pass it as --mposer_checkpoint."
        )
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise VibeError(f"{path} is not an MPoser checkpoint (written by 'vibe-mocap train mposer').")
    config = config_from_dict(MPoserConfig, ckpt["config"])
    model = MPoser(hidden_size=config.hidden_size, latent_size=config.latent_size, num_layers=config.num_layers)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval().requires_grad_(False)


def main(argv: list[str] | None = None) -> int:
    show_progress_on_console()
    train_mposer(parse_overrides(MPoserConfig, sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

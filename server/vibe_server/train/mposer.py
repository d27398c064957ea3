"""Train MPoser, the sequential motion VAE, on AMASS windows (one process; it is small).

    vibe-mocap train mposer --db_dir=data/vibe_db --out_dir=runs/mposer

Then train VIBE with it as the motion prior (the discriminator is then off):
    vibe-mocap train vibe --motion_prior=mposer --mposer_checkpoint=runs/mposer/mposer.pth.tar

Writes out_dir/mposer.pth.tar (`model`, `optimizer`, `scheduler`, `epoch`, `best_val_loss`, `config`,
`random`: the random states, so a resumed run draws on as the stopped one would have; renamed into
place once whole) and out_dir/mposer_log.csv, one run at a time per out_dir; re-running
resumes after the last finished epoch (with the same model settings); --resume=false starts over,
keeping the old log as mposer_log.prev.csv. A loss that is not a finite number stops the run with a
message.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from vibe_blender.core.atomic_file import atomic_write
from vibe_blender.core.errors import VibeError

from .. import checkpoints
from ..data.loading import resolve_device
from ..model.discriminator import BODY_POSE_SLICE
from ..model.mposer import MPoser, mposer_vae_loss
from .config import MPoserConfig, parse_overrides
from .datasets import SequenceDataset
from .out_dir import (
    START_AFRESH,
    check_same_settings,
    is_best_value,
    keep_old_run,
    load_optimizer,
    load_state,
    read_checkpoint,
    run_in_out_dir,
    take_changed_rates,
)
from .resume_state import random_states, restore_random_states
from .run_log import append_csv, forget_logged_steps, log, refuse_to_run_as_a_script, show_progress_on_console
from .stop_signals import StopSafeLoader, exit_status

LOG_COLUMNS = ("epoch", "train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl", "lr", "time_s")
MODEL_SETTINGS = ("hidden_size", "latent_size", "num_layers")  # what shapes the saved weights
# settings that a resumed run's optimiser and scheduler states would otherwise overrule
RATES = {"lr": "lr", "weight_decay": "weight_decay", "patience": "lr_patience"}
WHAT = "MPoser checkpoint"
CHECKPOINT_NAME = "mposer.pth.tar"


def split_by_sequence(dataset: SequenceDataset, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Hold out whole AMASS sequences (never windows of a training sequence) for validation: at least
    one when ``val_fraction`` > 0, but never all (at least one is kept to train on, so with a single
    sequence none is held out); none when it is 0."""
    names = sorted({dataset.window_track(i) for i in range(len(dataset))})
    rng = np.random.default_rng(seed)
    most = len(names) - 1  # one sequence at least is kept to train on
    n_val = min(max(1, round(len(names) * val_fraction)), most) if val_fraction > 0 and most > 0 else 0
    if val_fraction > 0 and len(names) == 1:
        log.warning("Only one AMASS sequence: none can be held out for validation, so it trains without one.")
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
    epoch: int = 0,
) -> dict:
    """One pass; trains when an optimizer is given. -> mean 'loss', 'loss_recon', 'loss_kl'."""
    model.train(optimizer is not None)
    totals, count = {"loss": 0.0, "loss_recon": 0.0, "loss_kl": 0.0}, 0
    with torch.set_grad_enabled(optimizer is not None):
        for batch in loader:
            body_pose = batch["theta"][:, :, BODY_POSE_SLICE].to(device)
            reconstruction, mu, logvar = model(body_pose)
            losses = mposer_vae_loss(reconstruction, body_pose, mu, logvar, config.reconstruction_w, config.kl_w)
            if not torch.isfinite(losses["loss"]):
                raise VibeError(
                    f"The MPoser loss became {losses['loss'].item()} at epoch {epoch}; lower --lr or check the data."
                )
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                optimizer.step()
            for k in totals:
                totals[k] += losses[k].item() * len(body_pose)
            count += len(body_pose)
    return {k: v / max(count, 1) for k, v in totals.items()}


def read_resume_checkpoint(config: MPoserConfig, path: Path) -> dict | None:
    """The out_dir's checkpoint when the run resumes from it (checked against the settings), else None."""
    if not (config.resume and path.exists()):
        return None
    ckpt = read_checkpoint(path, lambda p: checkpoints.torch_load(p, WHAT))
    if (
        not isinstance(ckpt, dict)
        or not {"model", "optimizer", "scheduler", "epoch", "best_val_loss"} <= set(ckpt)
        or type(ckpt["epoch"]) is not int
        or ckpt["epoch"] < 0
        or not isinstance(ckpt["best_val_loss"], float)  # inf before any validation: a float too
    ):
        raise VibeError(
            f"Cannot resume from '{path}': it is not a checkpoint of 'vibe-mocap train mposer'. {START_AFRESH}"
        )
    if not is_best_value(ckpt["best_val_loss"]):
        raise VibeError(
            f"Cannot resume from '{path}': its best_val_loss ({ckpt['best_val_loss']}) is no loss (0 or more, inf "
            f"before any validation), so it is damaged. {START_AFRESH}"
        )
    check_same_settings(path, ckpt.get("config"), config, MODEL_SETTINGS)
    return ckpt


def train_mposer(config: MPoserConfig) -> dict:
    """-> {'history': [per-epoch dicts], 'checkpoint': path}."""
    refuse_several_processes()
    device = torch.device(resolve_device(config.device))
    torch.manual_seed(config.seed)
    out_dir = Path(config.out_dir)
    with run_in_out_dir(out_dir, [CHECKPOINT_NAME], log.info):
        return _train_mposer_in(out_dir, config, device)


def refuse_several_processes() -> None:
    """VibeError under torchrun with more than one process: MPoser trains in one (it has no code to
    share the work, and each process would try to hold the same out_dir)."""
    world_size, rank = os.environ.get("WORLD_SIZE", "1").strip(), os.environ.get("RANK", "0").strip()
    if world_size not in ("", "1") or rank not in ("", "0"):
        raise VibeError(
            f"MPoser trains in one process, and this is one of several (torchrun: WORLD_SIZE={world_size}, "
            f"RANK={rank}). Run 'vibe-mocap train mposer --key=value ...' without torchrun."
        )


def _train_mposer_in(out_dir: Path, config: MPoserConfig, device: torch.device) -> dict:
    """train_mposer once this process holds ``out_dir``."""
    checkpoint_path = out_dir / CHECKPOINT_NAME
    ckpt = read_resume_checkpoint(config, checkpoint_path)
    start_epoch, best_val_loss = 0, math.inf
    if ckpt is not None:
        start_epoch, best_val_loss = ckpt["epoch"] + 1, ckpt["best_val_loss"]
        if start_epoch >= config.epochs:
            log.info(
                f"all {config.epochs} epochs are done in {out_dir} ({CHECKPOINT_NAME} is after epoch "
                f"{start_epoch - 1}); raise --epochs to train longer, or start over with --resume=false"
            )
            return {"history": [], "checkpoint": checkpoint_path}
    dataset = SequenceDataset(config.db_dir, "amass", "train", seqlen=config.seqlen)
    train_set, val_set = split_by_sequence(dataset, config.val_fraction, config.seed)
    # shuffled anew each epoch by (seed, epoch), not by the run's random state: a resumed run takes the next one
    sampler = DistributedSampler(train_set, num_replicas=1, rank=0, shuffle=True, seed=config.seed)
    train_loader = StopSafeLoader(
        train_set, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers
    )
    val_loader = StopSafeLoader(val_set, batch_size=config.batch_size, num_workers=config.num_workers)
    if ckpt is None:
        keep_old_run(out_dir, [CHECKPOINT_NAME], ["mposer_log.csv"], log.info)

    model = MPoser(hidden_size=config.hidden_size, latent_size=config.latent_size, num_layers=config.num_layers).to(
        device
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.1, patience=config.lr_patience
    )
    if ckpt is not None:
        load_state(model, ckpt["model"], checkpoint_path, "MPoser")
        load_optimizer(optimizer, ckpt["optimizer"], checkpoint_path, "optimiser")
        load_optimizer(scheduler, ckpt["scheduler"], checkpoint_path, "scheduler")
        take_changed_rates(ckpt.get("config"), config, optimizer, scheduler, RATES, log.info)
        log.info(f"resumed from {checkpoint_path} at epoch {start_epoch}")
        forget_logged_steps(out_dir, ("mposer_log.csv",), start_epoch, log.info)
        if not restore_random_states(ckpt.get("random")):
            log.info(
                "the checkpoint's random states are missing (an older run's) or cannot be set here (damaged, or "
                "saved with another number of GPUs), so the run cannot go on exactly as the stopped one would "
                "have: the data order does, the random numbers do not"
            )
        del ckpt

    history = []
    bar = tqdm(range(start_epoch, config.epochs), desc="mposer", unit="epoch", file=sys.stderr, dynamic_ncols=True)
    for epoch in bar:
        started = time.time()
        sampler.set_epoch(epoch)
        train_stats = run_epoch(model, train_loader, config, device, optimizer, epoch)
        if len(val_set):
            val_stats = run_epoch(model, val_loader, config, device, epoch=epoch)
            val_text, watched = f"{val_stats['loss']:.4f}", val_stats["loss"]
            best_val_loss = min(best_val_loss, watched)
        else:  # none held out (--val_fraction=0): no validation figures; the schedule watches the training loss
            val_stats = dict.fromkeys(train_stats, math.nan)
            val_text, watched = "n/a", train_stats["loss"]
        bar.set_postfix(train=f"{train_stats['loss']:.4f}", val=val_text, refresh=False)
        scheduler.step(watched)
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
                f"(recon {train_stats['loss_recon']:.4f}) val {val_text}"
            )
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "best_val_loss": best_val_loss,
            "config": dataclasses.asdict(config),
            "random": random_states(),  # a resumed run goes on with the random numbers where this one is
        }
        atomic_write(checkpoint_path, functools.partial(torch.save, state))  # an interrupted write keeps the last
    bar.close()
    return {"history": history, "checkpoint": checkpoint_path}


def require_mposer_checkpoint(path: str | Path) -> None:
    """VibeError unless ``path`` (--mposer_checkpoint) is a file."""
    if not path or not Path(path).is_file():
        raise VibeError(
            f"MPoser checkpoint {str(path)!r} not found. Train one with 'vibe-mocap train mposer' "
            "and pass it as --mposer_checkpoint."
        )


def load_mposer(path: str | Path, device: str | torch.device = "cpu") -> MPoser:
    """A trained MPoser, frozen (eval mode, no gradients to its parameters), for the prior loss. Its
    sizes come from the shapes of its weights (the saved settings are not trusted), and it is built
    only when those weights are really in the file."""
    require_mposer_checkpoint(path)
    path = Path(path)
    written_by = "Pass the mposer.pth.tar that 'vibe-mocap train mposer' writes as --mposer_checkpoint."
    try:
        ckpt = checkpoints.torch_load(path, WHAT)
    except VibeError:
        raise VibeError(
            f"{path} is not a readable MPoser checkpoint (damaged, cut short or another kind of file). {written_by}"
        ) from None
    if isinstance(ckpt, dict) and "gen_state_dict" in ckpt:
        raise VibeError(f"{path} is not an MPoser checkpoint. It looks like a VIBE checkpoint. {written_by}")
    problem, sizes = _mposer_weights_problem(ckpt, path.stat().st_size)
    if problem:
        raise VibeError(f"{path} is not an MPoser checkpoint: {problem}. {written_by}")
    model = MPoser(**sizes)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval().requires_grad_(False)


def _mposer_weights_problem(ckpt: object, file_size: int) -> tuple[str | None, dict]:
    """(what is wrong with ``ckpt``'s weights or None, the MPoser sizes they have)."""
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        return "it holds no MPoser weights ('model')", {}
    if not all(isinstance(v, torch.Tensor) and v.is_floating_point() for v in state.values()):
        return "its 'model' holds other things than weight tensors", {}
    stored = checkpoints.stored_tensors_problem(state, file_size)
    if stored:  # e.g. shapes over a few shared bytes: never allocate what the file does not hold
        return f"its 'model' holds {stored} (an altered file)", {}
    if not all(bool(torch.isfinite(v).all()) for v in state.values()):
        return "some of its weights are not finite numbers", {}
    encoder_in, decoder_in = state.get("encoder_gru.weight_ih_l0"), state.get("decoder_gru.weight_ih_l0")
    if encoder_in is None or decoder_in is None or encoder_in.dim() != 2 or decoder_in.dim() != 2:
        return "it has no GRU encoder and decoder weights", {}
    layers = sum(1 for key in state if key.startswith("decoder_gru.weight_ih_l"))
    sizes = {"hidden_size": encoder_in.shape[0] // 3, "latent_size": decoder_in.shape[1], "num_layers": layers}
    if min(sizes.values()) < 1:
        return "its GRU weights are empty", {}
    with torch.device("meta"):  # the expected shapes, without allocating them
        expected = {k: v.shape for k, v in MPoser(**sizes).state_dict().items()}
    mismatch = checkpoints.state_dict_mismatch(expected, state)
    return (f"its weights do not fit together: {mismatch}" if mismatch else None), sizes


def main(argv: list[str]) -> int:
    """``vibe-mocap train mposer`` with these ``--key=value`` settings."""
    show_progress_on_console()
    return exit_status(lambda: train_mposer(parse_overrides(MPoserConfig, argv)))


if __name__ == "__main__":
    refuse_to_run_as_a_script("mposer", torchrun=False)

"""Train VIBE: the temporal generator against the motion discriminator (or the MPoser prior), on the
original's preprocessed database files. One loop, read top to bottom.

One process (GPU if there is one):
    vibe-mocap train vibe --db_dir=data/vibe_db --out_dir=runs/vibe
One node, 4 GPUs (batch sizes are per process):
    torchrun --standalone --nproc_per_node=4 -m vibe_server train vibe --db_dir=data/vibe_db
Two CPU processes (gloo), e.g. a smoke test:
    torchrun --standalone --nproc_per_node=2 -m vibe_server train vibe --device=cpu --num_workers=0 ...

Every setting is a field of `TrainConfig` (official values as defaults), given as --key=value.
Writes into out_dir, one run at a time: checkpoint.pth.tar (every epoch; the official VIBE container
plus `config`, schedulers and best value, so `vibe_server.load_model(vibe_checkpoint=...)` reads it
unchanged), model_best.pth.tar (lowest validation PA-MPJPE), train_log.csv (losses), val_log.csv
(metrics); each checkpoint is written under a temporary name and renamed, so an interrupted write
keeps the last, and model_best.pth.tar before the checkpoint that records its value.
Re-running the same command resumes after the last finished epoch (with the same model settings and
validation set); --resume=false starts over, keeping the old checkpoints and logs as *.prev.pth.tar, *.prev.csv and
tensorboard.prev.
A run stopped by --abort_pa_mpjpe_mm fails, and so does re-running it until that limit is raised.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch.distributed import (
    ReduceOp,
    all_gather_object,
    all_reduce,
    barrier,
    broadcast,
    destroy_process_group,
    init_process_group,
)
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import ConcatDataset, DataLoader
from tqdm import tqdm

from vibe_blender.core.atomic_file import atomic_save, atomic_write
from vibe_blender.core.errors import VibeError

from .. import checkpoints
from ..data import loading
from ..evaluate.evaluate import evaluate_generator
from ..model.discriminator import BODY_POSE_SLICE, MotionDiscriminator
from ..model.mposer import mposer_prior_loss
from .config import TrainConfig, dataset_val_name, parse_overrides, split_list
from .datasets import SequenceDataset, spec_for
from .generator import build_generator
from .losses import discriminator_loss, generator_adversarial_loss, generator_losses
from .mposer import load_mposer, require_mposer_checkpoint
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
from .resume_state import Batches, ResumableSampler, position_of, random_states, restore_random_states
from .run_log import append_csv, forget_logged_steps, log, refuse_to_run_as_a_script, show_progress_on_console
from .stop_signals import SameInEveryProcess, StopSafeLoader, alike_in_every_process, exit_status

# The SMPL buffers are constants: DDP need not re-broadcast them every step (option renamed in torch 2.13).
NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DDP).parameters
    else {"broadcast_buffers": False}
)
LOSS_COLUMNS = (
    "loss_kp_2d",
    "loss_kp_3d",
    "loss_pose",
    "loss_shape",
    "e_m_disc_loss",
    "loss_mposer",
    "gen_loss",
    "d_m_disc_real",
    "d_m_disc_fake",
    "d_m_disc_loss",
)
VAL_COLUMNS = ("epoch", "mpjpe", "pa_mpjpe", "pve", "accel", "accel_err", "gen_lr", "disc_lr")
LOGS = ("train_log.csv", "val_log.csv", "tensorboard")  # the last is TensorBoard's event folder
CHECKPOINT_NAME, BEST_NAME = "checkpoint.pth.tar", "model_best.pth.tar"
# the settings a resumed run must keep: what the model was trained as, and what its best was measured on
RUN_SETTINGS = ("motion_prior", "dataset_val")
# the settings that shape the saved motion discriminator (a resumed run must keep them)
DISC_SETTINGS = ("disc_hidden", "disc_layers", "disc_feature_pool", "disc_attention_size", "disc_attention_layers")
# settings that a resumed run's optimiser and scheduler states would otherwise overrule (out_dir.take_changed_rates)
GEN_RATES = {"lr": "gen_lr", "weight_decay": "gen_wd", "factor": "lr_factor", "patience": "lr_patience"}
DISC_RATES = {"lr": "disc_lr", "weight_decay": "disc_wd", "factor": "lr_factor", "patience": "lr_patience"}


DISC_TERMS = ("e_m_disc_loss", "d_m_disc_real", "d_m_disc_fake")  # their scale is the discriminator's


def finite_loss(what: str, terms: dict[str, torch.Tensor], epoch: int, iteration: int) -> torch.Tensor:
    """The sum of the loss ``terms``; when it is NaN or infinite, a VibeError naming the first term that is
    (else the largest) and the learning rate behind it, before any optimiser steps on it."""
    total = torch.stack(list(terms.values())).sum()
    if torch.isfinite(total):
        return total
    bad = [k for k, v in terms.items() if not torch.isfinite(v)] or [max(terms, key=lambda k: float(terms[k].abs()))]
    rate = "--disc_lr" if bad[0] in DISC_TERMS else "--gen_lr"
    raise VibeError(
        f"The {what} loss became {total.item()} at epoch {epoch}, iteration {iteration} (its term {bad[0]} is "
        f"{terms[bad[0]].item()}); lower {rate} or check the data."
    )


def make_loader(datasets: list, batch_size: int, config: TrainConfig, rank: int, world_size: int) -> DataLoader:
    """The datasets mixed into one loader, this rank's share, reshuffled every pass."""
    dataset = ConcatDataset(datasets)  # mixed in proportion to window counts
    sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=config.seed)
    return StopSafeLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
    )


def open_tensorboard(out_dir: Path) -> Any:
    """A TensorBoard writer when the tensorboard package is installed, else None (the CSVs remain)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency (tensorboard)
    except ImportError:
        log.info(
            "TensorBoard is not installed, so only the CSV logs are written: pip install tensorboard "
            "(--tensorboard=false leaves it off without this line)"
        )
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


def check_inputs(config: TrainConfig) -> None:
    """The folders and files the settings name exist (before anything is loaded or written)."""
    if not Path(config.db_dir).is_dir():
        what = "is a file, not a folder" if Path(config.db_dir).exists() else "was not found"
        raise VibeError(f"The database folder --db_dir={config.db_dir} {what}; pass the folder of the db files.")
    if config.motion_prior == "mposer":
        require_mposer_checkpoint(config.mposer_checkpoint)
    if config.pretrained and not Path(config.pretrained).is_file():
        raise VibeError(f"The checkpoint --pretrained={config.pretrained} was not found; check the path.")
    check_model_data(config)


def validates(config: TrainConfig) -> bool:
    return config.dataset_val != "none"


def check_model_data(config: TrainConfig) -> None:
    """The model-data files this run reads are there: SMPL, its regressors and mean parameters, and
    SPIN's checkpoint when the regressor starts from it."""
    data_dir = loading.resolve_data_dir(config.model_data_dir or None)
    needed = loading.MODEL_FILES + ((loading.H36M_REGRESSOR,) if validates(config) else ())
    needed += (loading.SPIN_CHECKPOINT,) if config.init_from_spin else ()
    try:  # every missing file in one message
        loading.require_files(data_dir, needed, flag="--model_data_dir")
    except VibeError as err:
        if config.init_from_spin and not (data_dir / loading.SPIN_CHECKPOINT).is_file():
            raise VibeError(
                f"{err} ({loading.SPIN_CHECKPOINT} is SPIN's checkpoint, which the regressor starts from as in the "
                "release; to start from the mean pose alone instead: --init_from_spin=false.)"
            ) from None
        raise


def train_device(config: TrainConfig, ddp: bool, local_rank: int) -> torch.device:
    """--device for this process: under torchrun each process takes the GPU of its local rank."""
    if ddp and config.device.startswith("cuda:"):
        raise SameInEveryProcess(
            f"--device={config.device}: under torchrun each process uses the GPU of its local rank; "
            "pass --device=cuda (or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES."
        )
    name = alike_in_every_process(lambda: loading.resolve_device(config.device))  # cuda without a GPU
    if name.startswith("cuda") and ddp:
        name = loading.resolve_device(f"cuda:{local_rank}")  # this process's own GPU: said by each
    return torch.device(name)


def train(config: TrainConfig) -> dict:
    """Runs the whole training; returns {'epochs_run', 'best_performance', 'last_losses'} (rank 0's)."""
    # ---- 1. processes and devices: torchrun sets RANK/LOCAL_RANK/WORLD_SIZE ----
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank = int(os.environ["RANK"]) if ddp else 0
    local_rank = int(os.environ.get("LOCAL_RANK", 0)) if ddp else 0
    master = rank == 0  # logs, validates and saves
    device = train_device(config, ddp, local_rank)
    alike_in_every_process(lambda: check_inputs(config))
    # rank 0 holds out_dir for the whole run (torchrun ends the others if it cannot)
    with run_in_out_dir(Path(config.out_dir), (CHECKPOINT_NAME, BEST_NAME), log.info, holds_out_dir=master):
        world_size = 1
        if ddp:
            init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            world_size = int(os.environ["WORLD_SIZE"])
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.manual_seed(config.seed + rank)
        say = log.info if master else (lambda *a, **k: None)  # rank 0 speaks for all
        try:
            return _train_this_process(config, ddp, rank, world_size, device, master, say)
        finally:
            if ddp:
                destroy_process_group()


def read_resume_checkpoint(config: TrainConfig, checkpoint_path: Path) -> dict | None:
    """The out_dir's checkpoint when the run resumes from it (checked against the settings), else None."""
    if not (config.resume and checkpoint_path.exists()):
        return None
    ckpt = read_checkpoint(checkpoint_path, checkpoints.load_vibe_checkpoint)
    epoch, best = ckpt.get("epoch"), ckpt.get("best_performance")
    if type(epoch) is not int or epoch < 0 or not isinstance(best, float):
        raise VibeError(
            f"Cannot resume from '{checkpoint_path}': it is not a checkpoint of 'vibe-mocap train vibe' (it has "
            f"no epoch; an official model is a starting point: pass it with --pretrained). {START_AFRESH}"
        )
    if not is_best_value(best):
        raise VibeError(
            f"Cannot resume from '{checkpoint_path}': its best_performance ({best}) is no PA-MPJPE (mm, 0 or "
            f"more, inf before any validation), so it is damaged. {START_AFRESH}"
        )
    saved = saved_config(ckpt)
    check_same_settings(checkpoint_path, saved, config, RUN_SETTINGS)
    diverged_at = ckpt["performance"] if ckpt.get("diverged") is True else None  # a finite number or None
    if diverged_at is not None and 0 < config.abort_pa_mpjpe_mm < diverged_at:
        raise VibeError(
            f"This run stopped after epoch {epoch} because it diverged (validation PA-MPJPE "
            f"{diverged_at:.1f} mm, more than --abort_pa_mpjpe_mm={config.abort_pa_mpjpe_mm}). Start over "
            "with --resume=false (e.g. with a lower --gen_lr), or go on from its checkpoint on purpose with a "
            "higher --abort_pa_mpjpe_mm (0 = never stop)."
        )
    if config.motion_prior == "discriminator":
        if not ckpt.get("disc_motion_state_dict"):
            raise VibeError(
                f"{checkpoint_path} has no motion discriminator; resume it with the "
                "--motion_prior it was trained with, or use another --out_dir."
            )
        check_same_settings(checkpoint_path, saved, config, DISC_SETTINGS)
    return ckpt


def saved_config(ckpt: dict) -> dict | None:
    """The settings a checkpoint of this trainer was saved with (None when it has none), its
    --dataset_val spelled as the settings spell it now (earlier runs kept 'None' as it was typed)."""
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        return None
    if isinstance(saved.get("dataset_val"), str):
        saved = {**saved, "dataset_val": dataset_val_name(saved["dataset_val"])}
    return saved


def best_so_far(best_path: Path, recorded: float, config: TrainConfig, say: Callable[[str], None]) -> float:
    """The best validation value of a resumed run: the checkpoint's ``recorded`` one, or that of
    ``best_path`` (model_best) when lower and measured on the same validation set: a run stopped
    between the two saves of an epoch kept a better model there than its checkpoint records, which no
    worse epoch may replace. When model_best is missing or damaged, none holds the recorded best: the
    next validated epoch writes it (infinity)."""
    if not best_path.exists():
        if math.isfinite(recorded):
            say(f"{best_path.name} is missing: the next validated epoch writes it")
        return math.inf
    try:
        best = checkpoints.load_vibe_checkpoint(best_path)
    except VibeError as err:
        say(f"{best_path.name} cannot be read ({str(err).rstrip('.')}): the next validated epoch replaces it")
        return math.inf
    saved, performance = saved_config(best), best.get("performance")  # a finite number or None
    if saved is None or saved.get("dataset_val") != config.dataset_val or performance is None:
        return recorded
    if performance < recorded:
        say(
            f"{best_path.name} holds epoch {best.get('epoch')} ({performance:.1f} mm), better than the "
            f"checkpoint records ({recorded:.1f} mm): it stays the best"
        )
        return float(performance)
    return recorded


def _train_this_process(config, ddp, rank, world_size, device, master, say) -> dict:
    """Steps 2 to 7 in this process (one rank), once the process group and device are set up."""
    # ---- 2. the run so far: resume after the checkpoint's epoch, or start over ----
    out_dir = Path(config.out_dir)
    checkpoint_path, best_path = out_dir / CHECKPOINT_NAME, out_dir / BEST_NAME
    ckpt = alike_in_every_process(lambda: read_resume_checkpoint(config, checkpoint_path))
    start_epoch, best_performance, order = 0, math.inf, None
    if ckpt is not None:
        start_epoch, best_performance = ckpt["epoch"] + 1, ckpt["best_performance"]
        if master and start_epoch < config.epochs:  # (the one process that saves, with epochs to run)
            best_performance = best_so_far(best_path, best_performance, config, say)
    if ddp:
        require_same_start(start_epoch, device, out_dir)
    if ckpt is not None:
        if start_epoch >= config.epochs:
            say(
                f"all {config.epochs} epochs are done in {out_dir} (checkpoint.pth.tar is after epoch "
                f"{start_epoch - 1}); raise --epochs to train longer, or start over with --resume=false"
            )
            return {"epochs_run": 0, "best_performance": best_performance, "last_losses": {}}
    # ---- 3. data: 2D and 3D sets mixed per batch (2D first), AMASS for real motion ----
    options = dict(
        seqlen=config.seqlen,
        fix_pennaction_joints=config.fix_pennaction_joints,
        match_keypoint_crop=config.match_keypoint_crop,
    )

    def open_set(name: str, split: str) -> SequenceDataset:
        fix = f"Put the original's {spec_for(name).files[split]} in --db_dir."
        dataset = alike_in_every_process(lambda: SequenceDataset(config.db_dir, name, split, layout_fix=fix, **options))
        if dataset.frames_without_box:
            say(
                f"{dataset.path}: {dataset.frames_without_box} frame(s) have a padded box without a size "
                "(the original's [0, 0, inf, inf]); their 2D keypoints get confidence 0"
            )
        return dataset

    names_2d, names_3d = split_list(config.datasets_2d), split_list(config.datasets_3d)  # checked by the config
    batch_2d, batch_3d = config.batch_split()
    loader_2d = (
        make_loader(
            [open_set(n, "train") for n in names_2d],
            batch_2d,
            config,
            rank,
            world_size,
        )
        if names_2d
        else None
    )
    loader_3d = make_loader([open_set(n, "train") for n in names_3d], batch_3d, config, rank, world_size)
    use_disc = config.motion_prior == "discriminator"
    loader_motion = (
        make_loader(
            [SequenceDataset(config.db_dir, "amass", "train", seqlen=config.seqlen)],
            config.motion_batch_size,
            config,
            rank,
            world_size,
        )
        if use_disc
        else None
    )
    val_dataset = None
    if validates(config) and master:
        val_dataset = open_set(config.dataset_val, "val")
    say(
        f"data: 2D {names_2d} x{batch_2d}, 3D {names_3d} x{batch_3d}, "
        f"motion x{config.motion_batch_size if use_disc else 0}, val {config.dataset_val}; "
        f"{world_size} process(es) on {device}"
    )

    # ---- 4. models and optimisers ----
    generator = build_generator(
        config.model_data_dir, init_from_spin=config.init_from_spin, vibe_checkpoint=config.pretrained or None
    ).to(device)
    j_regressor_h36m = loading.load_h36m_regressor(config.model_data_dir or None) if val_dataset is not None else None
    gen_optimizer = torch.optim.Adam(generator.parameters(), lr=config.gen_lr, weight_decay=config.gen_wd)
    gen_scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        gen_optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience
    )
    disc = disc_optimizer = disc_scheduler = mposer = None
    if use_disc:
        disc = MotionDiscriminator(
            rnn_size=config.disc_hidden,
            num_layers=config.disc_layers,
            feature_pool=config.disc_feature_pool,
            attention_size=config.disc_attention_size,
            attention_layers=config.disc_attention_layers,
            attention_dropout=config.disc_attention_dropout,
        ).to(device)
        disc_optimizer = torch.optim.Adam(disc.parameters(), lr=config.disc_lr, weight_decay=config.disc_wd)
        disc_scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            disc_optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience
        )
    elif config.motion_prior == "mposer":
        mposer = load_mposer(config.mposer_checkpoint, device)  # frozen prior
    if master and ckpt is None:  # once data and models load: a run that cannot start leaves the old files
        keep_old_run(out_dir, (CHECKPOINT_NAME, BEST_NAME), LOGS, say)

    # ---- 5. the checkpoint's weights and optimiser states ----
    if ckpt is not None:
        checkpoints.load_vibe_into(generator, ckpt["gen_state_dict"], source=checkpoint_path)
        load_optimizer(gen_optimizer, ckpt.get("gen_optimizer"), checkpoint_path, "generator optimiser")
        load_optimizer(gen_scheduler, ckpt.get("gen_scheduler"), checkpoint_path, "generator scheduler")
        saved, said = saved_config(ckpt), set()

        def say_once(line: str) -> None:  # --lr_factor and --lr_patience go to both schedulers
            if line not in said:
                said.add(line)
                say(line)

        take_changed_rates(saved, config, gen_optimizer, gen_scheduler, GEN_RATES, say_once)
        if disc is not None:
            load_state(disc, ckpt["disc_motion_state_dict"], checkpoint_path, "motion discriminator")
            for part, key in ((disc_optimizer, "disc_motion_optimizer"), (disc_scheduler, "disc_scheduler")):
                load_optimizer(part, ckpt.get(key), checkpoint_path, "discriminator " + key.split("_")[-1])
            take_changed_rates(saved, config, disc_optimizer, disc_scheduler, DISC_RATES, say_once)
        say(f"resumed from {checkpoint_path}: epoch {int(ckpt['epoch'])} done, continuing at epoch {start_epoch}")
        order = ckpt.get("data_order")
        if master:
            forget_logged_steps(out_dir, ("train_log.csv", "val_log.csv"), start_epoch, say)
        del ckpt  # the weights are in the models now

    raw_generator, raw_disc = generator, disc  # what gets saved: never the DDP wrapper
    if ddp:
        device_ids = [device.index] if device.type == "cuda" else None
        generator = DDP(generator, device_ids=device_ids, **NO_BUFFER_SYNC)
        if disc is not None:
            disc = DDP(disc, device_ids=device_ids, **NO_BUFFER_SYNC)
    tensorboard = open_tensorboard(out_dir) if master and config.tensorboard else None

    # ---- 6. the loop: epochs of iters_per_epoch steps, validation and a checkpoint after each ----
    named = (("2d", loader_2d), ("3d", loader_3d), ("motion", loader_motion))
    loaders = {name: loader for name, loader in named if loader is not None}
    positions, states = resume_order(order, loaders, start_epoch, config, world_size, rank, say)
    del order
    batches = {name: Batches(loader, *positions[name]) for name, loader in loaders.items()}
    batches_2d, batches_3d, batches_motion = (batches.get(name) for name in ("2d", "3d", "motion"))
    if states is not None and not restore_random_states(states):  # last: building the models drew from them
        say(
            "the checkpoint's random states cannot be set here (damaged, or saved with another number of "
            "GPUs), so the run cannot go on exactly as the stopped one would have: the data order does, the "
            "random numbers do not"
        )
    weights = {"kp_2d": config.kp_2d_w, "kp_3d": config.kp_3d_w, "pose": config.pose_w, "shape": config.shape_w}
    losses, epoch, diverged = {}, start_epoch - 1, False
    for epoch in range(start_epoch, config.epochs):
        generator.train()
        if disc is not None:
            disc.train()
        started = time.time()
        for iteration in tqdm(
            range(config.iters_per_epoch), desc=f"epoch {epoch}", unit="step", leave=False, disable=not master
        ):
            # 6a. draw the 2D, 3D (and real-motion) sequences
            data_2d = next(batches_2d) if batches_2d else None
            data_3d = {k: v.to(device, non_blocking=True) for k, v in next(batches_3d).items()}
            num_2d = len(data_2d["features"]) if data_2d else 0
            features = (
                data_3d["features"]
                if data_2d is None
                else torch.cat([data_2d["features"].to(device), data_3d["features"]])
            )
            gt_kp_2d = (
                data_3d["kp_2d"] if data_2d is None else torch.cat([data_2d["kp_2d"].to(device), data_3d["kp_2d"]])
            )
            # 6b. generator forward (final IEF iterate) and its losses
            pred = generator(features)
            losses = generator_losses(pred, gt_kp_2d, data_3d, num_2d, weights)
            fake_motion = pred["theta"][:, :, BODY_POSE_SLICE]  # (N, T, 69)
            if raw_disc is not None:  # D's own parameters get no gradient from this term
                raw_disc.requires_grad_(False)
                losses["e_m_disc_loss"] = generator_adversarial_loss(raw_disc(fake_motion)) * config.d_motion_w
                raw_disc.requires_grad_(True)
            elif mposer is not None:
                losses["loss_mposer"] = mposer_prior_loss(mposer, fake_motion) * config.mposer_w
            gen_loss = finite_loss("generator", losses, epoch, iteration)
            # 6c. generator step
            gen_optimizer.zero_grad(set_to_none=True)
            gen_loss.backward()
            gen_optimizer.step()
            # 6d. discriminator step on real AMASS motion vs the (detached) generated motion
            # every disc_update_steps-th step of the whole run, as the original counts (not per epoch)
            if disc is not None and (epoch * config.iters_per_epoch + iteration) % config.disc_update_steps == 0:
                real_motion = next(batches_motion)["theta"].to(device)[:, :, BODY_POSE_SLICE]
                scores = disc(torch.cat([real_motion, fake_motion.detach()]))  # one DDP forward
                d_real, d_fake, _ = discriminator_loss(scores[: len(real_motion)], scores[len(real_motion) :])
                d_terms = {"d_m_disc_real": d_real * config.d_motion_w, "d_m_disc_fake": d_fake * config.d_motion_w}
                d_loss = finite_loss("motion discriminator", d_terms, epoch, iteration)
                disc_optimizer.zero_grad(set_to_none=True)
                d_loss.backward()
                disc_optimizer.step()
                losses.update(d_terms, d_m_disc_loss=d_loss)
            losses["gen_loss"] = gen_loss
            # 6e. log (rank 0's own losses)
            if master and (iteration % config.log_interval == 0 or iteration == config.iters_per_epoch - 1):
                row = {k: f"{v.item():.6g}" for k, v in losses.items()}
                row.update(
                    epoch=epoch,
                    iteration=iteration,
                    step=epoch * config.iters_per_epoch + iteration,
                    gen_lr=gen_optimizer.param_groups[0]["lr"],
                    time_s=f"{time.time() - started:.2f}",
                )
                append_csv(
                    out_dir / "train_log.csv", ("epoch", "iteration", "step") + LOSS_COLUMNS + ("gen_lr", "time_s"), row
                )
                say(
                    f"epoch {epoch} iter {iteration}: "
                    + " ".join(f"{k} {v}" for k, v in row.items() if k in LOSS_COLUMNS)
                )
                if tensorboard:
                    for key, value in losses.items():
                        tensorboard.add_scalar(f"train_loss/{key}", value.item(), row["step"])

        # ---- 7. validation on rank 0; every rank steps its schedulers with the same value ----
        performance = torch.tensor(math.nan, dtype=torch.float64, device=device)  # NCCL needs it on the GPU
        if master and val_dataset is not None:
            result = evaluate_generator(
                raw_generator, val_dataset, j_regressor_h36m, device, batch_size=config.val_batch_size
            )
            performance.fill_(result.overall["pa_mpjpe"])
            append_csv(
                out_dir / "val_log.csv",
                VAL_COLUMNS,
                {
                    **result.overall,
                    "epoch": epoch,
                    "gen_lr": gen_optimizer.param_groups[0]["lr"],
                    "disc_lr": disc_optimizer.param_groups[0]["lr"] if disc_optimizer else "",
                },
            )
            if tensorboard:
                for key in VAL_COLUMNS[1:6]:
                    tensorboard.add_scalar(f"error/{key}", result.overall[key], epoch)
                tensorboard.add_scalar("lr/gen_lr", gen_optimizer.param_groups[0]["lr"], epoch)
                if disc_optimizer is not None:
                    tensorboard.add_scalar("lr/dis_lr", disc_optimizer.param_groups[0]["lr"], epoch)
            say(f"epoch {epoch} validation: " + " ".join(f"{k} {result.overall[k]:.2f}" for k in VAL_COLUMNS[1:6]))
        if ddp:
            broadcast(performance, src=0)
        performance = performance.item()
        if not math.isnan(performance):
            gen_scheduler.step(performance)
            if disc_scheduler is not None:
                disc_scheduler.step(performance)

        # ---- 8. checkpoint (rank 0): official container + what resuming needs ----
        is_best = not math.isnan(performance) and performance < best_performance
        best_performance = performance if is_best else best_performance
        # without validation the latest is the best we know, unless a validated one is there
        replaces_best = is_best or (math.isnan(performance) and math.isinf(best_performance))
        diverged = config.abort_pa_mpjpe_mm > 0 and performance > config.abort_pa_mpjpe_mm
        order = data_order(batches, world_size, ddp)  # every process's random states: all of them take part
        if master:  # each file renamed into place once whole: an interrupted write keeps the last one
            save = functools.partial(
                checkpoints.save_vibe_checkpoint,
                model=raw_generator,
                epoch=epoch,
                performance=performance,
                gen_optimizer=gen_optimizer.state_dict(),
                disc_motion_state_dict=raw_disc.state_dict() if raw_disc is not None else None,
                disc_motion_optimizer=disc_optimizer.state_dict() if disc_optimizer else None,
                extra={
                    "config": dataclasses.asdict(config),
                    "best_performance": best_performance,
                    "gen_scheduler": gen_scheduler.state_dict(),
                    "disc_scheduler": disc_scheduler.state_dict() if disc_scheduler else None,
                    "diverged": diverged,  # a rerun refuses to go on while --abort_pa_mpjpe_mm would stop it
                    "data_order": order,  # where a resumed run goes on: the loaders' passes, the random states
                },
            )
            if replaces_best:  # model_best first: a checkpoint that records a best never lacks its file
                atomic_save(best_path, save)
                atomic_write(checkpoint_path, functools.partial(copy_file, best_path))
            else:
                atomic_save(checkpoint_path, save)
            say(f"epoch {epoch} saved {checkpoint_path} ({time.time() - started:.1f} s)")
        if diverged:
            break
    if tensorboard:
        tensorboard.close()
    if diverged:
        if ddp:
            barrier()  # rank 0 has saved: no process ends (and gets the others stopped) before that
        raise SameInEveryProcess(
            f"Stopped after epoch {epoch}: validation PA-MPJPE {performance:.1f} mm is more than "
            f"--abort_pa_mpjpe_mm={config.abort_pa_mpjpe_mm}, so the run has diverged. {BEST_NAME} holds its best "
            f"epoch ({best_performance:.1f} mm). Start over with --resume=false (e.g. with a lower --gen_lr), or "
            "go on from this epoch on purpose with a higher --abort_pa_mpjpe_mm (0 = never stop)."
        )
    return {
        "epochs_run": epoch + 1 - start_epoch,
        "best_performance": best_performance,
        "last_losses": {k: v.item() for k, v in losses.items()},
    }


def data_order(batches: dict[str, Batches], world_size: int, ddp: bool) -> dict:
    """What the checkpoint records for a resumed run to go on exactly: each loader's pass and the
    batches of it used, and every process's random states (a list by rank)."""
    states = random_states()
    if ddp:
        gathered: list = [None] * world_size
        all_gather_object(gathered, states)
    else:
        gathered = [states]
    loaders = {
        name: {**b.position(), "batch_size": b.loader.batch_size, "samples": b.loader.sampler.num_samples}
        for name, b in batches.items()
    }
    return {"world_size": world_size, "loaders": loaders, "random": gathered}


def resume_order(
    saved: object,
    loaders: dict,
    start_epoch: int,
    config: TrainConfig,
    world_size: int,
    rank: int,
    say: Callable[[str], None],
) -> tuple[dict[str, tuple[int, int]], object]:
    """({loader name: (pass, batches used)}, this process's random states or None) to start with. A
    fresh run starts at pass 0. A resumed run goes on where its checkpoint says; a checkpoint without
    that record (an older run's) or with other batch sizes, data or processes starts each loader on a
    new pass (start_epoch * iters_per_epoch, not the first one again) with the random states as seeded.
    ``loaders``: the loaders the run uses, by name."""
    if start_epoch == 0:
        return {name: (0, 0) for name in loaders}, None
    exact = isinstance(saved, dict) and saved.get("world_size") == world_size
    records = saved.get("loaders") if exact and isinstance(saved.get("loaders"), dict) else {}
    positions: dict[str, tuple[int, int]] = {}
    for name, loader in loaders.items():
        record = records.get(name)
        position = position_of(record)
        same_data = (
            position is not None
            and record.get("batch_size") == loader.batch_size
            and record.get("samples") == loader.sampler.num_samples
        )
        if not same_data:
            exact = False
            break
        positions[name] = position
    states = saved.get("random") if exact else None
    if exact and isinstance(states, list) and len(states) == world_size:
        return positions, states[rank]
    say(
        "the checkpoint does not record where the data loaders were (an older run's, or other data, batch "
        "sizes or processes), so the data order cannot be restored exactly: each loader starts a new shuffled pass"
    )
    fresh = start_epoch * config.iters_per_epoch
    return {name: (fresh, 0) for name in loaders}, None


def copy_file(path: Path, out: BinaryIO) -> None:
    """The bytes of ``path`` into the open binary file ``out``."""
    with open(path, "rb") as src:
        shutil.copyfileobj(src, out)


def require_same_start(start_epoch: int, device: torch.device, out_dir: Path) -> None:
    """VibeError in every process unless all of them resume at the same epoch: each reads the
    checkpoint in out_dir, so on several nodes out_dir must be one folder they all see."""
    lowest = torch.tensor(start_epoch, device=device)  # NCCL needs it on the GPU
    highest = lowest.clone()
    all_reduce(lowest, op=ReduceOp.MIN)
    all_reduce(highest, op=ReduceOp.MAX)
    if lowest.item() != highest.item():
        raise SameInEveryProcess(
            f"The training processes found different checkpoints in --out_dir={out_dir} (one would start at "
            f"epoch {lowest.item()}, another at epoch {highest.item()}): with several nodes, --out_dir must be "
            "a folder that every node shares."
        )


def main(argv: list[str]) -> int:
    """``vibe-mocap train vibe`` with these ``--key=value`` settings."""
    show_progress_on_console()
    return exit_status(lambda: train(alike_in_every_process(lambda: parse_overrides(TrainConfig, argv))))


if __name__ == "__main__":
    refuse_to_run_as_a_script("vibe")

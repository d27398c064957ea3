"""The files of a training run's out_dir that outlive the run: one run at a time in it, resuming from
its checkpoint only when the checkpoint fits the model being trained, and starting over without losing
the old run's checkpoints and logs. (The checkpoints themselves are written with
``vibe_blender.core.atomic_file.atomic_save``: a failed or interrupted write leaves the previous one
in place.)"""

from __future__ import annotations

import contextlib
import math
import os
import reprlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from vibe_blender.core.atomic_file import remove_leftover_parts
from vibe_blender.core.errors import VibeError

from ..checkpoints import state_dict_mismatch
from ..folder_lock import folder_lock
from .datasets import worker_errors_unwrapped
from .run_log import log, tagged, unused_tag
from .stop_signals import sigterm_interrupts

START_AFRESH = (
    "Start over with --resume=false (the old file is then set aside as *.prev.pth.tar) or use a new --out_dir."
)
START_OVER = "use the same settings, a new --out_dir or --resume=false (starts over; the old run's files are kept)"
RUN_LOCK = ".train.lock"  # held in out_dir by the run writing there


@contextlib.contextmanager
def run_in_out_dir(
    out_dir: Path, outputs: Iterable[str], say: Callable[[str], None], *, holds_out_dir: bool = True
) -> Iterator[None]:
    """The block is this process's part of a run writing ``outputs`` into ``out_dir``: SIGTERM stops
    it cleanly (:func:`~.stop_signals.sigterm_interrupts`), a database error in a DataLoader worker is
    one message (:func:`~.datasets.worker_errors_unwrapped`) and, when it ``holds_out_dir`` (the one
    process of a run that does: torchrun's rank 0), no other run may use the folder
    (:func:`own_out_dir`)."""
    with (
        sigterm_interrupts(),
        worker_errors_unwrapped(),
        own_out_dir(out_dir, outputs, say) if holds_out_dir else contextlib.nullcontext(),
    ):
        yield


@contextlib.contextmanager
def own_out_dir(out_dir: Path, outputs: Iterable[str], say: Callable[[str], None]) -> Iterator[None]:
    """Make ``out_dir`` and keep every other training run out of it for the block; first delete what
    killed writes of the run's ``outputs`` (file names in it) left there (safe now: no one else writes).
    Where the folder cannot be locked (Windows, a file system without locks: warned) the run goes on
    unguarded, and leaves those files alone: another run may be writing them. A run that fails before
    writing anything into the folder it made (a mistyped --db_dir) removes that folder again."""
    made = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VibeError(
            f"Cannot make the run folder --out_dir={out_dir} ({err.strerror or err}: {err.filename}); "
            "pass a folder path you can write to."
        ) from None
    busy = (
        f"Another run is using {out_dir}; wait for it to end or pass another --out_dir. If that run is known "
        f"to be dead (e.g. its node crashed and a network file system keeps its lock), delete "
        f"{out_dir / RUN_LOCK} to free the folder."
    )

    def unguarded(problem: str) -> None:
        log.warning(
            f"{problem}, so nothing keeps another run out of {out_dir}: start no other run there until this "
            "one ends. (Unfinished checkpoint files that a killed run left there, .*.part, are not deleted.)"
        )

    with folder_lock(out_dir, RUN_LOCK, busy, unguarded=unguarded) as guarded:
        removed = sum(remove_leftover_parts(out_dir / name) for name in outputs) if guarded else 0
        if removed:
            say(f"deleted {removed} unfinished checkpoint file(s) that a killed run left in {out_dir}")
        try:
            yield
        except BaseException:
            if made:
                _remove_if_it_holds_only_the_lock(out_dir)
            raise


def _remove_if_it_holds_only_the_lock(folder: Path) -> None:
    """Delete a run folder holding nothing but its lock file, while the lock is held: a run starting
    meanwhile makes a lock file of its own, and the folder then stays."""
    with contextlib.suppress(OSError):  # Windows deletes no open file; that run's lock file is there
        if set(os.listdir(folder)) <= {RUN_LOCK}:
            (folder / RUN_LOCK).unlink(missing_ok=True)
            folder.rmdir()


def read_checkpoint(path: Path, load: Callable[[Path], dict]) -> dict:
    """``load(path)`` (a reader of ``checkpoints``), its VibeError reworded for a run's own checkpoint:
    nothing to download, the run can start over."""
    try:
        return load(path)
    except VibeError as err:
        raise VibeError(
            f"Cannot resume from '{path}': it is damaged, cut short or not a checkpoint of this trainer. {START_AFRESH}"
        ) from err


def check_same_settings(path: Path, saved: object, config: object, names: Iterable[str]) -> None:
    """VibeError when the run saved in ``path`` (its config dict ``saved``) had other values of the
    settings ``names`` (those that shape the model) than ``config``."""
    if not isinstance(saved, dict):
        return  # no saved config: the shapes are compared when the weights load
    changed = [n for n in names if n in saved and not _same_value(saved[n], getattr(config, n))]
    if changed:
        was = ", ".join(f"--{n}={saved[n]}" for n in changed)
        now = ", ".join(f"--{n}={getattr(config, n)}" for n in changed)
        raise VibeError(f"This out_dir ({path.parent}) was trained with {was}, not {now}; {START_OVER}.")


def _same_value(saved: object, value: object) -> bool:
    return type(saved) is type(value) and saved == value  # (a file's tensor or list is never equal)


def load_state(module: torch.nn.Module, state: object, path: Path, what: str) -> None:
    """``module.load_state_dict(state)`` when every key and shape matches; else one VibeError."""
    if not isinstance(state, dict):
        raise VibeError(f"'{path}' holds no weights for the {what}; {START_OVER}.")
    problem = state_dict_mismatch({k: v.shape for k, v in module.state_dict().items()}, state)
    if problem:
        raise VibeError(f"The {what} in '{path}' has another architecture: {problem}; {START_OVER}.")
    module.load_state_dict(state)


def is_best_value(value: float) -> bool:
    """A best validation figure a checkpoint can hold: 0 or more (an error or a loss), inf before any
    validation; NaN or a negative one would never be beaten, and the best model never saved again."""
    return not math.isnan(value) and value >= 0


def load_optimizer(optimizer: object, state: object, path: Path, what: str) -> None:
    """An optimiser's or scheduler's ``load_state_dict``, its failure one VibeError. Of a scheduler's
    state only the numbers it counts with are loaded (:func:`scheduler_numbers`: its
    ``load_state_dict`` takes any key into its attributes); an optimiser's per-weight tensors must fit
    their weights. Either would fail only later, at a step, with a raw error."""
    is_optimizer = isinstance(optimizer, torch.optim.Optimizer)
    problem = None
    if not is_optimizer:
        state, problem = scheduler_numbers(optimizer.state_dict(), state)
    if problem is None:
        try:
            optimizer.load_state_dict(state)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
            raise VibeError(f"The {what} state in '{path}' does not fit this run ({err}); {START_OVER}.") from None
        problem = optimizer_state_problem(optimizer) if is_optimizer else None
    if problem:
        raise VibeError(f"Cannot resume from '{path}': its {what} state is damaged ({problem}). {START_AFRESH}")


def scheduler_numbers(fresh: dict, state: object) -> tuple[dict, str | None]:
    """(the state to load, None) or (``fresh``, what is wrong with the saved ``state``). Only the numbers
    a scheduler counts with are taken from the file (its best value, counters, factor, patience,
    learning rates), each of the kind the ``fresh`` scheduler's state dict holds there; its modes and
    flags stay this code's, and a key the fresh one lacks (another torch version's) is dropped."""
    if not isinstance(state, dict):
        return fresh, f"a {type(state).__name__}, not a dict"
    loaded = dict(fresh)
    for key, value in fresh.items():
        if key not in state or not _is_number_or_numbers(value):
            continue
        if _unlike(state[key], value):
            return fresh, f"{key} is {reprlib.repr(state[key])}, unlike a scheduler's {value!r}"
        loaded[key] = state[key]
    return loaded, None


def _is_number_or_numbers(value: object) -> bool:
    if isinstance(value, list):
        return all(map(_is_number_or_numbers, value))
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unlike(saved: object, fresh: object) -> bool:
    """``saved`` is not a number (or list of numbers) of ``fresh``'s kind: another type or list length,
    NaN, or infinite where ``fresh`` is finite."""
    if isinstance(fresh, list):
        return not isinstance(saved, list) or len(saved) != len(fresh) or any(map(_unlike, saved, fresh))
    if type(saved) is not type(fresh):
        return True
    if isinstance(fresh, float):
        return math.isnan(saved) or (math.isinf(saved) and not math.isinf(fresh))
    return False


def optimizer_state_problem(optimizer: torch.optim.Optimizer) -> str | None:
    """A loaded optimiser's per-weight state (Adam's step and moments) of another shape than its
    weight, or not finite; None when it fits."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if not isinstance(value, torch.Tensor):
                    continue
                if value.ndim and value.shape != param.shape:
                    return f"{key} of shape {tuple(value.shape)} for a weight of shape {tuple(param.shape)}"
                if not torch.isfinite(value).all():
                    return f"{key} holds NaN or infinite values"
    return None


def take_changed_rates(
    saved: object, config: object, optimizer: Any, scheduler: Any, names: dict[str, str], say: Callable[[str], None]
) -> None:
    """After a resumed run loaded its optimiser's and scheduler's states, which carry the values they
    were saved with: each setting of ``names`` ({state field: setting}, fields ``lr``, ``weight_decay``
    of the optimiser, ``factor``, ``patience`` of the scheduler) that differs from the checkpoint's
    ``saved`` settings is put into them, and said (a lower --gen_lr for a run going badly). A setting
    left as it was keeps the state's value: a learning rate the scheduler lowered stays lowered."""
    if not isinstance(saved, dict):
        return
    for field, name in names.items():
        value = getattr(config, name)
        if name not in saved or saved[name] == value:
            continue
        if field in ("lr", "weight_decay"):
            for group in optimizer.param_groups:
                group[field] = value
        else:
            setattr(scheduler, field, value)
        say(f"--{name}={value} (the checkpoint's run had {saved[name]}): used from this epoch on")


def keep_old_run(out_dir: Path, checkpoints: Iterable[str], logs: Iterable[str], say: Callable[[str], None]) -> None:
    """A run that starts at epoch 0 sets the old run's files aside under one tag: ``checkpoint.prev.pth.tar``,
    ``train_log.prev.csv``, a log folder ``tensorboard.prev`` (``prev2``, ... when one is taken), so nothing
    is appended to or lost, and a plain rerun after this run is stopped does not resume the old run with
    the new logs. The checkpoints move first: a run stopped between the renames leaves none to resume,
    and the next start moves the rest under the same tag."""
    present = [out_dir / name for name in (*checkpoints, *logs) if (out_dir / name).exists()]
    tag = unused_tag(present, "prev")
    for path in present:
        kept = tagged(path, tag)
        path.rename(kept)
        say(f"starting over: the old {path.name} is kept as {kept.name}")

"""The files of a training run's out_dir that outlive the run: resuming from its checkpoint only when
the checkpoint fits the model being trained, and starting over without losing the old run's logs.
(The checkpoints themselves are written with ``output_files.atomic_save``: a failed or interrupted
write leaves the previous one in place.)"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from vibe_blender.core.errors import VibeError

from ..checkpoints import state_dict_mismatch

START_OVER = "use the same settings, a new --out_dir or --resume=false (starts over; the old logs are kept)"


def read_checkpoint(path: Path, load: Callable[[Path], dict]) -> dict:
    """``load(path)`` (a reader of ``checkpoints``), its VibeError reworded for a run's own checkpoint:
    nothing to download, the run can start over."""
    try:
        return load(path)
    except VibeError as err:
        raise VibeError(
            f"Cannot resume from '{path}': it is damaged, cut short or not a checkpoint of this trainer. "
            "Start over with --resume=false (the file is then replaced) or use a new --out_dir."
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


def load_optimizer(optimizer: object, state: object, path: Path, what: str) -> None:
    """An optimiser's or scheduler's ``load_state_dict``, its failure one VibeError."""
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise VibeError(f"The {what} state in '{path}' does not fit this run ({err}); {START_OVER}.") from None


def keep_old_logs(out_dir: Path, names: Iterable[str], say: Callable[[str], None]) -> None:
    """A run that starts at epoch 0 writes new logs: each existing ``name.csv`` becomes
    ``name.prev.csv`` (``name.prev2.csv``, ... when that is taken), and a log folder ``name`` becomes
    ``name.prev``, so nothing is appended to or lost."""
    for name in names:
        log = out_dir / name
        if not log.exists():
            continue
        stem, n = log.stem, 1
        while (kept := log.with_name(f"{stem}.prev{n if n > 1 else ''}{log.suffix}")).exists():
            n += 1
        log.rename(kept)
        say(f"starting over: the old {name} is kept as {kept.name}")

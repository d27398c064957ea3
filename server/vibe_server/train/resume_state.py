"""What a resumed run needs to go on exactly where the stopped one was: where each data loader is in
its shuffled pass, and the random states of the process. Both go into the checkpoint as plain numbers
and tensors (read back with ``weights_only``)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler


class ResumableSampler(DistributedSampler):
    """This rank's share of a pass, shuffled by (seed, pass) as DistributedSampler does; its first
    ``skip`` indices are left out (the batches a stopped run had used), so they are never loaded."""

    skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)


class Batches:
    """Endless batches of ``loader`` (its sampler a ResumableSampler): a new shuffled pass (sampler
    epoch) each time it runs out. ``position()`` is where it is: the pass and the batches of it used;
    a Batches made with that position goes on with the next batch of the same pass."""

    def __init__(self, loader: DataLoader, passes: int = 0, used: int = 0) -> None:
        self.loader, self.passes, self.used = loader, passes, used
        self._batches: Iterator | None = None

    def position(self) -> dict[str, int]:
        return {"pass": self.passes, "batches": self.used}

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> Any:
        while True:
            if self._batches is None:
                sampler = self.loader.sampler
                sampler.set_epoch(self.passes)
                sampler.skip = self.used * self.loader.batch_size
                # the workers' seeds come from the pass, not from the run's random state: starting a
                # pass part-way (a resumed run) draws nothing that the uninterrupted run did not
                self.loader.generator = torch.Generator().manual_seed(sampler.seed * 1_000_003 + self.passes)
                self._batches = iter(self.loader)
            try:
                batch = next(self._batches)
            except StopIteration:
                self._batches = None
                self.passes, self.used = self.passes + 1, 0
                continue
            self.used += 1
            return batch


def position_of(saved: object) -> tuple[int, int] | None:
    """(pass, batches used) of a saved ``position()``, or None when it is not one."""
    if not isinstance(saved, dict):
        return None
    passes, used = saved.get("pass"), saved.get("batches")
    if type(passes) is not int or type(used) is not int or passes < 0 or used < 0:
        return None
    return passes, used


def random_states() -> dict:
    """This process's random states (torch CPU, every CUDA device, numpy, Python's random)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }


def restore_random_states(states: object) -> bool:
    """Sets the random states that ``random_states()`` returned; False (nothing set) when ``states``
    is not such a dict."""
    try:
        torch_state = states["torch"]
        cuda_states = list(states["cuda"])
        np_state = states["numpy"]
        numpy_state = (
            str(np_state["name"]),
            np_state["keys"].numpy().astype(np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["gauss"]),
        )
        py = states["python"]
        python_state = (int(py["version"]), tuple(int(x) for x in py["state"].tolist()), py["gauss"])
    except (KeyError, TypeError, AttributeError, ValueError):
        return False
    # a damaged checkpoint's states are refused whole here, not half set by the calls below
    like = torch.get_rng_state()
    if not isinstance(torch_state, torch.Tensor) or (torch_state.dtype, torch_state.shape) != (like.dtype, like.shape):
        return False
    if numpy_state[1].shape != np.random.get_state()[1].shape or numpy_state[0] != "MT19937":
        return False
    if len(python_state[1]) != len(random.getstate()[1]) or not (py["gauss"] is None or type(py["gauss"]) is float):
        return False
    torch.set_rng_state(torch_state)
    if torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
    return True

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


# far more passes than any run makes; the loader's seed (seed * 1_000_003 + pass) stays within torch's
MAX_PASSES = 2**40


def position_of(saved: object) -> tuple[int, int] | None:
    """(pass, batches used) of a saved ``position()``, or None when it is not one."""
    if not isinstance(saved, dict):
        return None
    passes, used = saved.get("pass"), saved.get("batches")
    if type(passes) is not int or type(used) is not int or not 0 <= passes <= MAX_PASSES or used < 0:
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
    """Sets the random states that ``random_states()`` returned; False (nothing set, nothing raised)
    when ``states`` is not such a dict, holds a state a library would refuse (each would raise after
    the ones before it were already set), or was saved with another number of CUDA devices."""
    checked = _checked_random_states(states)
    if checked is None:
        return False
    torch_state, cuda_states, numpy_state, python_state = checked
    torch.set_rng_state(torch_state)
    if cuda_states:
        torch.cuda.set_rng_state_all(cuda_states)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
    return True


MT_WORDS = 624  # Mersenne Twister state words (numpy's and Python's), and the largest position in them


def _checked_random_states(states: object) -> tuple | None:
    """``states`` as the four set calls take them, each tried on a generator of its own first; None
    when any of them would be refused (or, numpy's position, read past its words)."""
    try:
        torch_state = states["torch"]
        if not isinstance(torch_state, torch.Tensor) or torch_state.dtype != torch.uint8:
            return None
        torch.Generator().set_state(torch_state)  # a state torch would refuse raises here, nothing set
        cuda_states = list(states["cuda"])
        if len(cuda_states) != (torch.cuda.device_count() if torch.cuda.is_available() else 0):
            return None
        for device, state in enumerate(cuda_states):
            like = torch.cuda.get_rng_state(device)
            if not isinstance(state, torch.Tensor) or (state.dtype, state.shape) != (like.dtype, like.shape):
                return None
            if state.numel() >= 16 and int.from_bytes(bytes(state[8:16].tolist()), "little", signed=True) % 4:
                return None  # a Philox offset torch refuses after setting the seed
        np_state = states["numpy"]
        keys = np_state["keys"]
        if not isinstance(keys, torch.Tensor) or keys.dtype != torch.int64 or tuple(keys.shape) != (MT_WORDS,):
            return None
        if bool((keys < 0).any()) or bool((keys > 0xFFFFFFFF).any()):
            return None
        pos, has_gauss, gauss = np_state["pos"], np_state["has_gauss"], np_state["gauss"]
        if type(pos) is not int or not 0 <= pos <= MT_WORDS or type(has_gauss) is not int:
            return None  # numpy does not check the position: one past 624 reads past its words
        numpy_state = (str(np_state["name"]), keys.numpy().astype(np.uint32), pos, has_gauss, float(gauss))
        if numpy_state[0] != "MT19937":
            return None
        np.random.RandomState().set_state(numpy_state)
        py = states["python"]
        words = py["state"]
        if not isinstance(words, torch.Tensor) or words.dtype != torch.int64 or tuple(words.shape) != (MT_WORDS + 1,):
            return None
        values = [int(x) for x in words.tolist()]
        if not all(0 <= x <= 0xFFFFFFFF for x in values[:-1]) or not 0 <= values[-1] <= MT_WORDS:
            return None
        if not (py["gauss"] is None or type(py["gauss"]) is float) or py["version"] != random.getstate()[0]:
            return None
        python_state = (int(py["version"]), tuple(values), py["gauss"])
        random.Random().setstate(python_state)
    except Exception:  # anything else the file holds: refused, never raised at a resuming run
        return None
    return torch_state, cuda_states, numpy_state, python_state

"""Host data to a device without making the host wait for the device.

A plain copy from ordinary host memory to a GPU (``tensor.to("cuda")``, ``torch.tensor(..., device=
"cuda")``) returns only once the stream has finished all the work queued on it. In the GPU front end
that would stall the job's thread at every crop and detection call until the GPU ran dry. So small
constants are made once per device, and other host data goes over from pinned memory in a copy that
does not wait. On a CPU both are plain tensors.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch


def device_constant(values: tuple, device: str | torch.device) -> torch.Tensor:
    """A float32 tensor of ``values`` (a tuple, nested for more dimensions) on ``device``, made once
    per device and shared: never write into it."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # "cuda": the current GPU, named
        device = torch.device("cuda", torch.cuda.current_device())
    return _constant(values, str(device))


@functools.cache  # a few constants per device; never dropped while a stream may read one
def _constant(values: tuple, device: str) -> torch.Tensor:
    # a plain tensor whatever mode the first caller runs in (an inference-mode tensor would break a
    # later caller that records gradients); made with a copy that waits, once
    with torch.inference_mode(False):
        return torch.tensor(values, dtype=torch.float32, device=device)


def to_device(array: np.ndarray | torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """A host array (or CPU tensor) on ``device``; to a GPU through pinned memory, without waiting
    (an already pinned tensor is copied from directly: do not write into it until the copy has run)."""
    tensor = torch.as_tensor(array)
    target = torch.device(device)
    if target.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(target)
    # the pinned block stays reserved until the copy is done (PyTorch records the copy on it)
    return tensor.pin_memory().to(target, non_blocking=True)


def stacked_to_device(arrays: Sequence[np.ndarray], device: str | torch.device) -> torch.Tensor:
    """Same-shape host arrays -> one (N, ...) tensor on ``device``, by :func:`to_device`. For a GPU
    they are stacked straight into pinned memory: one host copy, where stacking and then pinning
    the stack would copy every frame twice."""
    target = torch.device(device)
    dtype = torch.from_numpy(np.empty(0, np.asarray(arrays[0]).dtype)).dtype
    host = torch.empty((len(arrays), *np.shape(arrays[0])), dtype=dtype, pin_memory=target.type == "cuda")
    np.stack(arrays, out=host.numpy())
    return to_device(host, target)  # (already pinned: copied from as it is)

"""Reduced precision for the convolutional networks (backbone, YOLOv3): the names and the autocast."""

from __future__ import annotations

import contextlib

import torch

from vibe_blender.core.errors import VibeError

PRECISIONS = ("fp32", "bf16", "fp16")  # fp32: official numerics; bf16: CPU with AMX or CUDA; fp16: CUDA


def check_precision(precision: str, device: str) -> str:
    """``precision`` when ``device`` runs it; else VibeError (fp16 needs CUDA)."""
    if precision not in PRECISIONS:
        raise VibeError(f"Unknown precision '{precision}'; use fp32, bf16 or fp16.")
    if precision == "fp16" and not device.startswith("cuda"):
        raise VibeError("fp16 needs a CUDA device; on CPU use bf16 or fp32.")
    return precision


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device_type`` ('cpu' | 'cuda'); fp32: no autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


def exact_fp32_on_cuda() -> None:
    """No TF32 on this process's GPUs (cuDNN's convolutions and GRU, matrix products): fp32 is
    fp32, as in the official code (written before TF32), so that ``--official`` on a GPU equals the
    CPU. The fast runs lose next to nothing: their convolutions run in bf16/fp16 under autocast,
    only the small temporal model and SMPL in fp32."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

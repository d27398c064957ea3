"""The official Darknet ``yolov3.weights`` file: read it into :class:`YOLOv3`, or write one (tests).

Layout: a header of int32 major, minor, revision and a ``seen`` counter (8 bytes when
``major*10 + minor >= 2`` and both < 1000, else 4), then float32 little-endian parameters for the 75
conv layers in cfg order. Per conv layer: with batch norm, BN beta (bias), gamma (scale), running
mean, running variance, then the conv weights (out, in, ky, kx); without, the conv bias, then the
weights. The official file is version 0.2.0: 20-byte header + 62,001,757 floats = 248,007,048 bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vibe_blender.core.errors import VibeError
from vibe_blender.core.model_data import YOLO_WEIGHTS

from ...data.loading import darknet_header_bytes, yolo_weights_problem
from .yolov3 import YOLOv3


def parameter_tensors(model: YOLOv3) -> list[torch.Tensor]:
    """The model's tensors in the order the weights file stores them (300 tensors for YOLOv3)."""
    tensors = []
    for block in model.convs:
        if block.bn is not None:
            tensors += [block.bn.bias, block.bn.weight, block.bn.running_mean, block.bn.running_var]
        else:
            tensors.append(block.conv.bias)
        tensors.append(block.conv.weight)
    return tensors


def check_weights_file(path: Path) -> None:
    """VibeError unless the weights file is there (its content is checked as it loads)."""
    if not path.is_file():
        raise VibeError(
            f"Detector weights {YOLO_WEIGHTS} not found at {path}. Install the model data "
            "(vibe-mocap data install) or pass the folder that holds yolov3.weights."
        )


def load_darknet_weights(model: YOLOv3, path: str | Path) -> dict:
    """Copy the parameters of a Darknet weights file into ``model`` in place; returns the header.

    Raises VibeError naming the file when it is missing, truncated, too long or not YOLOv3's.
    """
    path = Path(path)
    check_weights_file(path)
    with open(path, "rb") as file:
        problem = yolo_weights_problem(file.read(8), path.stat().st_size)
    if problem:
        raise VibeError(f"{path}: {problem}. Download the official yolov3.weights again (vibe-mocap data install).")
    major, minor, revision = (int(v) for v in np.fromfile(path, dtype="<i4", count=3))
    header_bytes = darknet_header_bytes(major, minor)
    tensors = parameter_tensors(model)
    seen = int(np.fromfile(path, dtype="<u8" if header_bytes == 20 else "<i4", count=1, offset=12)[0])
    floats = np.fromfile(path, dtype="<f4", offset=header_bytes)
    if not np.isfinite(floats).all():
        raise VibeError(f"{path} contains NaN or infinite values: the file is damaged. Download yolov3.weights again.")
    offset = 0
    with torch.no_grad():
        for tensor in tensors:
            n = tensor.numel()
            tensor.copy_(torch.from_numpy(floats[offset : offset + n].reshape(tensor.shape)))
            offset += n
    assert offset == len(floats)  # guaranteed by the size check above
    return {"major": major, "minor": minor, "revision": revision, "seen": seen}


def write_random_darknet_weights(path: str | Path, *, seed: int = 0, seen: int = 32_013_312) -> Path:
    """Write a version-0.2.0 YOLOv3 weights file of the official size with random, well-scaled values.

    For tests and benchmarks only (the detections are meaningless). Conv weights ~ N(0, 1/fan_in),
    BN gamma small so activations stay bounded through the 23 residual blocks, variances positive.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    model = YOLOv3()
    with open(path, "wb") as f:
        f.write(np.array([0, 2, 0], dtype="<i4").tobytes())
        f.write(np.array([seen], dtype="<u8").tobytes())
        for block in model.convs:
            out_channels, in_channels, k, _ = block.conv.weight.shape
            fan_in = in_channels * k * k
            if block.bn is not None:
                beta = rng.normal(0.0, 0.1, out_channels)
                gamma = rng.uniform(0.1, 0.4, out_channels)
                mean = rng.normal(0.0, 0.1, out_channels)
                var = rng.uniform(0.5, 1.5, out_channels)
                f.write(np.concatenate([beta, gamma, mean, var]).astype("<f4").tobytes())
            else:
                f.write(rng.normal(0.0, 0.5, out_channels).astype("<f4").tobytes())
            weights = rng.standard_normal(out_channels * fan_in, dtype=np.float32) * np.float32(fan_in**-0.5)
            f.write(weights.astype("<f4").tobytes())
    return path

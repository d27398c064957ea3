"""What a batch's results depend on, as one short fingerprint that each manifest record keeps: a
video finished with other pipeline options, another precision, another engine or other model data
runs again (a rerun after installing the real model data replaces the placeholder's results)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from ..data.loading import REQUIRED_FILES, resolve_data_dir
from ..pipeline.options import RunOptions
from .engine_adapter import EngineSpec

# options that change only how fast a result comes, not the result
SPEED_ONLY_OPTIONS = ("batch_size", "temporal_chunk_frames", "compile_backbone", "compile_detector")


def results_fingerprint(spec: EngineSpec, options: RunOptions) -> str:
    """16 hex digits that change with anything a video's result depends on: the effective pipeline
    options, the device and precision asked for, the engine factory, and each model file's size and
    modification time (as this machine sees the model-data folder)."""
    shaping = dataclasses.asdict(options.effective())
    for name in SPEED_ONLY_OPTIONS:
        shaping.pop(name)
    described = {
        "options": shaping,
        "device": spec.device,  # with the precision asked for, the precision each worker takes
        "precision": spec.precision,
        "engine": spec.factory,
        "model_data": _model_data_stamp(spec.data_dir),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def _model_data_stamp(data_dir: str | None) -> list[list]:
    """[name, size, modification time] of each model file present: installing or replacing one changes it."""
    folder = resolve_data_dir(data_dir)
    stamp = []
    for name in REQUIRED_FILES:  # (the optional 3DPW-trained checkpoint is not what inference reads)
        try:
            found = os.stat(folder / name)
        except OSError:  # missing: the placeholder (or an incomplete-install error) stands for it
            continue
        stamp.append([name, found.st_size, found.st_mtime_ns])
    return stamp

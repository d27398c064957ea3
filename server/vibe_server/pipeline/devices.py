"""How many workers, on which devices: one per GPU, else as many CPU workers as cores and memory allow.
Shared by the batch's local pool and the server's job workers. Also the one message for a device
that ran out of memory (:func:`out_of_memory_error`)."""

from __future__ import annotations

import gc
import os
import sys

from vibe_blender.core.errors import VibeError

CPU_WORKER_MEMORY_BYTES = 3 << 30  # ResNet-50 + GRU + a batch of crops, fp32, with headroom
CORES_PER_CPU_WORKER = 4
OUT_OF_MEMORY_STAGE = "vibe_stage"  # the attribute of an out-of-memory error naming the run's stage

# what holds a GPU's memory in each stage of a run, and how to make it hold less
_VIDEO_SIZE = "use a video of a lower resolution"
_TRACKS = "keep fewer tracks (tracks_max) or use a shorter video"
# the backbone's batch is a command-line option only (``batch_size`` is not offered over HTTP)
_BATCH = "vibe-mocap infer or batch --batch-size N"
_BACKBONE = (
    f"lower it on the command line ({_BATCH}; 128 by default on a GPU); a server's jobs always use that "
    "default, so for a job free more of the GPU's memory"
)
_OUT_OF_MEMORY_HINTS = {
    "load": ("the model's weights", "the rest of its memory is taken"),
    "decode": ("the decoded frames", _VIDEO_SIZE),
    "detect": ("YOLOv3's batch of frames", _VIDEO_SIZE),
    "track": ("YOLOv3's batch of frames", _VIDEO_SIZE),
    "crop": ("the frames cropped together", _VIDEO_SIZE),
    "backbone": ("the batch of person crops", _BACKBONE),
    "temporal": ("the tracks' frames", _TRACKS),
    "smpl": ("the tracks' frames", _TRACKS),
    "write": ("the tracks' frames", _TRACKS),
}


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity where the platform reports one
    (``os.process_cpu_count`` on Python 3.13+, ``os.sched_getaffinity`` on Linux), else all the
    machine's cores (``os.sched_getaffinity`` does not exist on macOS or Windows)."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return count() or 1
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return len(affinity(0)) or 1
        except OSError:
            pass
    return os.cpu_count() or 1


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is PyTorch's out-of-memory error (of a GPU; without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(err, torch.cuda.OutOfMemoryError)


def out_of_memory_error(stage: str | None = None) -> VibeError:
    """The one message for a device that ran out of memory (in the run's ``stage`` where known), with
    what to change; the memory PyTorch caches is handed back to the device first (after a collection:
    tensors of the failed work that only a reference cycle still holds are freed before that)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        gc.collect()
        torch.cuda.empty_cache()  # (nothing to do where CUDA never started)
    if stage in _OUT_OF_MEMORY_HINTS:
        what, change = _OUT_OF_MEMORY_HINTS[stage]
        where = f" in the {stage} stage, where it holds {what}: {change}."
    else:
        where = (
            ". Lower the video's resolution, the number of tracks (tracks_max) or, on the command line, "
            f"the backbone batch ({_BATCH}; a server's jobs cannot set it)."
        )
    return VibeError(
        f"The GPU ran out of memory{where} Other programs on the GPU take its memory too (see nvidia-smi); "
        "or run on the CPU (--device cpu)."
    )


def gpu_count() -> int:
    import torch  # start-up: the CLI and the API import this module before they need torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_jobs(device: str) -> int:
    """One worker per GPU ('auto'/'cuda'), one for a named GPU; on CPU as many as cores and memory allow."""
    if device != "cpu" and gpu_count() > 0:
        return gpu_count() if device in ("auto", "cuda") else 1
    cores = usable_cores()
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: go by the cores alone
        memory = CPU_WORKER_MEMORY_BYTES * cores
    return max(1, min(cores // CORES_PER_CPU_WORKER, memory // CPU_WORKER_MEMORY_BYTES))


def worker_devices(device: str, jobs: int) -> list[str]:
    """The device of each of ``jobs`` workers: the GPUs in turn for 'auto'/'cuda', else ``device``."""
    gpus = gpu_count() if device in ("auto", "cuda") else 0
    if gpus:
        return [f"cuda:{i % gpus}" for i in range(jobs)]
    return ["cpu" if device == "auto" else device] * jobs


def server_devices(device: str) -> list[str]:
    """The server's job workers: one per visible GPU for 'auto'/'cuda', else one on ``device``."""
    return worker_devices(device, max(1, gpu_count()) if device in ("auto", "cuda") else 1)

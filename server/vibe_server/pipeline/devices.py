"""How many workers, on which devices: one per GPU, else as many CPU workers as cores and memory allow.
Shared by the batch's local pool and the server's job workers."""

from __future__ import annotations

import os

CPU_WORKER_MEMORY_BYTES = 3 << 30  # ResNet-50 + GRU + a batch of crops, fp32, with headroom
CORES_PER_CPU_WORKER = 4


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

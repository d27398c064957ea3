"""Which precision pays off on this machine: bf16 on CPUs with bf16 hardware, fp16 on CUDA.

On a CPU without AVX512-BF16 or AMX, PyTorch emulates bf16 matrix products and ResNet-50 gets
slower than in fp32; with them, bf16 + channels_last runs it about twice as fast. So bf16 is the
default only where the CPU has the instructions.
"""

from __future__ import annotations

from pathlib import Path

# /proc/cpuinfo flags of CPUs with native bf16 matrix arithmetic
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "amx_tile"})
CPUINFO_PATH = Path("/proc/cpuinfo")


def parse_cpu_flags(cpuinfo_text: str) -> set[str]:
    """The ``flags`` (x86) or ``Features`` (ARM) words of /proc/cpuinfo text, over all processors."""
    flags: set[str] = set()
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def _torch_capability() -> str:
    try:
        import torch  # start-up: `vibe-mocap infer` imports this module to parse its options, before torch

        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # an old torch without the query
        return ""


def cpu_has_fast_bf16(cpuinfo_text: str | None = None) -> bool:
    """True when the CPU has AVX512-BF16 or AMX.

    cpuinfo_text: /proc/cpuinfo's text (None: read it). Where there is none (macOS, Windows), the
    answer falls back to PyTorch's CPU capability, which names AMX on such CPUs.
    """
    if cpuinfo_text is None:
        try:
            cpuinfo_text = CPUINFO_PATH.read_text(errors="replace")
        except OSError:
            cpuinfo_text = ""
    flags = parse_cpu_flags(cpuinfo_text)
    if flags:
        return bool(flags & BF16_FLAGS)
    capability = _torch_capability().upper()
    return "AMX" in capability or "BF16" in capability


def default_precision(device: str, *, cpuinfo_text: str | None = None) -> str:
    """The precision the pipeline runs in unless told otherwise: "fp16" on CUDA, "bf16" on a CPU
    with bf16 hardware, else "fp32"."""
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if cpu_has_fast_bf16(cpuinfo_text) else "fp32"


def choose_precision(choice: str, *, fast: bool, device: str) -> str:
    """The CLI's ``--precision`` (auto | fp32 | bf16 | fp16) and ``--fast`` -> the precision to run.

    An explicit choice wins; ``--fast`` forces bf16 (CPU) / fp16 (CUDA); else :func:`default_precision`.
    """
    if choice != "auto":
        return choice
    if fast:
        return "fp16" if device.startswith("cuda") else "bf16"
    return default_precision(device)

"""Networks through ``torch.compile`` (inductor), where it pays, never breaking a run: the ResNet-50
backbone (``compile_backbone``), and YOLOv3's network when a run asks for it (``compile_detector``).

Compiled with inductor's freezing (weights folded into the graph as constants, convolutions
prepacked for oneDNN), ResNet-50 in bf16 + channels_last ran about 40 crops/s against 30 eager on
the 2-core AVX512-BF16 development machine (docs/server.md, Speed; without freezing it was slower
still). Compiling took 18 s there, 10 s when inductor's on-disk cache already held the graph.
So a process compiles once and keeps the result (``CompiledRunner``), and a run asks for it only
when the video is long enough to win the time back (:func:`compile_pays`); a server compiles at its
first long job and reuses it for every job after. Any failure to compile (no C compiler, an
unsupported platform, an inductor bug) logs the reason and falls back to the eager module; a GPU
running out of memory is no such failure and fails the run as it would eagerly.

The compiled module always gets batches of one size: a short batch is padded (one shape, one
compilation). YOLOv3's network compiled is no faster on the 2-core CPU in bf16 (batches of 8 at
416 px: 4.7 frames/s against 5.4 eager), and a padded single frame costs a whole batch (1.40 s
against 0.21 s), so no run compiles it unless asked (on a GPU: unmeasured).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import torch
from torch import nn

from vibe_blender.core.errors import VibeError

from .devices import is_out_of_memory

log = logging.getLogger("vibe_server.compile")

COMPILE_MODES = ("auto", "on", "off")
# About 18 s of compiling (no cache) at ~0.010 s saved per crop: from about 2000 crops on it pays.
COMPILE_MIN_CROPS = 2000


def compile_pays(mode: str, *, device: str, precision: str, expected_crops: int, compiled_already: bool) -> bool:
    """Whether a run should use the compiled backbone.

    mode: "on" (always), "off" (never) or "auto": on a CPU in bf16 (where the speed-up was measured),
    when the module is compiled already or the run has at least COMPILE_MIN_CROPS crops to win the
    compile time back.
    """
    if mode not in COMPILE_MODES:
        raise VibeError(f"Unknown backbone compile mode '{mode}'; use auto, on or off.")
    if mode != "auto":
        return mode == "on"
    if device != "cpu" or precision != "bf16":
        return False
    return compiled_already or expected_crops >= COMPILE_MIN_CROPS


class CompiledRunner:
    """Runs a module eagerly or compiled:
    ``runner(inputs (B, ...), compiled=, batch_size=) -> outputs``; the compiled module sees only
    batches of ``batch_size`` (shorter ones padded, longer ones split).

    The module is compiled on the first compiled call and kept; when compiling or the compiled
    call fails, the reason is logged (and passed to ``on_fallback``) and every later call is eager;
    a device's out-of-memory error is raised instead, and compiling stays on.
    Threads may share a runner (the staged front end detects in two): the first compiled call runs
    under a lock, so the module is compiled once.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str = "backbone",
        on_fallback: Callable[[str], None] | None = None,
        compiler: Callable[[nn.Module], Callable] | None = None,
    ):
        self.module, self.name = module, name
        self._compiler = compiler or _torch_compile
        self._compiled: Callable | None = None
        self._first_call = threading.Lock()
        self._on_fallback = on_fallback
        self.fallback_reason: str | None = None

    @property
    def compiled(self) -> bool:
        """True once a compiled module exists and has not failed."""
        return self._compiled is not None and self.fallback_reason is None

    def __call__(self, images: torch.Tensor, *, compiled: bool, batch_size: int = 32):
        if not compiled or self.fallback_reason is not None:
            return self.module(images)
        try:
            return self._run_compiled(images, batch_size)
        except Exception as err:  # compiling can fail in many ways; never fail the run
            if is_out_of_memory(err):  # not the compiler's fault: the run names the stage and what to change
                raise
            self._fall_back(f"{type(err).__name__}: {err}")
            return self.module(images)

    def _run_compiled(self, images: torch.Tensor, batch_size: int):
        n = len(images)
        if n > batch_size:  # larger batches: in pieces of the compiled size
            pieces = [self._run_compiled(images[i : i + batch_size], batch_size) for i in range(0, n, batch_size)]
            return _joined(pieces)
        if n < batch_size:  # a short batch: pad instead of recompiling
            pad = images[:1].expand(batch_size - n, *images.shape[1:])
            images = torch.cat([images, pad]).contiguous(memory_format=_memory_format(images))
        if self._compiled is None:
            with self._first_call:  # compiling happens in the first call; once, whatever the threads
                if self._compiled is None:
                    compiled = self._compiler(self.module)
                    outputs = compiled(images)
                    self._compiled = compiled
                    return _first(outputs, n)
        return _first(self._compiled(images), n)

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        message = f"The compiled {self.name} is not available ({reason}); using the eager one."
        log.warning(message)
        if self._on_fallback is not None:
            self._on_fallback(message)


def _torch_compile(module: nn.Module):
    # freezing: inference only (the backbone never trains here), and the module's weights must not
    # change afterwards; a new model gets a new runner.
    return torch.compile(module, dynamic=False, options={"freezing": True})


def _first(outputs, n: int):
    """The first ``n`` rows of a tensor, or of each tensor of a tuple/list (YOLOv3's three heads)."""
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(output[:n] for output in outputs)
    return outputs[:n]


def _joined(pieces: list):
    """Pieces of outputs joined along the batch: tensors, or tuples/lists of tensors."""
    if isinstance(pieces[0], (tuple, list)):
        return type(pieces[0])(torch.cat(parts) for parts in zip(*pieces))
    return torch.cat(pieces)


def _memory_format(images: torch.Tensor):
    return torch.channels_last if images.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format

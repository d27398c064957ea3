"""Where the batch runs the pipeline's engine: load an engine, run one video, write its result (the
other batch modules use only the pipeline's options, devices and video checks).

The pipeline's public names used here: ``load_engine(data_dir, device=, precision=, allow_synthetic=)``
returning an ``Engine``, ``Engine.run(path, RunOptions, progress=, video_name=)`` returning a
``RunOutput`` (``.result``, ``.frames_decoded``) and ``save_result``. The engine is made by a factory
named as ``package.module:function`` (default ``ENGINE_FACTORY``) so that worker processes and Ray
actors, which import it themselves, can load another engine (a test model, a custom pipeline).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vibe_blender.core.atomic_file import atomic_write_bytes, is_disk_full
from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import MocapResult, load_result, save_result

from ..data.loading import SYNTHETIC_MODEL_NAME
from ..pipeline.cpu_features import choose_precision
from ..pipeline.options import RunOptions
from .inputs import BatchItem
from .manifest import make_record

if TYPE_CHECKING:  # torch loads in the workers, not with the batch command
    from ..pipeline.engine import Engine

ENGINE_FACTORY = "vibe_server.pipeline.engine:load_engine"
AUTO, FAST = "auto", "fast"  # chosen by each worker for its own device, as infer and serve choose


@dataclass(frozen=True)
class EngineSpec:
    """Everything a worker needs to load its engine (picklable: it travels to processes and actors)."""

    device: str = "cpu"  # the worker's device ("cpu", "cuda:N")
    # AUTO: what the worker's device does best (fp16 on CUDA, bf16 on CPUs with AVX512-BF16/AMX, else
    # fp32); FAST: fp16 on CUDA, bf16 on any CPU; or fp32, bf16, fp16 for every worker
    precision: str = AUTO
    data_dir: str | None = None
    # the labelled random-weight placeholder when the model data is missing (else an error saying so)
    allow_synthetic: bool = False
    factory: str = ENGINE_FACTORY
    threads: int | None = None  # torch CPU threads per worker (None: torch's default)


class WorkerSetupError(Exception):
    """The worker could not load its engine: the whole batch stops with this message."""


def died_loading(remedy: str) -> str:
    """The one message of a batch whose workers all died while loading the model (local or on Ray), with
    ``remedy``: what to do about it there."""
    return (
        "A worker process died while loading the model (out of memory, or a crash in native code), so no "
        f"video was run by it. {remedy}, then run the same command again to resume."
    )


class OutputDiskFull(Exception):
    """OUTDIR's disk is full or read-only: every later video would fail the same way, after all its
    work, so the whole batch stops with this message (the video has no record: it runs on resume)."""


@contextlib.contextmanager
def stopping_on_full_disk(path: str | Path) -> Iterator[None]:
    """An OSError of writing ``path`` in OUTDIR becomes OutputDiskFull when the disk is full or
    read-only (any other stays an error of that one file)."""
    try:
        yield
    except OSError as err:
        if not (is_disk_full(err) or err.errno == errno.EROFS):
            raise
        raise OutputDiskFull(
            f"Cannot write {path} ({err.strerror}). Free some space on the output folder's disk (or make it "
            "writable), then run the same command again to resume."
        ) from None


def write_result(path: str | Path, data: bytes) -> None:
    """The result file, written atomically; OutputDiskFull when OUTDIR's disk cannot take it."""
    with stopping_on_full_disk(path):
        atomic_write_bytes(path, data)


def make_options(**values: object) -> RunOptions:
    """The pipeline's ``RunOptions`` from keyword values, checked (VibeError when one is bad)."""
    options = RunOptions(**values)
    options.validate()
    return options


def worker_precision(spec: EngineSpec) -> str:
    """The precision on the worker's own device, chosen in the worker (a Ray actor learns its device
    and its CPU only on its node)."""
    if spec.precision not in (AUTO, FAST):
        return spec.precision
    return choose_precision("auto", fast=spec.precision == FAST, device=spec.device)


def load_worker_engine(spec: EngineSpec, options: RunOptions | None = None) -> Engine:
    """The engine for ``spec`` (once per worker), with ``options`` checked against it where the
    engine can (a precision its device lacks, a detector without weights: every video would fail);
    a problem becomes ``WorkerSetupError``."""
    module_name, _, function_name = spec.factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise WorkerSetupError(
            f"The engine factory '{spec.factory}' cannot be imported ({err}); name it as package.module:function."
        ) from err
    try:
        if spec.threads:
            import torch  # start-up: torch loads in the worker, not when the batch command starts

            torch.set_num_threads(spec.threads)
        engine = factory(
            spec.data_dir, device=spec.device, precision=worker_precision(spec), allow_synthetic=spec.allow_synthetic
        )
        if options is not None and hasattr(engine, "check_options"):  # a custom engine may not have it
            engine.check_options(options)
        return engine
    except VibeError as err:
        raise WorkerSetupError(str(err)) from err
    except Exception as err:  # out of memory, a missing driver, an unreadable file: the batch cannot run either
        raise WorkerSetupError(
            f"loading it on {spec.device} failed with {type(err).__name__}: {err}. Check the device's free "
            "memory and the model data, or choose another --device."
        ) from err


def result_bytes(result: MocapResult) -> bytes:
    buffer = io.BytesIO()
    save_result(buffer, result)
    return buffer.getvalue()


@contextlib.contextmanager
def _video_here(item: BatchItem, data: bytearray | None) -> Iterator[str]:
    """The path of the video to run: its own, or a copy of ``data`` (its bytes, sent through Ray's object
    store) in this node's temporary folder, deleted afterwards."""
    if data is None:
        yield item.input_path
        return
    with contextlib.ExitStack() as stack:
        try:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="vibe-batch-", ignore_cleanup_errors=True))
            copy = Path(folder) / ("input" + Path(item.key).suffix)
            copy.write_bytes(data)
        except OSError as err:
            raise VibeError(
                f"Cannot copy the video into this node's temporary folder {tempfile.gettempdir()} "
                f"({err.strerror or err}); free space there (or set TMPDIR to a larger folder), then run the "
                "batch again with --retry-failed."
            ) from None
        yield str(copy)


def process_video(
    engine: Engine,
    item: BatchItem,
    options: RunOptions,
    *,
    worker: str,
    data: bytearray | None = None,
    progress: Callable | None = None,
    write_output: bool = True,
) -> tuple[dict, bytes | None]:
    """Run one video -> (manifest record, the result file's bytes when it is done).

    ``data``: the video's bytes (sent through Ray's object store), run from a temporary copy; else the
    video is read at ``item.input_path``. With ``write_output`` the result is also written
    (atomically) to ``item.output_path``. Any error becomes a failed record, that of copying ``data``
    too: one bad video never stops the batch. Only a full or read-only OUTDIR does (:class:`OutputDiskFull`)."""
    t0 = time.perf_counter()
    try:
        with _video_here(item, data) as path:
            out = engine.run(path, options, progress=progress, video_name=Path(item.key).name)
        result = result_bytes(out.result)
        if write_output:
            write_result(item.output_path, result)
    except OutputDiskFull:
        raise
    except VibeError as err:
        return make_record(item, "failed", seconds=time.perf_counter() - t0, error=str(err), worker=worker), None
    except OSError as err:  # a file the run reads or writes (a result path the system refuses, ...)
        where = f" ({err.filename})" if err.filename else ""
        message = f"{err.strerror or err}{where}; check that file and the output folder, then use --retry-failed."
        return make_record(item, "failed", seconds=time.perf_counter() - t0, error=message, worker=worker), None
    except Exception as err:  # noqa: BLE001 - the batch goes on, the error is recorded
        message = (
            f"Internal error ({type(err).__name__}: {err}); the other videos are not affected. Report it if it repeats."
        )
        return make_record(item, "failed", seconds=time.perf_counter() - t0, error=message, worker=worker), None
    record = make_record(
        item,
        "done",
        tracks=len(out.result.tracks),
        frames=out.frames_decoded,
        seconds=time.perf_counter() - t0,
        worker=worker,
        warnings=getattr(out, "warnings", ()),  # a custom engine's output may have none
    )
    return record, result


def made_by_placeholder(result_path: str | Path) -> bool:
    """True when the result came from the random-weight placeholder model (model data not installed)."""
    return load_result(result_path).model_name == SYNTHETIC_MODEL_NAME

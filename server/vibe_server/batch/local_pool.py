"""Local worker processes: ``ProcessPoolExecutor`` (spawn), each worker loads its engine once.

At most ``2 x workers`` videos are submitted at a time, so memory stays bounded whatever the batch
size. A worker process that dies (killed, out of memory, a crash in native code) breaks the pool:
a new pool is made and the videos that were in flight are tried again, up to ``MAX_ATTEMPTS`` times.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

from vibe_blender.core.errors import VibeError

from ..pipeline.devices import worker_devices
from ..pipeline.options import RunOptions
from .engine_adapter import EngineSpec, WorkerSetupError, load_engine, process_video
from .inputs import BatchItem
from .manifest import make_record
from .progress import BatchProgress

MAX_ATTEMPTS = 3  # a video in flight when its worker died this often is marked failed
IN_FLIGHT_PER_WORKER = 2  # one running, one waiting: workers never idle, memory stays bounded

# The worker process's state (set once by ``_init_worker``).
_engine = None
_options = None
_worker_name = ""
_status_queue = None
_setup_error: str | None = None


def _init_worker(spec: EngineSpec, options, devices, status_queue) -> None:
    """Runs once in each worker process: take a device, load the engine."""
    global _engine, _options, _worker_name, _status_queue, _setup_error
    device = devices.get()
    _options, _status_queue = options, status_queue
    _worker_name = f"worker {os.getpid()} ({device})"
    try:
        _engine = load_engine(replace(spec, device=device))
    except WorkerSetupError as err:  # reported with the first video, then the batch stops
        _setup_error = str(err)


def _run_item(item: BatchItem) -> dict:
    if _setup_error is not None:
        raise WorkerSetupError(_setup_error)

    def progress(stage: str, fraction: float, eta_s) -> None:
        _status_queue.put((_worker_name, f"{item.key}  {stage} {100 * fraction:3.0f}%"))

    _status_queue.put((_worker_name, f"{item.key}  starting"))
    record, _ = process_video(_engine, item, _options, worker=_worker_name, progress=progress)
    _status_queue.put((_worker_name, "idle"))
    return record


def run_local(
    items: list[BatchItem],
    spec: EngineSpec,
    options: RunOptions,
    *,
    jobs: int,
    on_record: Callable[[dict], None],
    progress: BatchProgress,
) -> None:
    """Process ``items`` on ``jobs`` worker processes; ``on_record`` gets each finished video's record
    (in the calling thread). Raises VibeError when the workers cannot load their engine."""
    context = multiprocessing.get_context("spawn")
    pending = deque(items)
    attempts: Counter[str] = Counter()
    layout = worker_devices(spec.device, jobs)
    on_cpu = all(device == "cpu" for device in layout)  # CPU workers share the cores out
    spec = replace(spec, threads=spec.threads or (max(1, (os.cpu_count() or 1) // jobs) if on_cpu else None))
    while pending:
        devices, status_queue = context.Queue(), context.Queue()
        for device in layout:
            devices.put(device)
        pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=context,
            initializer=_init_worker,
            initargs=(spec, options, devices, status_queue),
        )
        in_flight: dict = {}
        stopped = True  # Ctrl-C or a setup error: do not wait for the videos in flight
        try:
            _drive(pool, pending, in_flight, jobs, status_queue, on_record, progress)
            stopped = False
        except BrokenProcessPool:
            _retry_or_fail(in_flight, pending, attempts, on_record)
            stopped = False
        finally:
            pool.shutdown(wait=not stopped, cancel_futures=True)


def _drive(pool, pending: deque, in_flight: dict, jobs: int, status_queue, on_record, progress) -> None:
    while pending or in_flight:
        while pending and len(in_flight) < IN_FLIGHT_PER_WORKER * jobs:
            item = pending.popleft()
            in_flight[pool.submit(_run_item, item)] = item
        done, _ = wait(list(in_flight), timeout=0.25, return_when=FIRST_COMPLETED)
        _show_status(status_queue, progress)
        for future in done:
            try:
                record = future.result()
            except WorkerSetupError as err:
                raise VibeError(f"The workers could not load the model: {err}") from err
            del in_flight[future]
            on_record(record)


def _retry_or_fail(in_flight: dict, pending: deque, attempts: Counter, on_record) -> None:
    """A worker died: finished futures keep their result, the others go back to the queue."""
    for future, item in in_flight.items():
        if future.done() and not future.cancelled() and future.exception() is None:
            on_record(future.result())
            continue
        attempts[item.key] += 1
        if attempts[item.key] >= MAX_ATTEMPTS:
            on_record(
                make_record(
                    item,
                    "failed",
                    error=(
                        f"A worker process died {MAX_ATTEMPTS} times while this video was being processed (out of "
                        "memory, or a crash in native code); check the file plays, or run it alone with "
                        "'vibe-mocap infer'."
                    ),
                )
            )
        else:
            pending.appendleft(item)
    in_flight.clear()


def _show_status(status_queue, progress: BatchProgress) -> None:
    while True:
        try:
            worker, text = status_queue.get_nowait()
        except (queue.Empty, OSError, EOFError):
            return
        progress.worker_status(worker, text)

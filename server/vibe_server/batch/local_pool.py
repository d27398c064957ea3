"""Local worker processes: ``ProcessPoolExecutor`` (spawn), each worker loads its engine once.

At most ``2 x workers`` videos are submitted at a time, so memory stays bounded whatever the batch
size. Each worker reports to the driver that it has loaded its engine, which video it starts, and its
progress (``SimpleQueue``: each report is in the pipe before ``put`` returns, so a worker that dies
right after one has still been heard). A worker process that dies (killed, out of memory, a
crash in native code) breaks the pool: the pool ends its other workers (SIGTERM), so the dead one is
the worker whose exit status is another. A new pool is made and the videos that were in flight are
tried again. Only the video the dead worker was running counts an attempt (``MAX_ATTEMPTS`` make a
failed record); when that is not known, each video that was in flight, but those a surviving worker
was running, runs alone next, so that a second death names it. A worker that dies before it has
loaded its engine stops the batch (out of memory while loading, most likely). Ctrl-C (and SIGTERM or
SIGHUP, which the batch turns into the same stop) stops the workers at once: the queued videos are
cancelled, those already finished are recorded. On Linux a worker also dies with the driver when the
driver is killed outright (SIGKILL, a crash), rather than run videos no one records.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace

from vibe_blender.core.errors import VibeError

from ..pipeline.devices import usable_cores, worker_devices
from ..pipeline.options import RunOptions
from .engine_adapter import EngineSpec, WorkerSetupError, died_loading, load_worker_engine, process_video
from .inputs import BatchItem
from .manifest import make_record
from .progress import BatchProgress

MAX_ATTEMPTS = 3  # a video whose worker died this often while running it is marked failed
IN_FLIGHT_PER_WORKER = 2  # one running, one waiting: workers never idle, memory stays bounded
READY, START, STAGE, IDLE = "ready", "start", "stage", "idle"  # the workers' reports
STAGE_TEXT_CHARS = 60  # a report stays far below the size a pipe writes in one piece (PIPE_BUF)
PR_SET_PDEATHSIG = 1  # Linux's prctl option: the signal a process gets when its parent ends
DIED_LOADING = died_loading("Run fewer workers (--jobs), free memory or choose another --device")

# The worker process's state (set once by ``_init_worker``).
_engine = None
_options = None
_worker_name = ""
_status_queue = None
_setup_error: str | None = None


@dataclass
class LocalQueue:
    """The driver's bookkeeping across pools: what is left, and who is to blame for a worker's death."""

    items: list[BatchItem]  # the batch: workers name a video by its position here
    pending: deque[BatchItem]
    attempts: Counter[str] = field(default_factory=Counter)  # worker deaths while running each video
    suspects: set[str] = field(default_factory=set)  # running beside a death: each runs alone next
    # the current pool's workers:
    ready: dict[int, str] = field(default_factory=dict)  # pid -> name, of those that loaded their engine
    running: dict[int, str] = field(default_factory=dict)  # pid -> the video it said it started
    processes: dict = field(default_factory=dict)  # pid -> multiprocessing.Process

    def __post_init__(self) -> None:
        self.position = {item.key: index for index, item in enumerate(self.items)}

    def new_pool(self) -> None:
        self.ready.clear()
        self.running.clear()
        self.processes.clear()


def status_channel(context: multiprocessing.context.BaseContext) -> multiprocessing.queues.SimpleQueue:
    """The workers' reports to the driver: a ``SimpleQueue`` writes each one to its pipe before ``put``
    returns (a ``Queue`` hands it to a feeder thread, which dies unheard with a worker that crashes)."""
    return context.SimpleQueue()


def _report(kind: str, position: int | None = None, text: str = "") -> None:
    """One report to the driver, in the pipe when this returns (a ``SimpleQueue`` has no feeder thread)."""
    _status_queue.put((kind, os.getpid(), position, text))


def _init_worker(spec: EngineSpec, options, devices, status_queue) -> None:
    """Runs once in each worker process: take a device, load the engine, report ready."""
    global _engine, _options, _worker_name, _status_queue, _setup_error
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the driver stops us
    _die_with_the_driver()
    device = devices.get()
    _options, _status_queue = options, status_queue
    _worker_name = f"worker {os.getpid()} ({device})"
    try:
        _engine = load_worker_engine(replace(spec, device=device), options)
    except WorkerSetupError as err:  # reported with the first video, then the batch stops
        _setup_error = str(err)
    _report(READY, text=_worker_name)


def _die_with_the_driver() -> None:
    """On Linux, the kernel kills this worker when the driver ends, however it ends (SIGKILL, a crash):
    it would go on running videos no one records, holding the model (and a GPU). The kernel ties this
    to the thread that started the worker, which is the driver's (the pool starts its workers as
    videos are submitted). Elsewhere nothing changes."""
    if not sys.platform.startswith("linux"):
        return
    try:
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):  # no C library to ask (a static build)
        return
    driver = multiprocessing.parent_process()
    if driver is not None and os.getppid() != driver.pid:  # it ended before the call: the kernel will not tell
        os._exit(1)


def _run_item(item: BatchItem, position: int) -> dict:
    if _setup_error is not None:
        raise WorkerSetupError(_setup_error)

    def progress(stage: str, fraction: float, eta_s) -> None:
        _report(STAGE, position, f"{stage[:STAGE_TEXT_CHARS]} {100 * fraction:3.0f}%")

    _report(START, position)  # names the video if this worker dies
    record, _ = process_video(_engine, item, _options, worker=_worker_name, progress=progress)
    _report(IDLE)
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
    (in the calling thread). Raises VibeError when the workers cannot load their engine; on that or on
    Ctrl-C the worker processes have ended when it returns."""
    context = multiprocessing.get_context("spawn")
    state = LocalQueue(items, deque(items))
    layout = worker_devices(spec.device, jobs)
    on_cpu = all(device == "cpu" for device in layout)  # CPU workers share the cores out
    spec = replace(spec, threads=spec.threads or (max(1, usable_cores() // jobs) if on_cpu else None))
    while state.pending:
        devices, status_queue = context.Queue(), status_channel(context)
        for device in layout:
            devices.put(device)
        state.new_pool()
        progress.clear_workers()  # a replaced pool's workers have other pids: their lines go
        pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=context,
            initializer=_init_worker,
            initargs=(spec, options, devices, status_queue),
        )
        in_flight: dict = {}
        try:
            try:
                _drive(pool, state, in_flight, jobs, status_queue, on_record, progress)
            except BrokenProcessPool:
                state.processes.update(_worker_processes(pool))
                pool.shutdown(wait=True)  # the pool has ended its other workers: every exit status is final
                _show_status(status_queue, progress, state)  # all the dead worker wrote before it died
                _retry_or_fail(in_flight, state, on_record, _dead_workers(state.processes))
        except BaseException:  # Ctrl-C or a setup error: no worker may write once the batch has ended
            try:
                _record_finished(in_flight, on_record)
            finally:  # even when recording fails (a full disk)
                _stop_workers(pool)
            raise
        pool.shutdown(wait=True)


def _drive(
    pool, state: LocalQueue, in_flight: dict, jobs: int, status_queue, on_record, progress: BatchProgress
) -> None:
    while state.pending or in_flight:
        _submit(pool, state, in_flight, jobs)
        state.processes.update(_worker_processes(pool))
        done, _ = wait(list(in_flight), timeout=0.25, return_when=FIRST_COMPLETED)
        _show_status(status_queue, progress, state)
        for future in done:
            try:
                record = future.result()
            except WorkerSetupError as err:
                raise VibeError(f"The workers could not load the model: {err}") from err
            item = in_flight.pop(future)
            state.suspects.discard(item.key)
            on_record(record)


def _submit(pool, state: LocalQueue, in_flight: dict, jobs: int) -> None:
    while state.pending and len(in_flight) < IN_FLIGHT_PER_WORKER * jobs:
        running_suspect = any(item.key in state.suspects for item in in_flight.values())
        if in_flight and (running_suspect or state.pending[0].key in state.suspects):
            return  # a suspect runs alone, so that a crash names it
        item = state.pending.popleft()
        in_flight[pool.submit(_run_item, item, state.position[item.key])] = item


def _worker_processes(pool) -> dict:
    """pid -> Process of the pool's workers (the executor has no public list of them)."""
    return dict(getattr(pool, "_processes", None) or {})


def _dead_workers(processes: dict) -> list[int]:
    """The pids of the workers that died by themselves: the pool ends the others with SIGTERM."""
    return [pid for pid, process in processes.items() if process.exitcode not in (None, -signal.SIGTERM)]


def _retry_or_fail(in_flight: dict, state: LocalQueue, on_record, dead: list[int]) -> None:
    """Worker(s) ``dead`` died: finished futures keep their result; the video each was running counts an
    attempt; the others go back to the queue unblamed. When that is not known (no dead worker told
    apart, or one that had not said what it ran), each video in flight that no surviving worker says
    it runs becomes a suspect (or, alone, counts an attempt; when there is none, no video is blamed). A
    worker that died before it had loaded its engine stops the batch."""
    _record_finished(in_flight, on_record)
    unfinished = [item for future, item in in_flight.items() if not _finished(future)]
    in_flight.clear()
    if not state.ready or any(pid not in state.ready for pid in dead):
        raise VibeError(DIED_LOADING)
    named = {state.running[pid] for pid in dead if pid in state.running}
    if dead and len(named) == len(dead):
        culprits = [item for item in unfinished if item.key in named]
    else:  # a dead worker that said nothing ran none of the videos the surviving workers say they run
        survivors_run = {key for pid, key in state.running.items() if pid not in dead} if dead else set()
        culprits = [item for item in unfinished if item.key not in survivors_run]
        if len(culprits) > 1:
            state.suspects.update(item.key for item in culprits)
            culprits = []
    retry = []
    for item in unfinished:
        if item in culprits:
            state.attempts[item.key] += 1
            if state.attempts[item.key] >= MAX_ATTEMPTS:
                state.suspects.discard(item.key)
                on_record(
                    make_record(
                        item,
                        "failed",
                        error=(
                            f"A worker process died {MAX_ATTEMPTS} times while processing this video (out of "
                            "memory, or a crash in native code); check the file plays, or run it alone with "
                            "'vibe-mocap infer'."
                        ),
                    )
                )
                continue
        retry.append(item)
    state.pending.extendleft(reversed(retry))


def _finished(future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _record_finished(in_flight: dict, on_record) -> None:
    """Record the videos whose result came back but was not taken yet (they are not run again)."""
    for future in [f for f in in_flight if _finished(f)]:
        on_record(future.result())
        del in_flight[future]


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued videos and end the worker processes now (``shutdown`` alone lets them finish
    the videos they hold, writing results after the batch has ended)."""
    live = getattr(pool, "_processes", None) or {}  # the executor's own table: a worker it starts late lands there too
    pool.shutdown(wait=False, cancel_futures=True)  # (the executor has no public way to stop its workers)
    processes = list(live.values())
    for process in processes:
        process.terminate()
    for process in processes:
        process.join()


def _show_status(status_queue, progress: BatchProgress, state: LocalQueue) -> None:
    """Take the workers' reports: who is ready, which video each runs, what it does now."""
    while True:
        try:
            if status_queue.empty():
                return
            kind, pid, position, text = status_queue.get()  # a whole report is there: it cannot block
        except (OSError, EOFError, ValueError):
            return
        if kind == READY:
            state.ready[pid] = text
            progress.worker_status(text, "ready")
            continue
        name = state.ready.get(pid, f"worker {pid}")
        if kind == IDLE:
            state.running.pop(pid, None)
            progress.worker_status(name, "idle")
            continue
        key = state.items[position].key
        state.running[pid] = key
        progress.worker_status(name, f"{key}  {text or 'starting'}")

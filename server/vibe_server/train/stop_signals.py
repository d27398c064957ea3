"""How a training run stops: SIGTERM (``kill``, a job scheduler, a container's stop) ends it as Ctrl-C
does, wherever in the run it lands, with one word and no traceback; its DataLoader workers end
quietly with it."""

from __future__ import annotations

import _thread
import contextlib
import functools
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader

from vibe_blender.core.errors import VibeError

EXIT_TERMINATED = 128 + signal.SIGTERM  # 143: the exit status of a run stopped by SIGTERM, as a shell shows it
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130: after Ctrl-C
# How long a process that leaves the saying to its machine's first one waits before it ends: torchrun
# stops every process as soon as one ends, which would cut off the first before it said anything.
QUIET_EXIT_WAIT_S = 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Terminated(KeyboardInterrupt):
    """The run was stopped by SIGTERM: it ends as Ctrl-C ends it (see :func:`sigterm_interrupts`)."""


class SameInEveryProcess(VibeError):
    """An error that every torchrun process of a machine meets alike (a bad setting, a missing file,
    a diverged run): the machine's first process alone says it, rather than each of eight saying the
    same. (Per machine: a file missing on one node only is still said there.)"""


def is_first_process() -> bool:
    """True unless torchrun started this process as one of local rank 1 and above on its machine."""
    return os.environ.get("LOCAL_RANK", "0").strip() in ("", "0")


class StopSafeLoader(DataLoader):
    """A DataLoader that a stop cannot catch half-way through forking its workers (each pass starts
    them anew): torch's worker iterator, left half-built there, fails again when collected, and
    Python prints that failure after "interrupted". SIGTERM and Ctrl-C wait while the workers are
    forked (:func:`stops_held`), well under a second; the pass then ends cleanly, its workers with it.
    Workers started otherwise (spawn, forkserver) take seconds to start and the parent may wait on a
    pipe to one the same signal ended, so a stop is not held for them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, worker_init_fn=stop_worker_quietly, **kwargs)

    def __iter__(self) -> Any:
        context = self.multiprocessing_context or multiprocessing.get_context()
        forked = self.num_workers > 0 and context.get_start_method() == "fork"
        with stops_held() if forked else contextlib.nullcontext():
            return super().__iter__()


@contextlib.contextmanager
def stops_held() -> Iterator[None]:
    """For the block, SIGTERM and Ctrl-C wait: one that comes meanwhile lands as the block ends. A
    process forked in the block (a DataLoader worker) that one reaches before its own handler is set
    ends at once, quietly. (Blocking the signals would not do: the kernel hands a signal to any
    thread not blocking it, and Python then runs the handler in the main thread all the same.) Only
    the main thread can set handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner, came = os.getpid(), []

    def hold(signum: int, frame: object) -> None:
        _end_if_forked(owner)
        came.append(signum)

    # None: a handler set outside Python, which cannot be put back; an ignored signal stays ignored
    previous = {s: h for s in STOP_SIGNALS if (h := signal.getsignal(s)) not in (signal.SIG_IGN, None)}
    try:
        for signum in previous:
            signal.signal(signum, hold)
        yield
    finally:
        _put_back(list(previous.items()))
        for signum in dict.fromkeys(came):
            signal.raise_signal(signum)  # to the handler now in place


def _put_back(handlers: list[tuple[int, Any]]) -> None:
    """Each signal's handler, put back even when the one put back before it raises (its signal came
    just then)."""
    if handlers:
        (signum, handler), *rest = handlers
        try:
            signal.signal(signum, handler)
        finally:
            _put_back(rest)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """For the block, SIGTERM (``kill``, a job scheduler, torchrun stopping the other processes) stops
    the run as Ctrl-C does, with :class:`Terminated` (a KeyboardInterrupt): a checkpoint being written
    is then deleted instead of left as a .part file. Any other exception the block raises once SIGTERM
    has come is that stop too (e.g. torch reporting a DataLoader worker that the same signal ended,
    when it went to the whole process group). A stop that lands where Python cannot raise it (a
    finaliser, a fork hook) comes back once that place is left, for Ctrl-C too. Only the main thread
    can handle signals; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopped, owner = False, os.getpid()

    def interrupt(signum: int, frame: object) -> None:
        nonlocal stopped
        _end_if_forked(owner)
        stopped = True
        raise Terminated(f"stopped by {signal.Signals(signum).name}")

    previous, previous_hook = signal.signal(signal.SIGTERM, interrupt), sys.unraisablehook
    sys.unraisablehook = functools.partial(_send_swallowed_stop_again, previous_hook, lambda: stopped)
    try:
        yield
    except Terminated:
        raise
    except BaseException as err:
        if not stopped:
            raise
        raise Terminated("stopped by SIGTERM") from err  # a failure the stop caused on its way out
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


# Any: sys.UnraisableHookArgs exists only for type checkers
def _send_swallowed_stop_again(
    previous_hook: Callable[[Any], object], has_stopped: Callable[[], bool], unraisable: Any
) -> None:
    """``sys.unraisablehook`` during :func:`sigterm_interrupts`: a signal handler runs wherever the main
    thread is, and where that is a finaliser or a fork hook (DataLoader workers starting) Python only
    prints the :class:`Terminated` (or Ctrl-C's KeyboardInterrupt) it raised and the run goes on.
    Such a stop is sent again from a helper thread, to land once that place is left, and nothing is
    printed. Once SIGTERM has come, another failure in a finaliser is the stop too (torch reporting,
    while it shuts a pass's workers down, a worker that the same signal ended) and is not printed."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        if not has_stopped():
            previous_hook(unraisable)
        return
    signum = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
    if hasattr(signal, "pthread_kill"):  # POSIX: to the main thread itself, waking it from a wait
        resend = functools.partial(signal.pthread_kill, threading.main_thread().ident, signum)
    else:  # Windows: Python hands it to the main thread
        resend = functools.partial(signal.raise_signal, signum)
    _thread.start_new_thread(resend, ())  # threading's start() would wait for it, and be the one stopped


def stop_worker_quietly(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: SIGTERM ends the worker at once with status 0, as Ctrl-C ends
    it, for the main process to report the stop (torch reports a worker that a signal kills as an
    error; SIGTERM reaches the workers too when it goes to the whole process group: Slurm's scancel,
    ``timeout``, a container's stop)."""
    signal.signal(signal.SIGTERM, _exit_quietly)


def _exit_quietly(signum: int, frame: object) -> None:
    os._exit(0)


def _end_if_forked(owner: int) -> None:
    """In a signal handler set by process ``owner``: a process forked from it (a DataLoader worker,
    reached before its own handler is set) ends at once, quietly."""
    if os.getpid() != owner:
        os._exit(0)


def exit_status(run: Callable[[], object]) -> int:
    """``run()`` for the command line: 0 when it ends, 143 after "interrupted" when SIGTERM stopped it
    (Ctrl-C's KeyboardInterrupt goes on to the command line, which exits with 130). Under torchrun a
    stop reaches every process, and a :class:`SameInEveryProcess` error is met by each: the first
    process alone says so; the others end with the same status, without a word, once the first has
    had the time to say it (torchrun ends them all when one ends)."""
    try:
        run()
    except KeyboardInterrupt as stop:
        _let_go_quietly(stop)
        if not is_first_process():
            return _after_the_first(EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED)
        if not isinstance(stop, Terminated):
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_TERMINATED
    except SameInEveryProcess:
        if is_first_process():
            raise
        return _after_the_first(2)  # the command line's status after an error
    return 0


def _after_the_first(status: int) -> int:
    """``status``, once the first process has had QUIET_EXIT_WAIT_S to end (torchrun then ends this one)."""
    time.sleep(QUIET_EXIT_WAIT_S)
    return status


def alike_in_every_process(step: Callable[[], Any]) -> Any:
    """``step()``, a step that every torchrun process of a machine takes alike (parse the command line,
    check the files it names, open the databases): its VibeError is said once there."""
    try:
        return step()
    except SameInEveryProcess:
        raise
    except VibeError as err:
        raise SameInEveryProcess(str(err)) from None


def _let_go_quietly(stop: BaseException) -> None:
    """Free what the stop left half-done (a DataLoader iterator it caught half-built, held by the
    frames of its traceback) now, without a word: its finaliser may fail, and Python would print
    that after "interrupted"."""
    hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    try:
        failure, seen = stop, set()
        while failure is not None and id(failure) not in seen:  # the stop and the failures it caused
            seen.add(id(failure))
            traceback.clear_frames(failure.__traceback__)
            failure = failure.__cause__ or failure.__context__
        gc.collect()
    finally:
        sys.unraisablehook = hook

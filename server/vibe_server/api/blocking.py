"""Blocking work (file checks, opening a video) off the event loop, with a time limit.

A request handler that blocks the event loop stalls every other request, ``/health`` included.
``run_off_loop`` runs a call in its own daemon thread and waits for it without blocking; past the
time limit the request gets its answer and the thread is left to end on its own.

Opening a video is the one step that can take long (a container that states no frame count is
decoded whole to count them), so at most ``MAX_PROBE_THREADS`` probes run at once, abandoned ones
included (``ProbeSlots``). A request reserves its probe's slot before it reads the video: a busy
server answers 503 before an upload is sent, never after (a received upload is not thrown away for
want of a slot). A probe past its limit is asked to stop (``stop``), and gives its slot back when
its thread ends. The job store's steps (a folder, a record) are quick and take no slot.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from fastapi import HTTPException

T = TypeVar("T")
MAX_PROBE_THREADS = 8


class BlockingTimeout(Exception):
    """The call did not finish within its time limit (it may still be running)."""


def in_daemon_thread(fn: Callable[[], T], *, name: str) -> asyncio.Future:
    """A future of ``fn()`` run in a daemon thread of its own: unlike ``asyncio.to_thread``, a stopping
    server neither waits for it (the thread ends with the process) nor must read its outcome. A
    cancelled future leaves the thread running to its end, unheard."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def settle(result, error) -> None:
        if not done.done():
            done.set_exception(error) if error is not None else done.set_result(result)

    def work() -> None:
        try:
            result, error = fn(), None
        except BaseException as err:  # handed to the waiting request
            result, error = None, err
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is gone (server stopped): nobody waits
            pass

    threading.Thread(target=work, name=name, daemon=True).start()
    return done


async def run_off_loop(fn: Callable[[], T], *, timeout_s: float) -> T:
    """``fn()`` in a daemon thread, awaited without blocking the event loop; BlockingTimeout after
    ``timeout_s`` (the thread runs on, unheard)."""
    done = in_daemon_thread(fn, name=f"blocking {getattr(fn, '__name__', 'call')}")
    try:
        return await asyncio.wait_for(asyncio.shield(done), timeout_s)
    except TimeoutError:
        # nobody will read the abandoned call's outcome: consume it (no "never retrieved" log)
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        raise BlockingTimeout(f"took longer than {timeout_s:g} s") from None


class ProbeSlots:
    """The threads that open submitted videos: at most ``max_threads`` at once, those of requests
    that gave up on them included, so slow files cannot pile up threads without bound."""

    def __init__(self, max_threads: int = MAX_PROBE_THREADS):
        self._free = threading.BoundedSemaphore(max_threads)

    @contextmanager
    def reserved(self) -> Iterator[ProbeSlot]:
        """A slot for one probe, held from here (503 when none is free); given back at the end of the
        block, or by the probe's thread when it ends (it may outlive the request)."""
        if not self._free.acquire(blocking=False):
            raise HTTPException(
                503,
                "The server is busy receiving and checking other videos; retry in a minute.",
                headers={"Retry-After": "60"},
            )
        slot = ProbeSlot(self._free)
        try:
            yield slot
        finally:
            if not slot.started:
                self._free.release()


class ProbeSlot:
    """One reserved probe thread (see ``ProbeSlots.reserved``), used once."""

    def __init__(self, free: threading.BoundedSemaphore):
        self._free = free
        self.started = False  # the thread owns the slot from then on

    async def run(self, fn: Callable[[threading.Event], T], *, timeout_s: float) -> T:
        """``fn(stop)`` in the slot's thread; past ``timeout_s``, ``stop`` is set (``fn`` should give
        up when it sees it) and BlockingTimeout raised; ``stop`` is set too when the request is cancelled."""
        if self.started:
            raise RuntimeError("a probe slot runs one probe")
        stop = threading.Event()

        def probe() -> T:
            try:
                return fn(stop)
            finally:
                self._free.release()

        self.started = True
        try:
            return await run_off_loop(probe, timeout_s=timeout_s)
        except BaseException:  # past its time, or its request gone: nobody waits for the probe
            stop.set()
            raise

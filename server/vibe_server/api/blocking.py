"""Blocking work (file checks, opening a video) off the event loop, with a time limit.

A request handler that blocks the event loop stalls every other request, ``/health`` included.
``run_blocking`` runs the call in its own daemon thread and waits for it without blocking; past the
time limit the request gets its answer and the thread is abandoned (it ends on its own: OpenCV
cannot be interrupted). A fixed number of such threads may run at once, abandoned ones included,
so slow files cannot pile up threads without bound.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from fastapi import HTTPException

T = TypeVar("T")
MAX_BLOCKING_THREADS = 8


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


class BlockingRunner:
    def __init__(self, max_threads: int = MAX_BLOCKING_THREADS):
        self._slots = threading.BoundedSemaphore(max_threads)

    async def __call__(self, fn: Callable[..., T], *args, timeout_s: float) -> T:
        """fn(*args) in a worker thread; BlockingTimeout after timeout_s, 503 when all threads are busy."""
        if not self._slots.acquire(blocking=False):
            raise HTTPException(
                503, "The server is busy checking other videos; retry in a minute.", headers={"Retry-After": "60"}
            )

        def call() -> T:
            try:
                return fn(*args)
            finally:
                self._slots.release()

        done = in_daemon_thread(call, name=f"blocking {getattr(fn, '__name__', 'call')}")
        try:
            return await asyncio.wait_for(asyncio.shield(done), timeout_s)
        except TimeoutError:
            # nobody will read the abandoned call's outcome: consume it (no "never retrieved" log)
            done.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise BlockingTimeout(f"took longer than {timeout_s:g} s") from None

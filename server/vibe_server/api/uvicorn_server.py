"""uvicorn's server, stopped the way this server's users stop it: Ctrl-C, SIGTERM, ``POST /shutdown``
or the end of standard input all ask for the same graceful stop: ``on_stop`` first (the server has
its running jobs recorded as queued there, so that a kill from then on still runs them after a
restart), then requests still running get their grace time, then the app's shutdown stops the job
workers. A second Ctrl-C cuts off the requests
still running, but unlike uvicorn's own forced exit it still runs the app's shutdown, so running
jobs go back to the queue rather than being left "running" on disk. The stop ends in one line said
by the caller (``stop_cause``, ``forced``), never in a traceback or a signal raised again."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn
from uvicorn.server import HANDLED_SIGNALS

from .log_floods import AcceptErrorsNowAndThen, RefusedRequestsNowAndThen

SIGNAL_CAUSES = {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM", "SIGBREAK": "Ctrl-Break"}
CUT_OFF_MESSAGE = "A request still running when the server stopped was cut off; its client can send it again."


class GracefulServer(uvicorn.Server):
    """``uvicorn.Server`` that records what stopped it. ``stop_cause``: "Ctrl-C", "SIGTERM", or the
    cause given to :meth:`request_stop`; None while it runs. ``forced``: a second Ctrl-C cut off the
    requests still running. ``on_stop``: called once as the stop begins, before the requests' grace
    time (on a worker thread: it may write files). ``sockets``: bound already, for it to listen on
    (None: uvicorn binds its host and port itself)."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_stop: Callable[[], None] | None = None,
        sockets: list[socket.socket] | None = None,
    ) -> None:
        super().__init__(config)
        self.stop_cause: str | None = None
        self.forced = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_stop = on_stop
        self._sockets = sockets

    def request_stop(self, cause: str) -> None:
        """Ask for the graceful stop (safe from any thread); the first cause asked is the one kept."""
        if self.stop_cause is None:
            self.stop_cause = cause
        self.should_exit = True  # uvicorn's own flag: its main loop ends and its shutdown begins

    def run(self) -> None:
        """uvicorn's run, with :meth:`handle_exit` answering SIGINT and SIGTERM until the end of
        asyncio's teardown (uvicorn installs it only while it serves: a Ctrl-C during the teardown
        raised KeyboardInterrupt), and a request cut off at the stop logged in one line (its task
        may end during that teardown too); the previous handlers come back afterwards."""
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.addFilter(_one_line_for_a_cut_off_request)
        asyncio_log, accept_errors = logging.getLogger("asyncio"), AcceptErrorsNowAndThen()
        asyncio_log.addFilter(accept_errors)
        access_log, refused_requests = logging.getLogger("uvicorn.access"), RefusedRequestsNowAndThen()
        for log in (access_log, uvicorn_log):
            log.addFilter(refused_requests)
        previous = {}
        if threading.current_thread() is threading.main_thread():  # only the main thread has signals
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            super().run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            uvicorn_log.removeFilter(_one_line_for_a_cut_off_request)
            asyncio_log.removeFilter(accept_errors)
            for log in (access_log, uvicorn_log):
                log.removeFilter(refused_requests)

    async def serve(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()  # for the second Ctrl-C's handler
        await super().serve(sockets=self._sockets if sockets is None else sockets)

    async def shutdown(self, sockets: list | None = None) -> None:
        """uvicorn's shutdown (no new connections, the requests' grace time, the app's shutdown), after
        ``on_stop``: whatever fails there is logged, and the stop goes on."""
        if self._on_stop is not None:
            try:
                await asyncio.to_thread(self._on_stop)
            except Exception:  # the stop must go on: the app's shutdown still stops the workers
                logging.getLogger("uvicorn.error").exception("preparing the stop failed")
        await super().shutdown(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The SIGINT and SIGTERM handler. Unlike uvicorn's it notes no signal to raise again once
        stopped (that ended the process in a KeyboardInterrupt, or killed by the signal)."""
        if self.should_exit and sig == signal.SIGINT:  # Ctrl-C again: stop waiting for the requests
            self._cut_off_requests_soon()
            return
        name = signal.Signals(sig).name
        self.request_stop(SIGNAL_CAUSES.get(name, name))

    def _cut_off_requests_soon(self) -> None:
        """Have the loop cancel the requests still running (a signal handler may not touch its
        tasks): uploads cut off are discarded by their own clean-up, and uvicorn's shutdown goes on
        at once to the app's, which stops the job workers."""
        if self._loop is None or not self.server_state.tasks:
            return  # none running: the stop is past them (stopping the job workers, or done)
        try:
            self._loop.call_soon_threadsafe(self._cut_off_requests)
        except RuntimeError:  # the loop is closed: no request is running
            return
        self.forced = True

    def _cut_off_requests(self) -> None:
        for task in list(self.server_state.tasks):
            task.cancel()


def _one_line_for_a_cut_off_request(record: logging.LogRecord) -> bool:
    """uvicorn logs a request it cancelled at the stop (its grace time over, or a second Ctrl-C) as
    "Exception in ASGI application" with the CancelledError's traceback: one warning line says it."""
    if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
        record.msg, record.args, record.exc_info, record.exc_text = CUT_OFF_MESSAGE, (), None, None
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
    return True

"""How a command ends on a signal: SIGTERM (``kill``, a scheduler, a container's stop) and SIGHUP (a
closed terminal) stop it as Ctrl-C does, so that what it has done is kept (a batch's records, a live
recording) instead of the process dying at once; and a step that must not be cut short (saving a
recording) lets no stop through."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP stopped the command: it ends as Ctrl-C ends it, and may exit with 128 + the
    signal's number (``exit_status``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_status = 128 + signum


def _handlers(signals: tuple[int, ...]) -> dict[int, object]:
    """The current handler of each of ``signals`` that can be put back and is not ``SIG_IGN`` (one set
    outside Python reads as None and cannot be put back; an ignored signal, e.g. under ``nohup``,
    stays ignored)."""
    return {s: h for s in signals if (h := signal.getsignal(s)) not in (signal.SIG_IGN, None)}


@contextlib.contextmanager
def signals_stop_the_command() -> Iterator[None]:
    """For the block, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread, where they would
    kill the process at once. The first one stops; those after it are ignored while the stop runs
    (SIGKILL ends one that hangs). A plain KeyboardInterrupt raised once one came (Ray's wait hands
    on what a handler raised so) is that stop. Only the main thread can set handlers; elsewhere
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = _handlers(STOP_SIGNALS)
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
        for other in previous:
            signal.signal(other, signal.SIG_IGN)
        raise Stopped(signum)

    try:
        for signum in previous:
            signal.signal(signum, stop)
        yield
    except KeyboardInterrupt as interrupt:
        if received and not isinstance(interrupt, Stopped):
            raise Stopped(received[0]) from interrupt
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def stops_ignored() -> Iterator[None]:
    """For the block, Ctrl-C, SIGTERM and SIGHUP are ignored: a save they would cut short (losing all
    it was saving) finishes, and the command ends right after it anyway. Only the main thread can set
    handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = _handlers((signal.SIGINT, *STOP_SIGNALS))
    try:
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

"""Log filters that keep a flood of like lines to a few: a client (or a flood of connections) that
makes the server log the same thing thousands of times a second filled its log, and the add-on's
``server.log``, by megabytes a second. Each kind of line passes a few times a minute, then one line
says how many were left out."""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable

# asyncio's words when a connection cannot be accepted for want of file descriptors (or memory)
ACCEPT_ERROR = "socket.accept() out of system resource"
ACCEPT_ERROR_EVERY_S = 60.0
REFUSED_REQUESTS_EVERY_S = 60.0
REFUSED_REQUESTS_BURST = 10  # lines of one kind of refusal passed in each such time
# uvicorn's lines (its log message formats) for requests: every answer, a WebSocket handshake refused
# by the app or answered with a status, a request it could not parse or upgrade
ACCESS_LINE = '%s - "%s %s HTTP/%s" %d'
WEBSOCKET_REFUSED = '%s - "WebSocket %s" 403'
WEBSOCKET_ANSWERED = '%s - "WebSocket %s" %d'
UNPARSED_REQUEST_LINES = ("Invalid HTTP request received.", "Unsupported upgrade request.")
# the websockets library's line for the same refused handshake, through the logger uvicorn gives it
WEBSOCKETS_LIBRARY_REFUSALS = ("connection rejected (%d %s)", "HTTP response sent (%d %s)")


class NowAndThen(logging.Filter):
    """Per kind of record (:meth:`kind`; None: not limited), the first ``burst`` in each ``every_s``
    pass; the rest are counted, and :meth:`summarise` says how many with the first of the next period."""

    def __init__(self, every_s: float, burst: int = 1) -> None:
        super().__init__()
        self.every_s, self.burst = every_s, burst
        self._periods: dict[Hashable, list] = {}  # kind -> [period's end, passed, left out]

    def kind(self, record: logging.LogRecord) -> Hashable | None:
        raise NotImplementedError

    def summarise(self, record: logging.LogRecord, kind: Hashable, left_out: int) -> None:
        """Say that ``left_out`` records of ``kind`` were not logged, by rewriting ``record`` (which
        is logged next) or in a line of its own."""
        raise NotImplementedError

    def filter(self, record: logging.LogRecord) -> bool:
        kind = self.kind(record)
        if kind is None:
            return True
        now = time.monotonic()
        period = self._periods.get(kind)
        if period is None or now >= period[0]:
            self._periods[kind] = [now + self.every_s, 1, 0]
            if period is not None and period[2]:
                self.summarise(record, kind, period[2])
            return True
        if period[1] < self.burst:
            period[1] += 1
            return True
        period[2] += 1
        return False


class AcceptErrorsNowAndThen(NowAndThen):
    """asyncio logs every connection it cannot accept for want of file descriptors, with a traceback:
    thousands a second while a flood of connections holds them. The first is logged as it is, then
    at most one line every ``every_s`` saying how many more came."""

    def __init__(self, every_s: float = ACCEPT_ERROR_EVERY_S) -> None:
        super().__init__(every_s)

    def kind(self, record: logging.LogRecord) -> Hashable | None:
        return ACCEPT_ERROR if str(record.msg).startswith(ACCEPT_ERROR) else None

    def summarise(self, record: logging.LogRecord, kind: Hashable, left_out: int) -> None:
        record.msg, record.args, record.exc_info, record.exc_text = (
            f"{ACCEPT_ERROR}: {left_out} more connections could not be accepted since the last such "
            "line (too many connections open at once; raise the limit on open files, 'ulimit -n')",
            (),
            None,
            None,
        )


class RefusedRequestsNowAndThen(NowAndThen):
    """uvicorn logs a line per request: a client sending requests without the token (or to no route,
    or malformed) in a loop would fill the log. Per kind of refusal (an access line's status of 400
    or more, a refused WebSocket handshake's, a request uvicorn could not parse), the first
    ``burst`` lines each ``every_s`` are logged, then one line on ``uvicorn.error`` says how many more
    came (uvicorn's access formatter rebuilds its line from the record's arguments: a rewritten
    access record would not say it). Set on both ``uvicorn.access`` and ``uvicorn.error``."""

    def __init__(self, every_s: float = REFUSED_REQUESTS_EVERY_S, burst: int = REFUSED_REQUESTS_BURST) -> None:
        super().__init__(every_s, burst)

    def kind(self, record: logging.LogRecord) -> Hashable | None:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg == ACCESS_LINE and len(args) == 5 and isinstance(args[4], int) and args[4] >= 400:
            return "requests answered", args[4]
        if record.msg == WEBSOCKET_REFUSED:
            return "WebSocket handshakes answered", 403
        if record.msg == WEBSOCKET_ANSWERED and len(args) == 3 and isinstance(args[2], int) and args[2] >= 400:
            return "WebSocket handshakes answered", args[2]
        if record.msg in WEBSOCKETS_LIBRARY_REFUSALS and len(args) == 2 and isinstance(args[0], int) and args[0] >= 400:
            return "WebSocket handshakes refused with", args[0]
        if record.msg in UNPARSED_REQUEST_LINES:
            return f'requests logged as "{record.msg}"', None
        return None

    def summarise(self, record: logging.LogRecord, kind: Hashable, left_out: int) -> None:
        what, status = kind
        logging.getLogger("uvicorn.error").warning(
            "%d more %s were not logged since the last such line (a client sending them again and again; "
            "the first %d each %.0f s are logged)",
            left_out,
            what if status is None else f"{what} {status}",
            self.burst,
            self.every_s,
        )

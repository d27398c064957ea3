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
REFUSED_REQUESTS_BURST = 10  # access-log lines of one refusal status passed in each such time


class NowAndThen(logging.Filter):
    """Per kind of record (:meth:`kind`; None: not limited), the first ``burst`` in each ``every_s``
    pass; the rest are counted, and the first of the next period carries the count (:meth:`summarise`)."""

    def __init__(self, every_s: float, burst: int = 1) -> None:
        super().__init__()
        self.every_s, self.burst = every_s, burst
        self._periods: dict[Hashable, list] = {}  # kind -> [period's end, passed, left out]

    def kind(self, record: logging.LogRecord) -> Hashable | None:
        raise NotImplementedError

    def summarise(self, record: logging.LogRecord, left_out: int) -> None:
        """Make ``record`` the line that says ``left_out`` like ones were not logged."""
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
                self.summarise(record, period[2])
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

    def summarise(self, record: logging.LogRecord, left_out: int) -> None:
        record.msg, record.args, record.exc_info, record.exc_text = (
            f"{ACCEPT_ERROR}: {left_out} more connections could not be accepted since the last such "
            "line (too many connections open at once; raise the limit on open files, 'ulimit -n')",
            (),
            None,
            None,
        )


class RefusedRequestsNowAndThen(NowAndThen):
    """uvicorn's access log has a line per request: a client sending requests without the token (or
    to no route, or malformed) in a loop would fill the log. Per status code of 400 or more, the
    first ``burst`` lines each ``every_s`` are logged, then one saying how many more came; answers
    below 400 are all logged."""

    def __init__(self, every_s: float = REFUSED_REQUESTS_EVERY_S, burst: int = REFUSED_REQUESTS_BURST) -> None:
        super().__init__(every_s, burst)

    def kind(self, record: logging.LogRecord) -> Hashable | None:
        # uvicorn's access line: '%s - "%s %s HTTP/%s" %d' % (client, method, path, version, status)
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[4], int) and args[4] >= 400:
            return args[4]
        return None

    def summarise(self, record: logging.LogRecord, left_out: int) -> None:
        status = record.args[4]
        record.msg = (
            f"{left_out} more requests answered {status} were not logged since the last such line "
            f"(a client sending them again and again; the first {self.burst} each {self.every_s:.0f} s are "
            "logged); the latest: " + record.msg
        )

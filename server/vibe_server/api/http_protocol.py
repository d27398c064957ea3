"""uvicorn's HTTP/1.1 protocol (h11) with a deadline for each request's line and headers.

uvicorn waits for them without limit: a connection that sends nothing, or a byte now and then, held
its socket for as long as it liked, before the token could be checked (that needs the headers), so
anyone who can reach the port could use up the server's file descriptors and lock the add-on out.
The deadline runs from the connection (or the end of the previous response) to the end of the
headers, and from the end of a response to the next request's headers (a body the client goes on
sending after an early answer counts as waiting); while a request is answered a request body has its
own idle limit (``Settings.body_idle_timeout_s``), and a WebSocket has no deadline once upgraded.

The deadline alone bounds how long such a connection lives, not how many there are: a program that
opens a new one as each is cut kept every socket the server may have. So at most
:data:`MAX_AWAITING_HEADERS` connections of a server wait for their headers at once; a new one
beyond closes the one that has waited longest (a real client sends its headers at once, so it is
rarely that one)."""

from __future__ import annotations

import asyncio
import weakref

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

HEADERS_DEADLINE_S = 30.0
MAX_AWAITING_HEADERS = 256
# h11's states of a server between a request's headers and the end of its answer: only then is there no
# deadline (a body the client goes on sending after the answer, a byte now and then, gets none)
ANSWERING = (h11.SEND_RESPONSE, h11.SEND_BODY)


# each server's connections waiting for their headers, the longest waiting first (a dict keeps its order)
_awaiting_headers: weakref.WeakKeyDictionary[ServerState, dict[HeadersDeadlineProtocol, None]] = (
    weakref.WeakKeyDictionary()
)


class HeadersDeadlineProtocol(H11Protocol):
    """:class:`H11Protocol` that closes a connection whose request line and headers do not all come
    within :data:`HEADERS_DEADLINE_S`, and the longest waiting one beyond :data:`MAX_AWAITING_HEADERS`."""

    headers_deadline_s = HEADERS_DEADLINE_S
    max_awaiting_headers = MAX_AWAITING_HEADERS
    _headers_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_headers_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_headers_deadline()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.our_state in ANSWERING:  # the headers came: a request (or a WebSocket's) is answered
            self._disarm_headers_deadline()

    def on_response_complete(self) -> None:
        self._arm_headers_deadline()  # first: the next request, pipelined already, disarms it at once
        super().on_response_complete()

    def _arm_headers_deadline(self) -> None:
        self._disarm_headers_deadline()
        self._headers_timer = self.loop.call_later(self.headers_deadline_s, self._headers_too_late)
        awaiting = _awaiting_headers.setdefault(self.server_state, {})
        awaiting[self] = None
        while len(awaiting) > self.max_awaiting_headers:
            longest_waiting = next(iter(awaiting))
            longest_waiting._disarm_headers_deadline()
            longest_waiting._close()

    def _disarm_headers_deadline(self) -> None:
        _awaiting_headers.get(self.server_state, {}).pop(self, None)
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _headers_too_late(self) -> None:
        self._disarm_headers_deadline()
        self._close()

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

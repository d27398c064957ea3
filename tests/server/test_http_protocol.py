"""The server's HTTP protocol: a connection that does not finish its request's headers in time is
closed (before any token can be checked, it held a socket for ever), and so is the one waiting longest
beyond a cap; complete requests, keep-alive connections and WebSockets are not cut. A flood of
connections the server cannot accept does not flood its log either."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import socket
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI, WebSocket
from uvicorn.logging import AccessFormatter, DefaultFormatter
from websockets.sync.client import connect

from tests.server.threaded_server import free_port, served_in_a_thread
from vibe_server.api import log_floods, uvicorn_server
from vibe_server.api.http_protocol import HeadersDeadlineProtocol
from vibe_server.api.log_floods import ACCEPT_ERROR, AcceptErrorsNowAndThen, RefusedRequestsNowAndThen

DEADLINE_S = 0.6


class QuickDeadline(HeadersDeadlineProtocol):
    headers_deadline_s = DEADLINE_S


def small_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict:
        return {"pong": True}

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            await websocket.send_text(await websocket.receive_text())

    return app


@pytest.fixture
def port():
    port = free_port()
    with served_in_a_thread(uvicorn.Config(small_app(), port=port, http=QuickDeadline, log_level="warning")):
        yield port


@contextlib.contextmanager
def raw_connection(port: int):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        yield sock


def closed_by_server(sock: socket.socket) -> bool:
    """The server closed the connection (recv sees its end, or a reset) rather than waiting."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def seconds_until_closed(sock: socket.socket, trickle: bytes) -> float:
    """Send ``trickle`` a byte every 0.1 s until the server closes the connection."""
    t0 = time.monotonic()
    sock.settimeout(0.1)
    for byte in trickle:
        try:
            sock.sendall(bytes([byte]))
            if closed_by_server(sock):
                break
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    else:
        pytest.fail("the server kept the connection while the headers trickled in")
    return time.monotonic() - t0


def test_headers_that_trickle_in_are_cut_at_the_deadline(port):
    with raw_connection(port) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        elapsed = seconds_until_closed(sock, b"X-Slow: " + b"a" * 200)
    assert DEADLINE_S * 0.9 < elapsed < DEADLINE_S + 5


def test_a_body_sent_on_after_an_early_answer_is_cut_at_the_deadline(port):
    """The answer came before the body (a 401, a 413 or, here, a route that reads none): each byte of
    the body after it used to lift the deadline for good."""
    with raw_connection(port) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        elapsed = seconds_until_closed(sock, b"b" * 200)
    assert elapsed < DEADLINE_S + 5


def test_a_connection_that_sends_nothing_is_closed(port):
    with raw_connection(port) as sock:
        t0 = time.monotonic()
        assert closed_by_server(sock)
        assert time.monotonic() - t0 < DEADLINE_S + 5


class LongerDeadline(HeadersDeadlineProtocol):
    headers_deadline_s = 2.0  # each request comes 0.8 s before its deadline, even on a loaded machine


def test_requests_in_time_are_answered_and_the_next_one_gets_a_deadline_of_its_own():
    port = free_port()
    config = uvicorn.Config(small_app(), port=port, http=LongerDeadline, log_level="warning")
    with served_in_a_thread(config), raw_connection(port) as sock:
        for _ in range(2):  # the second after more than one deadline on the same connection
            time.sleep(LongerDeadline.headers_deadline_s * 0.6)
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"pong":true}'):  # the headers and the body may come apart
                chunk = sock.recv(4096)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /ping HTTP/1.1\r\n")  # a third one that never ends its headers
        assert closed_by_server(sock)


def test_a_websocket_lives_past_the_deadline(port):
    with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=10) as websocket:
        time.sleep(DEADLINE_S * 2.5)
        websocket.send("still here")
        assert websocket.recv(timeout=10) == "still here"


class FewAwaitingHeaders(HeadersDeadlineProtocol):
    headers_deadline_s = 60.0  # (what closes connections here is the cap)
    max_awaiting_headers = 4


def still_open(sock: socket.socket, wait_s: float = 0.3) -> bool:
    """Nothing from the server within ``wait_s``: the connection is kept, waiting for the headers
    (a connection expected closed is given longer: the server may not have accepted the last one yet)."""
    sock.settimeout(wait_s)
    try:
        return not closed_by_server(sock)
    except TimeoutError:
        return True


def test_beyond_the_cap_the_connection_waiting_longest_for_its_headers_is_closed():
    """A program that keeps opening connections and never finishes their headers no longer holds
    every socket the server may have: past the cap, the one that waited longest goes, and a client
    that sends its request at once is answered."""
    port = free_port()
    config = uvicorn.Config(small_app(), port=port, http=FewAwaitingHeaders, log_level="warning")
    with served_in_a_thread(config), contextlib.ExitStack() as stack:
        stalled = []
        for _ in range(FewAwaitingHeaders.max_awaiting_headers + 2):
            sock = stack.enter_context(raw_connection(port))
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            stalled.append(sock)
            time.sleep(0.05)  # accepted in this order
        assert [still_open(sock, wait_s=5) for sock in stalled[:2]] == [False, False]
        assert [still_open(sock) for sock in stalled[2:]] == [True, True, True, True]
        with raw_connection(port) as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"pong":true}')
        # it was the newest: it closed the longest waiting one, and left the others
        assert still_open(stalled[2], wait_s=5) is False
        assert [still_open(sock) for sock in stalled[3:]] == [True, True, True]


def test_connections_that_cannot_be_accepted_are_logged_now_and_then(caplog, monkeypatch):
    """asyncio logs each accept() that fails for want of file descriptors, with its traceback: a flood
    of connections wrote megabytes a second. The first is logged, then a line a minute with the count."""
    now = [1000.0]
    monkeypatch.setattr(log_floods.time, "monotonic", lambda: now[0])
    loop = asyncio.new_event_loop()
    quiet = AcceptErrorsNowAndThen()
    logging.getLogger("asyncio").addFilter(quiet)
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for second in range(150):
                now[0] = 1000.0 + second / 2  # 300 failed accepts in 75 s
                for _ in range(2):
                    loop.call_exception_handler(
                        {"message": ACCEPT_ERROR, "exception": OSError(errno.EMFILE, "Too many open files")}
                    )
            loop.call_exception_handler({"message": "another error"})
    finally:
        logging.getLogger("asyncio").removeFilter(quiet)
        loop.close()
    first, summary, other = caplog.records
    assert first.getMessage().startswith(ACCEPT_ERROR) and first.exc_info is not None
    assert summary.getMessage().startswith(f"{ACCEPT_ERROR}: 239 more connections") and summary.exc_info is None
    assert "ulimit -n" in summary.getMessage() and other.getMessage() == "another error"


@contextlib.contextmanager
def uvicorn_log_lines(quiet: logging.Filter) -> Iterator[io.StringIO]:
    """What uvicorn's access and error logs write, through uvicorn's own formatters (its access
    formatter rebuilds the line from the record's arguments), with ``quiet`` on both."""
    out = io.StringIO()
    formats = {
        "uvicorn.access": AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False),
        "uvicorn.error": DefaultFormatter("%(levelprefix)s %(message)s", use_colors=False),
    }
    saved = []
    for name, formatter in formats.items():
        log, handler = logging.getLogger(name), logging.StreamHandler(out)
        handler.setFormatter(formatter)
        saved.append((log, handler, log.level, log.propagate))
        log.addHandler(handler)
        log.addFilter(quiet)
        log.setLevel(logging.INFO)
        log.propagate = False
    try:
        yield out
    finally:
        for log, handler, level, propagate in saved:
            log.removeHandler(handler)
            log.removeFilter(quiet)
            log.setLevel(level)
            log.propagate = propagate


def test_refused_requests_are_logged_a_few_times_a_minute_per_kind(monkeypatch):
    """A client sending requests without the token in a loop wrote a line for each: the access log's
    line, a refused WebSocket handshake's, a request uvicorn could not parse."""
    now = [1000.0]
    monkeypatch.setattr(log_floods.time, "monotonic", lambda: now[0])
    access, error = logging.getLogger("uvicorn.access"), logging.getLogger("uvicorn.error")

    def request(status: int, path: str = "/api/v1/jobs") -> None:
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", path, "1.1", status)

    with uvicorn_log_lines(RefusedRequestsNowAndThen()) as out:
        for i in range(500):  # 500 of each refusal in 50 s, each kind apart
            now[0] = 1000.0 + i / 10
            request(401)
            request(404, "/nothing")
            error.info('%s - "WebSocket %s" 403', "127.0.0.1:5000", "/api/v1/live/x/stream")
            error.info("connection rejected (%d %s)", 403, "Forbidden")  # the websockets library's own line
            error.warning("Invalid HTTP request received.")
            if i % 50 == 0:
                request(200)  # every answer below 400 is logged
        now[0] = 1061.0  # the next minute's first refusal: the count of those left out, then itself
        request(401, "/api/v1/jobs/last")
    lines = out.getvalue().splitlines()
    assert sum(line.endswith(" 401 Unauthorized") for line in lines) == 11
    assert sum(line.endswith(" 404 Not Found") for line in lines) == 10
    assert sum(line.endswith(" 200 OK") for line in lines) == 10
    assert sum(line.endswith('"WebSocket /api/v1/live/x/stream" 403') for line in lines) == 10
    assert sum(line.endswith("Invalid HTTP request received.") for line in lines) == 10
    assert sum(line.endswith("connection rejected (403 Forbidden)") for line in lines) == 10
    assert lines[-2:] == [
        "WARNING:  490 more requests answered 401 were not logged since the last such line (a client sending "
        "them again and again; the first 10 each 60 s are logged)",
        '127.0.0.1:5000 - "GET /api/v1/jobs/last HTTP/1.1" 401 Unauthorized',
    ]


def test_the_server_quiets_those_lines_while_it_runs(monkeypatch):
    seen = []

    def run(server) -> None:
        for name in ("asyncio", "uvicorn.access", "uvicorn.error"):
            seen.extend((name, type(f)) for f in logging.getLogger(name).filters)

    monkeypatch.setattr(uvicorn.Server, "run", run)
    uvicorn_server.GracefulServer(uvicorn.Config(small_app())).run()
    assert {
        ("asyncio", AcceptErrorsNowAndThen),
        ("uvicorn.access", RefusedRequestsNowAndThen),
        ("uvicorn.error", RefusedRequestsNowAndThen),
    } <= set(seen)
    assert not any(isinstance(f, AcceptErrorsNowAndThen) for f in logging.getLogger("asyncio").filters)
    for name in ("uvicorn.access", "uvicorn.error"):
        assert not any(isinstance(f, RefusedRequestsNowAndThen) for f in logging.getLogger(name).filters)

"""The server's HTTP protocol: a connection that does not finish its request's headers in time is
closed (before any token can be checked, it held a socket for ever); complete requests, keep-alive
connections and WebSockets are not cut."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
import uvicorn
from fastapi import FastAPI, WebSocket
from websockets.sync.client import connect

from tests.server.threaded_server import free_port, served_in_a_thread
from vibe_server.api.http_protocol import HeadersDeadlineProtocol

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


def test_requests_in_time_are_answered_and_the_next_one_gets_a_deadline_of_its_own(port):
    with raw_connection(port) as sock:
        for _ in range(2):  # the second after more than one deadline on the same connection
            time.sleep(DEADLINE_S * 0.6)
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

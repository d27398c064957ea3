"""A program on a loopback port whose answers never end, for the add-on's time limits on an answer.

Each way keeps every single socket operation of the client short, so that only a limit on the whole
answer ends it: "100 Continue" answers without end (http.client skips any number of them), a chunked
body whose trailer never ends (it reads any number of trailer lines), and a body that comes a byte at a
time (each byte renews the socket's timeout). Stdlib only; raw sockets, on 127.0.0.1, in threads.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable

from vibe_blender.core.server_proof import server_proof

Answer = Callable[[socket.socket], None]


def endless_continues(conn: socket.socket) -> None:
    while True:
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(0.02)


def endless_trailer(content_type: str = "application/json") -> Answer:
    """A whole chunked body ('{}'), then trailer lines without end."""

    def answer(conn: socket.socket) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        conn.sendall(head.encode() + b"2\r\n{}\r\n0\r\n")
        while True:
            conn.sendall(b"X-Pad: y\r\n" * 100)
            time.sleep(0.02)

    return answer


def trickle(content_type: str = "application/json", length: int = 100_000) -> Answer:
    """A body of ``length`` bytes (declared), one byte each 0.05 s."""

    def answer(conn: socket.socket) -> None:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n".encode())
        while True:
            conn.sendall(b" ")
            time.sleep(0.05)

    return answer


STALLS = {"endless 100 Continue": endless_continues, "endless trailer": endless_trailer(), "trickle": trickle()}


def paced_download(body: bytes, bytes_per_s: float, piece: int = 16 << 10) -> Answer:
    """A whole octet-stream answer of ``body``, sent at ``bytes_per_s`` (in pieces of ``piece`` bytes)."""

    def answer(conn: socket.socket) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode())
        started = time.monotonic()
        for start in range(0, len(body), piece):
            time.sleep(max(0.0, started + start / bytes_per_s - time.monotonic()))
            conn.sendall(body[start : start + piece])

    return answer


class StallingServer:
    """Answers each connection's request with ``answer(conn)``; with ``token``, a proof request
    (``/health?challenge=``) first gets a proof with it, and the next request on that connection gets
    ``answer``. Use as a context manager."""

    def __init__(self, answer: Answer, token: str | None = None):
        self.answer, self.token = answer, token
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def __enter__(self) -> StallingServer:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                target = _request_target(conn)
                if self.token is not None and "challenge=" in target:
                    conn.sendall(self._proof(target))
                    _request_target(conn)
                self.answer(conn)
            except OSError:  # the client went away, or cut the answer off
                pass

    def _proof(self, target: str) -> bytes:
        challenge = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)["challenge"][0]
        proof = server_proof(self.token, challenge, self.port)
        body = json.dumps({"status": "ok", "api_version": 1, "device": "cpu", "proof": proof}).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body


def _request_target(conn: socket.socket) -> str:
    """Reads one request's head (requests here have no body) -> its target ('/api/v1/health?...')."""
    head = b""
    while b"\r\n\r\n" not in head:
        data = conn.recv(65536)
        if not data:
            raise ConnectionResetError("the client closed the connection")
        head += data
    return head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")[1]

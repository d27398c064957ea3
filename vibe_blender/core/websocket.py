"""A small WebSocket client (RFC 6455), standard library only, for the add-on's live view.

Blender's Python has no WebSocket library and the extension may not install one. This client does
what the live stream needs and no more: one ``ws://`` connection on this machine or, with Blender's
online access, another; text messages in, close and ping handled; every size bounded (the handshake
answer, each message) so that a hostile server cannot make Blender allocate without end. Messages
the client sends are masked, as the protocol requires of clients.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import urllib.parse

from .errors import VibeError

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HANDSHAKE_BYTES = 16 * 1024
MAX_MESSAGE_BYTES = 1 << 20  # a frame of 32 people is ~40 KB of JSON
MAX_CONTROL_BYTES = 125  # RFC 6455 5.5: a close, ping or pong frame holds 125 bytes at most, unfragmented
MAX_FRAGMENTS = 1024  # frames of one message: empty ones would cost memory and time, not bytes
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketClosed(Exception):
    """The server closed the connection (``code`` is its close code, or None)."""

    def __init__(self, code: int | None = None):
        super().__init__(f"closed ({code})")
        self.code = code


class WebSocket:
    """A connected client. ``recv_text()`` blocks for the next text message (``timeout_s`` per read)."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str] | None = None,
        *,
        timeout_s: float = 10.0,
        sock: socket.socket | None = None,
    ):
        """sock: a connection to ``url``'s host already open (its earlier exchanges all answered),
        on which the handshake goes; default: a new one."""
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme != "ws" or not parsed.hostname:
            raise VibeError(f"'{url}' is not a ws:// address.")
        port = parsed.port or 80
        try:
            self.sock = sock or socket.create_connection((parsed.hostname, port), timeout=timeout_s)
            self.sock.settimeout(timeout_s)
        except OSError as err:
            raise VibeError(f"Cannot reach the live stream at {parsed.hostname}:{port} ({err}).") from None
        key = base64.b64encode(os.urandom(16)).decode()
        host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
        lines = [
            f"GET {parsed.path or '/'}{'?' + parsed.query if parsed.query else ''} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._buffer = bytearray()
        status, answer = self._read_handshake()
        if status != 101:
            self.sock.close()
            raise VibeError(
                f"The server refused the live stream (HTTP {status}): check the token and that the "
                "session is still running."
                if status in (401, 403)
                else f"The server answered HTTP {status} instead of opening the live stream."
            )
        expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if answer.get("sec-websocket-accept") != expected:
            self.sock.close()
            raise VibeError("The server's answer is not a valid WebSocket handshake.")

    def _read_handshake(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > MAX_HANDSHAKE_BYTES:
                raise VibeError("The server's handshake answer is too long.")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise VibeError("The server closed the connection during the handshake.")
            self._buffer += chunk
        head, rest = self._buffer.split(b"\r\n\r\n", 1)
        self._buffer = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            raise VibeError("The server's answer is not HTTP.") from None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def _read_exact(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buffer)))
            if not chunk:
                raise WebSocketClosed(None)
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]  # a bytearray drops its front without copying the rest
        return data

    def _read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._read_exact(2)
        fin, opcode, masked, length = bool(b0 & 0x80), b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read_exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read_exact(8))
        if length > MAX_MESSAGE_BYTES:
            raise VibeError(
                f"The server sent a {length}-byte message; the live stream allows {MAX_MESSAGE_BYTES} at most."
            )
        if opcode & 0x8 and (length > MAX_CONTROL_BYTES or not fin):  # a pong echoes the ping: it must fit too
            raise _broken_protocol(
                f"a {length}-byte{'' if fin else ' fragmented'} control frame (at most {MAX_CONTROL_BYTES} bytes, "
                "unfragmented)"
            )
        mask = self._read_exact(4) if masked else b""
        payload = self._read_exact(length)
        if masked:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return fin, opcode, payload

    def recv_text(self) -> str:
        """The next text message; WebSocketClosed when the server closes."""
        parts, size = [], 0
        while True:
            fin, opcode, payload = self._read_frame()
            if opcode not in (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
                raise _broken_protocol(f"a frame of the reserved type {opcode:#x}")
            if not opcode & 0x8:  # a data frame: the first of a message, or a continuation of one
                if opcode == OP_CONT and not parts:
                    raise _broken_protocol("a continuation frame outside a message")
                if opcode != OP_CONT and parts:
                    raise _broken_protocol("a new message inside an unfinished one")
                if len(parts) >= MAX_FRAGMENTS:  # empty fragments add no bytes, but memory and time
                    raise _broken_protocol(f"a message in more than {MAX_FRAGMENTS} frames")
            if opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self._send(OP_CLOSE, payload[:2])
                raise WebSocketClosed(code)
            if opcode == OP_PING:
                self._send(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            size += len(payload)
            if size > MAX_MESSAGE_BYTES:
                raise VibeError("The server sent a message over the live stream's size limit.")
            parts.append(payload)
            if fin:
                return b"".join(parts).decode("utf-8", errors="replace")

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(payload)
        header += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
        try:
            self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        except OSError:
            pass

    def close(self) -> None:
        """Close the connection (any thread): a ``recv_text`` waiting in another thread ends at once."""
        self._send(OP_CLOSE, struct.pack("!H", 1000))
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # close() alone leaves another thread's recv waiting
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def _broken_protocol(what: str) -> VibeError:
    return VibeError(
        f"The server broke the WebSocket protocol with {what}, so the live stream was closed; update the server, "
        "or report it if it is up to date."
    )

"""A stand-in for the server's live API, for what the real server never does: answer slowly, send
hostile WebSocket frames, drop the connection on cue, refuse a stop. Stdlib only (``http.server`` on
127.0.0.1, a free port, in a thread), so that both the pure-core suite and the Blender suite use it.

    with FakeLiveServer([text_frame(frame_message(0, 0.0, [person(1)]))], after="close") as server:
        client = ServerClient(server.url, server.token)
        ...
        server.stop_requests   # the live ids that POST /live/{id}/stop named

The session id is always ``LIVE_ID``; the stream sends ``messages`` (text, or raw WebSocket frames as
bytes; at ``HOLD`` it waits until ``server.resume`` is set) once a client connects, then, by
``after``: "wait" keeps the connection open until the client closes it, "close" drops it (the
connection is lost). :func:`moving_take` makes a recording in code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from vibe_blender.core.live_client import LiveFrameMessage, LivePersonFrame, LiveTake
from vibe_blender.core.server_proof import server_proof
from vibe_blender.core.websocket import GUID, OP_TEXT

LIVE_ID = "0123456789abcdef"
API = "/api/v1"
HOLD = object()  # in ``messages``: the stream waits here until ``resume`` is set


def raw_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One unmasked server frame (servers do not mask)."""
    n = len(payload)
    if n < 126:
        length = bytes([n])
    elif n < 65536:
        length = bytes([126]) + struct.pack("!H", n)
    else:
        length = bytes([127]) + struct.pack("!Q", n)
    return bytes([(0x80 if fin else 0) | opcode]) + length + payload


def text_frame(text: str) -> bytes:
    return raw_frame(OP_TEXT, text.encode())


def person(track_id: int, pose=None, trans=(0.0, 0.0, 3.0)) -> dict:
    return {
        "track_id": track_id,
        "pose": [0.0] * 72 if pose is None else [float(v) for v in pose],
        "betas": [0.0] * 10,
        "trans_cam_m": [float(v) for v in trans],
    }


def frame_message(index: int, time_s: float, people: list[dict]) -> str:
    return json.dumps({"type": "frame", "frame_index": index, "frame_time_s": time_s, "people": people})


END = json.dumps({"type": "end", "status": "ended", "error": None, "stats": {}})


OMEGA, SPEED = 1.5, 0.4  # rad/s about z (left hip), m/s along x


def moving_take(indices, fps=30.0, t0=5000.0, absent=(), omega=OMEGA, betas=None) -> LiveTake:
    """Track 1 turning its left hip at ``omega`` rad/s and walking at SPEED, in the source frames
    ``indices`` of a ``fps`` source (the others dropped); in the frames ``absent`` it is not seen.
    ``betas``: {frame: (10,) betas} where they are not zeros."""
    take = LiveTake()
    for i in indices:
        t = i / fps
        pose = np.zeros(72, np.float32)
        pose[5] = omega * t
        shape = np.asarray((betas or {}).get(i, np.zeros(10)), np.float32)
        people = () if i in absent else (LivePersonFrame(1, i, pose, shape, np.array([SPEED * t, 0, 3], np.float32)),)
        take.add(LiveFrameMessage(i, t0 + t, people, None))
    return take


class FakeLiveServer:
    def __init__(
        self,
        messages=(),
        *,
        after: str = "wait",
        start_delay_s: float = 0.0,
        start_gate: threading.Event | None = None,
        stop_status: int = 200,
        body_model: Path | None = None,
        token: str = "fake-live-token",
        start_answer: dict | None = None,
    ):
        self.messages = [m if m is HOLD or isinstance(m, bytes) else text_frame(m) for m in messages]
        self.resume = threading.Event()
        self.after, self.start_delay_s, self.stop_status = after, start_delay_s, stop_status
        self.body_model, self.token, self.start_gate = body_model, token, start_gate
        self.stop_requests: list[str] = []
        self.streams_opened = 0
        # the answer to the start request, with these fields added or replaced
        self.start_answer = {"live_id": LIVE_ID, "status": "running", "source": "fake", "error": None}
        self.start_answer.update(start_answer or {})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeLiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def wait_for_stop(self, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.stop_requests and time.monotonic() < deadline:
            time.sleep(0.02)
        return bool(self.stop_requests)

    def _handler(server):  # noqa: N805  (the handler's methods see the FakeLiveServer as ``server``)
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the token follows the proof on one connection

            def log_message(self, *args):
                pass

            def _json(self, code: int, value: dict) -> None:
                body = json.dumps(value).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                if url.path == f"{API}/health":
                    challenge = urllib.parse.parse_qs(url.query).get("challenge", [""])[0]
                    self._json(
                        200,
                        {
                            "status": "ok",
                            "api_version": 1,
                            "device": "cpu",
                            "proof": server_proof(server.token, challenge, self.server.server_address[1]),
                        },
                    )
                elif url.path == f"{API}/body_model" and server.body_model is not None:
                    data = server.body_model.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif url.path == f"{API}/live/{LIVE_ID}/stream":
                    self._stream()
                else:
                    self._json(404, {"detail": f"Nothing at {url.path}."})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == f"{API}/live":
                    time.sleep(server.start_delay_s)  # the real server opens the source and loads the detector here
                    if server.start_gate is not None:  # or as long as the test holds the gate shut
                        server.start_gate.wait(60)
                    self._json(200, server.start_answer)
                elif self.path == f"{API}/live/{LIVE_ID}/stop":
                    server.stop_requests.append(LIVE_ID)
                    if server.stop_status == 200:
                        self._json(200, {"live_id": LIVE_ID, "status": "stopped"})
                    else:
                        self._json(server.stop_status, {"detail": "The live session could not be stopped."})
                else:
                    self._json(404, {"detail": f"Nothing at {self.path}."})

            def _stream(self):
                key = self.headers.get("Sec-WebSocket-Key", "").encode()
                accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest()).decode()
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.end_headers()
                self.wfile.flush()
                server.streams_opened += 1
                conn = self.connection
                for message in server.messages:
                    if message is HOLD:
                        server.resume.wait(30)
                    else:
                        conn.sendall(message)
                if server.after == "close":
                    conn.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                conn.settimeout(30)
                try:
                    while conn.recv(65536):  # until the client closes
                        pass
                except OSError:
                    pass
                self.close_connection = True

        return Handler

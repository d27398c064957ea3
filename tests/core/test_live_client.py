"""The live client's receiver thread against a hostile WebSocket server (a plain socket in a thread),
for what the real server never sends. The normal flow runs against the real server in
tests/server/test_live_api.py."""

import base64
import hashlib
import json
import socket
import struct
import threading

from vibe_blender.core.live_client import LiveConnection
from vibe_blender.core.websocket import GUID, WebSocket

LIVE_ID = "0123456789abcdef"
FRAME = json.dumps(
    {
        "type": "frame",
        "frame_index": 0,
        "people": [{"track_id": 1, "pose": [0.0] * 72, "betas": [0.0] * 10, "trans_cam_m": [0.0, 0.0, 3.0]}],
    }
)
DEEP = "[" * 200_000 + "]" * 200_000  # 400 kB, under the 1 MiB message cap: json.loads alone recurses out


def _websocket_server(messages: list[str]) -> int:
    """A one-connection WebSocket server on 127.0.0.1 that sends ``messages`` as text, then waits for
    the client to go; -> its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        with conn, listener:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            for text in messages:
                payload = text.encode()
                conn.sendall(bytes([0x81, 127]) + struct.pack("!Q", len(payload)) + payload)
            conn.settimeout(10)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


class _Client:
    """The part of ServerClient a LiveConnection uses, with the stream on the fake WebSocket server."""

    def __init__(self, port: int):
        self.port = port

    def start_live(self, source, params):
        return {"live_id": LIVE_ID}

    def open_live_stream(self, live_id):
        return WebSocket(f"ws://127.0.0.1:{self.port}/api/v1/live/{live_id}/stream")

    def stop_live(self, live_id):
        return {}


def test_a_deeply_nested_message_is_skipped_as_bad_and_the_session_goes_on():
    """json.loads alone raised RecursionError there, which killed the receiver thread: the session
    stayed "streaming" for ever."""
    client = _Client(_websocket_server([FRAME, "{not json", DEEP, FRAME, json.dumps({"type": "end"})]))
    live = LiveConnection(client)
    live.recording_start()
    live.start("0")
    live._thread.join(20)
    assert not live._thread.is_alive()
    assert live.state == "ended" and live.error is None, (live.state, live.error)
    assert live.frames_received == 2 and live.bad_messages == 2
    take = live.recording_stop()
    assert take is not None and take.track_ids == [1] and take.rows == 2

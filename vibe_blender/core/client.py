"""HTTP client for the VIBE Mocap server (HTTP API version 1), stdlib ``urllib`` only.

Every failure becomes one VibeError that says what happened and what to do: server not running,
token refused, bad video, job failed. Call it from a worker thread, never from Blender's UI thread.
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

from .errors import VibeError

DEFAULT_URL = "http://127.0.0.1:8765"
API = "/api/v1"
CHUNK_BYTES = 1 << 20
START_SERVER_HINT = "Start it with 'vibe-mocap serve'"


def is_loopback_url(url: str) -> bool:
    """True when ``url`` points at this machine (127.0.0.0/8, ::1, localhost)."""
    host = (urllib.parse.urlparse(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_online_access(url: str, online_access: bool) -> None:
    """Blender's rule: no network beyond this machine unless the user allowed online access."""
    if not is_loopback_url(url) and not online_access:
        host = urllib.parse.urlparse(url).hostname
        raise VibeError(f"The server {host} is on another machine and Blender's online access is off. "
                        "Allow it in Preferences > System > Network, or run the server on this machine.")


class Cancelled(Exception):
    """Raised inside an upload or download when the caller's ``should_stop()`` turns true."""


class ServerClient:
    """One server. timeout_s bounds every single socket operation, not a whole transfer."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str = "", timeout_s: float = 10.0):
        url = (base_url or DEFAULT_URL).strip().rstrip("/")
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise VibeError(f"'{base_url}' is not a server URL; use e.g. {DEFAULT_URL} in the add-on preferences.")
        self.base_url = url
        self.token = (token or "").strip()
        self.timeout_s = timeout_s

    # ---------------------------------------------------------------- requests
    def _request(self, method: str, path: str, *, body=None, headers=None, stream: bool = False):
        req = urllib.request.Request(self.base_url + API + path, data=body, method=method, headers=dict(headers or {}))
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            response = urllib.request.urlopen(req, timeout=self.timeout_s)
        except urllib.error.HTTPError as err:
            raise self._http_error(err) from None
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as err:
            reason = getattr(err, "reason", err)
            raise VibeError(f"Cannot reach the VIBE Mocap server at {self.base_url} ({reason}). {START_SERVER_HINT}, "
                            "or check the server URL in the add-on preferences.") from None
        if stream:
            return response
        with response:
            data = response.read()
        return json.loads(data) if data else {}

    def _http_error(self, err: urllib.error.HTTPError) -> VibeError:
        """-> the VibeError to raise, with the HTTP status kept as ``http_status``."""
        error = self._http_error_message(err)
        error.http_status = err.code
        return error

    def _http_error_message(self, err: urllib.error.HTTPError) -> VibeError:
        try:
            detail = json.loads(err.read() or b"{}").get("detail")
        except (ValueError, AttributeError, OSError):
            detail = None
        if isinstance(detail, list):                  # validation errors: a list of {loc, msg}
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        if err.code == 401:
            return VibeError("The server refused the access token. Copy the token the server printed at start "
                             "into the add-on preferences (Token).")
        if err.code == 404 and not detail:
            return VibeError(f"{self.base_url} answered 404: it is not a VIBE Mocap server (API v1), or the job is gone.")
        return VibeError(detail or f"The server answered HTTP {err.code} {err.reason}.")

    # ---------------------------------------------------------------- API
    def health(self) -> dict:
        """GET /health: {"status", "version", "api_version", "device", "model", ...}."""
        info = self._request("GET", "/health")
        if info.get("api_version") != 1:
            raise VibeError(f"The server at {self.base_url} speaks API version {info.get('api_version')}; "
                            "this add-on needs version 1. Update the add-on or the server.")
        return info

    def submit_local(self, video_path: str | Path, params: dict | None = None) -> dict:
        """POST /jobs with a path on this machine (loopback servers only)."""
        body = json.dumps({"video_path": str(Path(video_path).resolve()), "params": params or {}}).encode()
        return self._request("POST", "/jobs", body=body, headers={"Content-Type": "application/json"})

    def submit_upload(self, video_path: str | Path, params: dict | None = None, *,
                      on_progress: Callable[[float], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> dict:
        """POST /jobs as multipart/form-data, streaming the file in CHUNK_BYTES pieces."""
        video_path = Path(video_path)
        try:
            size = video_path.stat().st_size
        except OSError as err:
            raise VibeError(f"Cannot read the video '{video_path}': {err.strerror}.") from err
        boundary = uuid.uuid4().hex
        name = video_path.name.replace('"', "_")
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n"
                f"Content-Type: application/json\r\n\r\n{json.dumps(params or {})}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"{name}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def chunks():
            yield head
            sent = 0
            with open(video_path, "rb") as f:
                while block := f.read(CHUNK_BYTES):
                    if should_stop and should_stop():
                        raise Cancelled()
                    sent += len(block)
                    if on_progress:
                        on_progress(sent / max(size, 1))
                    yield block
            yield tail

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                   "Content-Length": str(len(head) + size + len(tail))}
        return self._request("POST", "/jobs", body=chunks(), headers=headers)

    def job(self, job_id: str) -> dict:
        return self._request("GET", f"/jobs/{urllib.parse.quote(job_id)}")

    def jobs(self) -> list[dict]:
        return self._request("GET", "/jobs").get("jobs", [])

    def cancel(self, job_id: str) -> dict:
        return self._request("DELETE", f"/jobs/{urllib.parse.quote(job_id)}")

    # ---------------------------------------------------------------- live
    def start_live(self, source: str, params: dict | None = None) -> dict:
        """POST /live: a camera index, a stream URL on the server's machine or a file there."""
        body = json.dumps({"source": str(source), "params": params or {}}).encode()
        return self._request("POST", "/live", body=body, headers={"Content-Type": "application/json"})

    def stop_live(self, live_id: str) -> dict:
        return self._request("POST", f"/live/{urllib.parse.quote(live_id)}/stop")

    def open_live_stream(self, live_id: str):
        """The session's WebSocket (``core.websocket.WebSocket``), with the token in the handshake."""
        from .websocket import WebSocket

        url = self.base_url.replace("http://", "ws://", 1) + API + f"/live/{urllib.parse.quote(live_id)}/stream"
        if not url.startswith("ws://"):
            raise VibeError("Live streams need an http:// server URL on this machine or the local network.")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return WebSocket(url, headers, timeout_s=max(self.timeout_s, 30.0))

    def download_result(self, job_id: str, dest: str | Path, **kw) -> Path:
        """GET /jobs/{id}/result -> the result .npz at ``dest``."""
        return self._download(f"/jobs/{urllib.parse.quote(job_id)}/result", dest, **kw)

    def download_body_model(self, dest: str | Path, **kw) -> Path:
        """GET /body_model -> the body-model .npz at ``dest``."""
        return self._download("/body_model", dest, **kw)

    def _download(self, path: str, dest: str | Path, *, should_stop: Callable[[], bool] | None = None) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        with self._request("GET", path, stream=True) as response, open(partial, "wb") as f:
            while block := response.read(CHUNK_BYTES):
                if should_stop and should_stop():
                    f.close()
                    partial.unlink(missing_ok=True)
                    raise Cancelled()
                f.write(block)
        os.replace(partial, dest)                    # never leave a half-written file under the final name
        return dest

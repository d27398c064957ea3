"""HTTP client for the VIBE Mocap server (HTTP API version 1), stdlib ``http.client`` only.

Every failure becomes one VibeError that says what happened and what to do: server not running,
token missing or refused, bad video, job failed. Call it from a worker thread, never from
Blender's UI thread.

The server is not trusted: the token goes out only after the server proved it holds it
(``server_proof.py``: another program on the address gets nothing); every request then carries it,
so redirects are refused (they would carry it elsewhere); every answer is checked (status code,
content type, size, each JSON field) before it reaches the disk or the UI; downloads are capped; every
answer has a time limit as a whole (a program on the port cannot hold a request for ever, byte by
byte); and :meth:`ServerClient.interrupt` aborts a request in flight, so a slow server cannot hold up a
cancel.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import math
import os
import re
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from . import safe_json
from .errors import VibeError
from .regular_file import open_user_file
from .result_file import load_result
from .server_proof import new_challenge, proof_ok
from .shown_text import display_text
from .smpl_model import BodyModel, load_body_model
from .user_dirs import TOKEN_ENV_VAR, fresh_part_path, is_sendable_token, read_token, token_path

DEFAULT_URL = "http://127.0.0.1:8765"
API = "/api/v1"
CHUNK_BYTES = 1 << 20
START_SERVER_HINT = "Start it with 'vibe-mocap serve'"

# What the server may send back (see server/vibe_server/api/schemas.py).
JOB_ID_PATTERN = re.compile(r"[0-9a-f]{16}")  # the server's ids: uuid4().hex[:16]
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
STAGE_PATTERN = re.compile(r"[A-Za-z0-9_ -]{1,64}")
MAX_JSON_BYTES = 1 << 20  # a job list of thousands of jobs fits
MAX_RESULT_BYTES = 2 << 30  # hours of video, several people
MAX_BODY_MODEL_BYTES = 256 << 20  # the SMPL arrays are about 40 MiB
MAX_ETA_S = 1e7
MAX_TRACKS = 100_000
# Time limits on a whole answer, beyond timeout_s on each socket operation (which a byte now and then
# renews, and which http.client's loops over "100 Continue" answers and trailer lines never end): a JSON
# answer (or a proof) must be whole within ANSWER_TIME_FACTOR times timeout_s of its request; a download's
# body, once it has taken DOWNLOAD_GRACE_S, must have arrived at MIN_DOWNLOAD_BYTES_PER_S on average, the
# floor the server sets for uploads (server/vibe_server/api/request_body.py): a 40 MiB body model may take
# 43 minutes.
ANSWER_TIME_FACTOR = 3.0
MIN_DOWNLOAD_BYTES_PER_S = 16 * 1024
DOWNLOAD_GRACE_S = 60.0
# POST /jobs answers once the server has checked the video, for up to the probe_timeout_s its /health
# states: the answer is awaited that much longer, but never more than this (a server set to wait longer
# still discards the job of a client that left).
MAX_PROBE_WAIT_S = 600.0
Stop = Callable[[], bool]


def parse_content_length(value: str | None) -> int | None:
    """A Content-Length header -> its number; None when absent or not plain ASCII digits ('²' and '٣'
    pass ``str.isdigit`` but are no length)."""
    text = (value or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


def validate_server_url(url: str) -> urllib.parse.ParseResult:
    """``url`` parsed, once it is a server URL: http or https, a host, a port from 1 to 65535 if any, and
    no user, password, query or fragment. Anything else is a VibeError that names the setting."""
    try:
        parsed = urllib.parse.urlparse(url)
        port = parsed.port
    except ValueError:  # "http://[::1", a port out of range or not a number
        parsed, port = None, 0
    if (
        parsed is None
        or port == 0
        or parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or parsed.query
        or parsed.fragment
        or parsed.username
        or parsed.password
    ):
        raise VibeError(
            f"'{url}' is not a server URL: set the Server URL in the add-on preferences to the form "
            f"{DEFAULT_URL} (http:// or https://, a host, a port from 1 to 65535)."
        )
    return parsed


def is_loopback_url(url: str) -> bool:
    """True when ``url`` points at this machine (127.0.0.0/8, ::1, localhost)."""
    host = (urllib.parse.urlparse(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_url_or_default(url: str) -> str:
    """The server the add-on talks to: ``url``, or the local default when the field is empty."""
    return url.strip() or DEFAULT_URL


def server_url_warning(url: str) -> str | None:
    """What the preferences say under the Server URL field: why it is refused, or that the token and the
    videos would cross the network unencrypted (http:// to another machine); None when all is well."""
    url = server_url_or_default(url)
    try:
        parsed = validate_server_url(url)
    except VibeError as err:
        return str(err)
    if parsed.scheme == "http" and not is_loopback_url(url):
        return (
            "With http:// to another machine, the token and the videos cross the network unencrypted: "
            "anyone who reads the traffic can use the server. Reach it through an SSH tunnel or a TLS "
            "proxy (see the add-on's documentation)."
        )
    return None


def check_online_access(url: str, online_access: bool) -> None:
    """Blender's rule: no network beyond this machine unless the user allowed online access. A URL
    that is no server URL is refused first (:func:`validate_server_url`)."""
    host = validate_server_url(url).hostname
    if not is_loopback_url(url) and not online_access:
        raise VibeError(
            f"The server {host} is on another machine and Blender's online access is off. "
            "Allow it in Preferences > System > Network, or run the server on this machine."
        )


def token_hint() -> str:
    """Where the token is expected, for error messages."""
    return (
        f"for a server on this machine leave the Token field in the add-on preferences empty: the add-on "
        f"then reads ${TOKEN_ENV_VAR} or the file 'vibe-mocap serve' writes, {token_path()}; for a server "
        "elsewhere, paste the token it printed at start into that field"
    )


def resolve_token(typed: str | None) -> str:
    """The token typed in the preferences, else ``$VIBE_MOCAP_TOKEN``, else the local token file."""
    token = (typed or "").strip() or read_token()
    if not token:
        raise NoAccessToken(
            f"No access token for the VIBE Mocap server: start the server once with 'vibe-mocap serve' "
            f"to create it ({token_hint()})."
        )
    if not is_sendable_token(token):
        raise VibeError(
            "The access token has characters a token never has (spaces, line breaks, non-ASCII); "
            "copy it again exactly as the server printed it."
        )
    return token


class NoAccessToken(VibeError):
    """No token typed, in ``$VIBE_MOCAP_TOKEN`` or in the token file: the user never ran a server of
    their own (the add-on's own server gets its token from the add-on, and writes no file)."""


def uploaded_file_name(path: str | Path) -> str:
    """The name an upload gives its file (which the server records as the video's name): the file's
    name with unprintable characters, quotes and backslashes as '_' (they would break the form's header)."""
    return "".join(c if c.isprintable() and c not in '"\\' else "_" for c in Path(path).name)


class Cancelled(Exception):
    """Raised inside a request when the caller's ``should_stop()`` turns true."""


# The server marks its "I cannot use this path on your machine" answers with this header, so that the
# capture uploads the file instead (and only then).
REFUSAL_HEADER, LOCAL_PATH_UNREADABLE = "X-Vibe-Refusal", "local-path"


class ServerProofError(VibeError):
    """The server did not prove it holds the token (``server_proof.py``): the token was not sent."""


class ServerUnreachable(VibeError):
    """No connection to the server, or it broke off (the server is gone, or was never there)."""


class InvalidAnswer(VibeError):
    """The server's answer is not one of the API's (a hostile program, or a server killed mid-answer)."""


class LocalPathRefused(VibeError):
    """The server cannot use a path on this machine (it runs elsewhere, or cannot see the file)."""


class AnswerTooSlow(VibeError):
    """An answer was not whole within its time limit (:class:`ConnectionWatch`): it was cut off."""


class ConnectionWatch:
    """Ends what one HTTP connection is doing, from any thread: :meth:`abort` shuts its socket down,
    which ends a read or write in progress on it at once, even one inside http.client's own loops.
    With a deadline (:meth:`until`), a timer thread aborts it once that time has passed; ``expired``
    then says so, and ``rule`` what the deadline was (for the error message)."""

    def __init__(self, conn: http.client.HTTPConnection):
        self._conn = conn
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._deadline = self._fires_at = math.inf
        self._timer: threading.Timer | None = None
        self._closed = False
        self.expired = False
        self.rule = ""

    def abort(self) -> None:
        """Shut the connection's socket down (any thread); the read or write in progress ends at once."""
        # http.client drops conn.sock when an answer will close the connection, yet reads on from it
        sock = self._conn.sock or self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):  # already closed: nothing left to abort
                pass

    def until(self, deadline: float, rule: str = "") -> None:
        """Abort the connection at ``deadline`` (``time.monotonic()``; math.inf: never), unless it is
        moved or :meth:`close` comes first. Call it once the connection is open."""
        with self._lock:
            self._sock = self._conn.sock or self._sock
            self._deadline, self.rule = deadline, rule or self.rule
            if deadline < self._fires_at:  # a later one is left to the timer, which starts again then
                self._start_timer()

    def close(self) -> None:
        """No more deadlines: the timer ends."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()

    def _start_timer(self) -> None:  # with self._lock held
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fires_at = self._deadline
        if self._closed or math.isinf(self._deadline):
            return
        self._timer = threading.Timer(max(0.0, self._deadline - time.monotonic()), self._on_time)
        self._timer.daemon = True
        self._timer.start()

    def _on_time(self) -> None:
        with self._lock:
            if self._closed:
                return
            if time.monotonic() < self._deadline:  # moved since the timer started
                self._start_timer()
                return
            self.expired = True
        self.abort()


class ServerClient:
    """One server. timeout_s bounds every single socket operation; a whole answer must come within
    ANSWER_TIME_FACTOR times that (a download: at MIN_DOWNLOAD_BYTES_PER_S on average; POST /jobs: the
    server's time for checking the video longer), else AnswerTooSlow.

    token: the one typed in the preferences; empty -> ``$VIBE_MOCAP_TOKEN`` or the token file."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, timeout_s: float = 10.0):
        url = server_url_or_default(base_url or "").rstrip("/")
        parsed = validate_server_url(url)
        port = parsed.port
        self.base_url = url
        self.token = resolve_token(token)
        self.timeout_s = timeout_s
        self._https = parsed.scheme == "https"
        # "localhost" may be ::1 first, where another account could listen on the server's port: the
        # server binds 127.0.0.1, so connect there (server_proof.py)
        host = "127.0.0.1" if parsed.hostname.lower() == "localhost" else parsed.hostname
        self._host, self._port, self._prefix = host, port or (443 if self._https else 80), parsed.path
        self._lock = threading.Lock()
        self._in_flight: set[ConnectionWatch] = set()

    # ---------------------------------------------------------------- requests
    def interrupt(self) -> None:
        """Abort the requests in flight (any thread): their reads and writes end at once. Call it
        after making ``should_stop()`` true, so that the request sees why it ended."""
        with self._lock:
            watches = list(self._in_flight)
        for watch in watches:
            watch.abort()

    @contextmanager
    def _answer_within(self, watch: ConnectionWatch, seconds: float) -> Iterator[None]:
        """The answer read in this block must be whole within ``seconds`` (the block may move that
        deadline: ``watch.until``): ``watch`` then cuts it off, and whatever error that gave becomes
        AnswerTooSlow."""
        watch.until(time.monotonic() + seconds, f"no whole answer within {seconds:g} s")
        try:
            yield
            if watch.expired:  # a cut-off read may also end as if the answer were whole
                raise self._too_slow(watch)
        except Exception:
            if watch.expired:
                raise self._too_slow(watch) from None
            raise
        finally:
            watch.until(math.inf)

    def _too_slow(self, watch: ConnectionWatch) -> AnswerTooSlow:
        return AnswerTooSlow(
            f"The server at {self.base_url} answered too slowly or never finished its answer ({watch.rule}); "
            "check what is listening on that port (another program may hold it, or the link is too slow), "
            "then try again."
        )

    def _prove_connection(self, conn: http.client.HTTPConnection, watch: ConnectionWatch) -> dict:
        """Ask the server on ``conn`` to prove it holds the token (``server_proof.py``) before the
        token goes out on that connection, and on no other: a program on the address, a relay from
        another port, or one that took the port after the server stopped, gets nothing. Its answer
        must be whole within ANSWER_TIME_FACTOR times the connection's timeout (``watch``).
        -> the server's /health answer."""
        conn.connect()
        with self._answer_within(watch, ANSWER_TIME_FACTOR * conn.timeout):
            challenge = new_challenge()
            conn.request("GET", f"{self._prefix}{API}/health?challenge={challenge}")
            response = conn.getresponse()
            if not 200 <= response.status < 300:
                raise self._status_error(response)
            health = self._read_json(response)
        if "proof" not in health and health.get("api_version") == 1:
            raise ServerProofError(
                f"The server at {self.base_url} is older than this add-on, or another program posing as "
                "one (it cannot prove it holds the access token, so the token was not sent); update the "
                "server to this version, or check the server URL."
            )
        if not proof_ok(self.token, challenge, self._port, health.get("proof")):
            raise ServerProofError(
                f"The server at {self.base_url} did not prove that it holds this add-on's access token, "
                "so the token was not sent. Either another program took that address (stop it, or set "
                "another server URL; an SSH tunnel must keep the server's own port number), or the "
                f"server uses another token: {token_hint()}."
            )
        if response.will_close:
            raise VibeError(f"The server at {self.base_url} closed the connection after its proof; try again.")
        conn.auto_open = 0  # never reconnect silently: a new connection carries no proof
        return health

    def _probe_wait_s(self, health: dict) -> float:
        """How much longer than usual the answer to POST /jobs may take: the server's time limit for
        checking a video (/health's ``probe_timeout_s``, at most MAX_PROBE_WAIT_S; 0 from a server
        that does not state it)."""
        if "probe_timeout_s" not in health:
            return 0.0
        wait_s = _number(health["probe_timeout_s"], 0.0, math.inf)
        if wait_s is None:
            raise self._invalid("a time limit for checking a video that is not a number of seconds")
        return min(wait_s, MAX_PROBE_WAIT_S)

    @contextmanager
    def _exchange(
        self,
        method: str,
        path: str,
        *,
        body=None,
        headers=None,
        should_stop: Stop | None = None,
        with_token: bool = True,
        answer_kept: bool = False,
        waits_for_probe: bool = False,
    ) -> Iterator[tuple[http.client.HTTPResponse, ConnectionWatch]]:
        """One request -> its response with a 2xx status (anything else raises), closed on exit, and the
        watch that cuts the answer off when it is not whole within ANSWER_TIME_FACTOR times timeout_s (a reader
        may move that deadline: ``watch.until``).
        with_token: send the token (on this connection, after the server proved it holds it).
        answer_kept: once the request has gone out whole, a stop no longer cuts it off: its answer still
        comes (within its time limit). For POST /jobs, whose answer names the job a cancel must delete.
        waits_for_probe: the server checks the video before it answers (POST /jobs): the answer may
        take the server's time limit for that (``_probe_wait_s``) longer."""
        connection_class = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = connection_class(self._host, self._port, timeout=self.timeout_s)
        watch = ConnectionWatch(conn)
        with self._lock:  # interrupt() either sees this connection or we see the stop
            if should_stop and should_stop():
                raise Cancelled()
            self._in_flight.add(watch)
        try:
            try:
                extra_wait_s = 0.0
                if with_token:
                    health = self._prove_connection(conn, watch)
                    extra_wait_s = self._probe_wait_s(health) if waits_for_probe else 0.0
                if should_stop and should_stop():  # a stop while connecting (no socket to cut off yet)
                    raise Cancelled()
                authorization = {"Authorization": f"Bearer {self.token}"} if with_token else {}
                # a body goes out at its own pace (each write within timeout_s); the answer has its limit
                conn.request(method, self._prefix + API + path, body=body, headers={**(headers or {}), **authorization})
                if answer_kept:
                    with self._lock:  # interrupt() leaves it from now on
                        self._in_flight.discard(watch)
                if extra_wait_s:  # its first byte comes once the server has checked the video
                    conn.sock.settimeout(conn.timeout + extra_wait_s)
                with self._answer_within(watch, ANSWER_TIME_FACTOR * conn.timeout + extra_wait_s):
                    response = conn.getresponse()
                    if not 200 <= response.status < 300:
                        raise self._status_error(response)
                    yield response, watch
            except (OSError, http.client.HTTPException) as err:
                if should_stop and should_stop():
                    raise Cancelled() from None
                raise ServerUnreachable(
                    f"Cannot reach the VIBE Mocap server at {self.base_url} ({err or type(err).__name__}). "
                    f"{START_SERVER_HINT}, or check the server URL in the add-on preferences."
                ) from None
            except VibeError:
                if should_stop and should_stop():
                    raise Cancelled() from None
                raise
        finally:
            watch.close()
            with self._lock:
                self._in_flight.discard(watch)
            conn.close()

    def _request_json(
        self,
        method: str,
        path: str,
        *,
        body=None,
        headers=None,
        should_stop: Stop | None = None,
        answer_kept: bool = False,
        waits_for_probe: bool = False,
    ) -> dict:
        """The JSON object a request answers (``answer_kept``, ``waits_for_probe``: see :meth:`_exchange`;
        with ``answer_kept`` its answer is returned even when a stop came while it was awaited)."""
        with self._exchange(
            method,
            path,
            body=body,
            headers=headers,
            should_stop=should_stop,
            answer_kept=answer_kept,
            waits_for_probe=waits_for_probe,
        ) as (response, _):
            data = self._read_json(response)
        if should_stop and should_stop() and not answer_kept:
            raise Cancelled()
        return data

    def _invalid(self, what: str) -> VibeError:
        return InvalidAnswer(
            f"The server at {self.base_url} sent an invalid answer ({what}); it is not a compatible "
            "VIBE Mocap server (API v1). Check the server URL, or update the server and the add-on."
        )

    def _expect_content_type(self, response: http.client.HTTPResponse, expected: str) -> None:
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != expected:
            raise self._invalid(f"content type '{display_text(content_type, 80)}' where {expected} was expected")

    def _declared_length(self, response: http.client.HTTPResponse, max_bytes: int) -> int | None:
        declared = response.getheader("Content-Length")
        if declared is None:
            return None
        length = parse_content_length(declared)
        if length is None:
            raise self._invalid("a Content-Length that is not a number")
        if length > max_bytes:
            raise self._too_large(max_bytes)
        return length

    def _too_large(self, max_bytes: int) -> VibeError:
        return VibeError(
            f"The server at {self.base_url} sent more than {max_bytes / 1024**2:.0f} MiB where a "
            "VIBE Mocap answer is much smaller; nothing was saved. Check the server URL."
        )

    def _read_json(self, response: http.client.HTTPResponse) -> dict:
        """The JSON object of a response, at most MAX_JSON_BYTES, strict JSON (no NaN)."""
        self._expect_content_type(response, "application/json")
        self._declared_length(response, MAX_JSON_BYTES)
        data = response.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise self._too_large(MAX_JSON_BYTES)
        try:
            value = safe_json.loads(data, parse_constant=_refuse_constant)
        except safe_json.JSONTooDeep as err:
            raise self._invalid(str(err)) from None
        except ValueError:
            raise self._invalid("a body that is not valid JSON") from None
        if not isinstance(value, dict):
            raise self._invalid("JSON that is not an object")
        return value

    def _status_error(self, response: http.client.HTTPResponse) -> VibeError:
        """-> the VibeError for a non-2xx answer, with the HTTP status kept as ``http_status``."""
        detail = None
        if 300 <= response.status < 400:
            location = display_text(response.getheader("Location") or "elsewhere", 200)
            error = VibeError(
                f"The server at {self.base_url} redirected to {location}; the add-on does not follow "
                "redirects (they would carry the access token elsewhere). Put the final address "
                "in the add-on preferences (Server URL)."
            )
        else:
            try:
                detail = self._read_json(response).get("detail")
            except VibeError:
                detail = None
            if isinstance(detail, list):  # validation errors: a list of {loc, msg}
                detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
            detail = display_text(detail) if detail else None
            error = self._error_for(response.status, response.reason, detail)
        error.http_status = response.status
        error.detail = detail
        error.refusal = response.getheader(REFUSAL_HEADER) or ""
        return error

    def _error_for(self, status: int, reason: str, detail: str | None) -> VibeError:
        if status == 401:
            return VibeError(f"The server refused the access token: {token_hint()}.")
        if status == 404 and not detail:
            return VibeError(
                f"{self.base_url} answered 404: it is not a VIBE Mocap server (API v1), or the job is gone."
            )
        return VibeError(detail or f"The server answered HTTP {status} {display_text(reason, 80)}.")

    # ---------------------------------------------------------------- API
    def health(self, should_stop: Stop | None = None) -> dict:
        """GET /health: {"status", "version", "api_version", "device", "model", ...}."""
        info = self._request_json("GET", "/health", should_stop=should_stop)
        if info.get("api_version") != 1 or isinstance(info.get("api_version"), bool):
            raise VibeError(
                f"The server at {self.base_url} speaks API version "
                f"{display_text(info.get('api_version'), 20)}; this add-on needs version 1. "
                "Update the add-on or the server."
            )
        device = info.get("device")
        if not isinstance(device, str) or not STAGE_PATTERN.fullmatch(device.replace(":", "_")):
            raise self._invalid("no device name")
        return info

    def submit_local(
        self, video_path: str | Path, params: dict | None = None, *, should_stop: Stop | None = None
    ) -> dict:
        """POST /jobs with a path on this machine. LocalPathRefused when the server cannot use it."""
        body = json.dumps({"video_path": str(Path(video_path).resolve()), "params": params or {}}).encode()
        try:
            created = self._request_json(
                "POST",
                "/jobs",
                body=body,
                headers={"Content-Type": "application/json"},
                should_stop=should_stop,
                answer_kept=True,
                waits_for_probe=True,
            )
        except VibeError as err:
            if _is_local_path_refusal(err):
                refused = LocalPathRefused(str(err))
                refused.http_status, refused.detail = err.http_status, err.detail
                raise refused from None
            raise
        return self._job_record(created, created_only=True)

    def submit_upload(
        self,
        video_path: str | Path,
        params: dict | None = None,
        *,
        on_progress: Callable[[float], None] | None = None,
        should_stop: Stop | None = None,
    ) -> dict:
        """POST /jobs as multipart/form-data, streaming the file in CHUNK_BYTES pieces: exactly the bytes
        it held when opened (the Content-Length sent); a device, FIFO or socket is refused unsent."""
        video_path = Path(video_path)
        with open_user_file(video_path, "the video", "Choose a video file.") as video:
            return self._upload(video, video_path, params, on_progress=on_progress, should_stop=should_stop)

    def _upload(
        self,
        video: BinaryIO,
        video_path: Path,
        params: dict | None,
        *,
        on_progress: Callable[[float], None] | None,
        should_stop: Stop | None,
    ) -> dict:
        size = os.fstat(video.fileno()).st_size
        boundary = uuid.uuid4().hex
        name = uploaded_file_name(video_path)
        head = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n"
            f"Content-Type: application/json\r\n\r\n{json.dumps(params or {})}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def chunks():
            yield head
            sent = 0
            while sent < size:
                block = video.read(min(CHUNK_BYTES, size - sent))  # a file that grows: its first `size` bytes
                if not block:
                    raise VibeError(
                        f"The video '{video_path}' became shorter while it was uploaded ({sent:,} of {size:,} "
                        "bytes); upload it again once it is written."
                    )
                if should_stop and should_stop():
                    raise Cancelled()
                sent += len(block)
                if on_progress:
                    on_progress(sent / max(size, 1))
                yield block
            yield tail

        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail)),
        }
        created = self._request_json(
            "POST",
            "/jobs",
            body=chunks(),
            headers=headers,
            should_stop=should_stop,
            answer_kept=True,
            waits_for_probe=True,
        )
        return self._job_record(created, created_only=True)

    def job(self, job_id: str, should_stop: Stop | None = None) -> dict:
        """GET /jobs/{id}: the job record, every field checked."""
        record = self._job_record(self._request_json("GET", f"/jobs/{_checked_id(job_id)}", should_stop=should_stop))
        if record["job_id"] != job_id:
            raise self._invalid("the record of another job")
        return record

    def jobs(self) -> list[dict]:
        listed = self._request_json("GET", "/jobs").get("jobs")
        if not isinstance(listed, list):
            raise self._invalid("no job list")
        return [self._job_record(job) for job in listed]

    def cancel(self, job_id: str) -> dict:
        return self._job_record(self._request_json("DELETE", f"/jobs/{_checked_id(job_id)}"))

    def download_result(self, job_id: str, dest: str | Path, *, max_bytes: int = MAX_RESULT_BYTES, **kw) -> Path:
        """GET /jobs/{id}/result -> the result .npz at ``dest`` (a name the caller chose), saved only once
        it reads as a VIBE Mocap result: an answer that does not leaves nothing behind."""
        return self._download(
            f"/jobs/{_checked_id(job_id)}/result", dest, max_bytes=max_bytes, check=self._check_result, **kw
        )

    def _check_result(self, partial: Path) -> None:
        try:
            with open(partial, "rb") as f:  # read as a file: the error names no temporary path
                load_result(f, hint="")  # not the user's choice of file: no advice to choose another
        except OSError as err:
            raise _cannot_write(partial, err) from None
        except VibeError as err:
            raise VibeError(
                f"The server at {self.base_url} sent an answer that is not a VIBE Mocap result ({err}); "
                "nothing was saved. Run the capture again; if it fails the same way, check the server URL "
                "(a proxy in between may answer in the server's place) or update the server."
            ) from None

    # ---------------------------------------------------------------- live
    def start_live(self, source: str, params: dict | None = None) -> dict:
        """POST /live: a camera index, a stream URL on the server's machine or a file there."""
        body = json.dumps({"source": str(source), "params": params or {}}).encode()
        return self._request_json("POST", "/live", body=body, headers={"Content-Type": "application/json"})

    def live_status(self, live_id: str) -> dict:
        """GET /live/{id}: {live_id, status, source, error, warnings, stats, clients}."""
        return self._request_json("GET", f"/live/{_checked_id(live_id)}")

    def shutdown(self) -> dict:
        """POST /shutdown: stop the server (a server on this machine only)."""
        return self._request_json("POST", "/shutdown")

    def stop_live(self, live_id: str) -> dict:
        return self._request_json("POST", f"/live/{_checked_id(live_id)}/stop")

    def open_live_stream(self, live_id: str):
        """The session's WebSocket (``core.websocket.WebSocket``), with the token in the handshake."""
        from .websocket import WebSocket

        if self._https:
            raise VibeError("Live streams need an http:// server URL (on this machine or the local network).")
        host = f"[{self._host}]" if ":" in self._host else self._host
        url = f"ws://{host}:{self._port}{self._prefix}{API}/live/{_checked_id(live_id)}/stream"
        timeout_s = max(self.timeout_s, 30.0)
        conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)
        watch = ConnectionWatch(conn)
        try:
            self._prove_connection(conn, watch)  # the handshake, with the token, follows on this connection
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise VibeError(f"Cannot reach the live stream at {self.base_url} ({err or type(err).__name__}).") from None
        except VibeError:
            conn.close()
            raise
        finally:
            watch.close()
        sock, conn.sock = conn.sock, None
        return WebSocket(url, {"Authorization": f"Bearer {self.token}"}, timeout_s=timeout_s, sock=sock)

    def download_body_model(self, dest: str | Path, *, max_bytes: int = MAX_BODY_MODEL_BYTES, **kw) -> BodyModel:
        """GET /body_model -> the body model, saved as a .npz at ``dest`` only once it reads as one (a file
        that does not replaces nothing); that check is its one read, whose model is returned."""
        checked: list[BodyModel] = []

        def check(partial: Path) -> None:
            checked.append(self._check_body_model(partial))

        self._download("/body_model", dest, max_bytes=max_bytes, check=check, **kw)
        return checked[0]

    def _check_body_model(self, partial: Path) -> BodyModel:
        try:
            return load_body_model(partial)
        except VibeError as err:
            raise VibeError(
                f"The server at {self.base_url} sent a body model that cannot be used ({err}); no body model "
                "was saved. Check the server's model data ('vibe-mocap data check') or update the server."
            ) from None

    def _download(
        self,
        path: str,
        dest: str | Path,
        *,
        max_bytes: int,
        should_stop: Stop | None = None,
        check: Callable[[Path], None] | None = None,
    ) -> Path:
        """GET ``path`` -> ``dest``, written under a temporary name of its own beside it (``fresh_part_path``)
        and renamed once whole (its length known: declared or chunked) and, with ``check``, once
        ``check(part)`` passed."""
        dest = Path(dest)
        partial = fresh_part_path(dest)
        with self._exchange("GET", path, should_stop=should_stop) as (response, watch):
            self._expect_content_type(response, "application/octet-stream")
            declared = self._declared_length(response, max_bytes)  # refused before anything is written
            if declared is None and not response.chunked:  # its body would end only when the connection did
                raise VibeError(
                    f"The server at {self.base_url} sent a download without its length, so a cut-off "
                    "transfer cannot be told from a whole one; nothing was saved. Check the server URL "
                    "(a proxy in between may drop the length), or update the server."
                )
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                f = open(partial, "xb")  # noqa: SIM115  (the with below closes it; an error here is the disk's)
            except OSError as err:
                raise _cannot_write(partial, err) from None
            try:
                received, started = 0, time.monotonic()
                rule = f"a download must come at {MIN_DOWNLOAD_BYTES_PER_S / 1024:g} KiB/s on average"
                watch.until(started + DOWNLOAD_GRACE_S, rule)
                with f:
                    while block := response.read1(CHUNK_BYTES):  # what came: the deadline moves on with it
                        if should_stop and should_stop():
                            raise Cancelled()
                        received += len(block)
                        watch.until(started + DOWNLOAD_GRACE_S + received / MIN_DOWNLOAD_BYTES_PER_S)
                        if received > max_bytes:
                            raise self._too_large(max_bytes)
                        try:
                            f.write(block)
                        except OSError as err:
                            raise _cannot_write(partial, err) from None
                if should_stop and should_stop():  # interrupted: the read ended early
                    raise Cancelled()
                if watch.expired:  # cut off, perhaps only in a trailer: nothing is saved
                    raise self._too_slow(watch)
                if declared is not None and received != declared:
                    raise VibeError(
                        f"The download from {self.base_url} ended early ({received} of {declared} "
                        "bytes); try the capture again."
                    )
                if check is not None:
                    check(partial)
                try:
                    os.replace(partial, dest)  # never leave a half-written file under the final name
                except OSError as err:
                    raise _cannot_write(dest, err) from None
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        return dest

    # ---------------------------------------------------------------- checks of what the server sent
    def _job_record(self, job: dict, *, created_only: bool = False) -> dict:
        """A job record (or a POST /jobs answer) with every field the add-on uses checked."""
        if not isinstance(job, dict):
            raise self._invalid("a job that is not an object")
        job_id = job.get("job_id")
        if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
            raise self._invalid(f"the job id '{display_text(job_id, 40)}', which is not 16 hex digits")
        status = job.get("status")
        if status not in JOB_STATUSES:
            raise self._invalid(f"the job status '{display_text(status, 40)}'")
        record = {"job_id": job_id, "status": status}
        if created_only:
            return record
        progress = _number(job.get("progress", 0.0), 0.0, 1.0)
        if progress is None:
            raise self._invalid("a progress outside 0..1")
        eta_s = job.get("eta_s")
        if eta_s is not None and _number(eta_s, 0.0, MAX_ETA_S) is None:
            raise self._invalid("a time left that is not a number of seconds")
        stage = job.get("stage")
        if stage is not None and (not isinstance(stage, str) or not STAGE_PATTERN.fullmatch(stage)):
            raise self._invalid("a stage name that is not a short word")
        num_tracks = job.get("num_tracks")
        if num_tracks is not None and (type(num_tracks) is not int or not 0 <= num_tracks <= MAX_TRACKS):
            raise self._invalid("a number of people that is not a count")
        error = job.get("error")
        record.update(
            progress=progress,
            eta_s=None if eta_s is None else float(eta_s),
            stage=stage,
            num_tracks=num_tracks,
            error=display_text(error) if error else None,
            video_name=display_text(job.get("video_name") or "", 200),
        )
        return record


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _number(value, low: float, high: float) -> float | None:
    """value as a float when it is a finite number in [low, high], else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and low <= value <= high else None


def _cannot_write(path: Path, err: OSError) -> VibeError:
    return VibeError(
        f"Cannot write the download to {path.parent} ({err.strerror or err}); free some disk space "
        "or check that folder's permissions."
    )


def _checked_id(job_id: str) -> str:
    """A job or live-session id as the server makes them (16 hex digits), else VibeError."""
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        raise VibeError(f"'{display_text(job_id, 40)}' is not a VIBE Mocap job id (16 hex digits).")
    return job_id


def _is_local_path_refusal(err: VibeError) -> bool:
    """The server's two answers for 'I cannot use a path on your machine': 403 (the request did not
    come from the server's machine) and 415 marked ``X-Vibe-Refusal: local-path`` (it cannot read
    that file: it sees another disk, or lacks the rights; the upload then gives the final answer)."""
    return getattr(err, "http_status", None) == 403 or getattr(err, "refusal", "") == LOCAL_PATH_UNREADABLE

"""A stand-in for the VIBE Mocap server (HTTP API v1), for what the real server cannot do: misbehave.

The add-on's client is tested against the REAL server (tests/server/test_client_real_server.py);
this fake is for the hostile answers a real server never gives (bad job ids, redirects, huge or
malformed bodies, a slow server) and for the Blender tests, whose venvs have no torch. Stdlib only
(``http.server`` on 127.0.0.1, a free port, in a thread). Its normal answers copy the real server's
status codes and messages; tests/server/test_client_real_server.py checks that they still match.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.parse
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from vibe_blender.core.client import LOCAL_PATH_UNREADABLE, REFUSAL_HEADER
from vibe_blender.core.server_proof import server_proof
from vibe_server.pipeline.options import option_specs

STAGES = ("decode", "detect", "track", "crop", "backbone", "temporal", "smpl", "write")
# The fields of the server's JobParams, from their one definition (pure standard library, so the bpy
# venvs read it too).
JOB_PARAM_NAMES = frozenset(spec.name for spec in option_specs(http=True))

# The real server's answers (server/vibe_server/api), word for word.
TOKEN_REFUSED = (
    "This server needs its token: send 'Authorization: Bearer <token>'. The add-on and the command line "
    "read it from the token file that 'vibe-mocap serve' names when it starts (or from $VIBE_MOCAP_TOKEN)."
)
LOCAL_PATH_REFUSED = (
    "A video path on the server's disk is only accepted from the same machine; upload the file instead."
)


def count_body_model_reads(monkeypatch) -> list:
    """The files (paths or open files) the body-model reader reads from now on, in order."""
    from vibe_blender.core import smpl_model  # the module whose reader is counted

    reads = []
    read_npz = smpl_model.read_npz

    def counted_read_npz(path_or_file, **kw):
        reads.append(path_or_file)
        return read_npz(path_or_file, **kw)

    monkeypatch.setattr(smpl_model, "read_npz", counted_read_npz)
    return reads


def local_path_unreadable(path) -> str:
    return f"'{path}' is not a readable video file on this machine; check the path, or upload the file instead."


def no_job(job_id: str) -> str:
    return f"There is no job '{job_id}'; list the jobs with GET /api/v1/jobs."


def not_done(job_id: str, status: str) -> str:
    return f"Job '{job_id}' is {status}; the result is there once it is done."


def unknown_params(names, what: str, prefix: str = "") -> str:
    problems = "; ".join(f"unknown parameter '{prefix}{name}'" for name in sorted(names))
    return f"Invalid {what}: {problems}. Check the parameter names and values in docs/server.md."


class FakeVibeServer:
    """result_path: the .npz served as every job's result; body_model_path: served at /body_model.

    Honest options: token (required on every call but health), fail_with (every job fails with this
    error), polls_per_job, accept_local=False (local paths refused as from another machine: 403),
    submit_delay_s (POST /jobs answers this long after the job is made, as the real server probes the
    video before it answers), unanswered_polls (that many polls of a running job get the connection
    closed without an answer, as a server out of reach for a moment).
    Hostile options: created_id (the job id POST /jobs answers), job_patch (merged into every job
    record), redirect_to (every call but health answers 307 to that origin), result_bytes_sent /
    declared_length (the result's body size and the Content-Length it claims), chunked (a result of
    result_bytes_sent bytes without a declared length is sent in chunked encoding), slow_s (job polls
    after the first running one wait this long), json_padding (bytes of padding in job records),
    content_type (of the result download), prove=False (/health answers no proof, as servers before
    the proof did). port: where it listens (0: a free port). model: the model /health names;
    body_model_fingerprint: /health's "body_model" ("auto": a hash of the body model's bytes; None: no
    such field, as servers before it; anything else is sent as it is). probe_timeout_s: /health's
    time limit for checking a video (None: no such field, as servers before it; sent as it is)."""

    def __init__(
        self,
        result_path: Path,
        body_model_path: Path,
        *,
        token: str = "fake-token",
        fail_with: str | None = None,
        polls_per_job: int = 3,
        accept_local: bool = True,
        created_id: str | None = None,
        job_patch: dict | None = None,
        redirect_to: str | None = None,
        result_bytes_sent: int | None = None,
        declared_length: int | None = None,
        chunked: bool = False,
        slow_s: float = 0.0,
        json_padding: int = 0,
        content_type: str = "application/octet-stream",
        prove: bool = True,
        port: int = 0,
        model: str = "synthetic placeholder",
        body_model_fingerprint: object = "auto",
        submit_delay_s: float = 0.0,
        unanswered_polls: int = 0,
        probe_timeout_s: object = 60.0,
    ):
        self.result_bytes = Path(result_path).read_bytes()
        self.body_model_bytes = Path(body_model_path).read_bytes()
        self.token, self.fail_with, self.polls_per_job = token, fail_with, polls_per_job
        self.accept_local = accept_local
        self.created_id, self.job_patch, self.redirect_to = created_id, dict(job_patch or {}), redirect_to
        self.result_bytes_sent, self.declared_length = result_bytes_sent, declared_length
        self.chunked = chunked
        self.slow_s, self.json_padding, self.content_type = slow_s, json_padding, content_type
        self.prove, self.model = prove, model
        self.submit_delay_s, self.unanswered_polls = submit_delay_s, unanswered_polls
        if body_model_fingerprint == "auto":  # opaque to the add-on: any text naming these bytes will do
            body_model_fingerprint = "sha256:" + hashlib.sha256(self.body_model_bytes).hexdigest()
        self.body_model_fingerprint = body_model_fingerprint
        self.probe_timeout_s = probe_timeout_s
        self.jobs: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []
        self.uploads: list[tuple[str, bytes, dict]] = []  # (filename, content, params)
        self.local_paths: list[str] = []
        self._lock = threading.Lock()
        self.shutdown_asked = threading.Event()  # POST /shutdown came
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()

    # ------------------------------------------------------------------------------------------
    def _new_job(self, video_name: str) -> dict:
        with self._lock:
            job_id = uuid.uuid4().hex[:16]
            job = {
                "job_id": job_id,
                "status": "queued",
                "stage": None,
                "progress": 0.0,
                "eta_s": None,
                "error": None,
                "video_name": video_name,
                "created": "2026-01-01T00:00:00Z",
                "num_tracks": None,
                "_polls": 0,
            }
            self.jobs[job_id] = job
            return job

    def _advance(self, job: dict) -> None:
        if job["status"] not in ("queued", "running"):
            return
        job["_polls"] += 1
        if job["_polls"] >= self.polls_per_job:
            if self.fail_with:
                job.update(status="failed", error=self.fail_with, stage=None)
            else:
                job.update(status="done", progress=1.0, stage=None, eta_s=0.0, num_tracks=2)
        else:
            job.update(
                status="running",
                stage=STAGES[job["_polls"] % len(STAGES)],
                progress=job["_polls"] / self.polls_per_job,
                eta_s=1.5,
            )

    def _public(self, job: dict) -> dict:
        record = {k: v for k, v in job.items() if not k.startswith("_")}
        record.update(self.job_patch)
        if self.json_padding:
            record["padding"] = "x" * self.json_padding
        return record

    def _handler(server):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the token follows the proof on one connection

            def log_message(self, *args):
                pass

            def _send(self, code: int, body, content_type="application/json", headers=None):
                data = json.dumps(body).encode() if content_type == "application/json" else body
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _send_result(self):
                size = len(server.result_bytes) if server.result_bytes_sent is None else server.result_bytes_sent
                self.send_response(200)
                self.send_header("Content-Type", server.content_type)
                if server.declared_length is not None:
                    self.send_header("Content-Length", str(server.declared_length))
                elif server.result_bytes_sent is None:
                    self.send_header("Content-Length", str(size))
                elif server.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.close_connection = True
                else:
                    self.close_connection = True  # no length: the body ends when the server closes
                self.end_headers()
                if server.result_bytes_sent is None:
                    self.wfile.write(server.result_bytes)
                    return
                block = b"\0" * (1 << 16)
                chunked = server.chunked and server.declared_length is None
                try:
                    for start in range(0, size, len(block)):
                        part = block[: min(len(block), size - start)]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except OSError:  # the client stopped reading: what it should do
                    pass

            def _route(self, method):
                server.requests.append((method, self.path))
                server.authorizations.append(self.headers.get("Authorization"))
                path = self.path.split("?")[0]
                if not path.startswith("/api/v1/"):
                    return self._send(404, {"detail": "Not Found"})
                path = path[len("/api/v1") :]
                if path == "/health" and method == "GET":
                    challenge = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("challenge")
                    proof = {}
                    if challenge and server.prove:
                        proof["proof"] = server_proof(server.token, challenge[0], self.server.server_address[1])
                    optional = {}  # fields a server of an older version leaves out
                    if server.body_model_fingerprint is not None:
                        optional["body_model"] = server.body_model_fingerprint
                    if server.probe_timeout_s is not None:
                        optional["probe_timeout_s"] = server.probe_timeout_s
                    return self._send(
                        200,
                        {
                            "status": "ok",
                            "version": "0.1.0",
                            "api_version": 1,
                            "device": "cpu",
                            "model": server.model,
                            "torch": "2.13.0",
                            "queue_length": 0,
                            **proof,
                            **optional,
                        },
                    )
                if server.redirect_to:
                    return self._send(307, {}, headers={"Location": server.redirect_to + self.path})
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    return self._send(401, {"detail": TOKEN_REFUSED}, headers={"WWW-Authenticate": "Bearer"})
                if path == "/jobs" and method == "POST":
                    return self._submit()
                if path == "/jobs" and method == "GET":
                    return self._send(200, {"jobs": [server._public(j) for j in server.jobs.values()]})
                if path == "/body_model" and method == "GET":
                    return self._send(200, server.body_model_bytes, "application/octet-stream")
                if path == "/shutdown" and method == "POST":  # as the real server's: asked, it stops
                    server.shutdown_asked.set()
                    return self._send(202, {"status": "stopping"})
                parts = path.strip("/").split("/")
                if len(parts) >= 2 and parts[0] == "jobs":
                    job = server.jobs.get(parts[1])
                    if job is None:
                        return self._send(404, {"detail": no_job(parts[1])})
                    if len(parts) == 2 and method == "GET":
                        if server.slow_s and job["status"] == "running":
                            time.sleep(server.slow_s)
                        if server.unanswered_polls and job["status"] == "running":
                            server.unanswered_polls -= 1
                            self.close_connection = True
                            return None
                        with server._lock:
                            server._advance(job)
                        return self._send(200, server._public(job))
                    if len(parts) == 2 and method == "DELETE":
                        if job["status"] in ("queued", "running"):
                            job["status"], job["eta_s"] = "cancelled", None
                        return self._send(200, server._public(job))
                    if len(parts) == 3 and parts[2] == "result" and method == "GET":
                        if job["status"] != "done":
                            return self._send(409, {"detail": not_done(parts[1], job["status"])})
                        return self._send_result()
                return self._send(404, {"detail": "Not Found"})

            def _bad_params(self, params, what: str, prefix: str = "") -> bool:
                unknown = set(params) - JOB_PARAM_NAMES
                if unknown:
                    self._send(422, {"detail": unknown_params(unknown, what, prefix)})
                return bool(unknown)

            def _created(self, job: dict):
                time.sleep(server.submit_delay_s)
                return self._send(201, {"job_id": server.created_id or job["job_id"], "status": "queued"})

            def _submit(self):
                ctype = self.headers.get("Content-Type", "")
                length = int(self.headers.get("Content-Length", 0))
                if ctype.startswith("application/json"):
                    body = json.loads(self.rfile.read(length))
                    if not server.accept_local:
                        return self._send(403, {"detail": LOCAL_PATH_REFUSED})
                    if self._bad_params(body.get("params", {}), "request", "params."):
                        return None
                    if not Path(body.get("video_path", "")).is_file():
                        return self._send(
                            415,
                            {"detail": local_path_unreadable(body.get("video_path"))},
                            headers={REFUSAL_HEADER: LOCAL_PATH_UNREADABLE},
                        )
                    server.local_paths.append(body["video_path"])
                    return self._created(server._new_job(Path(body["video_path"]).name))
                if ctype.startswith("multipart/form-data"):
                    raw = self.rfile.read(length)
                    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
                    fields = {
                        part.get_param("name", header="content-disposition"): part for part in message.iter_parts()
                    }
                    if "video" not in fields:
                        return self._send(
                            400, {"detail": "The upload has no 'video' part; send the file as the form field 'video'."}
                        )
                    params = (
                        json.loads(fields["params"].get_payload(decode=True) or b"{}") if "params" in fields else {}
                    )
                    if self._bad_params(params, "params"):
                        return None
                    video = fields["video"]
                    server.uploads.append((video.get_filename(), video.get_payload(decode=True), params))
                    return self._created(server._new_job(video.get_filename()))
                return self._send(
                    415,
                    {
                        "detail": f"Unsupported content type '{ctype or 'none'}': upload the video as "
                        "multipart/form-data (part 'video'), or send JSON with 'video_path'."
                    },
                )

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

        return Handler

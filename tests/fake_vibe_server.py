"""A tiny stand-in for the VIBE Mocap server (HTTP API v1), for testing the add-on's client.

Stdlib only (``http.server`` on 127.0.0.1, a free port, in a thread), so it runs in the bpy venvs
too. It follows the HTTP API v1 contract: health, jobs (JSON local path or multipart upload), job status that
advances one stage per poll, cancel, result and body-model downloads, bearer token, JSON errors.
"""
from __future__ import annotations

import json
from email.parser import BytesParser
from email.policy import HTTP
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STAGES = ("decode", "detect", "track", "crop", "backbone", "temporal", "smpl", "write")


class FakeVibeServer:
    """result_path: the .npz served as every job's result; body_model_path: served at /body_model.
    fail_with: make every job fail with this error; token: require it; accept_local: False answers
    local-path jobs with 400 (a server that cannot see this machine's files)."""

    def __init__(self, result_path: Path, body_model_path: Path, *, token: str = "", fail_with: str | None = None,
                 polls_per_job: int = 3, accept_local: bool = True):
        self.result_bytes = Path(result_path).read_bytes()
        self.body_model_bytes = Path(body_model_path).read_bytes()
        self.token, self.fail_with, self.polls_per_job = token, fail_with, polls_per_job
        self.accept_local = accept_local
        self.jobs: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.uploads: list[tuple[str, bytes, dict]] = []      # (filename, content, params)
        self.local_paths: list[str] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
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
            job_id = f"job{len(self.jobs) + 1}"
            job = {"job_id": job_id, "status": "queued", "stage": None, "progress": 0.0, "eta_s": None,
                   "error": None, "video_name": video_name, "created": "2026-01-01T00:00:00Z", "num_tracks": None,
                   "_polls": 0}
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
            job.update(status="running", stage=STAGES[job["_polls"] % len(STAGES)],
                       progress=job["_polls"] / self.polls_per_job, eta_s=1.5)

    def _handler(server):                                   # noqa: N805  (closure over the fake server)
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body, content_type="application/json"):
                data = json.dumps(body).encode() if content_type == "application/json" else body
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _public(self, job):
                return {k: v for k, v in job.items() if not k.startswith("_")}

            def _route(self, method):
                server.requests.append((method, self.path))
                path = self.path.split("?")[0]
                if not path.startswith("/api/v1/"):
                    return self._send(404, {"detail": "Not Found"})
                path = path[len("/api/v1"):]
                if path == "/health" and method == "GET":
                    return self._send(200, {"status": "ok", "version": "0.1.0", "api_version": 1, "device": "cpu",
                                            "model": "synthetic placeholder", "torch": "2.13.0", "queue_length": 0})
                if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
                    return self._send(401, {"detail": "Missing or wrong access token; pass the server's token."})
                if path == "/jobs" and method == "POST":
                    return self._submit()
                if path == "/jobs" and method == "GET":
                    return self._send(200, {"jobs": [self._public(j) for j in server.jobs.values()]})
                if path == "/body_model" and method == "GET":
                    return self._send(200, server.body_model_bytes, "application/octet-stream")
                parts = path.strip("/").split("/")
                if len(parts) >= 2 and parts[0] == "jobs":
                    job = server.jobs.get(parts[1])
                    if job is None:
                        return self._send(404, {"detail": f"No job {parts[1]}."})
                    if len(parts) == 2 and method == "GET":
                        with server._lock:
                            server._advance(job)
                        return self._send(200, self._public(job))
                    if len(parts) == 2 and method == "DELETE":
                        if job["status"] in ("queued", "running"):
                            job["status"] = "cancelled"
                        return self._send(200, self._public(job))
                    if len(parts) == 3 and parts[2] == "result" and method == "GET":
                        if job["status"] != "done":
                            return self._send(409, {"detail": "The job is not done yet."})
                        return self._send(200, server.result_bytes, "application/octet-stream")
                return self._send(404, {"detail": "Not Found"})

            def _bad_params(self, params) -> bool:
                unknown = set(params) - {"detector", "detection_stride", "min_track_frames", "smoothing",
                                         "smoothing_method", "official_uncrop", "chunking", "tracks_max"}
                if unknown:
                    self._send(422, {"detail": f"Unknown parameter(s): {', '.join(sorted(unknown))}."})
                return bool(unknown)

            def _submit(self):
                ctype = self.headers.get("Content-Type", "")
                length = int(self.headers.get("Content-Length", 0))
                if ctype.startswith("application/json"):
                    body = json.loads(self.rfile.read(length))
                    if self._bad_params(body.get("params", {})):
                        return None
                    if not server.accept_local or not Path(body.get("video_path", "")).is_file():
                        return self._send(400, {"detail": f"No video at {body.get('video_path')}; give an existing file."})
                    server.local_paths.append(body["video_path"])
                    job = server._new_job(Path(body["video_path"]).name)
                elif ctype.startswith("multipart/form-data"):
                    raw = self.rfile.read(length)
                    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
                    fields = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
                    if "video" not in fields:
                        return self._send(400, {"detail": "The upload has no 'video' part."})
                    params = json.loads(fields["params"].get_payload(decode=True) or b"{}") if "params" in fields else {}
                    if self._bad_params(params):
                        return None
                    video = fields["video"]
                    server.uploads.append((video.get_filename(), video.get_payload(decode=True), params))
                    job = server._new_job(video.get_filename())
                else:
                    return self._send(415, {"detail": "Send multipart/form-data or JSON."})
                return self._send(201, {"job_id": job["job_id"], "status": "queued"})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

        return Handler

"""/jobs: submit a video (upload or local path), follow it, cancel it, download the result."""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import ValidationError

from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import load_result

from ...pipeline import postprocess
from ..deps import PROTECTED, JobsDep, SettingsDep, client_is_loopback, get_engine
from ..schemas import Job, JobCreated, JobList, JobParams, LocalJobRequest
from ..upload import receive_video_upload

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=PROTECTED)
MAX_JSON_BYTES = 64 * 1024
_pkl_lock = threading.Lock()                # one official-pkl export at a time


def validation_sentence(err: ValidationError, what: str) -> str:
    """A pydantic error -> one sentence naming each bad field."""
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or what
        problems.append(f"unknown parameter '{where}'" if e["type"] == "extra_forbidden" else f"'{where}': {e['msg']}")
    return f"Invalid {what}: {'; '.join(problems)}. Check the parameter names and values in docs/server.md."


def parse_params(text: str | None) -> JobParams:
    if not text:
        return JobParams()
    try:
        data = json.loads(text)
    except ValueError as err:
        raise HTTPException(422, f"The 'params' part is not valid JSON ({err}); send a JSON object.") from err
    if not isinstance(data, dict):
        raise HTTPException(422, "The 'params' part must be a JSON object, e.g. {\"smoothing\": 0.5}.")
    try:
        return JobParams(**data)
    except ValidationError as err:
        raise HTTPException(422, validation_sentence(err, "params")) from err


def probe_video(engine, path: Path, label: str) -> None:
    """415 unless the front end can open it as a video (container, size, frame count)."""
    try:
        reader = engine.open_video(path)
        info = reader.info
        close = getattr(reader, "close", None)
        if close:
            close()
    except VibeError as err:
        raise HTTPException(415, f"'{label}' is not a video this server can read: {err}") from err
    if not info.frame_count:
        raise HTTPException(415, f"'{label}' has no video frames; send a video file.")


@router.post("", status_code=201, response_model=JobCreated)
async def create_job(request: Request, settings: SettingsDep, jobs: JobsDep, engine=Depends(get_engine)) -> JobCreated:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return await _create_local_job(request, jobs, engine)
    if content_type != "multipart/form-data":
        raise HTTPException(415, f"Unsupported content type '{content_type or 'none'}': upload the video as "
                                 "multipart/form-data (part 'video'), or send JSON with 'video_path'.")
    job_id, folder = jobs.new_job_folder()
    try:
        upload = await receive_video_upload(request, folder / "input", settings.max_upload_bytes)
        params = parse_params(upload.params_json)
        probe_video(engine, upload.video_path, upload.filename)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)             # no half-uploaded files left behind
        raise
    job = jobs.submit(job_id, video_name=upload.filename, input_path=upload.video_path, input_owned=True,
                      params=params)
    return JobCreated(job_id=job.job_id, status=job.status)


async def _create_local_job(request: Request, jobs, engine) -> JobCreated:
    if not client_is_loopback(request):
        raise HTTPException(403, "A video path on the server's disk is only accepted from the same machine; "
                                 "upload the file instead.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_JSON_BYTES:
        raise HTTPException(413, "The JSON body is too large; it should only name the video and its params.")
    body = await request.body()
    if len(body) > MAX_JSON_BYTES:
        raise HTTPException(413, "The JSON body is too large; it should only name the video and its params.")
    try:
        data = json.loads(body or b"null")
    except ValueError as err:
        raise HTTPException(400, f"The request body is not valid JSON ({err}).") from err
    if not isinstance(data, dict):
        raise HTTPException(422, "The JSON body must be an object with 'video_path' and optional 'params'.")
    try:
        req = LocalJobRequest(**data)
    except ValidationError as err:
        raise HTTPException(422, validation_sentence(err, "request")) from err
    path = Path(req.video_path)
    if not path.is_absolute():
        raise HTTPException(400, f"'{req.video_path}' is not an absolute path; send the full path of the video.")
    if not path.is_file():
        raise HTTPException(400, f"There is no file at '{req.video_path}'; check the path.")
    probe_video(engine, path, path.name)
    job_id, _ = jobs.new_job_folder()
    job = jobs.submit(job_id, video_name=path.name, input_path=path, input_owned=False, params=req.params)
    return JobCreated(job_id=job.job_id, status=job.status)


@router.get("", response_model=JobList)
def list_jobs(jobs: JobsDep) -> JobList:
    return JobList(jobs=jobs.list())


def _job_or_404(jobs, job_id: str) -> Job:
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"There is no job '{job_id}'; list the jobs with GET /api/v1/jobs.")
    return job


@router.get("/{job_id}", response_model=Job)
def get_job(job_id: str, jobs: JobsDep) -> Job:
    return _job_or_404(jobs, job_id)


@router.delete("/{job_id}", response_model=Job)
def delete_job(job_id: str, jobs: JobsDep) -> Job:
    job = jobs.delete(job_id)
    if job is None:
        raise HTTPException(404, f"There is no job '{job_id}'; list the jobs with GET /api/v1/jobs.")
    return job


def _require_done(jobs, job_id: str) -> Job:
    job = _job_or_404(jobs, job_id)
    if job.status != "done":
        reason = f": {job.error}" if job.error else ""
        raise HTTPException(409, f"Job '{job_id}' is {job.status}{reason}; the result is there once it is done.")
    return job


def _download_name(job: Job, suffix: str) -> str:
    stem = Path(job.video_name).stem or "video"
    return f"{stem}{suffix}"


@router.get("/{job_id}/result")
def get_result(job_id: str, jobs: JobsDep) -> FileResponse:
    job = _require_done(jobs, job_id)
    return FileResponse(jobs.result_path(job_id), media_type="application/octet-stream",
                        filename=_download_name(job, "_vibe.npz"))


@router.get("/{job_id}/result.pkl")
def get_result_pkl(job_id: str, jobs: JobsDep, engine=Depends(get_engine)) -> FileResponse:
    """The official ``vibe_output.pkl`` layout, made from the result on first request (vertices from
    the model's SMPL)."""
    job = _require_done(jobs, job_id)
    path = jobs.pkl_path(job_id)
    with _pkl_lock:
        if not path.is_file():
            try:
                result = load_result(jobs.result_path(job_id))
                postprocess.write_official_pkl(path, postprocess.official_output(result, engine.smpl))
            except VibeError as err:
                raise HTTPException(500, str(err)) from err
    return FileResponse(path, media_type="application/octet-stream",
                        filename=_download_name(job, "_vibe_output.pkl"))

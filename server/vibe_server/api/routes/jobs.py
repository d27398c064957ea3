"""/jobs: submit a video (upload or local path), follow it, cancel it, download the result."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from anyio import CancelScope, to_thread
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from vibe_blender.core.atomic_file import is_disk_full
from vibe_blender.core.client import LOCAL_PATH_UNREADABLE, REFUSAL_HEADER
from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import load_result

from ...pipeline import postprocess
from ..blocking import BlockingTimeout, ProbeSlot, in_daemon_thread, run_off_loop
from ..deps import PROTECTED, JobsDep, SettingsDep, client_is_loopback, get_engine
from ..file_download import open_download
from ..job_store import upload_path
from ..jobs import JobManager, JobsFull, UploadSpaceFull
from ..json_body import MAX_SHOWN_CHARS, load_json_object, read_json_model, shown, validation_sentence
from ..local_video import unreadable_local_video
from ..schemas import Job, JobCreated, JobList, JobParams, JobUpload, LocalJobRequest
from ..settings import Settings
from ..upload import disk_full, receive_video_upload

log = logging.getLogger("vibe_server.api")
router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=PROTECTED)
# A .pkl is built in memory: every person-frame's vertices (6890 x 3 float32, 82,680 bytes), and the
# longest track's twice while they are gathered. 20,000 person-frames (11 minutes of one person at
# 30 frames/s) hold 1.65 GB; past that the server could be killed for its memory, and the command
# line (vibe-mocap infer VIDEO --pkl) makes the file instead.
MAX_PKL_PERSON_FRAMES = 20_000

# POST /jobs reads its body itself (streamed upload or small JSON): this tells OpenAPI what it takes.
CREATE_JOB_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"$ref": "#/components/schemas/JobUpload"},
                "encoding": {"video": {"contentType": "application/octet-stream, video/*"}},
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/LocalJobRequest"}},
        },
    }
}
OPENAPI_BODY_MODELS = (JobUpload, LocalJobRequest)
CLIENT_LEFT = 499  # the status of an answer nobody reads (the client closed the connection first)


def parse_params(text: str | None) -> JobParams:
    if not text:
        return JobParams()
    data = load_json_object(text, "The 'params' part", '{"smoothing": 0.5}')
    try:
        return JobParams(**data)
    except ValidationError as err:
        raise HTTPException(422, validation_sentence(err, "params")) from err


def check_video(engine: object, path: Path, label: str, stop: threading.Event) -> None:
    """VibeError unless the front end can open ``path`` as a video with frames (blocking: run it in a
    probe slot, which sets ``stop`` when nobody waits for the answer any more; a decode to count the
    frames then gives up). Messages name ``label`` (what the client sent), never ``path``."""
    try:
        reader = engine.open_video(path, stopped=stop.is_set)
        info = reader.info
        close = getattr(reader, "close", None)
        if close:
            close()
    except VibeError as err:
        raise VibeError(str(err).replace(str(path), label)) from None
    except (OSError, ValueError) as err:  # a path the OS refuses: too long, NUL byte...
        raise VibeError(f"'{label}' cannot be read ({getattr(err, 'strerror', None) or err}).") from None
    if not info.frame_count:
        raise VibeError(f"'{label}' has no video frames; send a video file.")


async def probe_video(slot: ProbeSlot, engine, path: Path, label: str, timeout_s: float) -> None:
    """415 unless the video opens (container, size, frame count) within timeout_s, in ``slot``'s thread."""
    try:
        await slot.run(partial(check_video, engine, path, label), timeout_s=timeout_s)
    except VibeError as err:
        raise HTTPException(415, f"'{label}' is not a video this server can read: {err}") from err
    except BlockingTimeout as err:
        raise HTTPException(
            415,
            f"'{label}' did not open within {timeout_s:g} s, this server's limit for checking a video (a "
            "container that states no frame count is decoded whole to count them). Remux it to mp4 "
            "(ffmpeg -i VIDEO -c copy clip.mp4), or start the server with a larger --probe-timeout-s.",
        ) from err


async def _unless_client_left(request: Request, job_id: str | None = None) -> None:
    """HTTPException when the client closed its connection while the server worked (it gave up
    waiting for a slow probe): its answer would go nowhere, so no job may be left behind that nobody
    follows. Raised inside ``_new_job``, the job made so far is discarded."""
    if await request.is_disconnected():
        log.info("job %s discarded: its client left before the answer", job_id or "(not made yet)")
        raise HTTPException(CLIENT_LEFT, "The client closed the connection before its job was created.")


def _admission_refused(err: VibeError) -> HTTPException:
    if isinstance(err, JobsFull):
        return HTTPException(429, str(err), headers={"Retry-After": "60"})
    return HTTPException(507, str(err))


def _disk_refused(err: OSError, what: str) -> HTTPException:
    """507 for a full disk, else 500; the message names no path of the server."""
    if is_disk_full(err):
        return disk_full()
    return HTTPException(
        500, f"The server could not {what} ({err.strerror or type(err).__name__}); check its disk, then try again."
    )


@asynccontextmanager
async def _new_job(jobs: JobManager, settings: Settings) -> AsyncIterator[tuple[str, Path]]:
    """(job_id, folder) of a fresh job folder; when the block fails, the job is discarded with it."""
    job_id, folder = await run_off_loop(jobs.new_job_folder, timeout_s=settings.probe_timeout_s)
    try:
        yield job_id, folder
    except BaseException:
        # no half-submitted job or file left behind (in a thread: a big upload takes a moment to
        # delete; shielded: a cancelled request still cleans up)
        with CancelScope(shield=True):
            await to_thread.run_sync(jobs.discard, job_id)
        raise


@router.post(
    "",
    status_code=201,
    response_model=JobCreated,
    openapi_extra=CREATE_JOB_BODY,
    summary="Submit a video: upload it (multipart) or name a file on this machine (JSON)",
)
async def create_job(request: Request, settings: SettingsDep, jobs: JobsDep, engine=Depends(get_engine)) -> JobCreated:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/json", "multipart/form-data"):
        raise HTTPException(
            415,
            f"Unsupported content type '{shown(content_type) or 'none'}': upload the video as "
            "multipart/form-data (part 'video'), or send JSON with 'video_path'.",
        )
    try:
        with jobs.admission() as admission:
            if content_type == "application/json":
                return await _create_local_job(request, settings, jobs, engine, admission)
            return await _create_upload_job(request, settings, jobs, engine, admission)
    except (JobsFull, UploadSpaceFull) as err:
        raise _admission_refused(err) from err
    except BlockingTimeout as err:  # the job store's disk (the video's own time limit is a 415)
        raise HTTPException(503, f"The server's disk did not answer in time ({err}); retry in a moment.") from err
    except OSError as err:  # the job store's disk refused a folder, a file or a record
        raise _disk_refused(err, "store the job") from err


async def _create_upload_job(request: Request, settings, jobs, engine, admission) -> JobCreated:
    def reserve(num_bytes: int) -> None:
        try:
            jobs.reserve_upload_bytes(admission, num_bytes)
        except UploadSpaceFull as err:
            raise _admission_refused(err) from err

    # the probe's slot before the body: a busy server says so before the upload is sent, not after
    with request.app.state.probe_slots.reserved() as probe_slot:
        async with _new_job(jobs, settings) as (job_id, folder):
            upload = await receive_video_upload(
                request,
                upload_path(folder),
                settings.max_upload_bytes,
                reserve,
                idle_timeout_s=settings.body_idle_timeout_s,
                check_params=parse_params,
            )
            params = parse_params(upload.params_json)
            await probe_video(probe_slot, engine, upload.video_path, upload.filename, settings.probe_timeout_s)
            await _unless_client_left(request, job_id)
            job = await run_off_loop(
                partial(
                    jobs.submit,
                    job_id,
                    video_name=upload.filename,
                    params=params,
                    input_bytes=upload.size_bytes,
                    admission=admission,
                ),
                timeout_s=settings.probe_timeout_s,
            )
            await _unless_client_left(request, job_id)
    return JobCreated(job_id=job.job_id, status=job.status)


async def _create_local_job(request: Request, settings, jobs, engine, admission) -> JobCreated:
    if not client_is_loopback(request):
        raise HTTPException(
            403, "A video path on the server's disk is only accepted from the same machine; upload the file instead."
        )
    req = await read_json_model(
        request, LocalJobRequest, '{"video_path": "/home/me/clip.mp4", "params": {"smoothing": 0.5}}'
    )
    label = shown(req.video_path.replace("\0", "\\0"))
    if "\0" in req.video_path:
        raise HTTPException(400, f"'{label}' contains a NUL character, which no file name has; check the path.")
    if not Path(req.video_path).is_absolute():
        raise HTTPException(400, f"'{label}' is not an absolute path; send the full path of the video.")
    path = Path(req.video_path)
    try:
        with request.app.state.probe_slots.reserved() as probe_slot:
            await probe_slot.run(partial(check_video, engine, path, label), timeout_s=settings.probe_timeout_s)
    except (VibeError, BlockingTimeout) as err:
        # one answer whether the file is missing, unreadable or not a video: a client learns nothing
        # about files it could not read itself
        log.info("local path refused: %s", err)
        raise unreadable_local_video(
            label, "check the path, or upload the file instead", headers={REFUSAL_HEADER: LOCAL_PATH_UNREADABLE}
        ) from err
    await _unless_client_left(request)
    async with _new_job(jobs, settings) as (job_id, _):
        job = await run_off_loop(
            partial(
                jobs.submit,
                job_id,
                video_name=path.name[:MAX_SHOWN_CHARS],
                params=req.params,
                local_path=path,
                admission=admission,
            ),
            timeout_s=settings.probe_timeout_s,
        )
        await _unless_client_left(request, job_id)
    return JobCreated(job_id=job.job_id, status=job.status)


@router.get("", response_model=JobList)
def list_jobs(jobs: JobsDep) -> JobList:
    return JobList(jobs=jobs.list())


def _no_job(job_id: str) -> HTTPException:
    return HTTPException(404, f"There is no job '{shown(job_id)}'; list the jobs with GET /api/v1/jobs.")


def _job_or_404(jobs, job_id: str) -> Job:
    job = jobs.get(job_id)
    if job is None:
        raise _no_job(job_id)
    return job


@router.get("/{job_id}", response_model=Job)
def get_job(job_id: str, jobs: JobsDep) -> Job:
    return _job_or_404(jobs, job_id)


@router.delete("/{job_id}", response_model=Job)
def delete_job(job_id: str, jobs: JobsDep) -> Job:
    job = jobs.delete(job_id)
    if job is None:
        raise _no_job(job_id)
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


def _result_gone(job_id: str) -> HTTPException:
    return HTTPException(
        404,
        f"The result of job '{job_id}' is gone (the job was deleted, or its files removed); submit the video again.",
    )


def _download(job_id: str, path: Path, filename: str) -> StreamingResponse:
    try:
        return open_download(path, filename)
    except FileNotFoundError as err:
        raise _result_gone(job_id) from err
    except OSError as err:
        raise _disk_refused(err, "read the result") from err


@router.get("/{job_id}/result")
def get_result(job_id: str, jobs: JobsDep) -> StreamingResponse:
    job = _require_done(jobs, job_id)
    return _download(job_id, jobs.result_path(job_id), _download_name(job, "_vibe.npz"))


@router.get("/{job_id}/result.pkl")
async def get_result_pkl(job_id: str, request: Request, jobs: JobsDep) -> StreamingResponse:
    """The official ``vibe_output.pkl`` layout, made from the result on first request (vertices from
    the model's SMPL). Async: a request waiting for a build holds no worker thread, and a .pkl already
    made is sent without a lock and without the model."""
    job = _require_done(jobs, job_id)
    filename = _download_name(job, "_vibe_output.pkl")
    try:
        return await to_thread.run_sync(open_download, jobs.pkl_path(job_id), filename)
    except FileNotFoundError:
        pass  # not made yet
    except OSError as err:
        raise _disk_refused(err, "read the .pkl file") from err
    engine = await get_engine(request)  # only a build needs the model
    await request.app.state.pkl_builds.build(job_id, partial(_write_official_pkl, jobs, job_id, engine))
    return await to_thread.run_sync(_download, job_id, jobs.pkl_path(job_id), filename)


class PklBuilds:
    """The .pkl builds of one server: at most one per job, which every request for that job's .pkl
    awaits (a client that leaves does not stop it), and one at a time (each holds up to
    ``MAX_PKL_PERSON_FRAMES`` of vertices). The work runs in a daemon thread, which a stopping server
    does not wait for (its file is written whole or not at all); waiting requests hold no thread."""

    def __init__(self) -> None:
        self._builds: dict[str, asyncio.Task] = {}
        self._one_at_a_time = asyncio.Lock()

    async def build(self, job_id: str, write: Callable[[], None]) -> None:
        """Run ``write()`` for ``job_id``, or await the build of it already under way."""
        task = self._builds.get(job_id)
        if task is None:
            task = asyncio.ensure_future(self._run(write))
            self._builds[job_id] = task
            task.add_done_callback(partial(self._forget, job_id))
        await asyncio.shield(task)

    async def _run(self, write: Callable[[], None]) -> None:
        async with self._one_at_a_time:
            await in_daemon_thread(write, name="build .pkl")

    def _forget(self, job_id: str, task: asyncio.Task) -> None:
        self._builds.pop(job_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: its requests may all have left


def _write_official_pkl(jobs: JobManager, job_id: str, engine) -> None:
    """Build the job's .pkl in its folder (blocking). The folder is never made again: a job deleted
    during the build leaves no file behind, and its request gets the 404 of a result gone."""
    path = jobs.pkl_path(job_id)
    if path.is_file():  # a build that ended as this request arrived
        return
    try:
        with open(jobs.result_path(job_id), "rb") as f:
            result = load_result(f)
    except FileNotFoundError as err:
        raise _result_gone(job_id) from err
    except OSError as err:
        raise _disk_refused(err, "read the result") from err
    except VibeError as err:  # a damaged result (the file object: no path in the message)
        raise HTTPException(500, f"{err} Submit the video again.") from err
    person_frames = sum(len(track.frame_ids) for track in result.tracks)
    if person_frames > MAX_PKL_PERSON_FRAMES:
        raise HTTPException(
            413,
            f"The .pkl of job '{job_id}' would hold the vertices of {person_frames:,} person-frames, more than "
            f"this server builds ({MAX_PKL_PERSON_FRAMES:,}); download the result (.npz) instead, or make the "
            "file on the command line: vibe-mocap infer VIDEO --pkl.",
        )
    try:
        postprocess.write_official_pkl(path, postprocess.official_output(result, engine.smpl), make_folder=False)
    except FileNotFoundError as err:  # the job folder was deleted
        raise _result_gone(job_id) from err
    except OSError as err:  # (its text names the server's path: not sent)
        raise _disk_refused(err, "write the .pkl file") from err
    except VibeError as err:
        raise HTTPException(500, jobs.client_text(str(err), job_id)) from err
    if jobs.get(job_id) is None:  # deleted (or removed by retention) during the build
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # a deletion under way left the folder for this file
            path.parent.rmdir()
        raise _result_gone(job_id)
    jobs.remove_old_pkls()

"""The running capture: a CaptureJob thread (network) polled by a UI timer (Blender's side).

Blender's API is not thread-safe, so the worker thread never touches bpy: it only updates its
status. :func:`tick` runs on the main thread (from ``bpy.app.timers``): it redraws the panel and,
once the job is done, imports the result. The timer is persistent, so opening another file during
a capture still imports the result (into the file then open), and whatever happens to the import
ends in one line naming the result file (:func:`last_outcome`): nothing done on the server is lost.
Timers never fire in the ``bpy`` module build (no event loop), so tests call :func:`tick` directly.
"""

from __future__ import annotations

import bpy

from . import server_control
from .core.capture import CaptureJob, CaptureStatus
from .core.client import ServerClient
from .core.errors import VibeError
from .importer import ImportOptions, import_motion_file
from .preferences import BODY_MODEL_CACHE, user_dir
from .redraw import redraw_panels
from .undo_steps import push_undo_step

TICK_S = 0.25
_current: dict = {"job": None, "options": None, "imported": None, "error": None, "outcome": None, "warnings": []}


def current_job() -> CaptureJob | None:
    return _current["job"]


def last_import() -> list | None:
    """Characters the last finished capture imported (None before one finished)."""
    return _current["imported"]


def last_error() -> str | None:
    """Why the last finished capture's result could not be imported (None when it was)."""
    return _current["error"]


def last_warnings() -> list[str]:
    """What the last finished capture's import warned about (a frame rate unlike the scene's, people
    left out), also part of :func:`last_outcome`."""
    return list(_current["warnings"])


def last_outcome() -> str | None:
    """One line on the last finished capture's import, naming the result file: what was imported
    or why it could not be (None before a capture finished)."""
    return _current["error"] or _current["outcome"]


def start_capture(
    video_path: str,
    options: ImportOptions,
    *,
    server_url: str | None = None,
    token: str | None = None,
    params: dict | None = None,
    upload: bool | None = None,
    use_timer: bool = True,
    poll_interval_s: float = 0.5,
) -> CaptureJob:
    """Start sending ``video_path`` to the server; the result is imported by :func:`tick`."""
    job = current_job()
    if job is not None and not job.snapshot().finished:
        raise VibeError("A capture is already running; wait for it or cancel it first.")
    import_finished_capture()  # before this capture replaces it
    server = server_control.chosen_server(server_url, token)
    client, connect = None, None
    if server.start is not None:  # this machine: start the add-on's own server if none answers

        def connect() -> ServerClient:
            return ServerClient(*server.reach())
    else:
        client = ServerClient(server.url, server.token)
    job = CaptureJob(
        client,
        bpy.path.abspath(video_path),
        user_dir("results"),
        body_model_path=user_dir("cache") / BODY_MODEL_CACHE,
        params=params,
        upload=upload,
        poll_interval_s=poll_interval_s,
        connect=connect,
        explain_lost_server=server_control.lost_server_message if connect is not None else None,
    )
    options.video_path = options.video_path or bpy.path.abspath(video_path)
    _current.update(job=job, options=options, imported=None, error=None, outcome=None, warnings=[])
    job.start()
    if use_timer and not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_S, persistent=True)  # outlives File > Open/New
    return job


def cancel_capture() -> None:
    job = current_job()
    if job is not None:
        job.cancel()


def tick() -> float | None:
    """One UI-thread step: redraw the panel; import the result when the job is done.
    Returns the delay until the next call, or None when there is nothing left to follow."""
    redraw_panels()
    job = current_job()
    if job is None:
        return None
    if not job.snapshot().finished:
        return TICK_S
    _import_once_done(job)
    return None


def import_finished_capture() -> str | None:
    """Import the capture's result now if it ended since the timer's last step (Capture pressed again
    at once: the next capture would replace it unimported); the line on its import, else None."""
    job = current_job()
    return last_outcome() if job is not None and _import_once_done(job) else None


def _import_once_done(job: CaptureJob) -> bool:
    """Import ``job``'s result if it is done and not yet imported (or failed to be); True when it was now."""
    status = job.snapshot()
    if status.state != "done" or _current["imported"] is not None or _current["error"] is not None:
        return False
    try:
        _import(status)
    finally:
        job.release_body_model()  # imported or not, it is not imported again
    return True


def _import(status: CaptureStatus) -> None:
    path = status.result_path
    warnings = _current["warnings"] = []
    try:
        characters = import_motion_file(path, status.body_model, _current["options"], warn=warnings.append)
    except Exception as err:  # noqa: BLE001  any failure must end in a message, never kill the timer silently
        reason = str(err) if isinstance(err, VibeError) else f"unexpected {type(err).__name__}: {err}; please report it"
        _current["error"] = (
            f"The capture's result could not be imported ({reason.rstrip('.')}). It is kept in '{path}': "
            "import it with File > Import > VIBE Mocap."
        )
    else:
        _current["imported"] = characters
        _current["outcome"] = " ".join([f"Imported {len(characters)} character(s) from '{path}'.", *warnings])
        push_undo_step("import capture")
    redraw_panels()


def register():
    pass


def unregister():
    cancel_capture()
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)

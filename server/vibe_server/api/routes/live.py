"""/live: start a live session from a source, follow it over a WebSocket, stop it.

The WebSocket handshake passes the same Host, Origin and token checks as every request
(``deps.websocket_refusal``); a refused handshake is closed before it is accepted, which the client
sees as HTTP 403.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, FastAPI, HTTPException, Request, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from vibe_blender.core.errors import VibeError

from ...pipeline.live_options import LiveOptions
from ...pipeline.live_source import for_local_clients_only, parse_source
from ..deps import PROTECTED, EngineDep, client_is_loopback, websocket_refusal
from ..json_body import json_body_openapi, read_json_model, shown
from ..live import (
    MAX_SUBSCRIBERS,
    SUBSCRIBER_QUEUE,
    LiveManager,
    LiveRun,
    LiveServerStopping,
    LiveSessionRunning,
    LiveSourceUnopened,
    Subscriber,
)
from ..local_video import unreadable_local_video
from ..schemas import LiveRequest, LiveStatus

log = logging.getLogger("vibe_server.api")
router = APIRouter(prefix="/live", tags=["live"])
OPENAPI_BODY_MODELS = (LiveRequest,)  # read by hand (json_body): their schemas join the API's components


def live_manager(app: FastAPI, engine: object) -> LiveManager:
    if app.state.live is None:
        app.state.live = LiveManager(engine)
    return app.state.live


def find_run(manager: LiveManager | None, live_id: str) -> LiveRun:
    run = manager.runs.get(live_id) if manager is not None else None
    if run is None:
        raise HTTPException(404, f"There is no live session '{shown(live_id)}'; start one with POST /api/v1/live.")
    return run


@router.post(
    "",
    response_model=LiveStatus,
    status_code=201,
    dependencies=PROTECTED,
    openapi_extra=json_body_openapi("LiveRequest"),
)
async def start_live(request: Request, engine: EngineDep) -> dict:
    """Start a live session: a camera index, a stream URL on this machine, or a video file on the
    server's disk (loopback clients only) played at its own frame rate."""
    body = await read_json_model(request, LiveRequest, '{"source": "0", "params": {"smoothing": 0.5}}')
    try:
        kind, target = parse_source(body.source)
    except VibeError as err:
        raise _refused(400, str(err), body.source) from None
    if for_local_clients_only(kind, target) and not client_is_loopback(request):
        raise HTTPException(
            403,
            "Only a client on the server's own machine may name a camera, a file or an RTSP stream there "
            "(an RTSP server can send the server on to another host); stream over http, udp, tcp, srt or "
            "rtmp instead.",
        )
    params = body.params.model_dump()
    lossless, max_frames = params.pop("lossless"), params.pop("max_frames")
    options = LiveOptions(**params)
    manager = live_manager(request.app, engine)
    try:
        run = await run_in_threadpool(
            manager.start,
            body.source,
            options,
            lossless=lossless,  # opening blocks
            max_frames=max_frames,
        )
    except LiveSessionRunning as err:
        raise HTTPException(409, str(err)) from None
    except LiveServerStopping as err:
        raise HTTPException(503, str(err)) from None
    except LiveSourceUnopened as err:
        if kind == "file":  # as a job's local path: one answer, whatever is wrong with the file
            log.info("live source refused: %s", err)
            raise unreadable_local_video(shown(str(target)), "check the path") from None
        raise _refused(400, str(err), body.source) from None
    except VibeError as err:  # e.g. the detector's weights are missing
        raise _refused(400, manager.client_text(str(err)), body.source) from None
    return run.public()


def _refused(status: int, message: str, source: str) -> HTTPException:
    """``message`` for the client, naming its ``source`` shortened (``shown``): it may be 4 KiB long."""
    spec = source.strip()
    return HTTPException(status, message.replace(spec, shown(spec)) if spec else message)


@router.get("/{live_id}", response_model=LiveStatus, dependencies=PROTECTED)
def live_status(live_id: str, request: Request) -> dict:
    return find_run(request.app.state.live, live_id).public()


@router.post("/{live_id}/stop", response_model=LiveStatus, dependencies=PROTECTED)
async def stop_live(live_id: str, request: Request) -> dict:
    manager = request.app.state.live
    run = find_run(manager, live_id)
    await run_in_threadpool(manager.stop, run)
    return run.public()


@router.websocket("/{live_id}/stream")
async def stream_live(ws: WebSocket, live_id: str) -> None:
    """One JSON message per processed frame ({"type": "frame", "frame_index", "frame_time_s",
    "people": [...], "stats", "dropped_for_client"}), then {"type": "end", ...}."""
    if websocket_refusal(ws) is not None:
        await ws.close(code=1008)
        return
    manager = ws.app.state.live
    run = manager.runs.get(live_id) if manager is not None else None
    if run is None:
        await ws.close(code=1008)
        return
    await ws.accept()
    sub = Subscriber(asyncio.Queue(SUBSCRIBER_QUEUE), asyncio.get_running_loop())
    if not run.subscribe(sub):  # counted and added under the run's lock: no handshake race past the cap
        full = f"This live session already has {MAX_SUBSCRIBERS} viewers; close one, then connect again."
        await ws.send_json({"type": "end", "status": run.status, "error": full, "stats": run.stats})
        await ws.close()
        return
    # the client's side is read too, so that a viewer who leaves while no frame comes (a stalled
    # source, before the first frame) frees its place at once
    left = asyncio.ensure_future(_until_disconnected(ws))
    try:
        if run.status not in ("starting", "running"):
            await ws.send_json({"type": "end", "status": run.status, "error": run.error, "stats": run.stats})
            return
        while True:
            next_message = asyncio.ensure_future(sub.queue.get())
            await asyncio.wait({next_message, left}, return_when=asyncio.FIRST_COMPLETED)
            if left.done():
                next_message.cancel()
                return
            message = next_message.result()
            await ws.send_json(message)
            if message["type"] == "end":
                return
    except WebSocketDisconnect:
        pass
    finally:
        left.cancel()
        run.unsubscribe(sub)
        try:
            await ws.close()
        except (RuntimeError, WebSocketDisconnect):  # already closed: by the client, or by the server's stop
            pass


async def _until_disconnected(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends until it disconnects."""
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass

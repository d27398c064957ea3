"""POST /shutdown: stop the server, for the add-on's Stop Server on a server it left running when
Blender quit (it holds no process handle for that one). Token and a client on this machine only."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from ..deps import PROTECTED, client_is_loopback

router = APIRouter(tags=["server"])


@router.post("/shutdown", status_code=202, dependencies=PROTECTED)
async def shutdown(request: Request) -> dict:
    if not client_is_loopback(request):
        raise HTTPException(403, "Only a client on the server's own machine may stop it.")
    request_stop = request.app.state.request_stop
    if request_stop is None:
        raise HTTPException(503, "This server cannot stop itself here; stop it where it was started.")
    request_stop()  # uvicorn finishes this answer, then shuts down as on Ctrl-C
    return {"status": "stopping"}

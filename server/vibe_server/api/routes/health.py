"""GET /health: liveness and what the server runs (no token needed, so nothing private: no
paths, no job names, no error texts), and the server's proof that it holds the token."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from vibe_blender.core.server_proof import CHALLENGE_PATTERN, server_proof

from ... import __version__
from ..deps import PUBLIC
from ..schemas import Health

router = APIRouter(tags=["health"], dependencies=PUBLIC)


@router.get("/health", response_model=Health)
async def health(request: Request, challenge: str | None = Query(None, pattern=CHALLENGE_PATTERN)) -> Health:
    """Async on purpose: answered on the event loop, never queued behind the worker threads.
    challenge: a client's, answered with ``proof`` so that it can check this server holds the token
    before it sends it (``core/server_proof.py``)."""
    import torch  # already loaded with the engine; kept here so the health route's module needs no torch

    engine, jobs, token = request.app.state.engine, request.app.state.jobs, request.app.state.settings.token
    return Health(
        version=__version__,
        device=engine.device if engine else request.app.state.settings.device,
        model=engine.model_name if engine else f"none ({request.app.state.no_model_reason})",
        torch=torch.__version__,
        queue_length=jobs.queue_length() if jobs else 0,
        proof=server_proof(token, challenge, _local_port(request)) if challenge and token else None,
        body_model=request.app.state.body_model_fingerprint,
        probe_timeout_s=request.app.state.settings.probe_timeout_s,
    )


def _local_port(request: Request) -> int:
    """The port this connection reached (the listening socket's, also behind a wildcard bind)."""
    server = request.scope.get("server")
    return int(server[1]) if server and server[1] is not None else 0

"""GET /health: liveness and what the server runs (no token needed, so nothing private: no
paths, no job names, no error texts)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ... import __version__
from ..deps import PUBLIC
from ..schemas import Health

router = APIRouter(tags=["health"], dependencies=PUBLIC)


@router.get("/health", response_model=Health)
async def health(request: Request) -> Health:
    """Async on purpose: answered on the event loop, never queued behind the worker threads."""
    import torch  # already loaded with the engine; kept here so the health route's module needs no torch

    engine, jobs = request.app.state.engine, request.app.state.jobs
    return Health(
        version=__version__,
        device=engine.device if engine else request.app.state.settings.device,
        model=engine.model_name if engine else "none (model data missing)",
        torch=torch.__version__,
        queue_length=jobs.queue_length() if jobs else 0,
    )

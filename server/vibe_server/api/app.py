"""The FastAPI app: wiring only. ``create_app(settings)`` builds it; the lifespan loads the model
and starts the job worker. Routers live in ``routes/``, checks in ``deps.py``."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from vibe_blender.core.errors import VibeError

from .. import __version__
from .jobs import JobManager
from .routes import body_model, health, jobs, live
from .settings import Settings

API_PREFIX = "/api/v1"
log = logging.getLogger("vibe_server.api")


def default_engine_loader(settings: Settings):
    from ..pipeline.run import load_engine

    return load_engine(settings.data_dir, device=settings.device, precision=settings.precision,
                       allow_synthetic=settings.allow_synthetic, log=log.info)


@asynccontextmanager
async def lifespan(app: FastAPI):
    state = app.state
    try:
        state.engine = state.engine_loader(state.settings)
    except VibeError as err:                       # e.g. model data missing: keep serving, say why
        log.error("%s", err)
        state.engine, state.engine_error = None, str(err)
    # finished results stay reachable even without a model; only a loaded model gets a worker
    state.jobs = JobManager(state.settings.jobs_dir, state.engine)
    if state.engine is not None:
        state.jobs.start()
    try:
        yield
    finally:
        state.jobs.stop()
        if getattr(state, "live", None) is not None:
            state.live.stop_all()


def create_app(settings: Settings, *, engine_loader: Callable[[Settings], object] | None = None) -> FastAPI:
    """engine_loader(settings) -> Engine (default: the real model from settings.data_dir)."""
    settings.validate()
    app = FastAPI(title="VIBE Mocap", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.engine_loader = engine_loader or default_engine_loader
    app.state.engine, app.state.engine_error, app.state.jobs, app.state.live = None, None, None, None
    for router in (health.router, jobs.router, body_model.router, live.router):
        app.include_router(router, prefix=API_PREFIX)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in err.errors())
        return JSONResponse({"detail": f"Invalid request ({fields}); check it against docs/server.md."}, 422)

    @app.exception_handler(VibeError)
    async def vibe_error(request: Request, err: VibeError):
        return JSONResponse({"detail": str(err)}, 400)

    return app

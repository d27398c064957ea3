"""The FastAPI app: wiring only. ``create_app(settings)`` builds it; the lifespan loads the model
and starts the job worker. Routers live in ``routes/``, checks in ``deps.py``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from http import HTTPStatus
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema
from starlette.datastructures import Headers, State
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vibe_blender.core.errors import VibeError

from .. import __version__
from ..pipeline.devices import is_out_of_memory, out_of_memory_error, server_devices
from .blocking import ProbeSlots
from .client_text import without_data_folder
from .deps import wrong_host
from .jobs import JobManager
from .json_body import shown
from .routes import api_docs, body_model, health, jobs, live, shutdown
from .settings import Settings

FINGERPRINT_NOTE = ".body_model_fingerprint.json"  # in the jobs folder: the body model's, for the next start

API_PREFIX = "/api/v1"
INTERNAL_ERROR_DETAIL = (
    "The server hit an internal error on this request; see the server log, and report it if it repeats."
)
log = logging.getLogger("vibe_server.api")


def default_engine_loader(settings: Settings):
    from ..pipeline.engine import load_engine  # start-up: torch loads when the server starts, not on import

    return load_engine(
        settings.data_dir,
        device=settings.device,
        precision=settings.precision,
        allow_synthetic=settings.allow_synthetic,
        log=log.info,
    )


def _load_engines(state: State) -> list:
    """One engine per visible GPU ('auto'/'cuda'), else one. A device whose model does not load (model
    data missing, a GPU whose memory another program holds) is logged with its reason and left out:
    the server runs on the others. With none, ``state`` says why (the routes answer 503 with it)."""
    engines, failures = [], []  # failures: (error, /health's words for it or None)
    for device in server_devices(state.settings.device):
        try:
            engines.append(state.engine_loader(replace(state.settings, device=device)))
        except Exception as err:
            if is_out_of_memory(err):  # another program holds the GPU's memory
                err, reason = out_of_memory_error("load"), "the GPU ran out of memory"
            elif isinstance(err, VibeError):
                reason = None
            else:
                raise
            log.error("The model did not load on %s: %s", device, err)
            failures.append((err, reason))
    if not engines:
        from ..data.loading import resolve_data_dir  # (loaded with the engines already)

        err, reason = failures[0]  # (logged above with its paths; the clients' 503 names none)
        state.engine_error = without_data_folder(str(err), resolve_data_dir(state.settings.data_dir))
        state.no_model_reason = reason or state.no_model_reason
    return engines


@asynccontextmanager
async def lifespan(app: FastAPI):
    state = app.state
    engines = _load_engines(state)
    state.engine = engines[0] if engines else None  # the routes' engine (probing, body model)
    # /health's fingerprint of the body model, once: reading and hashing the SMPL file is off the event loop
    state.body_model_fingerprint = await asyncio.to_thread(
        body_model.served_fingerprint, state.engine, Path(state.settings.jobs_dir) / FINGERPRINT_NOTE
    )
    state.body_model_build = asyncio.Lock()  # (made on the loop that serves)
    # finished results stay reachable even without a model; only a loaded model gets workers
    settings = state.settings
    state.jobs = JobManager(
        settings.jobs_dir,
        engines,
        max_queued_jobs=settings.max_queued_jobs,
        max_queued_upload_bytes=settings.max_queued_upload_bytes,
        keep_finished_s=settings.keep_finished_days * 24 * 3600,
        keep_finished_jobs=settings.keep_finished_jobs,
        cancel_unfinished=settings.cancel_unfinished_jobs,
    )
    state.jobs.start()  # no engine: no job worker, but the retention limits still apply
    try:
        yield
    finally:  # both wait (bounded) for threads: off the event loop, whose cancelled requests end meanwhile
        await asyncio.to_thread(state.jobs.stop)
        if getattr(state, "live", None) is not None:
            await asyncio.to_thread(state.live.stop_all)


class InternalErrorAnswer:
    """An exception no route turned into an answer is logged here with its traceback and answered
    ``{"detail": INTERNAL_ERROR_DETAIL}`` 500, like every other error (Starlette's own answer is plain
    text); the client learns no class name or path of the server. One raised once the answer has
    begun goes on to uvicorn, which logs it and closes the connection."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        answer_begun = False

        async def watched_send(message: Message) -> None:
            nonlocal answer_begun
            answer_begun = answer_begun or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception:
            if answer_begun:
                raise
            log.exception("%s %s failed", scope["method"], scope["path"])
            await JSONResponse({"detail": INTERNAL_ERROR_DETAIL}, 500)(scope, receive, send)


class HostCheck:
    """The Host header of every HTTP request is checked before it is routed (``deps.wrong_host``): the
    router's own answers (a 404, a 405) get no further than a route's would."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = wrong_host(scope["app"].state.settings, Headers(scope=scope).get("host", ""))
            if refusal:
                return await JSONResponse({"detail": refusal}, 400)(scope, receive, send)
        await self.app(scope, receive, send)


def openapi_schema(app: FastAPI) -> dict:
    """FastAPI's schema, plus the bodies POST /jobs and POST /live read by hand (their requestBody refers to them)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        _, defs = models_json_schema(
            [(model, "validation") for model in (*jobs.OPENAPI_BODY_MODELS, *live.OPENAPI_BODY_MODELS)],
            ref_template="#/components/schemas/{model}",
        )
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(defs["$defs"])
        components["securitySchemes"] = {
            "token": {"type": "http", "scheme": "bearer", "description": "the server's token (see docs/server.md)"}
        }
        schema["security"] = [{"token": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings, *, engine_loader: Callable[[Settings], object] | None = None) -> FastAPI:
    """engine_loader(settings) -> Engine (default: the real model from settings.data_dir)."""
    settings.validate()
    app = FastAPI(
        title="VIBE Mocap",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # no Swagger page: it would run a CDN's scripts in this origin (routes/api_docs.py)
        redoc_url=None,
        openapi_url=None,
        # no redirect of '/jobs/' to '/jobs': it named whatever Host the client sent, before any check
        redirect_slashes=False,
    )
    app.openapi = lambda: openapi_schema(app)
    app.state.settings = settings
    app.state.engine_loader = engine_loader or default_engine_loader
    app.state.engine, app.state.engine_error, app.state.jobs, app.state.live = None, None, None, None
    app.state.no_model_reason = "model data missing"  # /health's words (public: no error text)
    app.state.body_model_fingerprint, app.state.body_model_npz = None, None  # set at start-up, at the first download
    app.state.request_stop = None  # set by the command that runs the server (POST /shutdown calls it)
    app.state.pkl_builds = jobs.PklBuilds()
    app.state.probe_slots = ProbeSlots()
    app.add_middleware(HostCheck)
    app.add_middleware(InternalErrorAnswer)
    for router in (health.router, api_docs.router, jobs.router, body_model.router, live.router, shutdown.router):
        app.include_router(router, prefix=API_PREFIX)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        if err.status_code == 404 and err.detail == HTTPStatus.NOT_FOUND.phrase:  # no route (the routes' 404s say more)
            err = HTTPException(
                404,
                f"This server has no '{shown(request.url.path)}'; check the address against docs/server.md "
                "(none ends in '/').",
            )
        elif err.status_code == 405 and err.detail == HTTPStatus.METHOD_NOT_ALLOWED.phrase:  # the router's
            # (no list of the methods it takes: the router's Allow names one route's, where two share a path)
            err = HTTPException(
                405,
                f"'{shown(request.url.path)}' does not take {shown(request.method)}; check the method "
                "against docs/server.md.",
                headers=err.headers,
            )
        return await http_exception_handler(request, err)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in err.errors())
        return JSONResponse({"detail": f"Invalid request ({fields}); check it against docs/server.md."}, 422)

    @app.exception_handler(VibeError)
    async def vibe_error(request: Request, err: VibeError):
        return JSONResponse({"detail": str(err)}, 400)

    return app

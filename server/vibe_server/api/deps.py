"""Request checks and shared objects, as FastAPI dependencies (tests swap them through
``app.dependency_overrides``). All are cheap and async: FastAPI would run plain functions in its
thread pool, and /health must never wait for a free thread."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket

from .jobs import JobManager
from .json_body import shown
from .settings import Settings, is_loopback

STATE_CHANGING_METHODS = ("POST", "PUT", "PATCH", "DELETE")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_jobs(request: Request) -> JobManager:
    jobs = request.app.state.jobs
    if jobs is None:
        raise HTTPException(503, "The server is still starting; retry in a moment.")
    return jobs


async def get_engine(request: Request):
    """The loaded model; 503 with the reason (usually missing model data) when there is none."""
    engine = request.app.state.engine
    if engine is None:
        raise HTTPException(503, request.app.state.engine_error or "The model is not loaded.")
    return engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]


def wrong_host(settings: Settings, host: str) -> str | None:
    """DNS-rebinding guard: why a request whose Host header is ``host`` is refused (it must name the
    address the server is bound to), or None. Checked on every request before it is routed
    (``app.HostCheck``), and on WebSocket handshakes (``websocket_refusal``)."""
    if settings.host_allowed(host):
        return None
    return (
        f"Host header '{shown(host)}' does not match this server ({settings.host}:{settings.port}); "
        "connect to the server by its own address."
    )


def bearer_token_ok(authorization: str, expected: str) -> bool:
    """An ``Authorization: Bearer <token>`` header value against the server's token (constant time)."""
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


def same_origin(origin: str, host: str) -> bool:
    """A browser's Origin header names this server itself (not another site's page)."""
    return origin in (f"http://{host}", f"https://{host}")


async def check_token(request: Request, settings: SettingsDep) -> None:
    """Every client, loopback ones too, sends the token: other accounts on this machine reach
    127.0.0.1 as well, but only the user can read the token file."""
    if not settings.token:  # never serve unauthenticated (validate() refuses this)
        raise HTTPException(503, "This server has no token configured; restart it with 'vibe-mocap serve'.")
    if not bearer_token_ok(request.headers.get("authorization", ""), settings.token):
        raise HTTPException(
            401,
            "This server needs its token: send 'Authorization: Bearer <token>'. The add-on "
            "and the command line read it from the token file that 'vibe-mocap serve' "
            "names when it starts (or from $VIBE_MOCAP_TOKEN).",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def check_origin(request: Request) -> None:
    """Browsers send Origin on cross-site requests: a state-changing request from any other origin
    than the server's own is refused (a web page cannot submit or delete jobs)."""
    origin = request.headers.get("origin")
    if origin is None or request.method not in STATE_CHANGING_METHODS:
        return
    if not same_origin(origin, request.headers.get("host", "")):
        raise HTTPException(
            403,
            f"Requests from the web page at '{origin}' are not allowed; use the Blender add-on or the command line.",
        )


def client_is_loopback(request: Request) -> bool:
    return request.client is not None and is_loopback(request.client.host)


def websocket_refusal(ws: WebSocket) -> str | None:
    """Why a WebSocket handshake is refused, or None. The same Host, Origin and token rules as every
    request, checked by hand: browsers send no preflight for WebSockets, so a page on another site
    could otherwise open one to this server (cross-site WebSocket hijacking)."""
    settings: Settings = ws.app.state.settings
    host = ws.headers.get("host", "")
    if wrong_host(settings, host):
        return "wrong Host"
    origin = ws.headers.get("origin")
    if origin is not None and not same_origin(origin, host):
        return "foreign Origin"
    if not settings.token or not bearer_token_ok(ws.headers.get("authorization", ""), settings.token):
        return "missing or wrong token"
    return None


EngineDep = Annotated[object, Depends(get_engine)]
# (the Host header is checked before routing, on every request: app.HostCheck)
PROTECTED = [Depends(check_token), Depends(check_origin)]
PUBLIC = [Depends(check_origin)]

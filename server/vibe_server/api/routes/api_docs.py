"""GET /openapi.json: the API's description, without a token (nothing private in it) but with the same
Host and Origin checks as every other request (FastAPI's own route for it skips those checks, so a page
on another site could read it through a rebound DNS name).

No interactive page is served (FastAPI's Swagger page): it runs a CDN's scripts in this server's own
origin, where they would pass the Origin check and see the token pasted into the page. Open
/openapi.json in any OpenAPI viewer instead."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..deps import PUBLIC

router = APIRouter(tags=["docs"], dependencies=PUBLIC, include_in_schema=False)


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())

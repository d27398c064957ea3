"""GET /openapi.json and /docs: the API's description, without a token (nothing private in it) but
with the same Host and Origin checks as every other request (FastAPI's own routes for them skip
those checks, so a page on another site could read them through a rebound DNS name)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from ..deps import PUBLIC

router = APIRouter(tags=["docs"], dependencies=PUBLIC, include_in_schema=False)


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=request.url_for("openapi").path, title=f"{request.app.title} API")

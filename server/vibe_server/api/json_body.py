"""Small JSON bodies that routes read themselves, after the route's Host, token and Origin checks.

FastAPI reads and parses a body parameter before any dependency runs, so a client without a token
could make the server hold an unbounded body. Routes that take JSON read it here instead: refused
with 413 past ``MAX_JSON_BYTES``, depth-checked before parsing, validated into a pydantic model,
and every problem is one sentence (422).
"""

from __future__ import annotations

import json
from typing import TypeVar

from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError

from vibe_blender.core.safe_json import json_too_deep
from vibe_blender.core.shown_text import surrogates_escaped

from .request_body import body_chunks

MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32  # a request is 3 levels deep; deeper is an attack on the parser
MAX_SHOWN_CHARS = 200  # a client's path or file name echoed in a message
Model = TypeVar("Model", bound=BaseModel)


def shown(text: str) -> str:
    """What the client sent, cut to a readable length for a message."""
    text = surrogates_escaped(text)  # (no JSON answer encodes a lone surrogate)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "..."


def validation_sentence(err: ValidationError, what: str) -> str:
    """A pydantic error -> one sentence naming each bad field."""
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or what
        problems.append(f"unknown parameter '{where}'" if e["type"] == "extra_forbidden" else f"'{where}': {e['msg']}")
    return f"Invalid {what}: {'; '.join(problems)}. Check the parameter names and values in docs/server.md."


def load_json_object(text: str | bytes, what: str, example: str) -> dict:
    """Parse a small JSON object from a client; 422 with one sentence for anything else."""
    if json_too_deep(text, MAX_JSON_DEPTH):  # before json.loads, whose recursion deep nesting exhausts
        raise HTTPException(
            422, f"{what} nests deeper than {MAX_JSON_DEPTH} levels; send a flat JSON object, e.g. {example}."
        )
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise HTTPException(
            422, f"{what} is not valid JSON ({shown(str(err))}); send a JSON object, e.g. {example}."
        ) from err
    if not isinstance(data, dict):
        raise HTTPException(422, f"{what} must be a JSON object, e.g. {example}.")
    return data


async def read_small_body(request: Request, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The body, refused with 413 as soon as it passes max_bytes (with or without Content-Length),
    and with 408 when it stalls (the server setting ``body_idle_timeout_s``)."""
    too_large = HTTPException(
        413, "The JSON body is too large; it should only name the video or source and its params."
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in body_chunks(request, request.app.state.settings.body_idle_timeout_s):
        body.extend(chunk)
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


async def read_json_model(request: Request, model: type[Model], example: str) -> Model:
    """The request's JSON body as ``model``: 413 when too large, 422 with one sentence when it is
    not a JSON object or does not validate."""
    data = load_json_object(await read_small_body(request) or b"null", "The request body", example)
    try:
        return model(**data)
    except ValidationError as err:
        raise HTTPException(422, validation_sentence(err, "request")) from err


def json_body_openapi(model_name: str) -> dict:
    """``openapi_extra`` for a route that reads ``model_name`` this way (its schema is added to the
    components by ``app.openapi_schema``)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model_name}"}}},
        }
    }

"""A request body, chunk by chunk, with an idle limit: a client that stops sending mid-body (hung,
suspended, a dead link) gets 408 instead of holding its job slot, and the server, for ever."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from fastapi import HTTPException, Request


def stalled(idle_timeout_s: float) -> HTTPException:
    return HTTPException(
        408,
        f"The request body stopped arriving (nothing for {idle_timeout_s:g} s); check the connection and "
        "send the request again.",
    )


async def body_chunks(request: Request, idle_timeout_s: float) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; 408 when none comes for ``idle_timeout_s``."""
    chunks = request.stream().__aiter__()
    while True:
        try:
            with anyio.fail_after(idle_timeout_s):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError as err:
            raise stalled(idle_timeout_s) from err
        yield chunk

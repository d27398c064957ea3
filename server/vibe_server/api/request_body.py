"""A request body, chunk by chunk, with an idle limit and a minimum average rate: a client that stops
sending mid-body (hung, suspended, a dead link), or that sends a byte now and then, gets 408 instead
of holding its job slot, and the server, for ever."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
from fastapi import HTTPException, Request

# Once a body has taken MIN_RATE_GRACE_S, it must have arrived at MIN_AVERAGE_BYTES_PER_S on average
# (checked as each chunk arrives). Far below any link that sends videos: 2 GiB at this rate take 36 hours.
MIN_AVERAGE_BYTES_PER_S = 16 * 1024
MIN_RATE_GRACE_S = 60.0


def stalled(idle_timeout_s: float) -> HTTPException:
    return HTTPException(
        408,
        f"The request body stopped arriving (nothing for {idle_timeout_s:g} s); check the connection and "
        "send the request again.",
    )


def too_slow(received: int, elapsed_s: float) -> HTTPException:
    return HTTPException(
        408,
        f"The request body arrives too slowly ({received:,} bytes in {elapsed_s:.0f} s; this server needs "
        f"{MIN_AVERAGE_BYTES_PER_S / 1024:g} KiB/s on average); check the connection and send the request again.",
    )


async def body_chunks(request: Request, idle_timeout_s: float) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; 408 when none comes for ``idle_timeout_s``, or when past
    ``MIN_RATE_GRACE_S`` they have come slower than ``MIN_AVERAGE_BYTES_PER_S`` on average."""
    chunks = request.stream().__aiter__()
    started, received = time.monotonic(), 0
    while True:
        try:
            with anyio.fail_after(idle_timeout_s):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError as err:
            raise stalled(idle_timeout_s) from err
        received += len(chunk)
        elapsed_s = time.monotonic() - started
        if elapsed_s > MIN_RATE_GRACE_S and received < MIN_AVERAGE_BYTES_PER_S * elapsed_s:
            raise too_slow(received, elapsed_s)
        yield chunk

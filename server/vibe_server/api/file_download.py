"""A file download that cannot lose its file on the way. Starlette's ``FileResponse`` opens the path
only once the answer is under way, so a file deleted between a route's check and the send (a job
removed as its result is asked for) is a bare 500 naming the server's path. Here the route opens the
file first: one that is gone is the route's own clear error, and one deleted while it is sent still
arrives whole (the open file keeps its data)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from fastapi.responses import StreamingResponse

CHUNK_BYTES = 1024 * 1024


def open_download(path: Path, filename: str) -> StreamingResponse:
    """The file at ``path`` as an attachment called ``filename``; FileNotFoundError when it is gone
    (blocking: call it from a plain route, which FastAPI runs in a thread)."""
    file = open(path, "rb")
    try:
        size = os.fstat(file.fileno()).st_size
    except BaseException:
        file.close()
        raise
    headers = {"Content-Length": str(size), "Content-Disposition": _attachment(filename)}
    return StreamingResponse(_chunks(file), media_type="application/octet-stream", headers=headers)


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    with file:  # (Starlette reads a plain iterator in a thread)
        while chunk := file.read(CHUNK_BYTES):
            yield chunk


def _attachment(filename: str) -> str:
    """The Content-Disposition Starlette's FileResponse sends for ``filename``."""
    quoted = quote(filename)
    if quoted == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename*=utf-8''{quoted}"

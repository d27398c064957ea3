"""Streaming ``multipart/form-data`` upload straight to disk, with a size cap.

Starlette's ``request.form()`` would spool the whole body before the route sees it; this parser
writes the ``video`` part to the job folder as the bytes arrive and stops with 413 as soon as the
cap is passed, with 408 when the body stalls or trickles (``request_body``), and with 400 when it ends
before its closing boundary (a cut-off upload is never taken for a whole one). Parts: ``video`` (the
file, required) and ``params`` (a JSON string, optional); any other part, and anything but line ends
after the closing boundary, is a 400. Every byte of the body counts against the cap (the video's,
plus the params part's and ``MULTIPART_OVERHEAD_BYTES``), so no part of it is read without bound.

The file is saved under one fixed name whatever the client called it: FFmpeg picks a demuxer by
the file name too, and a client's ``.m3u8`` would otherwise make it read a playlist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from anyio import CancelScope, to_thread
from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from vibe_blender.core.atomic_file import is_disk_full

from .job_store import DISK_FULL_MESSAGE
from .json_body import shown
from .request_body import body_chunks

MAX_PARAMS_BYTES = 64 * 1024
MAX_PART_HEADER_BYTES = 16 * 1024  # all headers of one part together
MULTIPART_OVERHEAD_BYTES = 64 * 1024  # the two parts' headers, the boundaries and their line ends
MAX_FILENAME_CHARS = 200
MAX_BOUNDARY_CHARS = 70  # RFC 2046 (python-multipart fails on one over 256 of its own)
VIDEO_PART, PARAMS_PART = "video", "params"
EPILOGUE_WHITESPACE = b" \t\r\n"  # what may follow the closing boundary (clients end it with CRLF)


@dataclass
class Upload:
    video_path: Path
    filename: str
    params_json: str | None
    size_bytes: int


def too_large(max_bytes: int) -> HTTPException:
    return HTTPException(
        413,
        f"The upload is larger than this server's limit of {max_bytes / 1024**2:.0f} MiB; "
        "send a shorter clip or start the server with a larger --max-upload-mb.",
    )


def disk_full() -> HTTPException:
    return HTTPException(507, DISK_FULL_MESSAGE)


async def receive_video_upload(
    request: Request,
    dest: Path,
    max_bytes: int,
    reserve: Callable[[int], None] = lambda n: None,
    *,
    idle_timeout_s: float,
    check_params: Callable[[str], object] = lambda text: None,
) -> Upload:
    """Stream the request body's video part into ``dest`` (a fixed name). ``reserve(n)`` is called
    before n more video bytes are written and raises HTTPException to refuse them; 408 when no byte
    comes for ``idle_timeout_s``. ``check_params(text)`` is called as soon as the params part has
    arrived and raises HTTPException to refuse it there: a client that sends it first (the add-on
    does) hears of a wrong parameter before its video is sent. The caller deletes the folder when
    this raises."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "The multipart upload has no boundary; send the video as multipart/form-data.")
    if len(boundary) > MAX_BOUNDARY_CHARS:
        raise HTTPException(
            400,
            f"The multipart boundary is {len(boundary)} characters long, over the {MAX_BOUNDARY_CHARS} that "
            "multipart/form-data allows; send the upload with a shorter boundary.",
        )
    max_body_bytes = max_bytes + MAX_PARAMS_BYTES + MULTIPART_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_body_bytes:
        raise too_large(max_bytes)

    state = {
        "name": None,
        "filename": None,
        "file": None,
        "headers": {},
        "field": b"",
        "value": b"",
        "header_bytes": 0,
        "params_seen": False,
    }
    params = bytearray()
    video = {"path": None, "filename": None, "size": 0, "parts": 0}

    def count_header_bytes(n: int) -> None:
        state["header_bytes"] += n
        if state["header_bytes"] > MAX_PART_HEADER_BYTES:
            raise HTTPException(
                400, "A part of the multipart upload has oversized headers; send the video as multipart/form-data."
            )

    def on_header_field(data, start, end):
        count_header_bytes(end - start)
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        count_header_bytes(end - start)
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        _, disposition = parse_options_header(state["headers"].get("content-disposition", b""))
        state["name"] = disposition.get(b"name", b"").decode("utf-8", "replace")
        if state["name"] not in (VIDEO_PART, PARAMS_PART):
            raise HTTPException(
                400,
                f"The upload has a part named '{shown(state['name'])}'; send only the parts '{VIDEO_PART}' "
                f"(the file) and '{PARAMS_PART}' (optional JSON).",
            )
        if state["name"] == PARAMS_PART:
            if state["params_seen"]:  # each would parse all of them again: a client's cheap bytes, our CPU
                raise HTTPException(400, "The upload has more than one 'params' part; send the options in one.")
            state["params_seen"] = True
        if state["name"] == VIDEO_PART:
            video["parts"] += 1
            if video["parts"] > 1:
                raise HTTPException(400, "Send one 'video' part per job.")
            filename = Path(disposition.get(b"filename", b"video").decode("utf-8", "replace")).name or "video"
            video["filename"] = filename[:MAX_FILENAME_CHARS]  # shown back to the client, kept short
            video["path"] = dest
            state["file"] = open(video["path"], "wb")

    def on_part_data(data, start, end):
        if state["name"] == VIDEO_PART:
            video["size"] += end - start
            if video["size"] > max_bytes:
                raise too_large(max_bytes)
            reserve(end - start)
            state["file"].write(data[start:end])
        elif state["name"] == PARAMS_PART:
            params.extend(data[start:end])
            if len(params) > MAX_PARAMS_BYTES:
                raise HTTPException(413, "The 'params' part is too large; it should be a small JSON object.")

    def on_part_end():
        if state["file"] is not None:
            state["file"].close()
            state["file"] = None
        if state["name"] == PARAMS_PART:
            check_params(params.decode("utf-8", "replace"))
        state["headers"], state["name"], state["header_bytes"] = {}, None, 0

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    closing, received = ClosingBoundary(boundary), 0
    try:
        async for chunk in body_chunks(request, idle_timeout_s):
            received += len(chunk)
            if received > max_body_bytes:
                raise too_large(max_bytes)
            if parser.state == MultipartState.END:  # (the parser would drop it unseen)
                epilogue = chunk
            else:
                await to_thread.run_sync(parser.write, chunk)  # it writes to disk: off the event loop
                epilogue = closing.epilogue(chunk, ended_here=parser.state == MultipartState.END)
            if epilogue.strip(EPILOGUE_WHITESPACE):
                raise HTTPException(
                    400, "The upload has data after its closing boundary; end the body with the boundary."
                )
        parser.finalize()
    except HTTPException:
        raise
    except OSError as err:
        if is_disk_full(err):
            raise disk_full() from err
        raise
    except Exception as err:  # python-multipart's parse errors
        raise HTTPException(400, f"The multipart upload is malformed ({err}); send it as multipart/form-data.") from err
    finally:
        if state["file"] is not None:
            # cut off mid-part: closing flushes, a disk write, so off the event loop (shielded: a
            # cancelled request still closes its file)
            with CancelScope(shield=True):
                await to_thread.run_sync(state["file"].close)
    if parser.state != MultipartState.END:  # python-multipart's finalize() does not check it
        raise HTTPException(400, "The upload was cut off before its end; send it again.")
    if video["path"] is None:
        raise HTTPException(400, "The upload has no 'video' part; send the file as the form field 'video'.")
    if video["size"] == 0:
        raise HTTPException(400, f"The uploaded file '{video['filename']}' is empty; send a video file.")
    return Upload(
        video_path=video["path"],
        filename=video["filename"],
        params_json=params.decode("utf-8", "replace") if params else None,
        size_bytes=video["size"],
    )


class ClosingBoundary:
    """Finds what a body sends after its closing delimiter (CRLF, '--', the boundary, '--'). The
    delimiter may straddle two chunks, and cannot occur inside a part (it would have ended it)."""

    def __init__(self, boundary: bytes):
        self.delimiter = b"\r\n--" + boundary + b"--"
        self._tail = b""  # the end of the bytes parsed before, where the delimiter may have begun

    def epilogue(self, chunk: bytes, *, ended_here: bool) -> bytes:
        """What of ``chunk``, just parsed, follows the delimiter (``ended_here``: the parser found it)."""
        window = self._tail + chunk
        self._tail = window[-len(self.delimiter) :]
        at = window.find(self.delimiter) if ended_here else -1
        return window[at + len(self.delimiter) :] if at >= 0 else b""

"""GET /body_model: the SMPL arrays the add-on needs to build the character (npz, no pickles).

The model's fingerprint (``/health``'s ``body_model``) is computed once at start-up, in a worker
thread (:func:`served_fingerprint`): the add-on keeps the body model it downloaded with that
fingerprint and downloads it again when the server's differs (model data installed since, another
server). The npz is made at the first download, from the same file, and only when that file still
holds the model of the fingerprint: a file replaced since the start is refused (restart the server)
rather than sent under the fingerprint of another model. Requests that come at once for it wait for
the one build.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import fields
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from vibe_blender.core import safe_json
from vibe_blender.core.atomic_file import atomic_write_bytes
from vibe_blender.core.errors import VibeError
from vibe_blender.core.model_data import FINGERPRINT_PATTERN, SMPL_FILE
from vibe_blender.core.smpl_model import BODY_MODEL_VERSION, BodyModel, load_smpl_pkl, save_body_model

from ..client_text import without_data_folder
from ..deps import PROTECTED, get_engine

log = logging.getLogger("vibe_server.api")
router = APIRouter(tags=["body model"], dependencies=PROTECTED)
NO_SMPL = "This server has no SMPL model file; install the model data with 'vibe-mocap data install'."


def body_model_fingerprint(model: BodyModel) -> str:
    """ "sha256:<hex>" of what /body_model sends for ``model``: the format version, then each array's
    name, type, shape and values as :func:`save_body_model` writes them (the same on every start,
    unlike the zip's own bytes, which hold the time they were written)."""
    digest = hashlib.sha256(f"vibe-mocap body model v{BODY_MODEL_VERSION}\n".encode())
    for f in fields(BodyModel):
        array = np.ascontiguousarray(getattr(model, f.name), np.int64 if f.name in ("faces", "parents") else np.float32)
        digest.update(f"{f.name} {array.dtype.str} {array.shape}\n".encode())
        digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()


def _smpl_path(engine) -> Path | None:
    """The engine's SMPL file; None with no engine, or one with no data folder."""
    data_dir = getattr(engine, "data_dir", None)
    return None if data_dir is None else Path(data_dir) / SMPL_FILE


def _smpl_model(engine) -> BodyModel:
    """The engine's SMPL model, read from its data folder; HTTPException 503 saying why there is none."""
    smpl = _smpl_path(engine)
    if smpl is None:
        raise HTTPException(503, NO_SMPL)
    try:
        return load_smpl_pkl(smpl)
    except VibeError as err:
        log.warning("%s", err)  # (the client's answer names no folder of the server)
        raise HTTPException(503, without_data_folder(str(err), engine.data_dir)) from err


def served_fingerprint(engine: object, noted: Path | None = None) -> str | None:
    """The fingerprint of the body model the server sends, None when it has none (blocking: reads
    and hashes the SMPL file; the start-up runs it in a worker thread). ``noted``: a file that keeps
    it for the next start, with the SMPL file's path, inode, size and modification time: while those are
    the same, reading it replaces reading the model (about 0.4 s of every start)."""
    smpl = _smpl_path(engine)
    if smpl is None:
        return None
    try:
        stat = smpl.stat()
    except OSError:
        return None
    key = {"file": str(smpl), "inode": stat.st_ino, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if noted is not None:
        try:
            note = safe_json.loads(noted.read_bytes()[:4096])
            if isinstance(note, dict) and {k: note.get(k) for k in key} == key:
                fingerprint = note.get("fingerprint")
                if isinstance(fingerprint, str) and FINGERPRINT_PATTERN.fullmatch(fingerprint):
                    return fingerprint
        except (OSError, ValueError):
            pass  # none noted, or not readable: computed below
    try:
        fingerprint = body_model_fingerprint(_smpl_model(engine))
    except HTTPException:
        return None
    if noted is not None:
        try:
            atomic_write_bytes(noted, json.dumps(dict(key, fingerprint=fingerprint)).encode())
        except OSError:
            pass  # only the next start's shortcut is lost
    return fingerprint


def _npz(engine, fingerprint: str | None) -> bytes:
    model = _smpl_model(engine)
    if body_model_fingerprint(model) != fingerprint:
        log.warning("The SMPL model file %s changed after this server started.", _smpl_path(engine))
        # (the client is told no path of the server's)
        raise HTTPException(
            503, "The SMPL model file changed after this server started; restart the server to send the new one."
        )
    buffer = io.BytesIO()
    save_body_model(buffer, model)
    return buffer.getvalue()


@router.get("/body_model")
async def body_model(request: Request, engine=Depends(get_engine)) -> Response:
    state = request.app.state
    async with state.body_model_build:  # made once, in a worker thread: requests at once wait for it
        if state.body_model_npz is None:
            state.body_model_npz = await run_in_threadpool(_npz, engine, state.body_model_fingerprint)
    return Response(
        state.body_model_npz,
        media_type="application/octet-stream",
        headers={"Content-Disposition": 'attachment; filename="body_model.npz"'},
    )

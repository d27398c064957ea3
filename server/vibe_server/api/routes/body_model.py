"""GET /body_model: the SMPL arrays the add-on needs to build the character (npz, no pickles)."""

from __future__ import annotations

import io
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from vibe_blender.core.errors import VibeError
from vibe_blender.core.smpl_model import load_smpl_pkl, save_body_model

from ..deps import PROTECTED, get_engine

router = APIRouter(tags=["body model"], dependencies=PROTECTED)


@router.get("/body_model")
def body_model(request: Request, engine=Depends(get_engine)) -> Response:
    cached = getattr(request.app.state, "body_model_npz", None)
    if cached is None:
        if engine.data_dir is None:
            raise HTTPException(
                503, "This server has no SMPL model file; install the model data with 'vibe-mocap data install'."
            )
        try:
            model = load_smpl_pkl(Path(engine.data_dir) / "SMPL_NEUTRAL.pkl")
        except VibeError as err:
            raise HTTPException(503, str(err)) from err
        buffer = io.BytesIO()
        save_body_model(buffer, model)
        cached = request.app.state.body_model_npz = buffer.getvalue()
    return Response(
        cached,
        media_type="application/octet-stream",
        headers={"Content-Disposition": 'attachment; filename="body_model.npz"'},
    )

"""Request and response bodies of the HTTP API (version 1, see docs/server.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from vibe_blender.core.result_file import MAX_FRAME_ID

from ..pipeline.live_options import LiveOptions
from ..pipeline.options import option_specs

API_VERSION = 1
WaitingStatus = Literal["queued", "running"]
FinalStatus = Literal["done", "failed", "cancelled"]  # a job in one of these changes no more
JobStatus = Literal[WaitingStatus, FinalStatus]


class _NullMeansDefault(BaseModel):
    """Per-job options; unknown keys are refused (422); null stands for an option's default."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {
                k: v
                for k, v in data.items()
                if v is not None or k not in cls.model_fields or cls.model_fields[k].default is None
            }
        return data


def _fields(specs: list) -> dict[str, tuple]:
    """Pydantic fields (type, default, bounds, description) of option specs."""
    return {
        spec.name: (
            spec.kind,
            Field(
                spec.default,
                ge=spec.bounds.ge,
                gt=spec.bounds.gt,
                le=spec.bounds.le,
                lt=spec.bounds.lt,
                description=spec.help,
            ),
        )
        for spec in specs
    }


def _job_params_model() -> type[BaseModel]:
    """``JobParams`` from the one definition of the options (``pipeline/options.py: RunOptions``)."""
    fields = _fields(option_specs(http=True))
    return create_model(
        "JobParams", __base__=_NullMeansDefault, __module__=__name__, __doc__=_NullMeansDefault.__doc__, **fields
    )


JobParams = _job_params_model()


class LocalJobRequest(BaseModel):
    """``application/json`` body of POST /jobs for a video already on the server's disk."""

    model_config = ConfigDict(extra="forbid")

    video_path: str
    params: JobParams = Field(default_factory=JobParams)


class JobUpload(BaseModel):
    """``multipart/form-data`` body of POST /jobs: the video file and its options. (Documentation
    only: the route streams the parts to disk itself, see upload.py.)"""

    video: bytes = Field(
        json_schema_extra={"format": "binary"}, description="the video file (mp4, mov, mkv, webm, avi, gif...)"
    )
    params: str | None = Field(None, description="JSON object with the JobParams fields, e.g. {\"smoothing\": 0.5}")


class Job(BaseModel):
    job_id: str
    status: JobStatus
    stage: str | None = None
    progress: float = 0.0
    eta_s: float | None = None
    error: str | None = None
    video_name: str
    created: str
    num_tracks: int | None = None
    warnings: list[str] = Field(default_factory=list)  # e.g. the video broke off: what was kept


class JobCreated(BaseModel):
    job_id: str
    status: JobStatus


class JobList(BaseModel):
    jobs: list[Job]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    api_version: int = API_VERSION
    device: str
    model: str
    torch: str
    queue_length: int
    proof: str | None = None  # HMAC-SHA256(token, challenge) when asked with ?challenge=
    body_model: str | None = Field(
        None,
        description='"sha256:<hex>" fingerprint of what GET /body_model sends (the same on every start for the same '
        "model); null when the server has no body model",
    )
    probe_timeout_s: float = Field(
        description="how long POST /jobs may check a video before it answers (--probe-timeout-s): a client "
        "waits that long, and a little more, for the answer to a submission"
    )


class _LiveParamsBase(BaseModel):
    """Options of a live session; unknown keys are refused (422)."""

    model_config = ConfigDict(extra="forbid")


def _live_params_model() -> type[BaseModel]:
    """``LiveParams``: the live options (``pipeline/live_options.py: LiveOptions``, one definition) plus the
    two that belong to a session's source rather than its pipeline."""
    fields = _fields(option_specs(LiveOptions, http=True))
    fields["lossless"] = (bool, Field(False, description="files only: wait for the model instead of dropping frames"))
    fields["max_frames"] = (
        int | None,
        # more frames than a recording holds: its frame ids (counting dropped frames too) stop at MAX_FRAME_ID
        Field(None, ge=1, le=MAX_FRAME_ID, description="stop after this many processed frames (empty: never)"),
    )
    return create_model(
        "LiveParams", __base__=_LiveParamsBase, __module__=__name__, __doc__=_LiveParamsBase.__doc__, **fields
    )


LiveParams = _live_params_model()


class LiveRequest(BaseModel):
    """POST /live: a camera index ("0"), a stream URL on the server's machine, or a video file path."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(max_length=4096)
    params: LiveParams = Field(default_factory=LiveParams)


class LiveStatus(BaseModel):
    live_id: str
    status: Literal["starting", "running", "stopped", "ended", "failed"]
    source: str
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)  # what the user should know, e.g. YOLO fell back to HOG
    stats: dict = Field(default_factory=dict)
    clients: int = 0

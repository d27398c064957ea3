"""Request and response bodies of the HTTP API (version 1, see docs/server.md)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..pipeline.run import DEFAULT_DETECTION_STRIDE

API_VERSION = 1
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]


class JobParams(BaseModel):
    """Per-job options; unknown keys are refused (422)."""

    model_config = ConfigDict(extra="forbid")

    detector: Literal["yolo", "hog"] | None = None          # None: yolo when its weights are installed
    detection_stride: int = Field(DEFAULT_DETECTION_STRIDE, ge=1, le=1000)
    adaptive_detection: bool = True                       # also detect where the tracker may be wrong
    min_track_frames: int = Field(25, ge=1)
    smoothing: float = Field(0.0, ge=0.0, le=1.0)
    smoothing_method: Literal["rotation", "one_euro"] = "rotation"
    official_uncrop: bool = False
    chunking: Literal["carry", "official"] = "carry"
    tracks_max: int | None = Field(None, ge=1)
    official: bool = False                                 # the official demo's exact configuration


class LocalJobRequest(BaseModel):
    """``application/json`` body of POST /jobs for a video already on the server's disk."""

    model_config = ConfigDict(extra="forbid")

    video_path: str
    params: JobParams = Field(default_factory=JobParams)


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

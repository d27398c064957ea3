"""The settings of a live session, defined once: :class:`LiveOptions` (light: the HTTP schema and the
``vibe-mocap live`` flags derive from it without loading the pipeline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .options import detection_stride_option, detector_option, focal_px_option, option, validate_options


@dataclass
class LiveOptions:
    """A live session's settings: the HTTP API's live ``params``, the ``vibe-mocap live`` flags (both
    derived, as for :class:`~vibe_server.pipeline.options.RunOptions`)."""

    detector: Literal["auto", "yolo", "hog"] = detector_option()
    detection_stride: int = detection_stride_option()  # counted in processed frames
    adaptive_detection: bool = option(True, "also detect at once where the tracker's boxes may be wrong (as offline)")
    smoothing: float = option(0.0, "causal pose smoothing: 0 (off) .. 1", ge=0.0, le=1.0, metavar="S")
    max_people: int = option(4, "follow at most this many people (the largest boxes)", ge=1, le=32, metavar="N")
    focal_px: float | None = focal_px_option(cli=False)

    def validate(self) -> None:
        """One VibeError naming the first option out of its choices or bounds."""
        validate_options(self)

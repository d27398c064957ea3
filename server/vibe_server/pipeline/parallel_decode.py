"""One video decoded by several threads at once, its frames still delivered in order.

    for frame_index, frame_rgb in decode_in_parallel(open_video("clip.mp4"), workers=4):
        ...

The video is cut into chunks of whole GOPs (``reader.keyframes()``, at least ``chunk_frames``
frames each). Each chunk is decoded by a capture of its own in a thread of its own (OpenCV lets go
of the GIL while it decodes, so they run at once), at most ``workers`` chunks at a time, and the
chunks are handed on in order. Memory stays bounded whatever the video's length: each chunk's
queue holds at most ``max_bytes / workers`` of frames (a chunk longer than that waits for its
turn to be read).

A chunk's jump to its keyframe is checked before any of its frames is used: the chunk before it
decoded one frame past their cut, and both must have seen the same frame (``continues``). At the
first miss (a container with wrong timestamps) the rest of the video is decoded in this thread
from the first frame, exactly as a plain decode would.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from .background import InThread


class ChunkableVideo(Protocol):
    """What is needed of the video (a :class:`~vibe_server.pipeline.video.VideoReader`, which calls
    this module when its ``decode_workers`` is above 1)."""

    info: Any  # .width, .height

    def keyframes(self) -> list[int]: ...

    def segment(self, start: int, stop: int | None) -> Any: ...  # a VideoSegment

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]: ...


CHUNK_FRAMES = 60  # a jump costs a few milliseconds; a chunk of 60 frames takes tens of them
MAX_BYTES = 512 * 2**20  # decoded frames waiting in all the chunks' queues together


def chunk_bounds(keyframes: list[int], chunk_frames: int = CHUNK_FRAMES) -> list[tuple[int, int | None]]:
    """[start, stop) of consecutive chunks starting on keyframes, each at least ``chunk_frames``
    long (the last one runs to the end: stop None)."""
    starts = [0]
    for keyframe in keyframes:
        if keyframe - starts[-1] >= chunk_frames:
            starts.append(keyframe)
    return list(zip(starts, [*starts[1:], None]))


def decode_in_parallel(
    reader: ChunkableVideo, workers: int, *, chunk_frames: int = CHUNK_FRAMES, max_bytes: int = MAX_BYTES
) -> Iterator[tuple[int, np.ndarray]]:
    """``reader.frames()``, decoded by up to ``workers`` threads at once (see the module's text)."""
    # (a generator: no thread starts before the first frame is asked for)
    chunks = chunk_bounds(reader.keyframes(), chunk_frames)
    if workers < 2 or len(chunks) < 2:
        yield from reader.frames()
        return
    info = reader.info
    frames_per_queue = max(2, max_bytes // max(1, 3 * info.width * info.height) // workers)
    pending = deque(chunks)
    running: deque = deque()  # (segment, frames in its thread), in video order

    def start_next() -> None:
        start, stop = pending.popleft()
        segment = reader.segment(start, stop)
        running.append((segment, InThread(iter(segment), max_ahead=frames_per_queue, name=f"decode {start}")))

    previous = None
    try:
        while pending and len(running) < workers:
            start_next()
        while running:
            segment, frames = running.popleft()
            items = iter(frames)
            first = next(items, None)  # its head mark is set once its first frame is decoded
            if previous is not None and not segment.continues(previous):
                frames.close()
                yield from reader.frames(segment.start)  # exact, from the first frame
                return
            if first is not None:
                yield first
                yield from items
            previous = segment
            if pending:
                start_next()
    finally:
        for _, frames in running:
            frames.close()

"""One video decoded by several threads at once, its frames still delivered in order.

    for frame_index, frame_rgb in decode_in_parallel(open_video("clip.mp4"), workers=4):
        ...

The video is cut into chunks of at least ``chunk_frames`` frames that start where a jump costs
least (``reader.jump_targets()``: just after a keyframe). Each chunk is decoded by a capture of its
own in a thread of its own (OpenCV lets go of the GIL while it decodes, so they run at once), at
most ``workers`` chunks at a time, and the chunks are handed on in order. Memory stays bounded
whatever the video's length: each chunk's queue holds at most ``max_bytes / workers`` of frames
(a chunk longer than that waits for its turn to be read).

A chunk's jump is checked before any of its frames is used: the chunk before it decoded one frame
past their cut, and both must have seen the same frame (``continues``). At the first miss (a
container with wrong timestamps) the other chunks stop and the rest of the video is decoded from
the first frame by one decoder, exactly as a plain decode would. Only this consumer's thread
touches the reader's frame count and warnings, once it has seen where the decode ended.
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

    def jump_targets(self) -> list[int]: ...

    def check_complete(self, frames_decoded: int) -> None: ...

    def segment(self, start: int, stop: int | None) -> Any: ...  # a VideoSegment

    def frames_ahead(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]: ...


CHUNK_FRAMES = 120  # each jump decodes JUMP_PREROLL_FRAMES (16) frames it does not keep: 13 % more
MAX_BYTES = 512 * 2**20  # about this much of decoded frames waits in all the chunks' queues together


def chunk_bounds(jump_targets: list[int], chunk_frames: int = CHUNK_FRAMES) -> list[tuple[int, int | None]]:
    """[start, stop) of consecutive chunks, each starting on one of ``jump_targets`` (after the
    first) and at least ``chunk_frames`` long (the last one runs to the end: stop None)."""
    starts = [0]
    for target in jump_targets:
        if target - starts[-1] >= chunk_frames:
            starts.append(target)
    return list(zip(starts, [*starts[1:], None]))


def decode_in_parallel(
    reader: ChunkableVideo, workers: int, *, chunk_frames: int = CHUNK_FRAMES, max_bytes: int = MAX_BYTES
) -> Iterator[tuple[int, np.ndarray]]:
    """``reader.frames()``, decoded by up to ``workers`` threads at once (see the module's text)."""
    # (a generator: no thread starts before the first frame is asked for)
    chunks = chunk_bounds(reader.jump_targets(), chunk_frames)
    if workers < 2 or len(chunks) < 2:
        yield from reader.frames_ahead()
        return
    info = reader.info
    frames_per_queue = max(2, max_bytes // max(1, 3 * info.width * info.height) // workers)
    pending = deque(chunks)
    running: deque = deque()  # (segment, frames in its thread), in video order

    def start_next() -> None:
        start, stop = pending.popleft()
        segment = reader.segment(start, stop)
        running.append((segment, InThread(iter(segment), max_ahead=frames_per_queue, name=f"decode {start}")))

    def stop_all() -> None:
        while running:
            running.popleft()[1].close()

    previous = None
    try:
        while pending and len(running) < workers:
            start_next()
        while running:
            segment, frames = running[0]
            items = iter(frames)
            first = next(items, None)  # its head mark is set once its first frame is decoded
            if previous is not None and not segment.continues(previous):
                stop_all()
                yield from reader.frames_ahead(segment.start)  # exact, from the first frame
                return
            if first is not None:
                yield first
                yield from items
            running.popleft()
            previous = segment
            if pending:
                start_next()
        reader.check_complete(previous.start + previous.decoded)  # the last chunk ran to the end
    finally:
        stop_all()

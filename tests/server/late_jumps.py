"""Watch the video reader's decoders: which jump, how many frames they decode, and jumps made to
land on the wrong frame (as a container with wrong timestamps could)."""

from vibe_server.pipeline.video import VideoReader


def record_decodes(
    monkeypatch, *, late_at=(), late_everywhere: bool = False, late_from_jump: int = 1
) -> list[tuple[int, bool]]:
    """Record (start, jumped?) of every decode; the jumps to the starts in ``late_at`` (or every
    jump, ``late_everywhere``) land one frame late, the frames still numbered as if not; with
    ``late_from_jump`` N, only from the Nth such jump on."""
    decode, decodes = VideoReader._decode, []

    def recorded(self, start, stop, *, jump=False, marks=None):
        decodes.append((start, bool(jump and start > 0)))
        chosen = jump and start > 0 and (late_everywhere or start in late_at)
        if not (chosen and sum(jumped for at, jumped in decodes if at == start) >= late_from_jump):
            yield from decode(self, start, stop, jump=jump, marks=marks)
            return
        for index, frame in decode(self, start + 1, stop and stop + 1, jump=True, marks=marks):
            yield index - 1, frame

    monkeypatch.setattr(VideoReader, "_decode", recorded)
    return decodes


class CountingCapture:
    """An OpenCV capture that counts the frames it decodes (``grab`` and ``read``), its own
    ``set`` jumps included (OpenCV decodes forward from a keyframe inside them)."""

    def __init__(self, capture, counts: list[int]):
        self._capture, self._counts = capture, counts

    def grab(self):
        self._counts.append(1)
        return self._capture.grab()

    def read(self):
        self._counts.append(1)
        return self._capture.read()

    def __getattr__(self, name):
        return getattr(self._capture, name)


def count_decoded_frames(monkeypatch) -> list[int]:
    """A list that gets one entry per frame the reader's decoders grab or read from now on."""
    open_capture, counts = VideoReader._open_capture, []
    monkeypatch.setattr(
        VideoReader, "_open_capture", lambda self, **kw: CountingCapture(open_capture(self, **kw), counts)
    )
    return counts

"""Make the video reader's jumps land on the wrong frame, as a container with wrong timestamps could."""

from vibe_server.pipeline.video import VideoReader


def record_decodes(monkeypatch, *, late_at=(), late_everywhere: bool = False) -> list[tuple[int, int]]:
    """Record (start, keyframe jumped to) of every decode; the jumps to the keyframes in ``late_at``
    (or every jump, ``late_everywhere``) land one frame late, the frames still numbered as if not."""
    decode, decodes = VideoReader._decode, []

    def recorded(self, start, stop, *, from_keyframe=0, marks=None):
        decodes.append((start, from_keyframe))
        if from_keyframe == 0 or not (late_everywhere or from_keyframe in late_at):
            yield from decode(self, start, stop, from_keyframe=from_keyframe, marks=marks)
            return
        for index, frame in decode(self, start + 1, stop and stop + 1, from_keyframe=from_keyframe, marks=marks):
            yield index - 1, frame

    monkeypatch.setattr(VideoReader, "_decode", recorded)
    return decodes

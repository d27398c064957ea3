"""MotionSet helpers that need no Blender."""

import numpy as np

from vibe_blender.core.motion import TrackMotion, longest_tracks


def track(name: str, frames: int) -> TrackMotion:
    return TrackMotion(name, np.arange(frames), np.zeros((frames, 72)), np.zeros((frames, 3)), np.zeros(10))


def test_longest_tracks_keep_the_most_frames_in_file_order_ties_to_the_earlier():
    tracks = [track("a", 5), track("b", 9), track("c", 5), track("d", 2), track("e", 9)]
    assert [t.name for t in longest_tracks(tracks, 3)] == ["a", "b", "e"]
    assert [t.name for t in longest_tracks(tracks, 1)] == ["b"]
    assert longest_tracks(tracks, 5) is tracks and longest_tracks(tracks, 99) is tracks


def test_a_results_own_text_is_made_displayable_when_read():
    """The video's name and the run's warnings go into the import's messages: a file's newlines,
    escape sequences and 60 000 characters went there as they were."""
    from vibe_blender.core.motion import MAX_SOURCE_NAME_CHARS, from_result
    from vibe_blender.core.result_file import WARNINGS_META_KEY, MocapResult, Track, VideoInfo

    z = np.zeros
    track = Track(
        1, np.arange(2), z((2, 72)), z((2, 10)), z(10), z((2, 3)), z((2, 4)), z((2, 4)), z((2, 0, 3)), z((2, 3))
    )
    result = MocapResult(
        video=VideoInfo("X" * 60000 + "\n\x1b[2J\u202eEVIL", 25.0, 320, 240, 2),
        tracks=[track],
        model_name="vibe_model_wo_3dpw",
        focal_length_px=400.0,
        meta={WARNINGS_META_KEY: "the video broke off\x1b[31m at frame 12\n\nHOG\u202e"},
    )
    motion = from_result(result)
    assert len(motion.source_name) == MAX_SOURCE_NAME_CHARS and motion.source_name.isprintable()
    assert motion.warnings == ["the video broke off [31m at frame 12", "HOG "]

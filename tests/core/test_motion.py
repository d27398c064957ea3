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

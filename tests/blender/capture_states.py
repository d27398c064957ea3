"""Waiting for the add-on's capture to reach a state, in tests: with a deadline, so that a capture
that went elsewhere fails the test with its snapshot instead of hanging the run."""

import time

from vibe_blender import jobs


def until_capture_state(*states: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (snapshot := jobs.current_job().snapshot()).state not in states:
        assert not snapshot.finished and time.monotonic() < deadline, snapshot
        time.sleep(0.01)

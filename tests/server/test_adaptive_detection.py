"""Adaptive detection: with a detection stride, detect at once where the tracker's boxes may be wrong
(tracks not confirmed yet, a box leaving the frame, boxes overlapping, someone at the edge), and
not more often than that."""

import numpy as np

from vibe_server.pipeline.adaptive_detection import DetectionTriggers, inside_share
from vibe_server.pipeline.people import find_people, stream_people
from vibe_server.pipeline.track import Sort

WIDTH, HEIGHT = 400, 240
STATIC = [180, 60, 220, 140]  # a person standing in the middle all the time


class Scene:
    """Frames with white rectangles where the people are; the detector finds exactly them (except at
    ``missed`` frames). The frame index is written into pixel (0, 0)."""

    def __init__(self, people, missed=()):
        self.people, self.missed = people, set(missed)  # people(t) -> list of [x1, y1, x2, y2]
        self.batch_size = 4
        self.detected_frames = []

    def frames(self, n):
        for t in range(n):
            frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            for x1, y1, x2, y2 in self.people(t):
                frame[max(0, int(y1)) : int(y2), max(0, int(x1)) : max(0, int(x2))] = 255
            frame[0, 0, 0] = t
            yield t, frame

    def detect(self, frames_rgb):
        out = []
        for frame in frames_rgb:
            t = int(frame[0, 0, 0])
            self.detected_frames.append(t)
            boxes = [] if t in self.missed else [[*b, 0.9] for b in self.people(t)]
            out.append(np.array(boxes, np.float32).reshape(-1, 5))
        return out


def track(scene, n, **kwargs):
    people = stream_people(scene.frames(n), scene, **kwargs)
    for _ in people:
        pass
    return people, people.tracklets(min_track_frames=1)


def newcomer(t):
    """The static person, and from frame 20 on someone walking in from the left edge."""
    return [STATIC] + ([[-20 + 3 * (t - 20), 60, 20 + 3 * (t - 20), 140]] if t >= 20 else [])


def test_a_person_entering_at_the_edge_is_tracked_as_early_as_with_detection_on_every_frame():
    _, official = track(Scene(newcomer), 60)
    _, fixed = track(Scene(newcomer), 60, detection_stride=16)
    scene = Scene(newcomer)
    people, adaptive = track(scene, 60, detection_stride=16, adaptive_detection=True)
    first = {
        name: int(t[2].frames[0]) for name, t in (("official", official), ("fixed", fixed), ("adaptive", adaptive))
    }
    assert first["fixed"] >= 32  # two scheduled detections later at best
    assert first["adaptive"] <= first["official"] + 1
    assert people.extra_detections["edge"] >= 1
    assert len(scene.detected_frames) < 30  # far fewer than the 60 frames


def test_a_still_scene_costs_only_the_confirming_detections():
    scene = Scene(lambda t: [STATIC])
    people, tracklets = track(scene, 64, detection_stride=16, adaptive_detection=True)
    assert sorted(scene.detected_frames) == [0, 1, 2, 3, 16, 32, 48]  # SORT confirms a track after 3 matches
    assert dict(people.extra_detections) == {"unsettled": 3}
    assert tracklets[1].frames.tolist() == list(range(64))


def test_a_missed_detection_is_retried_on_the_next_frame():
    missed = Scene(lambda t: [STATIC], missed={16})
    _, fixed = track(missed, 48, detection_stride=16)
    assert 20 not in fixed[1].frames  # unreported until the next scheduled frame
    scene = Scene(lambda t: [STATIC], missed={16})
    _, adaptive = track(scene, 48, detection_stride=16, adaptive_detection=True)
    _, official = track(Scene(lambda t: [STATIC], missed={16}), 48)
    assert 17 in scene.detected_frames
    assert adaptive[1].frames.tolist() == official[1].frames.tolist()


def test_a_person_leaving_the_frame_triggers_a_detection():
    def leaver(t):
        return [STATIC, [330 + 4 * t, 60, 370 + 4 * t, 140]]  # reaches the right edge at t = 8

    scene = Scene(leaver)
    people, _ = track(scene, 30, detection_stride=16, adaptive_detection=True)
    assert people.extra_detections["leaving"] >= 1
    assert any(4 < t < 16 for t in scene.detected_frames)


def test_people_crossing_keep_their_identities_as_with_detection_on_every_frame():
    def crossing(t):
        return [[60 + 5 * t, 60, 100 + 5 * t, 140], [300 - 5 * t, 60, 340 - 5 * t, 140]]

    _, official = track(Scene(crossing), 50)
    scene = Scene(crossing)
    people, adaptive = track(scene, 50, detection_stride=16, adaptive_detection=True)
    assert people.extra_detections["overlap"] >= 1
    for track_id, tracklet in official.items():
        common = np.intersect1d(tracklet.frames, adaptive[track_id].frames)
        assert len(common) >= 0.9 * len(tracklet.frames)
        a = dict(zip(tracklet.frames.tolist(), tracklet.bboxes[:, 0]))
        b = dict(zip(adaptive[track_id].frames.tolist(), adaptive[track_id].bboxes[:, 0]))
        assert max(abs(a[t] - b[t]) for t in common.tolist()) < 15  # same person under the same id


def test_without_adaptive_or_at_stride_one_nothing_changes():
    scene = Scene(newcomer)
    find_people(scene.frames(40), scene, detection_stride=8, min_track_frames=1)
    assert sorted(scene.detected_frames) == list(range(0, 40, 8))
    scene = Scene(newcomer)
    stream = stream_people(scene.frames(40), scene, detection_stride=1, adaptive_detection=True)
    assert stream.triggers is None


def test_inside_share_and_the_reference_state():
    boxes = np.array([[0, 0, 10, 10], [-5, 0, 5, 10], [395, 0, 405, 10], [500, 0, 510, 10]], float)
    np.testing.assert_allclose(inside_share(boxes, WIDTH, HEIGHT), [1.0, 0.5, 0.5, 0.0])
    sort = Sort()
    for _ in range(4):
        sort.update(np.array([[100, 50, 140, 130, 0.9]], np.float32))
    triggers = DetectionTriggers()
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    triggers.reference(3, frame, sort)
    assert triggers.reason(4, frame, sort) is None  # a settled, still scene
    changed = frame.copy()
    changed[:, :30] = 200  # something appears at the left edge
    assert triggers.reason(5, changed, sort) == "edge"
    assert triggers.reason(6, changed, sort) is None  # the edge is not checked again at once


def test_a_one_frame_false_positive_costs_one_extra_detection():
    scene = Scene(lambda t: [STATIC] + ([[250, 60, 290, 140]] if t == 16 else []))
    _, tracklets = track(scene, 40, detection_stride=16, adaptive_detection=True)
    assert sorted(scene.detected_frames) == [0, 1, 2, 3, 16, 17, 32]  # 17 checks the new box; no retry after
    assert list(tracklets) == [1]


def test_a_walking_person_is_detected_more_often_than_a_standing_one():
    scene = Scene(lambda t: [[40 + 2 * t, 60, 80 + 2 * t, 140]])
    people, _ = track(scene, 64, detection_stride=32, adaptive_detection=True)
    assert people.extra_detections["moved"] >= 3
    assert len(scene.detected_frames) < 32

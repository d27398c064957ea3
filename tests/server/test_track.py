"""SORT as VIBE runs it: Kalman maths, ids, the emission rule, gaps, skipped frames, coasting."""

import numpy as np
import pytest
from recorded_detections import recorded_hog_detections
from reference_sort import ReferenceSort, bbox_to_z

from vibe_server.pipeline.track import (
    IOU_THRESHOLD,
    Sort,
    TrackletCollector,
    associate,
    boxes_to_z,
    iou_matrix,
    track_detections,
    xyxy_to_square_cxcywh,
)


def box(cx, cy, w=40.0, h=80.0, score=0.9):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score]


def dets(*boxes):
    return np.array(boxes, dtype=np.float32).reshape(-1, 5)


def test_first_kalman_step_by_hand():
    # per axis: P = diag(10, 10000) at start; predict -> [[10011, 10000], [10000, 10000.01]];
    # update with R = 1: gain = P[:, 0] / (10011 + 1)
    sort = Sort()
    sort.update(dets(box(100, 50)))  # starts the track
    sort.update(dets(box(110, 50)))  # predict, then correct
    x = sort.x[0]
    np.testing.assert_allclose(x[0], 100 + 10 * 10011 / 10012, rtol=1e-12)
    np.testing.assert_allclose(x[4], 10 * 10000 / 10012, rtol=1e-12)
    np.testing.assert_allclose(x[1], 50.0)
    np.testing.assert_allclose(x[2], 40 * 80)  # area unchanged
    np.testing.assert_allclose(x[3], 0.5)  # ratio w / h


def test_iou_by_hand():
    # half-overlapping squares: 50 / (100 + 100 - 50); nested: 30 / 100; apart: 0
    iou = iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [0, 0, 10, 3], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1 / 3, 0.3, 0.0]], rtol=1e-6)


def test_a_pair_at_the_threshold_matches_and_one_below_does_not():
    assert IOU_THRESHOLD == 0.3  # SORT's
    at = associate(np.array([[0, 0, 10, 10, 1]]), np.array([[0, 0, 10, 3]]))  # IoU 0.3
    below = associate(np.array([[0, 0, 10, 10, 1]]), np.array([[0, 0, 10, 2.9]]))  # IoU 0.29
    assert at[0].tolist() == [[0, 0]] and at[1] == [] and at[2] == []
    assert below[0].tolist() == [] and below[1] == [0] and below[2] == [0]


def test_static_person_gives_the_detection_back_with_a_stable_id():
    sort = Sort()
    for _ in range(10):
        out = sort.update(dets(box(100, 100)))
        assert out.shape == (1, 5) and out[0, 4] == 1
        np.testing.assert_allclose(out[0, :4], box(100, 100)[:4], atol=1e-9)


def test_two_people_crossing_paths_keep_their_ids():
    sort, seen = Sort(), {}
    for t in range(30):
        out = sort.update(dets(box(50 + 5 * t, 100), box(300 - 5 * t, 100, w=50, h=100)))
        for x1, _, x2, _, track_id in out:
            seen.setdefault(int(track_id), []).append((x1 + x2) / 2)
    assert sorted(seen) == [1, 2]
    assert len(seen[1]) == len(seen[2]) == 30
    # id 1 went right, id 2 went left, and neither jumped to the other (steps are 5 px)
    assert np.all(np.abs(np.diff(seen[1]) - 5) < 2) and np.all(np.abs(np.diff(seen[2]) + 5) < 2)


def test_reported_box_is_the_kalman_estimate_not_the_detection():
    sort = Sort()
    for t in range(6):
        out = sort.update(dets(box(100 + 10 * t, 100)))
    detection_cx = 150.0
    reported_cx = (out[0, 0] + out[0, 2]) / 2
    assert reported_cx != pytest.approx(detection_cx, abs=1e-6)
    assert reported_cx == pytest.approx(detection_cx, abs=2.0)


def test_emission_rule_for_a_person_who_appears_later():
    sort = Sort()
    reported_at = []
    for t in range(10):
        people = [box(100, 100)] + ([box(400, 100)] if t >= 5 else [])
        out = sort.update(dets(*people))
        if 2 in out[:, 4]:
            reported_at.append(t)
    # past the tracker's first 3 updates, a track created at t = 5 (not a hit) is reported once it
    # has been matched 3 times in a row (t = 6, 7, 8)
    assert reported_at == [8, 9]


def test_first_three_updates_report_new_tracks_at_once():
    sort = Sort()
    assert sort.update(dets(box(100, 100)))[:, 4].tolist() == [1]


def test_one_missed_frame_makes_a_gap_two_end_the_track():
    sort = Sort()
    history = []
    for t in range(20):
        people = [box(100 + 2 * t, 100)] if t not in (8, 14, 15) else []
        people.append(box(400, 300))  # keeps the tracker updating every frame
        out = sort.update(dets(*people))
        history.append({int(i) for i in out[:, 4]})
    walker = [t for t, ids in enumerate(history) if 1 in ids]
    # missed at 8: not reported at 8, hit streak restarts at 9 -> reported again from 11
    assert walker == [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13]
    # missed at 14 and 15: the track is dropped; the walker comes back as id 3, new at 16
    assert [t for t, ids in enumerate(history) if 3 in ids] == [19]
    assert all(2 in ids for ids in history)


def test_frames_without_detections_do_not_age_tracks():
    sequence = [dets(box(100 + t, 100)) for t in range(5)] + [dets()] * 10 + [dets(box(105 + t, 100)) for t in range(5)]
    tracklets = track_detections(sequence, min_track_frames=1)
    assert list(tracklets) == [1]
    assert tracklets[1].frames.tolist() == [0, 1, 2, 3, 4, 15, 16, 17, 18, 19]


def test_ids_count_per_tracker_instance():
    for _ in range(2):
        assert Sort().update(dets(box(10, 10), box(200, 10)))[:, 4].tolist() == [2, 1]  # newest first


def test_tracklets_are_square_centre_boxes_and_short_ones_are_dropped():
    sequence = [dets(box(100 + t, 100, w=40, h=80)) for t in range(30)]
    sequence[10:15] = [dets(box(100 + t, 100), box(500, 400, w=90, h=30)) for t in range(10, 15)]
    tracklets = track_detections(sequence, min_track_frames=25)
    assert list(tracklets) == [1]  # the 2-frame blip is gone
    frames, bboxes = tracklets[1]
    assert frames.dtype == np.int64 and frames.tolist() == list(range(30))
    assert bboxes.shape == (30, 4)
    np.testing.assert_allclose(bboxes[:, 2], bboxes[:, 3])
    np.testing.assert_allclose(bboxes[-1], [129, 100, 80, 80], atol=1.5)
    short = track_detections(sequence, min_track_frames=2)
    assert sorted(short) == [1, 2] and len(short[2].frames) == 2


def test_square_conversion_takes_the_longer_side():
    out = xyxy_to_square_cxcywh(np.array([[0.0, 0.0, 40.0, 80.0], [10.0, 10.0, 110.0, 30.0]]))
    np.testing.assert_allclose(out, [[20, 40, 80, 80], [60, 20, 100, 100]])


def test_measurement_arithmetic_matches_float32_detections():
    z = boxes_to_z(np.array([[10.5, 20.25, 50.75, 100.125, 0.9]], dtype=np.float32))
    assert z.dtype == np.float64 and z.shape == (1, 4)
    w, h = np.float32(50.75) - np.float32(10.5), np.float32(100.125) - np.float32(20.25)
    w64, h64 = np.float64(w), np.float64(h)
    np.testing.assert_array_equal(z[0], [10.5 + w64 / 2, 20.25 + h64 / 2, np.float32(w * h), w64 / h64])
    # and row by row exactly the official per-box conversion
    boxes = np.random.default_rng(0).uniform(0, 500, (50, 5)).astype(np.float32)
    boxes[:, 2:4] += boxes[:, 0:2]
    np.testing.assert_array_equal(boxes_to_z(boxes), np.hstack([bbox_to_z(b) for b in boxes]).T)


def test_coasting_carries_boxes_between_detection_frames():
    stride = 3
    sequence = [dets(box(100 + 4 * t, 100)) for t in range(30)]
    detected = [t % stride == 0 for t in range(30)]
    tracklets = track_detections(sequence, detected=detected, min_track_frames=1)
    assert list(tracklets) == [1]
    frames, bboxes = tracklets[1]
    assert frames.tolist() == list(range(30))  # reported on every frame, coasted ones too
    # once the velocity is learnt, coasted centres follow the motion closely
    np.testing.assert_allclose(bboxes[15:, 0], 100 + 4 * np.arange(15, 30), atol=3.0)


def test_coasting_stops_after_an_empty_detection_frame():
    sort, collector = Sort(), TrackletCollector()
    for t in range(3):
        collector.add(t, sort.update(dets(box(100, 100))))
    collector.add(3, sort.coast())
    collector.add(4, sort.skip())
    collector.add(5, sort.coast())
    assert collector.tracklets(1)[1].frames.tolist() == [0, 1, 2, 3]


# -- the array tracker against the official per-track structure ---------------------------------
def _random_scene(seed: int, frames: int = 400) -> list[np.ndarray]:
    """People walking at different speeds and sizes, crossing, entering and leaving; detections
    jittered, some missed, some false positives, some frames with nobody (float32, as a detector)."""
    rng = np.random.default_rng(seed)
    people = [
        (rng.uniform(0, 600), rng.uniform(100, 300), rng.uniform(-4, 4), rng.uniform(-1, 1), rng.uniform(30, 90), start)
        for start in rng.integers(0, frames // 2, size=5)
    ]
    out = []
    for t in range(frames):
        rows = []
        for x0, y0, vx, vy, size, start in people:
            if not start <= t < start + 250 or rng.random() < 0.08:  # absent, or missed
                continue
            cx, cy = x0 + vx * (t - start) + rng.normal(0, 2), y0 + vy * (t - start) + rng.normal(0, 2)
            w, h = size * rng.uniform(0.9, 1.1), 2 * size * rng.uniform(0.9, 1.1)
            rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, rng.uniform(0.5, 1)])
        if rng.random() < 0.1:  # a false positive
            x, y = rng.uniform(0, 600, 2)
            rows.append([x, y, x + rng.uniform(10, 80), y + rng.uniform(10, 160), 0.6])
        out.append(np.array(rows, dtype=np.float32).reshape(-1, 5))
    return out


def _assert_same_tracking(detections: list[np.ndarray], detected: list[bool]) -> int:
    """Run both trackers frame by frame; every output and every piece of state the adaptive
    detection reads must agree. -> the number of reported boxes compared."""
    ours, reference = Sort(), ReferenceSort()
    compared = 0
    for dets, detect in zip(detections, detected, strict=True):
        if not detect:
            a, b = ours.coast(), reference.coast()
        elif len(dets):
            a, b = ours.update(dets), reference.update(dets)
        else:
            a, b = ours.skip(), reference.skip()
        assert a.shape == b.shape
        np.testing.assert_array_equal(a[:, 4], b[:, 4])  # the same ids in the same order
        np.testing.assert_allclose(a[:, :4], b[:, :4], rtol=0, atol=1e-6)
        for ours_boxes, reference_boxes in (
            (ours.reported_boxes(), reference.reported_boxes()),
            (ours.predicted_boxes(), reference.predicted_boxes()),
        ):
            np.testing.assert_array_equal(ours_boxes[:, 4], reference_boxes[:, 4])
            np.testing.assert_allclose(ours_boxes[:, :4], reference_boxes[:, :4], rtol=0, atol=1e-6)
        assert ours.unsettled() == reference.unsettled()
        assert len(ours) == len(reference.trackers)
        compared += len(a)
    return compared


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("stride", [1, 4])
def test_array_tracker_equals_the_per_track_reference_on_random_scenes(seed, stride):
    detections = _random_scene(seed)
    detected = [t % stride == 0 for t in range(len(detections))]
    assert _assert_same_tracking(detections, detected) > 500


def test_array_tracker_equals_the_per_track_reference_on_recorded_detections():
    """OpenCV HOG's detections on every frame of the bundled clips (recorded once, see
    tests/data/fixtures/README.md): flickering boxes, misses and false positives of a real detector."""
    recorded = recorded_hog_detections()
    assert len(recorded) == 4
    compared = 0
    for detections in recorded.values():
        for stride in (1, 3):
            detected = [t % stride == 0 for t in range(len(detections))]
            compared += _assert_same_tracking(detections, detected)
    assert compared > 3000

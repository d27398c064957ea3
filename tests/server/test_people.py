"""People in a video: one pass of decode -> detect (batched, every Nth frame) -> SORT."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from recorded_detections import recorded_hog_detections
from testdata import REAL_CLIPS

from vibe_blender.core.errors import VibeError
from vibe_server.pipeline.crop import crop_people
from vibe_server.pipeline.detect import Detector, make_detector
from vibe_server.pipeline.people import find_people, stream_people
from vibe_server.pipeline.track import track_detections
from vibe_server.pipeline.video import open_video

ROOT = Path(__file__).resolve().parents[2]


def _walker(t):
    """Two people: one walks right the whole time, one stands still from frame 12 on."""
    people = [[60 + 3 * t, 40, 100 + 3 * t, 120, 0.9]]
    if t >= 12:
        people.append([300, 50, 340, 130, 0.95])
    return np.array(people, dtype=np.float32)


class ScriptedDetector:
    """Reads the frame index written into pixel (0, 0) and returns that frame's scripted boxes."""

    def __init__(self, batch_size):
        self.batch_size = batch_size
        self.calls = []

    def detect(self, frames_rgb):
        indices = [int(f[0, 0, 0]) for f in frames_rgb]
        self.calls.append(indices)
        return [_walker(i) for i in indices]


def _frames(n):
    for i in range(n):
        frame = np.zeros((240, 400, 3), np.uint8)
        frame[0, 0, 0] = i
        yield i, frame


def test_detector_protocol():
    assert isinstance(ScriptedDetector(1), Detector)
    assert isinstance(make_detector("hog"), Detector)


@pytest.mark.parametrize("batch_size", [1, 4, 7])
def test_find_people_equals_tracking_all_detections(batch_size):
    detector = ScriptedDetector(batch_size)
    tracklets = find_people(_frames(40), detector, min_track_frames=5)
    expected = track_detections([_walker(t) for t in range(40)], min_track_frames=5)
    assert sorted(tracklets) == sorted(expected) == [1, 2]
    for track_id in expected:
        np.testing.assert_array_equal(tracklets[track_id].frames, expected[track_id].frames)
        np.testing.assert_allclose(tracklets[track_id].bboxes, expected[track_id].bboxes)
    assert [len(c) for c in detector.calls[:-1]] == [batch_size] * (len(detector.calls) - 1)
    assert sum(len(c) for c in detector.calls) == 40


def test_a_stream_whose_caller_keeps_its_own_tracks_records_nothing():
    """The engine keeps its own tracks: a stream told so yields the same boxes and records none, so
    its memory does not grow with the video's length."""
    kept = list(stream_people(_frames(40), ScriptedDetector(4)))
    people = stream_people(_frames(40), ScriptedDetector(4))
    people.keep_tracklets = False
    unkept = list(people)
    assert sum(len(boxes) for *_, boxes in unkept) > 40
    for a, b in zip(kept, unkept, strict=True):
        assert a.frame_index == b.frame_index and [t for t, _ in a.boxes] == [t for t, _ in b.boxes]
        for (_, box_a), (_, box_b) in zip(a.boxes, b.boxes, strict=True):
            np.testing.assert_array_equal(box_a, box_b)
    assert people.collector.tracklets(min_track_frames=1) == {}
    with pytest.raises(RuntimeError, match="kept no tracklets"):
        people.tracklets()


@pytest.mark.parametrize("gpu_front_end", [False, True])
def test_the_engine_s_people_stream_records_no_tracklets(gpu_front_end):
    """The engine crops as the tracker reports and keeps its own tracks: the stream it iterates (the
    staged one with the GPU front end) must not record every box of the video a second time."""
    import dataclasses

    from vibe_server.pipeline.engine import Engine
    from vibe_server.pipeline.options import RunOptions
    from vibe_server.pipeline.staged import stream_people_staged

    from .conftest import ScriptedFrontEnd, TinyVIBE

    streams = []

    def kept(make):
        return lambda *args, **kwargs: streams.append(make(*args, **kwargs)) or streams[-1]

    frontend = dataclasses.replace(
        ScriptedFrontEnd(num_frames=40).as_frontend(),
        make_detector=lambda name, **options: ScriptedDetector(4),
        stream_people=kept(stream_people),
        stream_people_staged=kept(stream_people_staged),
    )
    engine = Engine(TinyVIBE(), model_name="tiny", data_dir=None, frontend=frontend, gpu_front_end=gpu_front_end)
    out = engine.run("clip.mp4", RunOptions(detector="hog", min_track_frames=5))
    assert len(out.result.tracks) == 2
    (stream,) = streams
    assert stream.frames_done == 40 and stream.collector.tracklets(min_track_frames=1) == {}


def test_min_track_frames_drops_short_tracks():
    assert sorted(find_people(_frames(40), ScriptedDetector(4), min_track_frames=30)) == [1]


def test_stream_yields_every_frame_once_in_order_with_its_boxes():
    people = stream_people(_frames(20), ScriptedDetector(3))
    seen = []
    for frame_index, frame_rgb, boxes in people:
        assert int(frame_rgb[0, 0, 0]) == frame_index
        seen.append(frame_index)
        for track_id, bbox in boxes:
            assert bbox.shape == (4,) and bbox[2] == bbox[3]
            if track_id == 1:
                assert bbox[0] == pytest.approx(80 + 3 * frame_index, abs=1.0)
    assert seen == list(range(20))
    tracklets = people.tracklets(min_track_frames=1)
    assert tracklets[1].frames.tolist() == list(range(20))
    with pytest.raises(RuntimeError, match="only once"):
        next(iter(people))


def test_detection_stride_detects_every_nth_frame_and_carries_the_rest():
    detector = ScriptedDetector(2)
    tracklets = find_people(_frames(30), detector, detection_stride=3, min_track_frames=1)
    assert sorted(i for call in detector.calls for i in call) == list(range(0, 30, 3))
    frames, bboxes = tracklets[1]
    assert frames.tolist() == list(range(30))  # boxes on the frames in between too
    np.testing.assert_allclose(bboxes[10:, 0], 80 + 3 * np.arange(10, 30), atol=2.0)


def test_progress_reports_frames_done():
    calls = []
    find_people(_frames(10), ScriptedDetector(4), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, None), (8, None), (10, None)]


def test_bad_stride():
    with pytest.raises(VibeError, match="detection_stride"):
        find_people(_frames(3), ScriptedDetector(1), detection_stride=0)


def test_hog_without_opencv_support_says_what_to_install(monkeypatch):
    monkeypatch.delattr(cv2, "HOGDescriptor")
    with pytest.raises(VibeError, match="opencv-python-headless>=4.10,<5"):
        make_detector("hog")


def test_hog_on_an_empty_frame_finds_nobody():
    assert make_detector("hog").detect([np.zeros((300, 400, 3), np.uint8)])[0].shape == (0, 5)


# (height, width): under OpenCV's 64 x 128 window plus padding, one side or both; the last two are
# wide enough to be downscaled to 800 px first (to 2 x 800 px, and to a height of 0 px before).
TINY_FRAMES = [(2, 2), (48, 64), (240, 30), (96, 128), (128, 96), (320, 80), (111, 47), (128, 2000), (2, 4000)]


def test_hog_on_frames_smaller_than_its_window_finds_boxes_inside_the_frame_without_crashing():
    """Before: OpenCV's detectMultiScale read and wrote past such an image (a segfault, an abort or
    a cv2.error); any client asking for the 'hog' detector on a small video killed the whole server.
    In a process of its own, so that a crash fails this test instead of ending the test run."""
    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "from vibe_server.pipeline.detect import make_detector\n"
        "hog = make_detector('hog')\n"
        "rng = np.random.default_rng(0)\n"
        "for height, width in json.loads(sys.argv[1]):\n"
        "    frames = [rng.integers(0, 256, (height, width, 3), np.uint8) for _ in range(3)]\n"
        "    for boxes in hog.detect(frames):\n"
        "        print(json.dumps([height, width, str(boxes.dtype), boxes.shape[1], boxes.tolist()]), flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'server'}"}
    run = subprocess.run(
        [sys.executable, "-c", code, json.dumps(TINY_FRAMES)], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [tuple(r[:2]) for r in results] == [size for size in TINY_FRAMES for _ in range(3)]
    for height, width, dtype, columns, boxes in results:
        assert dtype == "float32" and columns == 5
        for x1, y1, x2, y2, _ in boxes:
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_hog_pads_a_small_frame_to_its_safe_size_and_keeps_only_boxes_on_the_frame():
    """The padding is only at the right and the bottom, so a box keeps its coordinates; one in the
    padding alone is no person in the frame (dropped), one across its edge is clipped to the frame."""
    hog = make_detector("hog")
    min_width, min_height = hog.min_image_size()
    assert (min_width, min_height) == (48, 112)  # the 64 x 128 window less the 8 px padding on each side
    seen = []

    class Descriptor:
        winSize = hog.hog.winSize

        def detectMultiScale(self, image, **kwargs):
            seen.append(image)
            # windows (x, y, w, h): across the right edge, across the bottom, wholly in the padding
            return np.array([[20, 0, 30, 40], [0, 60, 30, 60], [40, 100, 8, 12]]), np.array([2.0, 1.5, 3.0])

    hog.hog = Descriptor()
    frame = np.random.default_rng(0).integers(0, 256, (100, 40, 3), np.uint8)
    boxes = hog.detect([frame])[0]
    assert seen[0].shape == (min_height, min_width, 3)
    np.testing.assert_array_equal(seen[0][:100, :40], frame)
    np.testing.assert_array_equal(seen[0][100:, :40], np.repeat(frame[-1:], min_height - 100, axis=0))  # edge repeated
    np.testing.assert_allclose(boxes, [[23, 4, 40, 36, 2.0], [3, 66, 27, 100, 1.5]])
    at_the_bound = np.zeros((min_height, min_width, 3), np.uint8)
    hog.detect([at_the_bound])
    assert seen[1] is at_the_bound  # scanned as it is


def test_hog_gives_the_recorded_boxes_on_frames_of_the_size_it_scans_as_they_are():
    """The padding is for small frames alone: real clips' frames get the very boxes the unpadded
    detector recorded (the first frames with somebody in them, and the frame before each)."""
    hog = make_detector("hog")
    checked = 0
    for name, per_frame in recorded_hog_detections().items():
        found = [i for i, boxes in enumerate(per_frame) if len(boxes)][:2]
        wanted = {i + step for i in found for step in (-1, 0)}
        for index, frame in open_video(REAL_CLIPS / name).frames(0, max(wanted, default=-1) + 1):
            if index in wanted:
                np.testing.assert_array_equal(hog.detect([frame])[0], per_frame[index])
                checked += 1
    assert checked >= 8


def _moving_person_box(clip, frames_rgb) -> np.ndarray:
    """[cx, cy, h] of the largest region that differs from the empty room (the clip's first 40
    frames, before anyone comes in), median over frames_rgb: where the person really is."""
    empty = np.median(np.stack([f for _, f in open_video(clip).frames(0, 40)]), axis=0)
    boxes = []
    for frame in frames_rgb:
        moved = (np.abs(frame - empty).max(axis=-1) > 40).astype(np.uint8)
        moved = cv2.morphologyEx(moved, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))  # drop noise
        _, _, stats, _ = cv2.connectedComponentsWithStats(moved)
        x, y, w, h, _ = stats[1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])]
        boxes.append([x + w / 2, y + h / 2, h])
    return np.median(boxes, axis=0)


def test_hog_finds_and_tracks_a_real_person():
    """A person standing at the table of the real clip, detected by HOG alone (no model data)."""
    clip = REAL_CLIPS / "one-by-one-person-detection.mp4"
    start = 262
    frames = [(i - start, f) for i, f in open_video(clip).frames(start, start + 14)]
    people = stream_people(frames, make_detector("hog"))
    crops = []
    for _, frame_rgb, boxes in people:
        if boxes:
            crops.append(crop_people(frame_rgb, np.array([b for _, b in boxes])))
    tracklets = people.tracklets(min_track_frames=8)
    assert len(tracklets) >= 1
    longest = max(tracklets.values(), key=lambda t: len(t.frames))
    cx, cy, side = np.median(longest.bboxes, axis=0)[[0, 1, 3]]  # square boxes: side = height
    person_cx, person_cy, person_h = _moving_person_box(clip, [f for _, f in frames])
    # the track sits on the person (a tenth of their height) and is about as tall
    assert abs(cx - person_cx) < 0.1 * person_h and abs(cy - person_cy) < 0.1 * person_h
    assert 0.75 < side / person_h < 1.1
    assert crops and all(c.shape[1:] == (3, 224, 224) for c in crops)


def test_the_tracker_clocks_itself_without_the_detections_it_runs():
    """The schedule's ``tracking_s`` is the tracker's own time: a detection it runs on the spot
    (here a slow one) does not count, so the per-stage figures stay true when decoding and
    detection run in other threads."""
    import time

    from vibe_server.pipeline.people import DetectionSchedule

    class SlowDetector(ScriptedDetector):
        def detect(self, frames_rgb):
            time.sleep(0.2)
            return super().detect(frames_rgb)

    schedule = DetectionSchedule(SlowDetector(1), detection_stride=2)
    for index, frame in _frames(10):
        schedule.step(index, frame)  # detects on the spot at frames 0, 2, 4, 6, 8
    assert schedule.frames_detected == 5
    assert 0 < schedule.tracking_s < 0.5  # five detections took 1 s; tracking ten frames, milliseconds


def test_an_on_the_spot_detection_carries_the_next_unscheduled_frames_for_later_triggers():
    """Stride 4; a walker from frame 0 (a new track: triggers at 1, 2, 3 until SORT confirms it;
    then it moves away from its detected box at 6 and 10) and a second person from frame 12. With
    ``spot_batch_size`` 3 the call at frame 1 also detects 2 and 3, the one at 6 detects 7 and 9
    (8 is scheduled: never carried); triggers there use those boxes, the rest are dropped. The
    tracks are those of one frame per call."""
    from vibe_server.pipeline.people import DetectionSchedule

    def run(spot_batch_size):
        detector = ScriptedDetector(1)
        detector.spot_batch_size = spot_batch_size
        schedule = DetectionSchedule(detector, detection_stride=4, adaptive_detection=True)
        frames = list(_frames(16))
        reported = [schedule.step(index, frame, upcoming=iter(frames[index + 1 :])).tolist() for index, frame in frames]
        return schedule, detector.calls, reported

    one, one_calls, one_reported = run(1)
    ahead, ahead_calls, ahead_reported = run(3)
    assert one_calls == [[0], [1], [2], [3], [4], [6], [8], [10], [12], [13], [14], [15]]
    assert ahead_calls == [[0], [1, 2, 3], [4], [6, 7, 9], [8], [10, 11, 13], [12], [14, 15]]
    assert ahead_reported == one_reported and any(ahead_reported)
    assert ahead.extra_detections == one.extra_detections == {"unsettled": 6, "moved": 2}
    assert ahead.frames_detected == one.frames_detected == 12
    assert (ahead.spot_calls, ahead.spot_frames_sent) == (4, 11) and (one.spot_calls, one.spot_frames_sent) == (8, 8)


def test_on_the_spot_detections_in_batches_give_the_same_tracks_in_far_fewer_calls():
    """The real clip with OpenCV HOG's recorded boxes (flickering: many triggers), stride 8 with
    adaptive detection, on-the-spot calls carrying 8 frames against one: the same frames and boxes."""
    from .recorded_hog import RecordedHog

    clip = REAL_CLIPS / "one-by-one-person-detection.mp4"
    schedule = {"detection_stride": 8, "adaptive_detection": True}
    one_by_one = RecordedHog(clip, spot_batch_size=1)
    in_batches = RecordedHog(clip, spot_batch_size=8, digests=[(i, d) for d, i in one_by_one.index_of.items()])
    alone = stream_people(open_video(clip), one_by_one, **schedule)
    batched = stream_people(open_video(clip), in_batches, **schedule)
    for a, b in zip(alone, batched, strict=True):
        assert a.frame_index == b.frame_index and [t for t, _ in a.boxes] == [t for t, _ in b.boxes]
        for (_, box_a), (_, box_b) in zip(a.boxes, b.boxes, strict=True):
            np.testing.assert_array_equal(box_a, box_b)
    assert alone.extra_detections == batched.extra_detections
    assert alone.frames_detected == batched.frames_detected
    triggered = sum(alone.extra_detections.values())
    assert alone.schedule.spot_calls == triggered > 300  # HOG's flicker keeps tracks unsettled
    assert batched.schedule.spot_calls < triggered / 3  # measured: 585 triggers, 107 calls
    assert batched.schedule.spot_frames_sent <= 8 * batched.schedule.spot_calls
    assert max(in_batches.calls) == 8 and len(alone.tracklets(25)) >= 3


def test_frames_read_one_by_one_come_with_the_frames_ahead():
    from vibe_server.pipeline.people import with_frames_ahead

    pairs = [(i, f"frame {i}") for i in range(4)]
    assert [(i, ahead) for i, _, ahead in with_frames_ahead(pairs, 0)] == [(i, ()) for i in range(4)]
    got = [(i, frame, [j for j, _ in ahead]) for i, frame, ahead in with_frames_ahead(iter(pairs), 2)]
    assert got == [(0, "frame 0", [1, 2]), (1, "frame 1", [2, 3]), (2, "frame 2", [3]), (3, "frame 3", [])]


@pytest.mark.parametrize("stride", [2, 3, 4, 8])
def test_the_frames_held_ahead_always_hold_a_full_spot_batch(stride):
    from vibe_server.pipeline.people import DetectionSchedule

    detector = ScriptedDetector(1)
    detector.spot_batch_size = 8
    schedule = DetectionSchedule(detector, stride, adaptive_detection=True)
    held = schedule.frames_to_hold_ahead()
    for triggered in range(1, 3 * stride):
        ahead = range(triggered + 1, triggered + 1 + held)
        assert sum(not schedule.scheduled(i) for i in ahead) >= 7, (triggered, held)
    assert held <= 14

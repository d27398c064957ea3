"""One video on several devices at once (two CPU engines stand in for two GPUs) gives the result
of a one-device run: the same tracks, frames and boxes, the same poses."""

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from testdata import REAL_CLIPS

from vibe_blender.core.errors import VibeError
from vibe_server.pipeline.engine import Engine
from vibe_server.pipeline.options import RunOptions
from vibe_server.pipeline.progress import JobCancelled
from vibe_server.pipeline.segmented import run_across_devices, segment_bounds

from .conftest import TinyVIBE, progress_phases
from .late_jumps import record_decodes


def test_segments_cover_the_video_in_order():
    assert segment_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert segment_bounds(1394, 2) == [(0, 697), (697, 1394)]
    assert segment_bounds(5, 1) == [(0, 5)]


def test_cuts_move_onto_the_cheapest_jump_targets_within_reach():
    every_ten = range(16, 1394, 10)  # 16 frames after each keyframe
    assert segment_bounds(1394, 2, every_ten) == [(0, 696), (696, 1394)]
    assert segment_bounds(1394, 3, every_ten) == [(0, 466), (466, 926), (926, 1394)]
    assert segment_bounds(1189, 2, [16, 266, 516, 766, 1016]) == [(0, 516), (516, 1189)]
    # too far from the even cut (or none at all): the cut stays even
    assert segment_bounds(1000, 2, [16, 116]) == [(0, 500), (500, 1000)]
    assert segment_bounds(89, 2, [16]) == [(0, 44), (44, 89)]
    assert segment_bounds(89, 2) == [(0, 44), (44, 89)]


def _engine(gpu_front_end: bool = False) -> Engine:
    return Engine(TinyVIBE(), model_name="tiny", data_dir=None, device="cpu", gpu_front_end=gpu_front_end)


@pytest.mark.parametrize(
    "options",
    [
        RunOptions(detector="hog", min_track_frames=5, detection_stride=2, temporal_chunk_frames=4),
        RunOptions(
            detector="hog", min_track_frames=5, detection_stride=2, adaptive_detection=True, temporal_chunk_frames=5
        ),
        RunOptions(detector="hog", min_track_frames=5, official=True),
    ],
    ids=["stride 2", "stride 2 + adaptive", "official"],
)
@pytest.mark.parametrize("gpu_front_end", [False, True], ids=["streaming", "GPU front end"])  # (device crop in groups)
def test_two_devices_give_the_one_device_result(short_clip, options, gpu_front_end):
    one = _engine(gpu_front_end).run(short_clip, options).result
    engines = [_engine(gpu_front_end), _engine(gpu_front_end)]
    second_device_chunks = []
    forward = engines[1].model.forward_features

    def counting_forward(features, h0=None, **kwargs):
        second_device_chunks.append(h0 is not None)
        return forward(features, h0=h0, **kwargs)

    engines[1].model.forward_features = counting_forward
    split = run_across_devices(engines, short_clip, options).result
    assert [t.track_id for t in split.tracks] == [t.track_id for t in one.tracks] and one.tracks
    for a, b in zip(split.tracks, one.tracks, strict=True):
        np.testing.assert_array_equal(a.frame_ids, b.frame_ids)
        np.testing.assert_array_equal(a.bboxes, b.bboxes)
        np.testing.assert_allclose(a.pose, b.pose, rtol=0, atol=1e-5)
        np.testing.assert_allclose(a.joints3d, b.joints3d, rtol=0, atol=1e-5)
    # every GRU chunk that starts in the second half ran on the second device, and took over the
    # state of the chunk before it (on either device) unless it is a track's first, or the official
    # fresh state every 450 frames
    effective = options.effective()
    chunk = 450 if effective.chunking == "official" else effective.temporal_chunk_frames
    second_half = segment_bounds(split.video.frame_count, 2)[1][0]
    expected = [
        effective.chunking == "carry" and start > 0
        for track in one.tracks
        for start in range(0, len(track.frame_ids), chunk)
        if track.frame_ids[start] >= second_half
    ]
    assert second_device_chunks == expected
    assert expected or effective.chunking == "official"  # (one 450-frame chunk: all on the first device)
    assert split.video.frame_count == one.video.frame_count


def test_a_divided_run_s_on_the_spot_detections_carry_the_frames_ahead(short_clip, monkeypatch):
    """The adaptive tracking pass reads the video one frame at a time; where the detector says the
    frames ahead come for free (here HOG told so), its on-the-spot calls carry them, and the
    result is the one-device result with one frame per call."""
    from vibe_server.pipeline.detect.hog import HogDetector

    options = RunOptions(detector="hog", min_track_frames=5, detection_stride=4, adaptive_detection=True)
    one = _engine().run(short_clip, options).result
    calls = []
    detect = HogDetector.detect
    monkeypatch.setattr(
        HogDetector, "detect", lambda self, frames: (calls.append(len(frames)), detect(self, frames))[1]
    )
    monkeypatch.setattr(HogDetector, "spot_batch_size", 4, raising=False)
    split = run_across_devices([_engine(), _engine()], short_clip, options).result
    assert max(calls) == 4  # (scheduled frames are detected per segment, one HOG call per frame)
    assert calls.count(4) >= 3
    assert [t.track_id for t in split.tracks] == [t.track_id for t in one.tracks] and one.tracks
    for a, b in zip(split.tracks, one.tracks, strict=True):
        np.testing.assert_array_equal(a.frame_ids, b.frame_ids)
        np.testing.assert_array_equal(a.bboxes, b.bboxes)
        np.testing.assert_allclose(a.pose, b.pose, rtol=0, atol=1e-5)
    # without triggers nothing is detected on the spot: no frame is held ahead
    from vibe_server.pipeline import segmented

    held = []
    with_frames_ahead = segmented.with_frames_ahead
    monkeypatch.setattr(
        segmented, "with_frames_ahead", lambda frames, n: (held.append(n), with_frames_ahead(frames, n))[1]
    )
    run_across_devices([_engine(), _engine()], short_clip, options)
    run_across_devices([_engine(), _engine()], short_clip, replace(options, adaptive_detection=False))
    assert held == [4, 0]


def test_the_gru_state_crosses_devices_inside_a_track(short_clip):
    """Three devices: the walker's track runs through the second cut, so its chunk after the cut
    starts, on the third device, from the state the second device left; the result is still the
    one-device result."""
    options = RunOptions(detector="hog", min_track_frames=5, detection_stride=2, temporal_chunk_frames=4)
    engines = [_engine(), _engine(), _engine()]
    handed_over = []
    forward = engines[2].model.forward_features
    engines[2].model.forward_features = lambda x, h0=None, **kw: (
        handed_over.append(h0 is not None),
        forward(x, h0=h0, **kw),
    )[1]
    split = run_across_devices(engines, short_clip, options).result
    one = _engine().run(short_clip, options).result
    cut = segment_bounds(split.video.frame_count, 3)[2][0]
    assert any(t.frame_ids[0] < cut <= t.frame_ids[-1] for t in split.tracks)
    assert handed_over and all(handed_over)
    for a, b in zip(split.tracks, one.tracks, strict=True):
        np.testing.assert_allclose(a.pose, b.pose, rtol=0, atol=1e-5)


def test_each_device_decodes_only_its_segment_and_a_missed_jump_is_decoded_again(short_clip, monkeypatch):
    """The clip's every frame is a keyframe, so the second device jumps to its cut; when a jump lands
    on the wrong frame, the check where the segments meet catches it and that segment is decoded again
    from the first frame: the result is still the one-device result."""
    options = RunOptions(detector="hog", min_track_frames=5, detection_stride=2, temporal_chunk_frames=4)
    one = _engine().run(short_clip, options).result
    with pytest.MonkeyPatch.context() as patch:
        decodes = record_decodes(patch)
        run_across_devices([_engine(), _engine()], short_clip, options)
    assert (12, True) in decodes and all(jumped for start, jumped in decodes if start)  # nothing decoded twice

    decodes = record_decodes(monkeypatch, late_everywhere=True)
    split = run_across_devices([_engine(), _engine()], short_clip, options).result
    assert (12, False) in decodes  # the second segment, decoded again from the first frame
    for a, b in zip(split.tracks, one.tracks, strict=True):
        np.testing.assert_array_equal(a.frame_ids, b.frame_ids)
        np.testing.assert_array_equal(a.bboxes, b.bboxes)
        np.testing.assert_allclose(a.pose, b.pose, rtol=0, atol=1e-5)


def test_a_jump_that_misses_only_in_the_second_pass_is_caught_too(short_clip, monkeypatch):
    """The backbone's pass jumps again; where that jump lands elsewhere than the detection pass's
    did, the segment's features are made again from an exact decode."""
    options = RunOptions(detector="hog", min_track_frames=5, detection_stride=2, temporal_chunk_frames=4)
    one = _engine().run(short_clip, options).result
    decodes = record_decodes(monkeypatch, late_at=(12,), late_from_jump=2)
    split = run_across_devices([_engine(), _engine()], short_clip, options).result
    assert decodes.count((12, True)) == 2 and (12, False) in decodes
    for a, b in zip(split.tracks, one.tracks, strict=True):
        np.testing.assert_array_equal(a.frame_ids, b.frame_ids)
        np.testing.assert_allclose(a.pose, b.pose, rtol=0, atol=1e-5)


def test_a_divided_run_carries_the_warnings_of_its_track_selection(short_clip, monkeypatch):
    from vibe_server.pipeline import segmented

    select_tracks = segmented.select_tracks  # as when more people were tracked than a result holds:
    monkeypatch.setattr(
        segmented, "select_tracks", lambda *a: (select_tracks(*a)[0], ["only the longest tracks are kept"])
    )
    options = RunOptions(detector="hog", min_track_frames=5, detection_stride=2)
    output = run_across_devices([_engine(False), _engine(False)], short_clip, options)
    assert output.result.tracks and output.warnings == ["only the longest tracks are kept"]
    assert output.result.meta["warnings"] == "only the longest tracks are kept"


def test_one_engine_is_a_plain_run(short_clip):
    options = RunOptions(detector="hog", min_track_frames=5)
    a = run_across_devices([_engine()], short_clip, options).result
    b = _engine().run(short_clip, options).result
    for x, y in zip(a.tracks, b.tracks, strict=True):
        np.testing.assert_array_equal(x.pose, y.pose)


def test_nobody_in_the_video_is_the_one_clear_error(short_clip, monkeypatch):
    from vibe_blender.core.errors import VibeError

    # (24 frames: within the slack of a container's count, so decoded; a longer minimum is refused before)
    options = RunOptions(detector="hog", min_track_frames=26)
    with pytest.raises(VibeError, match="Nobody was found"):
        run_across_devices([_engine(), _engine()], short_clip, options)


class SlowDetector:
    """Takes ``delay_s`` a call (a long segment's detection on a GPU); ``fail``: raises at once."""

    batch_size = 1

    def __init__(self, delay_s: float = 0.0, fail: BaseException | None = None):
        self.delay_s, self.fail, self.calls = delay_s, fail, 0

    def detect(self, frames):
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        time.sleep(self.delay_s)
        return [np.zeros((0, 5), np.float32) for _ in frames]


def _engines_with(*detectors) -> list[Engine]:
    engines = []
    for detector in detectors:
        engine = _engine()
        engine.frontend = replace(engine._frontend(), make_detector=lambda name, d=detector, **kw: d)
        engines.append(engine)
    return engines


def _segment_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("segment") and t.is_alive()]


LONG_CLIP = REAL_CLIPS / "one-by-one-person-detection.mp4"  # 1,394 frames: 697 a segment
EVERY_FRAME = RunOptions(detector="yolo", detection_stride=1, adaptive_detection=False)


def test_an_error_in_one_segment_stops_the_others_at_once():
    """The second device fails at its first frame: the run raises that at once, while the first is
    still detecting (it stops at its next frame; it used to detect its whole segment first), and no
    segment thread is left running."""
    slow = SlowDetector(delay_s=0.05)
    engines = _engines_with(slow, SlowDetector(fail=RuntimeError("the second GPU broke")))
    with pytest.raises(RuntimeError, match="the second GPU broke"):
        run_across_devices(engines, LONG_CLIP, EVERY_FRAME)
    assert slow.calls < 200  # of 697 (50 ms each: the run stops it within seconds, not its whole segment)
    assert not _segment_threads()


class _NoJumpsSlowGrabs:
    """An OpenCV capture whose container cannot jump (``set`` fails) and whose grabs take a while
    (a long video's frames before a late segment's start); counts the grabs once ``after`` is set."""

    def __init__(self, capture, after: list, grabs_after: list):
        self._capture, self._after, self._grabs_after = capture, after, grabs_after

    def set(self, prop, value):
        return False

    def grab(self):
        time.sleep(0.005)
        if self._after:
            self._grabs_after.append(1)
        return self._capture.grab()

    def __getattr__(self, name):
        return getattr(self._capture, name)


def test_an_error_stops_a_segment_still_dropping_the_frames_before_its_start(monkeypatch):
    """The second segment's container cannot jump, so it decodes from the first frame and drops
    the ~700 frames before its start; the first device fails at its first frame: the second stops
    there too, at its next frame (it used to drop every frame up to its start first, minutes on a
    long video, while the run waited for it)."""
    from vibe_server.pipeline.video import VideoReader

    failed, grabs_after = [], []
    open_capture = VideoReader._open_capture
    monkeypatch.setattr(
        VideoReader,
        "_open_capture",
        lambda self, raw_packets=False: (
            open_capture(self, raw_packets=True)
            if raw_packets  # (the keyframe scan reads packets: not slowed)
            else _NoJumpsSlowGrabs(open_capture(self), failed, grabs_after)
        ),
    )

    class Failing(SlowDetector):
        def detect(self, frames):
            failed.append(True)
            raise RuntimeError("the first GPU broke")

    with pytest.raises(RuntimeError, match="the first GPU broke"):
        run_across_devices(_engines_with(Failing(), SlowDetector()), LONG_CLIP, EVERY_FRAME)
    assert failed and len(grabs_after) < 500  # of ~700 (5 ms each: a few seconds for the run to stop it)
    assert not _segment_threads()


@pytest.mark.parametrize("interrupt", [JobCancelled, KeyboardInterrupt])
def test_a_cancel_or_ctrl_c_stops_the_segments_at_their_next_frame(interrupt):
    """should_cancel is asked while the segments run (not only between stages); Ctrl-C in the run's
    thread (here raised by should_cancel, which runs there) stops them the same way."""
    detectors = [SlowDetector(delay_s=0.05), SlowDetector(delay_s=0.05)]
    asked = []

    def should_cancel():
        asked.append(True)
        if len(asked) >= 4:
            if interrupt is KeyboardInterrupt:
                raise KeyboardInterrupt
            return True
        return False

    with pytest.raises(interrupt):
        run_across_devices(_engines_with(*detectors), LONG_CLIP, EVERY_FRAME, should_cancel=should_cancel)
    assert all(d.calls < 40 for d in detectors)  # of 697 each
    assert not _segment_threads()


def test_each_phase_of_the_progress_reaches_its_end_before_the_next(short_clip):
    reports = []
    options = RunOptions(detector="hog", min_track_frames=5, smoothing=0.5)
    run_across_devices([_engine(), _engine()], short_clip, options, progress=lambda *report: reports.append(report))
    assert progress_phases(reports) == [("stream", 1.0), ("temporal", 1.0), ("smpl", 1.0), ("write", 1.0)]


def test_the_time_of_the_segments_is_told_per_stage(short_clip):
    """The segments' decoding and cropping ran inside the detect and backbone steps, which took all of
    their time: the timing table said decode 0.00 and crop 0.00."""
    timings = run_across_devices(
        [_engine(), _engine()], short_clip, RunOptions(detector="hog", min_track_frames=5)
    ).timings_s
    assert all(timings[stage] > 0 for stage in ("decode", "detect", "track", "crop", "backbone")), timings


def test_a_video_shorter_than_the_minimum_track_length_is_said_before_the_segments_run(short_clip):
    detectors = [SlowDetector(), SlowDetector()]
    with pytest.raises(VibeError, match="is shorter than the minimum track length: it has 24 frames, and a track must"):
        run_across_devices(_engines_with(*detectors), short_clip, replace(EVERY_FRAME, min_track_frames=50))
    assert all(d.calls == 0 for d in detectors)


def _detect_progress(clip, delay_s: float) -> list[float]:
    """The detect step's progress fractions of a run across two devices whose detectors find nobody."""
    reports = []
    engines = _engines_with(SlowDetector(delay_s=delay_s), SlowDetector(delay_s=delay_s))
    with pytest.raises(VibeError, match="Nobody was found"):  # (the fake detector finds nobody)
        run_across_devices(
            engines,
            clip,
            replace(EVERY_FRAME, min_track_frames=1),
            progress=lambda stage, fraction, eta: reports.append((stage, fraction)),
        )
    return [fraction for stage, fraction in reports if stage == "detect"]


def test_the_progress_moves_while_the_segments_detect(short_clip):
    during = [fraction for fraction in _detect_progress(short_clip, 0.1) if 0 < fraction]
    assert len(during) >= 2 and during == sorted(during)


def test_the_progress_never_goes_back_when_a_segment_is_decoded_again(monkeypatch):
    """Every jump missed here, so the second segment is decoded again from the first frame after
    the detection pass: its frames count from 0 once more, and the bar holds where it stood (it
    used to drop back to the start of the detect step)."""
    from vibe_server.pipeline.video import VideoSegment

    monkeypatch.setattr(VideoSegment, "continues", lambda self, earlier: False)
    decodes = record_decodes(monkeypatch)
    detect = _detect_progress(LONG_CLIP, 0.002)
    assert any(start > 0 and not jumped for start, jumped in decodes)  # decoded again
    assert len(detect) >= 4 and detect == sorted(detect)

"""The staged front end (decode, detect and track overlapping, for a GPU) against the streaming one."""

import threading
import time

import numpy as np
import pytest
import torch

from vibe_server.pipeline.people import stream_people
from vibe_server.pipeline.staged import StagedPeopleStream, stream_people_staged


def moving_people_frames(n: int = 90, size: tuple[int, int] = (120, 200)):
    """Frames with two bright blocks walking across a dark room, a third appearing half-way."""
    height, width = size
    frames = []
    for t in range(n):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[0, 0, 1] = t % 251  # the frame's number, for the detector's misses
        for x0, speed, start in ((10, 1.5, 0), (150, -1.0, 0), (80, 0.5, n // 2)):
            if t >= start:
                x = int(x0 + speed * (t - start)) % (width - 20)
                frame[30 : 30 + 60, x : x + 20] = 255
        frames.append(frame)
    return frames


class BlockDetector:
    """Finds the bright blocks by their columns (a real, cheap computation on the pixels); misses
    everyone on every 7th frame, as a real detector misses now and then."""

    def __init__(self, batch_size: int = 3, fail_on_call: int | None = None, delay_s: float = 0.0):
        self.batch_size, self.calls, self.fail_on_call, self.delay_s = batch_size, 0, fail_on_call, delay_s
        self.lock = threading.Lock()

    def detect(self, frames_rgb):
        with self.lock:
            self.calls += 1
            call = self.calls
        if call == self.fail_on_call:
            raise RuntimeError("the detector broke")
        time.sleep(self.delay_s)
        out = []
        for frame in frames_rgb:
            columns = frame[1:, :, 0].max(axis=0) > 0
            edges = np.flatnonzero(np.diff(np.concatenate([[0], columns.astype(int), [0]])))
            boxes = [[x1, 28, x2, 92, 0.9] for x1, x2 in zip(edges[::2], edges[1::2], strict=True)]
            out.append(np.array([] if frame[0, 0, 1] % 7 == 3 else boxes, np.float32).reshape(-1, 5))
        return out


def indexed(frames):
    return list(enumerate(frames))


@pytest.mark.parametrize("stride, adaptive", [(1, False), (4, False), (4, True), (8, True)])
def test_staged_stream_yields_exactly_what_the_streaming_one_yields(stride, adaptive):
    frames = moving_people_frames()
    schedule = {"detection_stride": stride, "adaptive_detection": adaptive}
    plain = stream_people(indexed(frames), BlockDetector(), **schedule)
    staged = stream_people_staged(indexed(frames), BlockDetector(), **schedule)
    a, b = list(plain), list(staged)
    assert len(a) == len(b) == len(frames)
    for x, y in zip(a, b, strict=True):
        assert x.frame_index == y.frame_index and x.frame_rgb is frames[x.frame_index] and y.frame_rgb is x.frame_rgb
        assert [t for t, _ in x.boxes] == [t for t, _ in y.boxes]
        for (_, box_a), (_, box_b) in zip(x.boxes, y.boxes, strict=True):
            np.testing.assert_array_equal(box_a, box_b)
    assert sum(len(f.boxes) for f in a) > 100  # people were tracked, not two empty streams
    assert plain.frames_detected == staged.frames_detected
    assert plain.extra_detections == staged.extra_detections
    ta, tb = plain.tracklets(10), staged.tracklets(10)
    assert ta.keys() == tb.keys() and len(ta) >= 2
    for track_id in ta:
        np.testing.assert_array_equal(ta[track_id].frames, tb[track_id].frames)
        np.testing.assert_array_equal(ta[track_id].bboxes, tb[track_id].bboxes)


def test_detection_stays_a_bounded_number_of_runs_ahead_of_the_tracker():
    """Memory stays bounded: while the consumer is slow, detection is never more than the queue
    (plus the run being handed over and the one being detected) ahead."""
    detector = BlockDetector(batch_size=2)
    stream = StagedPeopleStream(indexed(moving_people_frames(120)), detector, detection_stride=1, queue_runs=2)
    for consumed, _ in enumerate(stream, start=1):
        time.sleep(0.002)
        runs_consumed = (consumed + 1) // 2
        assert detector.calls <= runs_consumed + 2 + 1
    assert detector.calls == 60


def test_a_consumer_that_stops_early_releases_the_detect_thread():
    stream = stream_people_staged(indexed(moving_people_frames(200)), BlockDetector(delay_s=0.001))
    iterator = iter(stream)
    for _ in range(5):
        next(iterator)
    iterator.close()  # what a cancelled run does
    deadline = time.monotonic() + 5
    while any(t.name == "detect" and t.is_alive() for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "detect" and t.is_alive() for t in threading.enumerate())


def test_an_error_while_detecting_reaches_the_consumer():
    stream = stream_people_staged(indexed(moving_people_frames()), BlockDetector(fail_on_call=4))
    with pytest.raises(RuntimeError, match="the detector broke"):
        for _ in stream:
            pass


def test_a_staged_stream_can_be_iterated_only_once():
    stream = stream_people_staged(indexed(moving_people_frames(10)), BlockDetector())
    list(stream)
    with pytest.raises(RuntimeError, match="only once"):
        list(stream)


def test_the_gpu_front_end_on_a_cpu_gives_the_streaming_results(short_clip, monkeypatch):
    """The whole engine with the real front end (HOG, the bundled walk), once streaming with
    OpenCV's crop and once staged with the device crop (grid_sample, here on the CPU): the same
    tracks, frames and boxes; the poses differ only by the crops' few grey levels."""
    from vibe_server.pipeline import engine as engine_module
    from vibe_server.pipeline.engine import Engine
    from vibe_server.pipeline.options import RunOptions

    from .conftest import TinyVIBE

    options = RunOptions(detector="hog", min_track_frames=5, detection_stride=2, adaptive_detection=True)
    results, readers = [], []
    monkeypatch.setattr(engine_module, "DECODE_WORKERS", 3)  # (as on a 12-core machine)
    for gpu_front_end in (False, True):
        engine = Engine(TinyVIBE(), model_name="tiny", data_dir=None, device="cpu", gpu_front_end=gpu_front_end)
        engine.open_video = lambda path, open_video=engine.open_video: readers.append(open_video(path)) or readers[-1]
        results.append(engine.run(short_clip, options).result)
    assert [r.decode_workers for r in readers] == [1, 3]  # the GPU front end decodes in threads
    streaming, staged = results
    assert len(streaming.tracks) == len(staged.tracks) >= 1
    for a, b in zip(streaming.tracks, staged.tracks, strict=True):
        np.testing.assert_array_equal(a.frame_ids, b.frame_ids)
        np.testing.assert_array_equal(a.bboxes, b.bboxes)
        np.testing.assert_allclose(a.pose, b.pose, atol=2e-3)
        assert not np.array_equal(a.pose, b.pose)  # the device crop did run
    official = Engine(TinyVIBE(), model_name="tiny", data_dir=None, device="cpu", gpu_front_end=True)
    again = official.run(short_clip, RunOptions(detector="hog", min_track_frames=5, official=True)).result
    reference = Engine(TinyVIBE(), model_name="tiny", data_dir=None, device="cpu").run(
        short_clip, RunOptions(detector="hog", min_track_frames=5, official=True)
    )
    for a, b in zip(again.tracks, reference.result.tracks, strict=True):
        np.testing.assert_array_equal(a.pose, b.pose)  # --official keeps OpenCV's crop on any front end


def test_detection_on_a_cpu_runs_in_the_callers_stream():
    from types import SimpleNamespace

    from vibe_server.pipeline.staged import detection_stream

    assert detection_stream(BlockDetector()) is None  # no device: the caller's
    assert detection_stream(SimpleNamespace(device="cpu")) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CI has none; the CPU branch is above)")
def test_detection_on_a_gpu_gets_a_stream_on_the_detectors_device():
    from types import SimpleNamespace

    from vibe_server.pipeline.staged import detection_stream

    stream = detection_stream(SimpleNamespace(device="cuda:0"))
    assert isinstance(stream, torch.cuda.Stream) and stream.device == torch.device("cuda:0")


def test_the_device_crop_takes_frames_in_groups_with_the_frame_by_frame_result(monkeypatch):
    """The GPU front end crops up to CROP_GROUP_FRAMES frames with people in one call (a GPU's
    launches and copies paid once): the same tracks and poses as one frame a call, also for a
    pending track seen again while its frames wait in a group, and a stale one freed."""
    import dataclasses
    import weakref

    from vibe_server.pipeline import engine as engine_module
    from vibe_server.pipeline.batched.crop import crop_people_on_device
    from vibe_server.pipeline.engine import Engine
    from vibe_server.pipeline.options import RunOptions

    from .conftest import ScriptedFrontEnd, TinyVIBE

    # track 1: three frames, then again 60 frames later (kept: 7 frames); track 3: three frames, then
    # again after it went stale (dropped: a new buffer of 3 < 5 frames); track 2 all along; track 4 in
    # the last 6 frames (kept: cropped when the stream ends, inside a group)
    seen = {1: [0, 1, 2, 62, 63, 64, 65], 2: range(5, 40), 3: [10, 11, 12, 90, 91, 92], 4: range(98, 104)}
    gradient = np.linspace(0, 200, 320, dtype=np.float32)[None, :, None]

    def stream_people(reader, detector, **schedule):
        for index, _ in reader:
            frame = np.broadcast_to(gradient + index % 50, (240, 320, 3)).astype(np.uint8)
            people = [
                (tid, np.array([60.0 + 3 * tid + index, 120.0, 70.0, 90.0])) for tid in seen if index in seen[tid]
            ]
            yield index, frame, people

    calls, batches = [], []  # frames in each call; each call's crops (weakly: are they freed?)
    alive_at_call = []  # the earlier calls' crop batches still in memory at each call

    def counted_crop(frames, boxes, device):
        calls.append(len(frames))
        alive_at_call.append(sum(batch() is not None for batch in batches))
        crops = crop_people_on_device(frames, boxes, device)
        batches.append(weakref.ref(crops))
        return crops

    script = ScriptedFrontEnd(num_frames=104)
    frontend = dataclasses.replace(
        script.as_frontend(), stream_people_staged=stream_people, crop_people_on_device=counted_crop
    )
    results = {}
    for group_frames in (1, engine_module.CROP_GROUP_FRAMES):
        monkeypatch.setattr(engine_module, "CROP_GROUP_FRAMES", group_frames)
        calls.clear()
        engine = Engine(TinyVIBE(), model_name="tiny", data_dir=None, frontend=frontend, gpu_front_end=True)
        results[group_frames] = engine.run("walk.mp4", RunOptions(detector="hog", min_track_frames=5)).result
        assert max(calls) == group_frames
    # 51 frames with people: 51 calls of one frame, or 8 of the frames within 8 of each other
    assert calls == [6, 8, 8, 8, 8, 4, 3, 6]  # 0-7 (6 with people), 8-39 (4 x 8), 62-65, 90-92, 98-103
    one_by_one, grouped = results.values()
    # with one crop a backbone call, a group's batch is freed at once: a short track's crops waiting
    # for it to reach min_track_frames are copies, which do not keep their group's whole batch
    batches.clear(), alive_at_call.clear()
    engine.run("walk.mp4", RunOptions(detector="hog", min_track_frames=5, batch_size=1))
    assert alive_at_call == [0] * 8
    expected = [[0, 1, 2, 62, 63, 64, 65], list(range(5, 40)), list(range(98, 104))]
    assert [list(t.frame_ids) for t in grouped.tracks] == expected
    for a, b in zip(one_by_one.tracks, grouped.tracks, strict=True):
        np.testing.assert_array_equal(a.frame_ids, b.frame_ids)
        np.testing.assert_array_equal(a.pose, b.pose)
        np.testing.assert_array_equal(a.joints3d, b.joints3d)


class SpotBatchDetector(BlockDetector):
    """BlockDetector whose on-the-spot detections carry the frames ahead (as YOLO on a GPU)."""

    spot_batch_size = property(lambda self: self.batch_size)


@pytest.mark.parametrize("stride", [20, 100])
def test_a_run_holds_a_bounded_number_of_frames_whatever_the_stride(stride, monkeypatch):
    """A run ends at RUN_FRAMES_MAX frames even before it holds a detector batch of scheduled
    frames (stride x batch frames), with the tracks of runs as long as the batch makes them."""
    from vibe_server.pipeline import people as people_module
    from vibe_server.pipeline.people import RUN_FRAMES_MAX, PeopleStream

    frame = np.zeros((4, 4, 3), np.uint8)
    long_runs = PeopleStream(((i, frame) for i in range(20_000)), BlockDetector(batch_size=8), detection_stride=1000)
    runs = [len(run) for run in long_runs._detection_batches()]
    assert sum(runs) == 20_000 and max(runs) <= RUN_FRAMES_MAX

    frames = moving_people_frames(400)
    schedule = {"detection_stride": stride, "adaptive_detection": True}
    bounded = list(stream_people_staged(indexed(frames), SpotBatchDetector(batch_size=8), **schedule))
    monkeypatch.setattr(people_module, "RUN_FRAMES_MAX", 10**9)
    unbounded = list(stream_people_staged(indexed(frames), SpotBatchDetector(batch_size=8), **schedule))
    assert sum(len(f.boxes) for f in bounded) > 300  # people were tracked
    for x, y in zip(bounded, unbounded, strict=True):
        assert x.frame_index == y.frame_index and [t for t, _ in x.boxes] == [t for t, _ in y.boxes]
        for (_, box_a), (_, box_b) in zip(x.boxes, y.boxes, strict=True):
            np.testing.assert_array_equal(box_a, box_b)


@pytest.mark.parametrize("staged", [False, True])
def test_the_frames_the_runs_hold_at_once_stay_within_a_byte_budget(staged, monkeypatch):
    """Large frames make shorter runs: the frames alive at once (the staged front end's runs waiting,
    the tracker's, the one being filled) hold no more than RUNS_BYTES_MAX, where runs of 64 frames
    would hold 256 of them (6.4 GB of 4K frames). Measured here with a budget scaled down to
    small frames, and with a tracker slower than detection, so that the queue fills up."""
    import weakref

    from vibe_server.pipeline import people as people_module

    shape = (60, 80, 3)
    budget_frames = 40
    monkeypatch.setattr(people_module, "RUNS_BYTES_MAX", budget_frames * int(np.prod(shape)))
    alive, most = [0], [0]

    def gone():
        alive[0] -= 1

    def frames(n):
        for i in range(n):
            frame = np.zeros(shape, np.uint8)
            alive[0] += 1
            most[0] = max(most[0], alive[0])
            weakref.finalize(frame, gone)
            yield i, frame
            del frame

    make = stream_people_staged if staged else stream_people
    stream = make(frames(1500), BlockDetector(batch_size=8), detection_stride=8)
    for item in stream:
        del item
        time.sleep(0.0002)
    assert most[0] <= budget_frames + 1  # (+1: the frame the reader is handing over)
    runs_alive = 4 if staged else 1
    assert stream.run_frames(np.zeros(shape, np.uint8)) == budget_frames // runs_alive
    assert stream.run_frames(np.zeros((4320, 7680, 3), np.uint8)) == people_module.RUN_FRAMES_MIN  # 8K

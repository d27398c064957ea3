"""The engine's memory stays bounded for any video: how many tracks a temporal-model call takes,
what a young track holds, what the stale-track sweep looks at."""

import numpy as np
import pytest

from vibe_blender.core.errors import VibeError
from vibe_server.pipeline import engine as engine_module
from vibe_server.pipeline.engine import Engine
from vibe_server.pipeline.options import RunOptions

from .conftest import TinyVIBE


def spied_engine(**kw):
    model = TinyVIBE()
    calls = []
    forward = model.forward_features

    def spy(x, h0=None, **k):
        calls.append(tuple(x.shape[:2]))
        return forward(x, h0=h0, **k)

    model.forward_features = spy
    return Engine(model, model_name="tiny", data_dir=None, device="cpu", gpu_front_end=True, **kw), calls


@pytest.mark.parametrize("chunking", ["carry", "official"])
def test_the_temporal_model_takes_a_bounded_number_of_tracks_a_call_with_the_same_results(chunking, monkeypatch):
    monkeypatch.setattr(engine_module, "OFFICIAL_CHUNK_FRAMES", 9)
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(int(n), 2048)).astype(np.float32) for n in rng.integers(1, 40, 30)]
    engine, calls = spied_engine()
    whole = engine.temporal_tracks(features, chunking=chunking, chunk_frames=7, batch_frames=10**9)
    assert max(n for n, _ in calls) == len(features)  # uncapped: every track in the first call
    calls.clear()
    capped = engine.temporal_tracks(features, chunking=chunking, chunk_frames=7, batch_frames=30)
    frames_per_call = 7 if chunking == "carry" else 9
    assert max(n * t for n, t in calls) <= max(30, frames_per_call)
    assert max(n for n, _ in calls) == max(1, 30 // frames_per_call)
    for f, a, b in zip(features, whole, capped, strict=True):
        assert a["theta"].shape == (len(f), 85)
        np.testing.assert_allclose(b["theta"], a["theta"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(b["kp_3d"], a["kp_3d"], rtol=0, atol=1e-6)


def test_a_long_video_s_tracks_never_go_through_the_temporal_model_all_at_once():
    """40 tracks (uncapped: a call of 40 x 256 frames): each call within TEMPORAL_BATCH_FRAMES."""
    rng = np.random.default_rng(0)
    features = [np.zeros((int(n), 2048), np.float32) for n in rng.integers(30, 300, 40)]
    engine, calls = spied_engine()
    out = engine.temporal_tracks(features, chunking="carry", chunk_frames=256)
    assert len(out) == 40
    assert max(n * t for n, t in calls) <= engine_module.TEMPORAL_BATCH_FRAMES


def scripted_engine(seen: dict, num_frames: int, **kw):
    """An engine whose people are ``seen`` = {track_id: frames}; each track id may come back."""
    import dataclasses

    from .conftest import ScriptedFrontEnd

    scripted = ScriptedFrontEnd(num_frames=num_frames)

    def stream_people(reader, detector, **schedule):
        for index, frame in reader:
            people = [
                (tid, np.array([60.0 + 3 * tid + index, 120.0, 70.0, 70.0])) for tid in seen if index in seen[tid]
            ]
            yield index, frame, people

    frontend = dataclasses.replace(scripted.as_frontend(), stream_people=stream_people)
    return Engine(TinyVIBE(), model_name="tiny", data_dir=None, device="cpu", frontend=frontend, **kw)


def held_crops_spy(monkeypatch):
    """The most crops any young track held after each crop it got."""
    most = [0]
    add = engine_module._StreamTracks.add

    def spy(self, track_id, *args, **kw):
        add(self, track_id, *args, **kw)
        most[0] = max(most[0], len(self.buffers[track_id].pending_crops or ()))

    monkeypatch.setattr(engine_module._StreamTracks, "add", spy)
    return most


def test_a_young_track_holds_features_not_crops_past_a_few_crops_with_the_same_result(monkeypatch):
    """min_track_frames far above PENDING_CROPS_MAX: a young track holds at most that many crops;
    the kept tracks' poses equal those of holding every crop, and a track dropped as stale after
    its crops went on early leaves nothing behind (its id coming back starts afresh)."""
    from vibe_server.pipeline.options import RunOptions

    # track 1: 45 frames (kept); track 2: 30 frames, gone for 70 (stale), then 40 frames (kept, 40
    # frames only); track 3: 20 frames (dropped at the end, too short)
    seen = {1: range(0, 45), 2: [*range(0, 30), *range(100, 140)], 3: range(115, 135)}
    options = RunOptions(detection_stride=1, min_track_frames=35)
    most = held_crops_spy(monkeypatch)
    monkeypatch.setattr(engine_module, "PENDING_CROPS_MAX", 8)
    bounded = scripted_engine(seen, 140).run("clip.mp4", options).result
    assert most[0] == 8 - 1  # sent on at the 8th
    monkeypatch.setattr(engine_module, "PENDING_CROPS_MAX", 10**9)
    most[0] = 0
    reference = scripted_engine(seen, 140).run("clip.mp4", options).result
    assert most[0] == 35 - 1  # every crop held until the track has 35 frames
    assert [t.track_id for t in bounded.tracks] == [t.track_id for t in reference.tracks] == [1, 2]
    np.testing.assert_array_equal(bounded.track(2).frame_ids, np.arange(100, 140))
    for a, b in zip(bounded.tracks, reference.tracks, strict=True):
        np.testing.assert_array_equal(a.frame_ids, b.frame_ids)
        np.testing.assert_allclose(a.pose, b.pose, rtol=0, atol=1e-6)


def test_a_huge_min_track_frames_holds_few_crops(monkeypatch):
    from vibe_blender.core.errors import VibeError
    from vibe_server.pipeline.options import MAX_MIN_TRACK_FRAMES, RunOptions

    most = held_crops_spy(monkeypatch)
    engine = scripted_engine({1: range(100)}, 100)
    open_video = engine.frontend.open_video

    def truncated(path, stopped=None):  # its header announces as many frames as a track must last (a shorter
        reader = open_video(path, stopped=stopped)  # clip is refused before its decode)
        reader.info.frame_count = MAX_MIN_TRACK_FRAMES
        return reader

    engine.frontend.open_video = truncated
    with pytest.raises(VibeError, match="Nobody was found"):
        engine.run("clip.mp4", RunOptions(min_track_frames=MAX_MIN_TRACK_FRAMES))
    assert most[0] < engine_module.PENDING_CROPS_MAX


def test_the_stale_track_sweep_looks_only_at_young_tracks_that_may_be_stale(monkeypatch):
    """1,000 finished tracks: the sweep each frame reads none of them (it read every track ever
    seen, every frame)."""
    from vibe_server.pipeline.options import RunOptions

    reads = [0]

    class CountedBuffer(engine_module._TrackBuffer):
        @property
        def last_seen(self):
            reads[0] += 1
            return self._last_seen

        @last_seen.setter
        def last_seen(self, value):
            self._last_seen = value

    monkeypatch.setattr(engine_module, "_TrackBuffer", CountedBuffer)
    seen = {tid: [tid // 4] for tid in range(1000)}  # 4 one-frame tracks a frame for 250 frames
    seen[1000] = range(0, 600)
    engine = scripted_engine(seen, 600)
    out = engine.run("clip.mp4", RunOptions(detection_stride=1, min_track_frames=1, tracks_max=1))
    assert [t.track_id for t in out.result.tracks] == [1000]
    assert reads[0] < 600 * 4


def test_smoothing_recomputes_the_joints_without_keeping_the_vertices(tiny_engine, monkeypatch):
    """The joints of a smoothed track come from SMPL a batch at a time; no batch's vertices
    outlive the next one (the vertices of a whole track were built and copied to the host)."""
    import weakref

    from vibe_server.pipeline.options import RunOptions

    smpl = tiny_engine.model.regressor.smpl
    forward, verts_made, most_alive = smpl.forward_joints, [], [0]

    def spy(betas, rotmat):
        most_alive[0] = max(most_alive[0], sum(v() is not None for v in verts_made))
        verts, joints = forward(betas, rotmat)
        verts_made.append(weakref.ref(verts))
        return verts, joints

    monkeypatch.setattr(smpl, "forward_joints", spy)
    pose = np.random.default_rng(0).normal(scale=0.3, size=(600, 72)).astype(np.float32)
    betas = np.zeros((600, 10), np.float32)
    joints = tiny_engine.smpl_joints(pose, betas, batch=50)
    assert len(verts_made) == 12 and most_alive[0] <= 1
    np.testing.assert_array_equal(joints, tiny_engine.smpl(pose, betas, batch=50)[1])

    monkeypatch.setattr(tiny_engine, "smpl", lambda *a, **k: pytest.fail("vertices copied for a run"))
    smooth = tiny_engine.run("clip.mp4", RunOptions(smoothing=1.0)).result.track(1)
    np.testing.assert_array_equal(smooth.joints3d, tiny_engine.smpl_joints(smooth.pose, smooth.betas))


def test_an_official_run_gets_yolo_with_the_per_frame_post_processing(make_engine):
    """--official keeps the official code's exact merge-NMS, frame by frame, on any device: on a GPU
    (which otherwise merges a batch's boxes on the device) a detector of its own; on a CPU, where
    every run post-processes frame by frame, the same detector."""
    import dataclasses

    from vibe_blender.core.errors import VibeError
    from vibe_server.pipeline.options import RunOptions

    from .conftest import ScriptedFrontEnd

    on_cpu = make_engine()
    assert on_cpu.detector("yolo", official=True) is on_cpu.detector("yolo")
    assert on_cpu.detector("yolo").options["batched_postprocess"] is False

    gpu = Engine(
        TinyVIBE(), model_name="tiny", data_dir=None, device="cuda:0", frontend=ScriptedFrontEnd().as_frontend()
    )
    fast, official = gpu.detector("yolo"), gpu.detector("yolo", official=True)  # (made, never run, here)
    assert official is not fast and gpu.detector("yolo", official=True) is official
    assert fast.options["batched_postprocess"] is True and official.options["batched_postprocess"] is False
    assert gpu.detector("hog", official=True) is gpu.detector("hog")  # nothing to choose for OpenCV's HOG

    used = []  # the run itself asks for the official detector
    gpu.frontend = dataclasses.replace(
        gpu.frontend, stream_people=lambda reader, detector, **kw: used.append(detector) or iter(())
    )
    with pytest.raises(VibeError):  # no frames: the detector was chosen all the same
        gpu.run("clip.mp4", RunOptions(detector="yolo", official=True))
    assert used[0]._detector is official


def test_an_official_run_takes_each_track_through_the_temporal_model_alone():
    """With the GPU front end (forced here, on a CPU) the tracks go through the temporal model
    together, which equals one track a call only up to float rounding; --official takes each track
    alone, one call per 450-frame chunk, as the official demo does."""
    from vibe_server.pipeline.options import RunOptions

    seen = {1: range(0, 40), 2: range(5, 30), 3: range(10, 40)}
    engine = scripted_engine(seen, 40, gpu_front_end=True)
    calls = []
    forward = engine.model.forward_features
    engine.model.forward_features = lambda x, h0=None, **kw: (calls.append(x.shape[0]), forward(x, h0=h0, **kw))[1]
    engine.run("clip.mp4", RunOptions(detection_stride=1, min_track_frames=5))
    assert calls == [3]  # the three tracks' chunks in one call
    calls.clear()
    out = engine.run("clip.mp4", RunOptions(official=True, min_track_frames=5)).result
    assert [t.track_id for t in out.tracks] == [1, 2, 3]
    assert calls == [1, 1, 1]


def test_nobody_found_names_the_longest_track_also_among_those_dropped_young():
    # track 1 is dropped as stale early on, track 2 later, track 3 is still young when the video ends
    engine = scripted_engine({1: range(12), 2: range(100, 130), 3: range(190, 195)}, 200)
    with pytest.raises(VibeError, match=r"at least 35 frames \(the longest of the 3 tracks found lasted 30 frames\)"):
        engine.run("clip.mp4", RunOptions(min_track_frames=35))

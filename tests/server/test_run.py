"""The pipeline orchestration with a tiny VIBE-shaped model and a scripted front end: streaming,
batching, chunking with the GRU state carried, the official chunking, track filtering, smoothing,
progress, cancel and bad input."""

import numpy as np
import pytest
import torch

from vibe_blender.core.errors import VibeError
from vibe_server.pipeline import engine as engine_module
from vibe_server.pipeline import options as options_module
from vibe_server.pipeline.engine import Engine, select_tracks
from vibe_server.pipeline.options import RunOptions
from vibe_server.pipeline.progress import STAGES, JobCancelled

from .conftest import TinyVIBE, progress_phases


def run(engine, **options):
    return engine.run("clip.mp4", RunOptions(**options))


def poses(output):
    return {t.track_id: t.pose for t in output.result.tracks}


def test_tracks_are_kept_filtered_and_in_frame_order(tiny_engine):
    out = run(tiny_engine, min_track_frames=25)
    result = out.result
    assert [t.track_id for t in result.tracks] == [1, 3]  # track 2 has 10 frames only
    np.testing.assert_array_equal(result.track(1).frame_ids, np.arange(60))
    np.testing.assert_array_equal(result.track(3).frame_ids, np.arange(10, 50))
    assert out.frames_decoded == 60
    assert out.crops == 60 + 40  # the short track never reached the backbone
    assert result.model_name == "tiny test model"
    assert result.video.name == "clip.mp4" and result.video.frame_count == 60
    assert set(out.timings_s) == set(STAGES)
    np.testing.assert_allclose(result.track(1).bboxes[:, 0], 102.0 + np.arange(60))


def test_short_tracks_are_kept_when_min_track_frames_allows(tiny_engine):
    result = run(tiny_engine, min_track_frames=5).result
    assert [t.track_id for t in result.tracks] == [1, 2, 3]


def test_tracks_max_keeps_the_longest(tiny_engine):
    assert [t.track_id for t in run(tiny_engine, tracks_max=1).result.tracks] == [1]


def test_backbone_batch_size_does_not_change_the_result(tiny_engine):
    a = poses(run(tiny_engine, batch_size=1))
    b = poses(run(tiny_engine, batch_size=64))
    for tid in a:
        np.testing.assert_allclose(a[tid], b[tid], atol=1e-5)


def test_carried_gru_state_makes_the_result_independent_of_chunk_size(tiny_engine):
    whole = poses(run(tiny_engine, temporal_chunk_frames=1000))
    chunked = poses(run(tiny_engine, temporal_chunk_frames=7))
    for tid in whole:
        np.testing.assert_allclose(chunked[tid], whole[tid], atol=1e-5)


def test_gru_state_is_carried_even_when_the_model_does_not_return_it(make_engine):
    with_state, without = make_engine(), make_engine(return_gru_state=False)
    a = poses(run(with_state, temporal_chunk_frames=7))
    b = poses(run(without, temporal_chunk_frames=7))
    for tid in a:
        np.testing.assert_allclose(a[tid], b[tid], atol=1e-5)


def test_official_chunking_restarts_the_gru_every_chunk(tiny_engine, monkeypatch):
    monkeypatch.setattr(engine_module, "OFFICIAL_CHUNK_FRAMES", 20)
    carry = poses(run(tiny_engine))[1]
    official = poses(run(tiny_engine, chunking="official"))[1]
    np.testing.assert_allclose(official[:20], carry[:20], atol=1e-5)  # first chunk: same start state
    assert np.abs(official[20:] - carry[20:]).max() > 1e-3  # later chunks start from zeros
    # and each official chunk equals a fresh run over just that chunk's features
    features = torch.stack([torch.as_tensor(f) for f in _features(tiny_engine)])
    fresh = tiny_engine.model.forward_features(features[20:40][None])["theta"][0, :, 3:75]
    np.testing.assert_allclose(official[20:40], fresh.detach().numpy(), atol=1e-5)


def _features(engine):
    """Track 1's per-frame features, recomputed from the scripted crops."""
    fe = engine.frontend
    reader = fe.open_video("clip.mp4")
    feats = []
    for frame_index, frame in reader:
        box = np.array([[102.0 + frame_index, 120.0, 81.0, 81.0]])
        feats.append(engine.extract_features(torch.as_tensor(fe.crop_people(frame, box)))[0])
    return feats


def test_smoothing_changes_the_pose_and_recomputes_joints(tiny_engine):
    raw = run(tiny_engine).result.track(1)
    smooth = run(tiny_engine, smoothing=1.0).result.track(1)
    assert np.abs(smooth.pose - raw.pose).max() > 1e-4
    # joints come from the model's SMPL on the smoothed pose
    _, joints = tiny_engine.smpl(smooth.pose, smooth.betas)
    np.testing.assert_allclose(smooth.joints3d, joints, atol=1e-6)
    np.testing.assert_array_equal(smooth.betas, raw.betas)


def test_uncrop_mode_and_settings_are_recorded(tiny_engine):
    official = run(tiny_engine, official_uncrop=True).result
    corrected = run(tiny_engine).result
    np.testing.assert_allclose(corrected.track(1).orig_cam[:, 0], 1.1 * official.track(1).orig_cam[:, 0], rtol=1e-6)
    assert official.meta["uncrop"] == "official 1.0x box"
    assert corrected.meta["chunking"] == "carry" and corrected.meta["detector"] == "hog"
    assert corrected.focal_length_px == 320.0  # the longer image side by default


def test_detection_stride_calls_the_detector_less(scripted, tiny_engine):
    run(tiny_engine, detection_stride=4, detector="yolo")
    assert scripted.detectors[-1].name == "yolo"
    assert scripted.detectors[-1].calls == 15
    assert scripted.detectors[-1].options == {"precision": "fp32", "batched_postprocess": False}  # the CPU's exact loop


def test_progress_goes_through_the_stages_to_one(tiny_engine):
    events = []
    tiny_engine.run("clip.mp4", RunOptions(), progress=lambda stage, f, eta: events.append((stage, f, eta)))
    stages = [e[0] for e in events]
    assert set(stages) <= set(STAGES) and "temporal" in stages and stages[-1] == "write"
    fractions = [e[1] for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert events[-1][2] == pytest.approx(0.0)


@pytest.mark.parametrize("gpu_front_end", [False, True], ids=["track by track", "tracks together"])
def test_each_phase_of_the_progress_reaches_its_end_before_the_next(scripted, gpu_front_end):
    """The bars stopped short: the stream's last report was throttled away, the temporal model's said
    i / tracks before each track and never 1, and the temporal and smpl bars took turns, track by track."""
    engine = Engine(
        TinyVIBE(), model_name="tiny", data_dir=None, frontend=scripted.as_frontend(), gpu_front_end=gpu_front_end
    )
    reports = []
    engine.run("clip.mp4", RunOptions(smoothing=0.5), progress=lambda *report: reports.append(report))
    assert progress_phases(reports) == [("stream", 1.0), ("temporal", 1.0), ("smpl", 1.0), ("write", 1.0)]


def test_cancel_stops_the_run(tiny_engine):
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 10

    with pytest.raises(JobCancelled):
        tiny_engine.run("clip.mp4", RunOptions(), should_cancel=should_cancel)


def test_nobody_found_is_a_clear_error(make_engine):
    engine = make_engine(tracks={})
    # the one message of the command line and the server: each one's name for the setting
    with pytest.raises(VibeError, match="Nobody was found in 'clip.mp4'.*--min-track-frames N.*min_track_frames"):
        run(engine)


def test_a_video_shorter_than_the_minimum_track_length_is_said_before_its_decode(scripted, tiny_engine):
    """--min-track-frames 200 on a clip of 150 frames decoded the whole video, then said nobody was found."""
    with pytest.raises(VibeError) as err:
        run(tiny_engine, min_track_frames=100)  # the scripted clip has 60 frames
    assert str(err.value).startswith(
        "'clip.mp4' is shorter than the minimum track length: it has 60 frames, and a track must last 100. "
        "Lower it to 60 or less (--min-track-frames N of vibe-mocap infer or batch; the job option min_track_frames"
    )
    assert scripted.detectors == []  # nothing decoded, nothing detected
    # a count a few frames short may be the container's estimate: the video is decoded
    with pytest.raises(VibeError, match="Nobody was found in 'clip.mp4'"):
        run(tiny_engine, min_track_frames=62)
    assert scripted.detectors[-1].calls > 0


def test_nobody_found_names_the_longest_track_against_the_minimum():
    with pytest.raises(VibeError, match=r"at least 40 frames \(the longest of the 2 tracks found lasted 30 frames\)"):
        select_tracks({1: 12, 2: 30}, RunOptions(min_track_frames=40), "clip.mp4")
    with pytest.raises(VibeError, match=r"at least 40 frames \(the one track found lasted 12 frames\)"):
        select_tracks({1: 12}, RunOptions(min_track_frames=40), "clip.mp4")


def test_nobody_found_at_the_lowest_minimum_track_length_is_not_told_to_lower_it():
    """Before: "no person was tracked for at least 1 frames ... lower the minimum track length"."""
    with pytest.raises(VibeError) as refused:
        select_tracks({}, RunOptions(min_track_frames=1), "clip.mp4")
    assert str(refused.value) == (
        "Nobody was found in 'clip.mp4': no person was tracked in any frame. Use a clip where a whole person "
        "is visible."
    )


def test_without_tracks_max_the_longest_tracks_a_result_file_holds_are_kept_with_a_warning():
    limit = options_module.MAX_TRACKS
    frames = {tid: 10 + tid % 7 for tid in range(limit + 5)}
    kept, warnings = select_tracks(frames, RunOptions(min_track_frames=10), "clip.mp4")
    longest = sorted(frames, key=lambda tid: -frames[tid])[:limit]
    assert kept == sorted(longest) and len(kept) == limit
    assert warnings == [
        f"{limit + 5:,} people were tracked; the result keeps the {limit:,} tracked longest, "
        "the most a result file holds."
    ]
    assert select_tracks(frames, RunOptions(min_track_frames=10, tracks_max=3), "clip.mp4")[1] == []
    assert select_tracks(dict(list(frames.items())[:limit]), RunOptions(min_track_frames=10), "clip.mp4") == (
        sorted(list(frames)[:limit]),
        [],
    )


def test_a_run_with_more_tracks_than_a_result_holds_says_so_in_its_result(make_engine, monkeypatch):
    # (a run divided among devices: tests/server/test_segmented.py)
    monkeypatch.setattr(engine_module, "MAX_TRACKS", 2)
    output = make_engine().run("clip.mp4", RunOptions(min_track_frames=5))
    assert [t.track_id for t in output.result.tracks] == [1, 3]  # the two longest of the scripted three
    assert len(output.warnings) == 1 and "3 people were tracked" in output.warnings[0]
    assert output.warnings[0] in output.result.meta["warnings"]


def test_a_result_of_the_most_tracks_kept_reads_back_in_the_add_on(tmp_path):
    """The server's cap and the add-on's reader agree: MAX_TRACKS tracks with long (8-digit) ids."""
    from vibe_blender.core.result_file import MocapResult, Track, VideoInfo, load_result, save_result

    def track(track_id):
        one = {"pose": 72, "betas": 10, "pred_cam": 3, "orig_cam": 4, "bboxes": 4, "trans_cam_m": 3}
        arrays = {name: np.full((1, width), 0.5) for name, width in one.items()}
        return Track(track_id=track_id, frame_ids=np.zeros(1, int), betas_track=np.zeros(10),
                     joints3d=np.zeros((1, 49, 3)), **arrays)  # fmt: skip

    limit = options_module.MAX_TRACKS
    video = VideoInfo(name="crowd.mp4", fps=25.0, width=320, height=240, frame_count=1)
    path = tmp_path / "crowd.npz"
    save_result(
        path,
        MocapResult(
            video=video, tracks=[track(10**7 + i) for i in range(limit)], model_name="m", focal_length_px=400.0
        ),
    )
    assert len(load_result(path).tracks) == limit


def test_a_frame_a_result_file_cannot_hold_is_left_out_of_a_readable_result_with_a_warning(tiny_engine, tmp_path):
    """A camera scale of 0 or less (the model on a crop of no person) put the person ~1e9 m away: the
    result was written, and no reader opened it ("the file is damaged")."""
    from vibe_blender.core.result_file import load_result, save_result

    forward, calls = tiny_engine.model.forward_features, []

    def first_track_far_away_at_frame_5(features, **kwargs):
        out = forward(features, **kwargs)
        if not calls:
            out["theta"][0, 5, 0] = -0.05
        calls.append(1)
        return out

    tiny_engine.model.forward_features = first_track_far_away_at_frame_5
    output = run(tiny_engine, min_track_frames=25)
    np.testing.assert_array_equal(output.result.track(1).frame_ids, np.delete(np.arange(60), 5))
    assert output.result.track(3).num_frames == 40
    assert len(output.warnings) == 1 and output.warnings[0].startswith("1 person-frame(s) held values a result file")
    assert output.result.meta["warnings"] == output.warnings[0]
    save_result(tmp_path / "r.npz", output.result)
    assert load_result(tmp_path / "r.npz").track(1).num_frames == 59


def test_zero_frames_is_a_clear_error(make_engine):
    engine = make_engine(num_frames=0)
    with pytest.raises(VibeError, match="No frame"):
        run(engine)


def test_unreadable_video_error_passes_through(tiny_engine):
    with pytest.raises(VibeError, match="not a video"):
        tiny_engine.run("notes.txt", RunOptions())


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"detector": "ssd"}, "Unknown detector"),
        ({"detection_stride": 0}, "between 1 and 1000"),
        ({"smoothing": 2.0}, "between 0 and 1"),
        ({"chunking": "overlap"}, "Unknown chunking"),
        ({"tracks_max": 0}, "tracks_max"),
        ({"focal_px": -1.0}, "focal_px. must be between 1 and 1000000 or empty; got -1.0"),
    ],
)
def test_bad_options_are_refused(tiny_engine, bad, message):
    with pytest.raises(VibeError, match=message):
        run(tiny_engine, **bad)


def test_bf16_fast_preset_stays_close_to_fp32(make_engine):
    fp32, bf16 = make_engine(), make_engine(precision="bf16")
    a, b = poses(run(fp32)), poses(run(bf16))
    assert a.keys() == b.keys()
    for tid in a:
        # the tiny model's poses are scaled by 0.1: measure the error against how much the pose moves
        motion = np.abs(a[tid] - a[tid].mean(axis=0)).max()
        error = np.abs(b[tid] - a[tid]).max()
        # 1.1-1.4 % measured; under 0.1 % means bf16 never ran (channels_last alone gives 1e-4 %)
        assert 0.001 * motion < error < 0.05 * motion
    with pytest.raises(VibeError, match="fp16 needs a CUDA"):
        Engine(torch.nn.Module(), model_name="t", data_dir=None, precision="fp16")


def test_defaults_are_the_fast_ones_and_official_options_restore_the_official_configuration():
    defaults = RunOptions()
    assert defaults.detection_stride == options_module.DEFAULT_DETECTION_STRIDE > 1 and defaults.adaptive_detection
    official = options_module.official_options(RunOptions(smoothing=0.3, tracks_max=2))
    assert (
        official.detection_stride,
        official.adaptive_detection,
        official.chunking,
        official.official_uncrop,
        official.precision,
        official.compile_backbone,
    ) == (1, False, "official", True, "fp32", "off")
    assert (official.smoothing, official.tracks_max) == (0.3, 2)  # the user's own choices stay
    assert options_module.official_options() == options_module.official_options(RunOptions())


def test_a_run_can_set_its_own_precision_and_the_engine_default_comes_back(make_engine):
    engine = make_engine(precision="bf16")
    bf16 = run(engine)
    assert bf16.result.meta["precision"] == "bf16"
    assert engine.model.backbone[0].weight.is_contiguous(memory_format=torch.channels_last)
    official = engine.run("clip.mp4", options_module.official_options())
    assert official.result.meta["precision"] == "fp32" and official.result.meta["detection_stride"] == "1"
    assert engine.model.backbone[0].weight.is_contiguous()  # plain fp32 layout, as the official code
    reference = run(make_engine(), chunking="official", official_uncrop=True, detection_stride=1)
    for a, b in zip(official.result.tracks, reference.result.tracks, strict=True):
        np.testing.assert_array_equal(a.pose, b.pose)  # exactly the fp32 engine's result
    assert run(engine).result.meta["precision"] == "bf16"
    with pytest.raises(VibeError, match="Unknown precision"):
        run(engine, precision="int8")


def test_load_engine_picks_the_precision_from_the_cpu(monkeypatch, tmp_path):
    from vibe_server.data import loading
    from vibe_server.pipeline import cpu_features

    from .conftest import TinyVIBE

    monkeypatch.setattr(loading, "model_data_problem", lambda data_dir: None)
    tiny = TinyVIBE()
    tiny.model_name = "tiny"
    monkeypatch.setattr(loading, "load_model", lambda data_dir, device: tiny)
    for has_bf16, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(cpu_features, "cpu_has_fast_bf16", lambda text=None, v=has_bf16: v)
        assert engine_module.load_engine(tmp_path, device="cpu").precision == expected
    assert engine_module.load_engine(tmp_path, device="cpu", precision="fp32").precision == "fp32"


@pytest.mark.parametrize("return_gru_state", [True, False])
@pytest.mark.parametrize("chunking, chunk_frames", [("carry", 7), ("carry", 256), ("official", 256)])
def test_tracks_through_the_temporal_model_together_equal_one_by_one(
    make_engine, return_gru_state, chunking, chunk_frames, monkeypatch
):
    """GRU, regressor and SMPL batched over tracks of different lengths (padded chunks) give each
    track what it gets alone."""
    import vibe_server.pipeline.engine as engine_module

    monkeypatch.setattr(engine_module, "OFFICIAL_CHUNK_FRAMES", 9)  # official chunks short enough to matter
    engine = make_engine(return_gru_state=return_gru_state)
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(n, 2048)).astype(np.float32) for n in (30, 3, 14, 7, 22)]
    batches = []
    forward = engine.model.forward_features
    engine.model.forward_features = lambda x, h0=None, **kw: (batches.append(x.shape[0]), forward(x, h0=h0, **kw))[1]
    together = engine.temporal_tracks(features, chunking=chunking, chunk_frames=chunk_frames)
    assert batches[0] == len(features)  # the first chunks of all five tracks in one call
    engine.model.forward_features = forward
    for f, out in zip(features, together, strict=True):
        alone = engine.temporal(f, chunking=chunking, chunk_frames=chunk_frames)
        assert out["theta"].shape == (len(f), 85) and out["kp_3d"].shape == (len(f), 49, 3)
        np.testing.assert_allclose(out["theta"], alone["theta"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(out["kp_3d"], alone["kp_3d"], rtol=0, atol=1e-5)


def test_the_backbone_batch_is_larger_on_a_gpu_unless_a_run_sets_it(tiny_engine):
    from .conftest import TinyVIBE

    assert tiny_engine.default_batch_size() == 32
    tiny_engine.run("clip.mp4", RunOptions())
    assert tiny_engine.batch_size == 32
    tiny_engine.run("clip.mp4", RunOptions(batch_size=5))
    assert tiny_engine.batch_size == 5
    on_gpu = Engine(TinyVIBE(), model_name="tiny", data_dir=None, device="cuda:0")  # built, never run, here
    assert on_gpu.default_batch_size() == 128 and on_gpu.gpu_front_end


def test_fp32_on_a_gpu_is_fp32_not_tf32():
    """An engine on CUDA turns TF32 off for the process, so that --official on a GPU equals the CPU
    (cuDNN allows TF32 in convolutions and the GRU by default); one on a CPU leaves the flags alone."""
    from .conftest import TinyVIBE

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    try:
        cudnn.allow_tf32 = matmul.allow_tf32 = True
        Engine(TinyVIBE(), model_name="tiny", data_dir=None, device="cpu")
        assert cudnn.allow_tf32 and matmul.allow_tf32
        Engine(TinyVIBE(), model_name="tiny", data_dir=None, device="cuda:0")  # built, never run, here
        assert not cudnn.allow_tf32 and not matmul.allow_tf32
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


@pytest.mark.parametrize(
    "model_name, detector, warned",
    [
        ("vibe_model_wo_3dpw", "auto", True),  # the real model without its detector: said
        ("vibe_model_wo_3dpw", "hog", False),  # asked for
        ("synthetic placeholder", "auto", False),  # labelled loudly of its own
    ],
)
def test_auto_falling_back_to_hog_without_the_yolo_weights_is_said(scripted, tmp_path, model_name, detector, warned):
    """Without yolov3.weights in the model data, 'auto' silently ran OpenCV's HOG detector: a user who
    forgot that separate install step got poor tracks and no hint why."""
    from .conftest import TinyVIBE

    engine = Engine(TinyVIBE(), model_name=model_name, data_dir=tmp_path, frontend=scripted.as_frontend())
    out = run(engine, min_track_frames=5, detector=detector)
    yolo_said = [w for w in out.warnings if "yolov3.weights is not in the model data" in w]
    assert bool(yolo_said) == warned and out.result.meta.get("warnings", "") == "\n".join(out.warnings)
    assert out.result.meta["detector"] == "hog"
    if warned:
        assert str(tmp_path) in yolo_said[0] and "vibe-mocap data install yolov3.weights" in yolo_said[0]


def test_yolo_asked_of_the_placeholder_model_says_to_install_the_model_data(scripted, tmp_path):
    """It said the weights were "not found at ~/.cache/vibe-mocap/synthetic-placeholder/yolov3.weights",
    a cache folder, not where the user installs them."""
    from .conftest import TinyVIBE

    engine = Engine(TinyVIBE(), model_name="synthetic placeholder", data_dir=tmp_path, frontend=scripted.as_frontend())
    with pytest.raises(VibeError, match=r"needs yolov3.weights, which the synthetic placeholder .* does not have"):
        run(engine, detector="yolo")
    assert run(engine, detector="auto", min_track_frames=5).result.meta["detector"] == "hog"

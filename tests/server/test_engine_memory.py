"""The engine's memory stays bounded for any video: how many tracks a temporal-model call takes,
what a young track holds, what the stale-track sweep looks at."""

import numpy as np
import pytest

from vibe_server.pipeline import engine as engine_module
from vibe_server.pipeline.engine import Engine

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

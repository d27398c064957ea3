"""``vibe-mocap infer`` and ``serve`` argument handling, with the tiny engine and (slow) on a real
clip with the synthetic placeholder model."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from vibe_blender.core.result_file import load_result
from vibe_blender.core.smpl_model import load_body_model, load_smpl_pkl
from vibe_server.cli import main
from vibe_server.pipeline import run as run_module

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"


@pytest.fixture
def tiny_infer(monkeypatch, make_engine, tmp_path):
    """infer with the tiny engine; the model data folder is empty (so the placeholder notice shows)."""
    engine = make_engine()
    calls = {}

    def fake_load_engine(data_dir, **kwargs):
        calls.update(kwargs, data_dir=data_dir)
        engine.default_precision = kwargs["precision"]
        return engine

    monkeypatch.setattr(run_module, "load_engine", fake_load_engine)
    monkeypatch.setenv("VIBE_DATA_DIR", str(tmp_path / "no_data"))
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"fake")
    return video, calls


def test_infer_writes_the_result_and_prints_a_summary(tiny_infer, tmp_path, capsys):
    joblib = pytest.importorskip("joblib")
    video, calls = tiny_infer
    out = tmp_path / "out" / "clip.npz"
    assert main(["infer", str(video), "-o", str(out), "--pkl", "--smoothing", "0.5", "--tracks-max", "1",
                 "--fast", "--device", "cpu"]) == 0
    result = load_result(out)
    assert [t.track_id for t in result.tracks] == [1] and result.meta["smoothing"] == "0.5"
    assert calls["precision"] == "bf16" and calls["allow_synthetic"] is True
    official = joblib.load(tmp_path / "out" / "clip_vibe_output.pkl")
    assert list(official) == [1]
    captured = capsys.readouterr()
    assert "SYNTHETIC PLACEHOLDER" in captured.err and "vibe-mocap data install" in captured.err
    assert "decode/detect/track/crop/backbone" in captured.err           # the stage bars
    for word in ("track", "frames", "backbone", "temporal", "total", str(out)):
        assert word in captured.out
    assert not list(out.parent.glob("*.part"))


def test_infer_defaults_are_fast_and_official_restores_the_official_configuration(tiny_infer, tmp_path, monkeypatch):
    from vibe_server.pipeline import cpu_features

    video, calls = tiny_infer
    monkeypatch.setattr(cpu_features, "cpu_has_fast_bf16", lambda text=None: True)
    out = tmp_path / "fast.npz"
    assert main(["infer", str(video), "-o", str(out), "--device", "cpu"]) == 0
    meta = load_result(out).meta
    assert calls["precision"] == "bf16" and calls["compile_backbone"] == "auto"
    assert meta["detection_stride"] == str(run_module.DEFAULT_DETECTION_STRIDE) and meta["adaptive_detection"] == "True"
    assert meta["chunking"] == "carry" and meta["precision"] == "bf16"

    assert main(["infer", str(video), "-o", str(out), "--device", "cpu", "--official"]) == 0
    meta = load_result(out).meta
    assert calls["precision"] == "fp32" and calls["compile_backbone"] == "off"
    assert (meta["detection_stride"], meta["adaptive_detection"], meta["chunking"], meta["precision"]) == \
        ("1", "False", "official", "fp32")
    assert meta["uncrop"] == "official 1.0x box"

    monkeypatch.setattr(cpu_features, "cpu_has_fast_bf16", lambda text=None: False)
    assert main(["infer", str(video), "-o", str(out), "--device", "cpu"]) == 0
    assert calls["precision"] == "fp32"                                # no bf16 hardware: bf16 would be slower
    assert main(["infer", str(video), "-o", str(out), "--device", "cpu", "--fast"]) == 0
    assert calls["precision"] == "bf16"


@pytest.mark.parametrize("argv, message", [
    (["infer", "/no/such/video.mp4"], "no video at"),
    (["infer", "{video}", "-o", "out.txt"], "must end in .npz"),
    (["infer", "{video}", "--detection-stride", "0"], "at least 1"),
    (["infer", "{video}", "--smoothing", "3"], "between 0 and 1"),
    (["infer", "{video}", "--device", "tpu"], "Unknown device"),
])
def test_infer_bad_arguments_give_one_clear_error(tiny_infer, capsys, argv, message):
    video, _ = tiny_infer
    assert main([a.replace("{video}", str(video)) for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_infer_reports_nobody_found(tiny_infer, capsys):
    video, _ = tiny_infer
    video.write_bytes(b"nobody")
    assert main(["infer", str(video)]) == 2
    assert "Nobody was found" in capsys.readouterr().err


def test_serve_refuses_a_public_bind_without_token(capsys, monkeypatch):
    monkeypatch.delenv("VIBE_MOCAP_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err


@pytest.mark.slow
def test_infer_on_a_real_clip_with_the_synthetic_placeholder(synthetic_bundle, tmp_path, monkeypatch, capsys):
    """No model data installed: the placeholder (already in the cache folder here) is used, labelled."""
    cache = tmp_path / "cache"
    (cache / "vibe-mocap").mkdir(parents=True)
    (cache / "vibe-mocap" / "synthetic-placeholder").symlink_to(synthetic_bundle)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("VIBE_DATA_DIR", str(tmp_path / "no_data"))
    cap = cv2.VideoCapture(str(REAL / "one-by-one-person-detection.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 262)
    clip = tmp_path / "walk.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (768, 432))
    for _ in range(40):
        writer.write(cap.read()[1])
    writer.release()
    out = tmp_path / "walk.npz"
    assert main(["infer", str(clip), "-o", str(out), "--detector", "hog", "--detection-stride", "2",
                 "--min-track-frames", "15", "--body-model"]) == 0
    result = load_result(out)
    assert result.model_name == "synthetic placeholder" and result.tracks
    assert np.isfinite(result.tracks[0].pose).all()
    printed = capsys.readouterr().out
    assert "synthetic placeholder" in printed and "walk_body_model.npz" in printed
    body = load_body_model(tmp_path / "walk_body_model.npz")          # the placeholder's own SMPL
    np.testing.assert_allclose(body.v_template, load_smpl_pkl(synthetic_bundle / "SMPL_NEUTRAL.pkl").v_template,
                               atol=1e-6)

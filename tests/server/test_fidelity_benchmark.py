"""benchmarks/fidelity.py compares each speed setting with the official configuration: each setting
must run as named (the official configuration with that one change)."""

from pathlib import Path

import pytest

from vibe_server.pipeline.options import RunOptions, official_options

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture
def fidelity(monkeypatch):
    monkeypatch.syspath_prepend(str(REPOSITORY / "benchmarks"))
    import fidelity

    return fidelity


def setting(fidelity, name):
    return next(s for s in fidelity.SETTINGS if s.name == name)


def test_each_setting_runs_as_the_official_configuration_with_its_one_change(fidelity):
    official = official_options(RunOptions(detector="yolo"))
    assert fidelity.run_options(setting(fidelity, "official")).effective() == official
    for s in fidelity.SETTINGS:
        if s.name == "official" or s.defaults:
            continue
        options = fidelity.run_options(s)
        assert options.effective() == options, s.name  # a run uses them as they are
        changed = {
            "detection_stride": s.stride,
            "adaptive_detection": s.adaptive,
            "precision": s.backbone_precision,
            "compile_backbone": s.compile,
            "official": False,
        }
        assert options == RunOptions(**{**vars(official), **changed}), s.name


def test_a_stride_setting_detects_fewer_frames_in_a_run(fidelity, scripted, tiny_engine):
    tiny_engine.run("clip.mp4", fidelity.run_options(setting(fidelity, "official")))
    every_frame = scripted.detectors[-1].calls  # the engine keeps its detector between runs
    tiny_engine.run("clip.mp4", fidelity.run_options(setting(fidelity, "stride 8")))
    assert every_frame == 60 and scripted.detectors[-1].calls - every_frame == 8  # of the 60 frames

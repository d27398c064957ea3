"""benchmarks/fidelity.py compares each speed setting with the official configuration: each setting
must run as named (the official configuration with that one change), and the comparison must match
tracks one to one and count what only the setting found."""

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
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


def track(frames, x, width=40.0):
    frames = np.asarray(frames)
    boxes = np.tile([x, 100.0, width, 80.0], (len(frames), 1))
    return SimpleNamespace(frame_ids=frames, bboxes=boxes, joints3d=None, pose=None)


def test_tracks_are_matched_one_to_one_and_extra_track_frames_are_counted(fidelity):
    # two people side by side on frames 0-9; the setting found one of them, and a third box nobody has
    official = SimpleNamespace(tracks=[track(range(10), 100.0), track(range(10), 110.0)])
    other = SimpleNamespace(tracks=[track(range(10), 105.0), track(range(5), 400.0)])
    out = fidelity.compare(official, other)
    # the one setting track overlaps both official tracks (IoU 0.78): it is credited to one only
    assert len(out["box_iou"]) == 20 and np.count_nonzero(out["box_iou"]) == 10
    assert out["extra"] == 5 and out["tracks"] == (2, 2)
    assert fidelity.track_recall(out["box_iou"]) == 0.0  # IoU 0.78 < 0.9
    same = fidelity.compare(official, official)
    assert fidelity.track_recall(same["box_iou"]) == 1.0 and same["extra"] == 0


def test_a_clip_without_people_is_a_false_positive_check_kept_out_of_the_pool(fidelity, capsys):
    people = SimpleNamespace(tracks=[track(range(30), 100.0)])
    found_half = SimpleNamespace(tracks=[track(range(15), 100.0)])
    bottles = SimpleNamespace(tracks=[track(range(40), 300.0)])
    more_bottles = SimpleNamespace(tracks=[track(range(40), 300.0), track(range(10), 500.0)])
    official, stride = setting(fidelity, "official"), setting(fidelity, "stride 8")
    fidelity.print_report(
        [("walk.mp4", "walk.mp4", 30), ("bottles", "bottle-detection-negative.mp4", 40)],
        settings=[official, stride],
        comparisons={
            "official": [fidelity.compare(people, people), fidelity.compare(bottles, bottles)],
            "stride 8": [fidelity.compare(people, found_half), fidelity.compare(bottles, more_bottles)],
        },
        detected={"official": [30, 40], "stride 8": [4, 5]},
        real=False,
        speeds={},
    )
    out = capsys.readouterr().out
    assert "bottles, 40 frames (no person in it: every track-frame is a false positive): 40 official" in out
    bottles_table = out[out.index("bottles, 40 frames") : out.index("pooled")]
    assert re.search(r"^stride 8 +0\.12 +2 +50 +10 +1\.000 ", bottles_table, re.M), bottles_table
    pooled = out[out.index("pooled over the clips with people: walk.mp4: 30 official track-frames, 1 tracks") :]
    assert re.search(r"^stride 8 +nan +nan +0\.13 +1 +15 +0 +0\.500 ", pooled, re.M), pooled
    # only a clip without people: its table, and no pooled one (it divided by zero frames)
    fidelity.print_report(
        [("bottles", "bottle-detection-negative.mp4", 40)],
        settings=[official, stride],
        comparisons={
            "official": [fidelity.compare(bottles, bottles)],
            "stride 8": [fidelity.compare(bottles, more_bottles)],
        },
        detected={"official": [40], "stride 8": [5]},
        real=False,
        speeds={},
    )
    out = capsys.readouterr().out
    assert "bottles, 40 frames" in out and "pooled" not in out

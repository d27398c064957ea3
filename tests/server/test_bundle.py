"""The model-data bundle: location, check, install, and the CLI around it."""
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vibe_blender.core.errors import VibeError
from vibe_server import load_model
from vibe_server.cli import main as cli
from vibe_server.data import bundle


def test_location_flag_beats_environment_beats_default(monkeypatch, tmp_path):
    monkeypatch.delenv(bundle.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert bundle.resolve_data_dir() == tmp_path / "xdg" / "vibe-mocap"
    monkeypatch.setenv(bundle.ENV_VAR, str(tmp_path / "env"))
    assert bundle.resolve_data_dir() == tmp_path / "env"
    assert bundle.resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"


def _with_yolo(folder: Path) -> Path:
    with open(folder / bundle.YOLO_WEIGHTS, "wb") as f:     # sparse file of the official size
        f.truncate(bundle.YOLO_WEIGHTS_BYTES)
    return folder


@pytest.fixture
def full_bundle(synthetic_bundle, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(synthetic_bundle, folder)
    return _with_yolo(folder)


def test_check_lists_present_missing_invalid(full_bundle):
    statuses = {s.name: s for s in bundle.check_bundle(full_bundle)}
    assert all(statuses[n].status == "present" for n in bundle.REQUIRED_FILES)
    assert statuses[bundle.VIBE_CHECKPOINT_3DPW].status == "missing"
    assert bundle.bundle_ok(list(statuses.values()))

    np.save(full_bundle / bundle.EXTRA_REGRESSOR, np.zeros((3, 3)))
    (full_bundle / bundle.SPIN_CHECKPOINT).unlink()
    with open(full_bundle / bundle.YOLO_WEIGHTS, "r+b") as f:
        f.truncate(1000)
    statuses = {s.name: s for s in bundle.check_bundle(full_bundle)}
    assert statuses[bundle.EXTRA_REGRESSOR].status == "invalid" and "(9, 6890)" in statuses[bundle.EXTRA_REGRESSOR].detail
    assert statuses[bundle.SPIN_CHECKPOINT].status == "missing"
    assert statuses[bundle.YOLO_WEIGHTS].status == "invalid" and "1,000 bytes" in statuses[bundle.YOLO_WEIGHTS].detail
    assert not bundle.bundle_ok(list(statuses.values()))


def test_cli_check_exit_codes_and_table(full_bundle, tmp_path, capsys):
    assert cli(["data", "check", "--data-dir", str(full_bundle)]) == 0
    assert "All required files are present" in capsys.readouterr().out
    assert cli(["data", "check", "--data-dir", str(tmp_path / "empty")]) == 1
    out = capsys.readouterr().out
    assert "SMPL_NEUTRAL.pkl" in out and "missing" in out and "vibe-mocap data install" in out


def test_install_from_the_official_zip_layout(full_bundle, tmp_path, capsys):
    archive = tmp_path / "vibe_data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in full_bundle.iterdir():
            if f.name != bundle.YOLO_WEIGHTS:
                z.write(f, f"vibe_data/{f.name}")
        z.writestr("vibe_data/sample_video.mp4", b"not needed")
    target = tmp_path / "installed"
    assert cli(["data", "install", str(archive), "--data-dir", str(target)]) == 1    # yolo still missing
    assert "installed SMPL_NEUTRAL.pkl" in capsys.readouterr().out
    assert not (target / "sample_video.mp4").exists()
    assert cli(["data", "install", str(full_bundle / bundle.YOLO_WEIGHTS), "--data-dir", str(target)]) == 0
    assert load_model(target).model_name == "vibe_model_wo_3dpw"
    assert not list(target.glob("*.partial")) and not list(target.glob(".download-*"))


def test_install_from_a_folder(full_bundle, tmp_path):
    installed = bundle.install(str(full_bundle), tmp_path / "t", log=lambda _: None)
    assert set(installed) == set(bundle.REQUIRED_FILES)


@pytest.mark.parametrize("make_source, message", [
    (lambda p: p / "nope.zip", "does not exist"),
    (lambda p: (p / "readme.txt").write_text("hi") and p / "readme.txt", "neither a zip archive"),
    (lambda p: _empty_zip(p), "holds none of the model files"),
])
def test_install_bad_sources(tmp_path, make_source, message, capsys):
    assert cli(["data", "install", str(make_source(tmp_path)), "--data-dir", str(tmp_path / "d")]) == 2
    assert message in capsys.readouterr().err


def _empty_zip(folder: Path) -> Path:
    with zipfile.ZipFile(folder / "other.zip", "w") as z:
        z.writestr("hello.txt", "hi")
    return folder / "other.zip"


def test_install_from_an_unreachable_url(tmp_path):
    with pytest.raises(VibeError, match="Could not download"):
        bundle.install("http://127.0.0.1:9/vibe_data.zip", tmp_path)


def test_load_model_lists_every_missing_file(tmp_path):
    (tmp_path / bundle.SMPL_PKL).write_bytes(b"")
    with pytest.raises(VibeError) as err:
        load_model(tmp_path)
    text = str(err.value)
    for name in (bundle.EXTRA_REGRESSOR, bundle.MEAN_PARAMS, bundle.SPIN_CHECKPOINT, bundle.VIBE_CHECKPOINT):
        assert name in text
    assert bundle.SMPL_PKL + "," not in text and "vibe-mocap data install" in text

"""The model-data bundle: location, check, install, and the CLI around it."""

import contextlib
import errno
import http.server
import json
import os
import pickle
import re
import shutil
import stat
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/hostile_files.py
from hostile_files import Member, zip_bytes

from vibe_blender.core.errors import VibeError
from vibe_blender.core.smpl_model import load_smpl_pkl
from vibe_server import load_model
from vibe_server.cli import main as cli
from vibe_server.data import bundle, synthetic
from vibe_server.folder_lock import folder_lock
from vibe_server.pipeline.detect.darknet_weights import load_darknet_weights
from vibe_server.pipeline.detect.yolov3 import YOLOv3


def test_location_flag_beats_environment_beats_default(monkeypatch, tmp_path):
    monkeypatch.delenv(bundle.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert bundle.resolve_data_dir() == tmp_path / "xdg" / "vibe-mocap"
    monkeypatch.setenv(bundle.ENV_VAR, str(tmp_path / "env"))
    assert bundle.resolve_data_dir() == tmp_path / "env"
    assert bundle.resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"


def _with_yolo(folder: Path) -> Path:
    with open(folder / bundle.YOLO_WEIGHTS, "wb") as f:  # the official header, then a sparse file of the official size
        f.write(struct.pack("<iiiQ", 0, 2, 0, 32_013_312))
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
    assert (
        statuses[bundle.EXTRA_REGRESSOR].status == "invalid" and "(9, 6890)" in statuses[bundle.EXTRA_REGRESSOR].detail
    )
    assert statuses[bundle.SPIN_CHECKPOINT].status == "missing"
    assert statuses[bundle.YOLO_WEIGHTS].status == "invalid" and "1,000 bytes" in statuses[bundle.YOLO_WEIGHTS].detail
    assert not bundle.bundle_ok(list(statuses.values()))


def test_cli_check_exit_codes_and_table(full_bundle, tmp_path, capsys):
    assert cli(["data", "check", "--data-dir", str(full_bundle)]) == 0
    assert "All required files are present" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert cli(["data", "check", "--data-dir", str(tmp_path / "empty")]) == 1
    out = capsys.readouterr().out
    assert "SMPL_NEUTRAL.pkl" in out and "missing" in out and "vibe-mocap data install" in out
    # the install command names the folder checked: without it, it installs into the default one
    assert f"'vibe-mocap data install PATH_OR_URL --data-dir {tmp_path / 'empty'}'" in out


@pytest.mark.parametrize("damage", [bundle.SMPL_FILE, bundle.MEAN_PARAMS, bundle.EXTRA_REGRESSOR])
def test_a_damaged_model_file_names_the_folder_to_install_into(full_bundle, monkeypatch, capsys, damage):
    """Before: "Reinstall the model data with 'vibe-mocap data install'", which installs into the default
    folder, not the one the command was given."""
    monkeypatch.delenv(bundle.ENV_VAR, raising=False)
    (full_bundle / damage).write_bytes(b"damaged")
    with pytest.raises(VibeError) as refused:
        load_model(full_bundle)
    assert str(refused.value).endswith(f"and run 'vibe-mocap data install PATH_OR_URL --data-dir {full_bundle}'.")
    assert "Reinstall" not in str(refused.value)
    assert cli(["data", "check", "--data-dir", str(full_bundle)]) == 1
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.strip().startswith(damage))
    assert " invalid " in row and "vibe-mocap data install" not in row  # said once, below the table
    assert lines[-1].endswith(f"'vibe-mocap data install PATH_OR_URL --data-dir {full_bundle}'.")


def test_cli_check_of_a_named_folder_that_is_a_file_or_missing_says_so(tmp_path, capsys):
    """Before: eight files "missing" in a "folder" that was a file (or not there at all), where
    infer, batch and live said what was wrong with the path itself. The add-on's JSON still lists
    the files of a folder yet to install into."""
    a_file = tmp_path / "clip.mp4"
    a_file.write_bytes(b"not a folder")
    for folder, state in [(a_file, "is a file, not a folder"), (tmp_path / "nope", "does not exist")]:
        assert cli(["data", "check", "--data-dir", str(folder)]) == 2
        printed = capsys.readouterr()
        assert printed.err.startswith(f"error: The model-data folder '{folder}' (from --data-dir) {state}; check")
        assert "missing" not in printed.out and printed.err.count("\n") == 1
    assert cli(["data", "check", "--json", "--data-dir", str(tmp_path / "nope")]) == 1
    assert {f["status"] for f in json.loads(capsys.readouterr().out)["files"]} == {"missing"}


@pytest.fixture
def official_zip(full_bundle, tmp_path) -> Path:
    """vibe_data.zip as the official script makes it: the files in vibe_data/, without yolov3.weights."""
    archive = tmp_path / "vibe_data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in full_bundle.iterdir():
            if f.name != bundle.YOLO_WEIGHTS:
                z.write(f, f"vibe_data/{f.name}")
        z.writestr("vibe_data/sample_video.mp4", b"not needed")
    return archive


def test_install_from_the_official_zip_layout(full_bundle, official_zip, tmp_path, capsys):
    target = tmp_path / "installed"
    # the zip's files are installed: a success (README's next line installs yolov3.weights), said as such
    assert cli(["data", "install", str(official_zip), "--data-dir", str(target)]) == 0
    out = capsys.readouterr().out
    assert "installed SMPL_NEUTRAL.pkl" in out
    # the command names the folder: as printed before, it installed into the default one
    assert out.rstrip().endswith(
        "Still to install: yolov3.weights. Install it the same way: "
        f"'vibe-mocap data install PATH_OR_URL --data-dir {target}'."
    )
    assert not (target / "sample_video.mp4").exists()
    assert cli(["data", "install", str(full_bundle / bundle.YOLO_WEIGHTS), "--data-dir", str(target)]) == 0
    assert load_model(target).model_name == "vibe_model_wo_3dpw"
    assert not list(target.glob("*.partial")) and not list(target.glob(".download-*"))


def test_install_file_by_file(full_bundle, tmp_path, capsys):
    """Each model file installs by its own path; smpl_mean_params.npz, a zip itself, was read as an
    archive "holding none of the model files"."""
    target = tmp_path / "installed"
    for name in bundle.REQUIRED_FILES:
        assert cli(["data", "install", str(full_bundle / name), "--data-dir", str(target)]) == 0, name
        assert f"installed {name}" in capsys.readouterr().out
    assert set(_installed(target)) >= set(bundle.REQUIRED_FILES)


def test_yolo_weights_of_the_right_size_with_a_wrong_header_are_invalid(full_bundle, tmp_path, capsys):
    """All zeros at the official size passed 'size OK'; infer then refused it, naming a size 4 bytes off."""
    zeros = tmp_path / "zeros" / bundle.YOLO_WEIGHTS
    zeros.parent.mkdir()
    with open(zeros, "wb") as f:
        f.truncate(bundle.YOLO_WEIGHTS_BYTES)
    status = bundle.check_file(bundle.YOLO_WEIGHTS, zeros)
    assert status.status == "invalid" and "its header says Darknet format 0.0" in status.detail
    assert cli(["data", "install", str(zeros), "--data-dir", str(tmp_path / "installed")]) == 2
    assert "its header says Darknet format 0.0, where the official yolov3.weights has 0.2" in capsys.readouterr().out
    assert bundle.check_file(bundle.YOLO_WEIGHTS, full_bundle / bundle.YOLO_WEIGHTS).status == "present"


def test_an_installed_file_is_on_disk_before_it_takes_its_name_and_its_new_name_after(
    full_bundle, tmp_path, monkeypatch
):
    """Renamed into place unflushed, a power cut could leave an empty file under the installed name."""
    target, events = tmp_path / "t", []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("flushed", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("renamed", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    bundle.install(str(full_bundle / bundle.SMPL_FILE), target, log=lambda _: None)
    file, folder = (target / bundle.SMPL_FILE).stat().st_ino, target.stat().st_ino
    order = [event for event in events if event[1] in (file, folder)]
    assert order == [("flushed", file), ("renamed", file), ("flushed", folder)]


@pytest.mark.parametrize(
    "minor, size, valid",
    [(1, bundle.YOLO_WEIGHTS_BYTES - 4, True), (1, bundle.YOLO_WEIGHTS_BYTES, False)],  # 0.1: a 4-byte seen
    ids=["format 0.1 of its size", "format 0.1 of format 0.2's size"],
)
def test_data_check_and_the_detector_take_the_same_yolo_weights(tmp_path, minor, size, valid):
    """Data check took a format-0.1 file of format 0.2's size, which the detector then refused, and
    refused one of its own size, which the detector reads."""
    path = tmp_path / bundle.YOLO_WEIGHTS
    with open(path, "wb") as f:
        f.write(struct.pack("<iii", 0, minor, 0))
        f.truncate(size)  # zeros: finite weights
    status = bundle.check_file(bundle.YOLO_WEIGHTS, path)
    assert (status.status == "present") == valid, status.detail
    if valid:
        assert load_darknet_weights(YOLOv3(), path)["minor"] == minor
    else:
        assert status.detail == (
            f"{size:,} bytes, where YOLOv3's official weights in Darknet format 0.1 have 248,007,044: "
            "it holds more parameters than YOLOv3-416 (a different Darknet model?)"
        )
        with pytest.raises(VibeError, match=re.escape(f"{path}: {status.detail}. Download the official")):
            load_darknet_weights(YOLOv3(), path)


def test_install_from_a_folder(full_bundle, tmp_path):
    installed = bundle.install(str(full_bundle), tmp_path / "t", log=lambda _: None)
    assert set(installed) == set(bundle.REQUIRED_FILES)


@pytest.mark.parametrize(
    "make_source, message",
    [
        (lambda p: p / "nope.zip", "does not exist"),
        (lambda p: (p / "readme.txt").write_text("hi") and p / "readme.txt", "neither a zip archive"),
        (lambda p: _empty_zip(p), "holds none of the model files"),
    ],
)
def test_install_bad_sources(tmp_path, make_source, message, capsys):
    assert cli(["data", "install", str(make_source(tmp_path)), "--data-dir", str(tmp_path / "d")]) == 2
    assert message in capsys.readouterr().err


def test_a_source_that_does_not_exist_makes_no_data_folder(tmp_path, capsys):
    assert cli(["data", "install", str(tmp_path / "nope.zip"), "--data-dir", str(tmp_path / "d")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_an_install_deletes_what_killed_installs_left_but_never_a_running_ones(full_bundle, tmp_path):
    """A killed install's staging folder (a download of up to gigabytes) stayed in the data folder forever."""
    target = tmp_path / "t"
    killed = target / ".download-killed"
    (killed / "staged").mkdir(parents=True)
    (killed / "vibe_data.zip").write_bytes(bytes(1000))
    said = []
    assert bundle.install(str(full_bundle / bundle.SMPL_FILE), target, log=said.append) == [bundle.SMPL_FILE]
    assert not killed.exists() and f"removed what 1 interrupted install(s) left in {target}" in said
    running = target / ".download-running"  # another install's, which holds the lock
    running.mkdir()
    with folder_lock(target, bundle.INSTALL_LOCK, "held by the test"):
        with pytest.raises(VibeError) as busy:
            bundle.install(str(full_bundle / bundle.SMPL_FILE), target, log=lambda _: None)
    assert str(busy.value) == f"Another install into '{target}' is running; wait for it to end, then install again."
    assert running.is_dir()


def _empty_zip(folder: Path) -> Path:
    with zipfile.ZipFile(folder / "other.zip", "w") as z:
        z.writestr("hello.txt", "hi")
    return folder / "other.zip"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/vibe_data.zip", "HTTPS://127.0.0.1:9/vibe_data.zip"])
def test_install_from_an_unreachable_url(tmp_path, url):
    with pytest.raises(VibeError, match="Could not download"):
        bundle.install(url, tmp_path)


def test_a_url_of_another_scheme_is_said_to_be_one(tmp_path, capsys):
    """Before: "'ftp://...' does not exist", as if it were a file name."""
    url = "ftp://127.0.0.1/vibe_data.zip"
    assert cli(["data", "install", url, "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: '{url}' is a ftp:// URL; only http:// and https:// URLs are downloaded.")
    assert "does not exist" not in err and not (tmp_path / "d").exists()


def test_load_model_lists_every_missing_file(tmp_path):
    (tmp_path / bundle.SMPL_FILE).write_bytes(b"")
    with pytest.raises(VibeError) as err:
        load_model(tmp_path)
    text = str(err.value)
    for name in (bundle.EXTRA_REGRESSOR, bundle.MEAN_PARAMS, bundle.SPIN_CHECKPOINT, bundle.VIBE_CHECKPOINT):
        assert name in text
    assert bundle.SMPL_FILE + "," not in text and "vibe-mocap data install" in text


# --------------------------------------------------------------------------------------------
# Hostile or broken sources: each is refused with one VibeError naming the entry, before anything
# unbounded is read or written
# --------------------------------------------------------------------------------------------


def _installed(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def test_folder_install_refuses_a_link_out_of_the_folder(full_bundle, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the user's private key")
    (full_bundle / bundle.SMPL_FILE).unlink()
    (full_bundle / bundle.SMPL_FILE).symlink_to(secret)
    with pytest.raises(VibeError, match=rf"'{full_bundle / bundle.SMPL_FILE}' is a symbolic link"):
        bundle.install(str(full_bundle), tmp_path / "t", log=lambda _: None)
    assert _installed(tmp_path / "t") == []


def test_folder_install_refuses_a_link_to_a_device(full_bundle, tmp_path):
    (full_bundle / bundle.YOLO_WEIGHTS).unlink()
    (full_bundle / bundle.YOLO_WEIGHTS).symlink_to("/dev/zero")  # would be copied without end
    with pytest.raises(VibeError, match=rf"'{full_bundle / bundle.YOLO_WEIGHTS}' is a symbolic link"):
        bundle.install(str(full_bundle), tmp_path / "t", log=lambda _: None)
    assert _installed(tmp_path / "t") == []


def test_folder_install_refuses_a_fifo(tmp_path):
    folder = tmp_path / "src" / "vibe_data"
    folder.mkdir(parents=True)
    os.mkfifo(folder / bundle.SMPL_FILE)  # opening it would block
    with pytest.raises(VibeError, match=rf"'{folder / bundle.SMPL_FILE}' is not a regular file"):
        bundle.install(str(tmp_path / "src"), tmp_path / "t", log=lambda _: None)


@pytest.mark.parametrize(
    "make_special",
    [
        lambda p: os.mkfifo(p / "vibe_data.zip") or p / "vibe_data.zip",
        lambda p: (p / bundle.YOLO_WEIGHTS).symlink_to("/dev/zero") or p / bundle.YOLO_WEIGHTS,
    ],
    ids=["fifo", "link-to-dev-zero"],
)
def test_a_special_file_named_as_the_source_is_refused(tmp_path, make_special, capsys):
    source = make_special(tmp_path)
    assert cli(["data", "install", str(source), "--data-dir", str(tmp_path / "t")]) == 2
    assert f"'{source}' is not a regular file" in capsys.readouterr().err
    assert _installed(tmp_path / "t") == []


@pytest.mark.parametrize(
    "name, size",
    [
        (bundle.MEAN_PARAMS, 2 << 20),  # 157 floats in the real file
        (bundle.YOLO_WEIGHTS, bundle.YOLO_WEIGHTS_BYTES + 1),
    ],
)
def test_folder_install_bounds_each_file_by_the_real_files_size(tmp_path, name, size):
    folder = tmp_path / "src"
    folder.mkdir()
    with open(folder / name, "wb") as f:  # sparse: costs no disk
        f.truncate(size)
    with pytest.raises(VibeError, match=rf"'{folder / name}' holds {size:,} bytes, more than any real {name}"):
        bundle.install(str(folder), tmp_path / "t", log=lambda _: None)
    with pytest.raises(VibeError, match=rf"'{folder / name}' holds {size:,} bytes"):
        bundle.install(str(folder / name), tmp_path / "t", log=lambda _: None)
    assert _installed(tmp_path / "t") == []


def test_install_caps_the_total_before_copying_anything(full_bundle, tmp_path, monkeypatch):
    total = sum(f.stat().st_size for f in full_bundle.iterdir())
    monkeypatch.setattr(bundle, "MAX_TOTAL_BYTES", total - 1)
    with pytest.raises(VibeError, match=rf"'{full_bundle}' holds {total:,} bytes of model files"):
        bundle.install(str(full_bundle), tmp_path / "t", log=lambda _: None)
    assert _installed(tmp_path / "t") == []
    monkeypatch.setattr(bundle, "MAX_TOTAL_BYTES", total)
    assert len(bundle.install(str(full_bundle), tmp_path / "t", log=lambda _: None)) == len(bundle.REQUIRED_FILES)


def test_zip_link_member_is_refused(tmp_path):
    archive = tmp_path / "vibe_data.zip"
    link = zipfile.ZipInfo(f"vibe_data/{bundle.SMPL_FILE}")
    link.create_system = 3  # Unix: the mode is in the high 16 bits
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(link, "/home/user/.ssh/id_rsa")
    with pytest.raises(VibeError, match=rf"'{archive}:vibe_data/{bundle.SMPL_FILE}' is a symbolic link"):
        bundle.install(str(archive), tmp_path / "t", log=lambda _: None)
    assert _installed(tmp_path / "t") == []


def test_zip_bomb_is_refused_by_its_declared_size(tmp_path):
    archive = tmp_path / "vibe_data.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"vibe_data/{bundle.MEAN_PARAMS}", bytes(64 << 20))  # 64 MiB of zeros, 64 KiB packed
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(VibeError, match=rf"'{archive}:vibe_data/{bundle.MEAN_PARAMS}' holds 67,108,864 bytes"):
        bundle.install(str(archive), tmp_path / "t", log=lambda _: None)
    assert _installed(tmp_path / "t") == []


def _zip_declaring(
    path: Path, member: str, data: bytes, declared_size: int, compression: int = zipfile.ZIP_DEFLATED
) -> Path:
    """A zip whose headers declare ``declared_size`` bytes for a member that really holds ``data``."""
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr(member, data)
    raw = bytearray(path.read_bytes())
    for signature, size_offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory
        at = raw.index(signature) + size_offset
        raw[at : at + 4] = struct.pack("<I", declared_size)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("declared_size", [100, 9000])
def test_zip_member_whose_real_size_differs_from_the_declared_is_refused(tmp_path, declared_size):
    member = f"vibe_data/{bundle.MEAN_PARAMS}"
    archive = _zip_declaring(tmp_path / "vibe_data.zip", member, b"x" * 4096, declared_size)
    with pytest.raises(VibeError, match=rf"'{archive}:{member}' "):
        bundle.install(str(archive), tmp_path / "t", log=lambda _: None)
    assert _installed(tmp_path / "t") == []


@pytest.mark.parametrize("compression", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "LZMA"])
def test_a_zip_member_whose_reads_its_declared_size_does_not_bound_is_refused_unread(
    tmp_path, monkeypatch, compression
):
    """zipfile decompresses bzip2 and LZMA without a limit on each read: a 4.6 KB member declaring a
    small size filled 11 GB of memory. Here 8 MiB of zeros (a few hundred bytes packed) declare 100."""
    member = f"vibe_data/{bundle.SMPL_FILE}"
    archive = _zip_declaring(tmp_path / "vibe_data.zip", member, bytes(8 << 20), 100, compression)
    assert archive.stat().st_size < 64 << 10

    def decompressed(*args, **kwargs):
        raise AssertionError("the member was opened: its decompression has no bound")

    monkeypatch.setattr(zipfile.ZipFile, "open", decompressed)
    with pytest.raises(VibeError) as refused:
        bundle.install(str(archive), tmp_path / "t", log=lambda _: None)
    assert str(refused.value).startswith(
        f"Not installed: '{archive}:{member}' uses zip compression method {compression} "
        f"({'bzip2' if compression == zipfile.ZIP_BZIP2 else 'LZMA'}); only stored or deflated files are read"
    )
    assert _installed(tmp_path / "t") == []


def test_zip_total_is_capped(tmp_path, monkeypatch):
    archive = tmp_path / "vibe_data.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"vibe_data/{bundle.EXTRA_REGRESSOR}", bytes(3000))
        z.writestr(f"vibe_data/{bundle.H36M_REGRESSOR}", bytes(3000))
    monkeypatch.setattr(bundle, "MAX_TOTAL_BYTES", 5000)
    with pytest.raises(VibeError, match=rf"'{archive}' holds 6,000 bytes of model files"):
        bundle.install(str(archive), tmp_path / "t", log=lambda _: None)
    assert _installed(tmp_path / "t") == []


class _Payload(http.server.BaseHTTPRequestHandler):
    body = b""
    send_length = True
    content_type = None

    def do_GET(self):
        self.send_response(200)
        if self.send_length:
            self.send_header("Content-Length", str(len(self.body)))
        if self.content_type:
            self.send_header("Content-Type", self.content_type)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve(monkeypatch):
    """serve(body, send_length, content_type) -> the base URL of a loopback server answering every GET with body."""
    servers = []

    def start(body: bytes, send_length: bool, content_type: str | None = None) -> str:
        handler = type("Handler", (_Payload,), {"body": body, "send_length": send_length, "content_type": content_type})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("send_length", [True, False])
def test_url_download_is_bounded(serve, tmp_path, monkeypatch, send_length):
    base = serve(bytes(5000), send_length)
    monkeypatch.setattr(bundle, "MAX_DOWNLOAD_BYTES", 4000)
    with pytest.raises(VibeError, match=rf"'{base}/vibe_data.zip' is larger than the model data can be \(4,000"):
        bundle.install(f"{base}/vibe_data.zip", tmp_path / "t", log=lambda _: None)
    monkeypatch.setitem(bundle.MAX_FILE_BYTES, bundle.MEAN_PARAMS, 4000)  # a named file: its own bound
    with pytest.raises(VibeError, match=rf"'{base}/{bundle.MEAN_PARAMS}' is larger than the model data can be"):
        bundle.install(f"{base}/{bundle.MEAN_PARAMS}", tmp_path / "t", log=lambda _: None)
    assert _installed(tmp_path / "t") == []


def test_url_download_of_the_official_zip_layout(serve, full_bundle, official_zip, tmp_path):
    base = serve(official_zip.read_bytes(), send_length=False)
    installed = bundle.install(f"{base}/vibe_data.zip", tmp_path / "t", log=lambda _: None)
    assert set(installed) == set(bundle.REQUIRED_FILES) - {bundle.YOLO_WEIGHTS}
    assert (tmp_path / "t" / bundle.SMPL_FILE).read_bytes() == (full_bundle / bundle.SMPL_FILE).read_bytes()


WEB_PAGE = b"\n<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>\n"
WEB_PAGE_ADVICE = (
    "a web page, not the file (Google Drive asks for a confirmation for large files). Download it in a browser "
    "and install the downloaded file with 'vibe-mocap data install FILE'."
)


@pytest.mark.parametrize(
    "body, content_type",
    [(b"Sign in to continue.", "text/html; charset=utf-8"), (WEB_PAGE, None)],
    ids=["by its Content-Type", "by its first bytes"],
)
def test_a_download_link_that_answers_with_a_web_page_says_so(serve, tmp_path, body, content_type):
    """It was called "a zip archive that cannot be read: it is damaged or cut short"."""
    url = f"{serve(body, True, content_type)}/vibe_data.zip"
    with pytest.raises(VibeError) as refused:
        bundle.install(url, tmp_path / "t", log=lambda _: None)
    assert str(refused.value) == f"Not installed: for '{url}' the server sent {WEB_PAGE_ADVICE}"
    assert _installed(tmp_path / "t") == []


@pytest.mark.parametrize("name", ["vibe_data.zip", bundle.VIBE_CHECKPOINT])
def test_a_web_page_saved_as_the_model_data_says_so(tmp_path, name):
    saved = tmp_path / name
    saved.write_bytes(b"\xef\xbb\xbf" + WEB_PAGE)
    with pytest.raises(VibeError) as refused:
        bundle.install(str(saved), tmp_path / "t", log=lambda _: None)
    assert str(refused.value) == f"Not installed: '{saved}' is {WEB_PAGE_ADVICE}"
    assert _installed(tmp_path / "t") == []


def test_a_url_named_like_the_staging_folder_installs(serve, official_zip, tmp_path):
    """A URL ending in /staged was downloaded to the name of the staging folder, whose making then failed."""
    base = serve(official_zip.read_bytes(), send_length=True)
    installed = bundle.install(f"{base}/staged", tmp_path / "t", log=lambda _: None)
    assert set(installed) == set(bundle.REQUIRED_FILES) - {bundle.YOLO_WEIGHTS}


class _CutOff(http.server.BaseHTTPRequestHandler):
    """Announces a body and closes the connection half-way through it, plainly or chunked."""

    body = b""
    chunked = False
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        half = self.body[: len(self.body) // 2]
        self.send_response(200)
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(f"{len(self.body):x}\r\n".encode() + half)
        else:
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(half)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Announces 200 bytes and sends one every 50 ms (then ends: the old code waited for them all)."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "200")
        self.end_headers()
        for _ in range(200):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.05)

    def log_message(self, *args):
        pass


def test_a_download_that_trickles_is_stopped_saying_so(tmp_path, monkeypatch):
    """Each read had a timeout, the download none: a server sending a byte every 5 s never ended."""
    monkeypatch.setattr(bundle, "RATE_WINDOW_SECONDS", 0.5)
    monkeypatch.setattr(bundle, "MIN_DOWNLOAD_RATE", 1024)  # 1 KiB/s: 20 B/s is under it
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/vibe_data.zip"
    try:
        started = time.monotonic()
        with pytest.raises(VibeError) as stopped:
            bundle.install(url, tmp_path / "t", log=lambda _: None)
        assert time.monotonic() - started < 5
    finally:
        server.shutdown()
        server.server_close()
    assert re.fullmatch(
        rf"The download of '{re.escape(url)}' was stopped: it brought \d+ bytes in \d+ s, under the 1 KiB/s it "
        r"needs \(the server or the connection stalls\)\. Try again later, or download it in a browser .*",
        str(stopped.value),
    )
    assert _installed(tmp_path / "t") == []


@pytest.mark.parametrize("chunked", [False, True], ids=["with its length", "chunked"])
def test_a_download_cut_off_before_its_end_says_so(official_zip, tmp_path, chunked):
    """It was taken for a whole file ("neither a zip archive, a folder nor one of the model files"), or
    (chunked) ended in a raw traceback."""
    handler = type("Handler", (_CutOff,), {"body": official_zip.read_bytes(), "chunked": chunked})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/vibe_data.zip"
        with pytest.raises(VibeError, match=rf"The download of '{url}' was cut off before its end \(4 tries"):
            bundle.install(url, tmp_path / "t", log=lambda _: None)
    finally:
        server.shutdown()
        server.server_close()
    assert _installed(tmp_path / "t") == [] and _partials(tmp_path / "t") == []  # nothing to continue it by


@pytest.fixture(autouse=True)
def no_wait_between_tries(monkeypatch):
    monkeypatch.setattr(bundle, "RETRY_BACKOFF_SECONDS", 0)


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(f"{bundle.PARTIAL_PREFIX}*"))


class _Ranged(http.server.BaseHTTPRequestHandler):
    """A file server that continues downloads (Range with If-Range), scripted answer by answer:
    ``versions[i]`` (body, validator headers) is the file at answer i (the last one after that),
    ``cuts[i]`` the bytes answer i sends before it closes the connection (or first waits ``stall`` s),
    ``ranges`` False ignores Range, ``lie`` is a Content-Range sent instead of the true one.
    ``seen``: each request's (Range, If-Range)."""

    protocol_version = "HTTP/1.1"
    versions = [(b"", {})]
    cuts = ()
    stall = 0.0
    ranges = True
    lie = None
    part_of_it = None  # bytes a 206 sends to a request for the whole file (None: a 200 with all of it)
    seen: list

    def do_GET(self):  # noqa: N802 (http.server's name)
        answer = len(self.seen)
        self.seen.append((self.headers.get("Range"), self.headers.get("If-Range")))
        body, validators = self.versions[min(answer, len(self.versions) - 1)]
        start = self._start(validators)
        part = self.part_of_it if start is None else None
        self.send_response(200 if start is None and part is None else 206)
        for key, value in validators.items():
            self.send_header(key, value)
        if start is not None:
            self.send_header("Content-Range", self.lie or f"bytes {start}-{len(body) - 1}/{len(body)}")
        if part is not None:
            self.send_header("Content-Range", f"bytes 0-{part - 1}/{len(body)}")
        rest = body[start or 0 :] if part is None else body[:part]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        cut = self.cuts[answer] if answer < len(self.cuts) else None
        self.wfile.write(rest[:cut])
        self.wfile.flush()
        if cut is not None:
            time.sleep(self.stall)
            self.close_connection = True

    def _start(self, validators: dict) -> int | None:
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if self.ranges and asked and self.headers.get("If-Range") in validators.values():
            return int(asked[1])
        return None

    def log_message(self, *args):
        pass


@pytest.fixture
def ranged():
    """ranged(**script) -> (the URL of EXTRA_REGRESSOR on a loopback _Ranged server, its requests)."""
    servers = []

    def start(**script) -> tuple[str, list]:
        seen = []
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), type("Handler", (_Ranged,), {**script, "seen": seen})
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/{bundle.EXTRA_REGRESSOR}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


CUT = 100_000  # bytes an answer sends before its connection is cut
LAST_MODIFIED = "Wed, 01 Jan 2020 00:00:00 GMT"


@pytest.mark.parametrize(
    "how, validators, if_range",
    [
        ("closed", {"ETag": '"v1"'}, '"v1"'),
        ("timed out", {"ETag": '"v1"'}, '"v1"'),
        ("closed", {"ETag": 'W/"v1"', "Last-Modified": LAST_MODIFIED}, LAST_MODIFIED),  # a weak ETag never matches
    ],
)
def test_a_download_cut_off_continues_where_it_stopped(
    full_bundle, ranged, tmp_path, monkeypatch, how, validators, if_range
):
    """A connection cut at 90 % started the download over, from nothing, in a new install."""
    body = (full_bundle / bundle.EXTRA_REGRESSOR).read_bytes()
    if how == "timed out":
        monkeypatch.setattr(bundle, "DOWNLOAD_TIMEOUT_SECONDS", 0.3)
    url, seen = ranged(versions=[(body, validators)], cuts=[CUT], stall=1.5 if how == "timed out" else 0)
    said = []
    assert bundle.install(url, tmp_path / "t", log=said.append) == [bundle.EXTRA_REGRESSOR]
    assert (tmp_path / "t" / bundle.EXTRA_REGRESSOR).read_bytes() == body
    assert seen == [(None, None), (f"bytes={CUT}-", if_range)]
    assert f"Resuming the download of {bundle.EXTRA_REGRESSOR} at 100,000 bytes of {len(body):,} bytes." in said
    assert _partials(tmp_path / "t") == []


@pytest.mark.parametrize("change", ["ignores Range", "the file changed", "no validator"])
def test_a_download_the_server_cannot_continue_starts_over_in_the_same_install(full_bundle, ranged, tmp_path, change):
    body = (full_bundle / bundle.EXTRA_REGRESSOR).read_bytes()
    versions = {
        "ignores Range": [(body, {"ETag": '"v1"'})],
        "the file changed": [(bytes(len(body) + 999), {"ETag": '"v1"'}), (body, {"ETag": '"v2"'})],
        "no validator": [(body, {})],
    }[change]
    url, seen = ranged(versions=versions, cuts=[CUT], ranges=change != "ignores Range")
    assert bundle.install(url, tmp_path / "t", log=lambda _: None) == [bundle.EXTRA_REGRESSOR]
    assert (tmp_path / "t" / bundle.EXTRA_REGRESSOR).read_bytes() == body  # no byte of the first answer
    assert seen[1] == ((None, None) if change == "no validator" else (f"bytes={CUT}-", '"v1"'))
    assert _partials(tmp_path / "t") == []


@pytest.mark.parametrize("lie", ["bytes 0-{last}/{total}", "bytes 100000-{total}/{more}", "bytes */{total}", "x"])
def test_a_continuation_of_other_bytes_than_asked_is_refused(full_bundle, ranged, tmp_path, lie):
    body = (full_bundle / bundle.EXTRA_REGRESSOR).read_bytes()
    lie = lie.format(last=len(body) - 1, total=len(body), more=len(body) + 1)
    url, _ = ranged(versions=[(body, {"ETag": '"v1"'})], cuts=[CUT], lie=lie)
    with pytest.raises(VibeError) as refused:
        bundle.install(url, tmp_path / "t", log=lambda _: None)
    assert str(refused.value).startswith(
        f"Could not download '{url}': asked to continue at byte 100,000 of {len(body):,}, the server sent '{lie}' "
        "instead. Run the same command again to download it from the start"
    )
    assert _installed(tmp_path / "t") == [] and _partials(tmp_path / "t") == []


def test_a_download_cut_off_at_every_try_is_kept_and_the_same_install_continues_it(full_bundle, ranged, tmp_path):
    body = (full_bundle / bundle.EXTRA_REGRESSOR).read_bytes()
    url, seen = ranged(versions=[(body, {"ETag": '"v1"'})], cuts=[CUT] * 4)  # the 5th answer sends the rest
    target = tmp_path / "t"
    with pytest.raises(VibeError) as cut_off:
        bundle.install(url, target, log=lambda _: None)
    assert str(cut_off.value) == (
        f"The download of '{url}' was cut off before its end (4 tries, at 400,000 bytes of {len(body):,} bytes). "
        "The part downloaded is kept: run the same command again to continue it (or download it in a browser, "
        "then install the file with 'vibe-mocap data install FILE')."
    )
    part, sidecar = bundle._partial_paths(target, url)
    assert part.read_bytes() == body[: 4 * CUT] and json.loads(sidecar.read_text())["total"] == len(body)
    said = []
    assert bundle.install(url, target, log=said.append) == [bundle.EXTRA_REGRESSOR]
    assert seen[4] == ("bytes=400000-", '"v1"') and (target / bundle.EXTRA_REGRESSOR).read_bytes() == body
    assert f"Resuming the download of {bundle.EXTRA_REGRESSOR} at 400,000 bytes of {len(body):,} bytes." in said
    assert _partials(target) == []


def test_where_the_data_folder_cannot_be_locked_no_download_is_kept(full_bundle, ranged, tmp_path, monkeypatch):
    """Two installs of one URL would write the same partial file: unlocked, each keeps its own, to its end."""

    @contextlib.contextmanager
    def unguarded(folder, *args, **kwargs):
        folder.mkdir(parents=True, exist_ok=True)
        yield False

    monkeypatch.setattr(bundle, "folder_lock", unguarded)
    body = (full_bundle / bundle.EXTRA_REGRESSOR).read_bytes()
    url, _ = ranged(versions=[(body, {"ETag": '"v1"'})], cuts=[CUT] * 4)
    with pytest.raises(VibeError) as cut_off:
        bundle.install(url, tmp_path / "t", log=lambda _: None)
    assert str(cut_off.value).startswith(
        f"The download of '{url}' was cut off before its end (4 tries, at 400,000 bytes of {len(body):,} bytes); "
        "download it again"
    )
    assert os.listdir(tmp_path / "t") == []


def _link_to(outside: Path):
    def link(path: Path) -> None:
        path.unlink()
        path.symlink_to(outside)

    return link


ODD_SIDECARS = {
    "not JSON": lambda part, sidecar, kept, outside: sidecar.write_text("{"),
    "nested too deep": lambda part, sidecar, kept, outside: sidecar.write_text("[" * 4000),
    "a list": lambda part, sidecar, kept, outside: sidecar.write_text("[]"),
    "too long": lambda part, sidecar, kept, outside: sidecar.write_text(" " * 5000 + json.dumps(kept)),
    "another URL": lambda part, sidecar, kept, outside: sidecar.write_text(json.dumps({**kept, "url": "http://x/y"})),
    "a header in the validator": lambda part, sidecar, kept, outside: sidecar.write_text(
        json.dumps({**kept, "validator": '"v1"\r\nX-Injected: 1'})
    ),
    "a number as validator": lambda part, sidecar, kept, outside: sidecar.write_text(
        json.dumps({**kept, "validator": 1})
    ),
    "true as total": lambda part, sidecar, kept, outside: sidecar.write_text(json.dumps({**kept, "total": True})),
    "text as total": lambda part, sidecar, kept, outside: sidecar.write_text(json.dumps({**kept, "total": "9"})),
    "a total over the limit": lambda part, sidecar, kept, outside: sidecar.write_text(
        json.dumps({**kept, "total": bundle.MAX_FILE_BYTES[bundle.EXTRA_REGRESSOR] + 1})
    ),
    "a part longer than the total": lambda part, sidecar, kept, outside: part.write_bytes(bytes(kept["total"] + 1)),
    "a part linked out": lambda part, sidecar, kept, outside: _link_to(outside)(part),
    "a part hard-linked to another file": lambda part, sidecar, kept, outside: (part.unlink(), os.link(outside, part)),
    "a sidecar linked out": lambda part, sidecar, kept, outside: (
        outside.write_text(json.dumps(kept)),
        _link_to(outside)(sidecar),
    ),
}


@pytest.mark.parametrize("odd", ODD_SIDECARS)
def test_an_odd_kept_download_is_started_again(full_bundle, ranged, tmp_path, odd):
    """What the data folder holds about a download is a file anyone may have written: anything odd
    about it starts the download over, and nothing is written through a link."""
    body = (full_bundle / bundle.EXTRA_REGRESSOR).read_bytes()
    url, seen = ranged(versions=[(body, {"ETag": '"v1"'})])
    target = tmp_path / "t"
    target.mkdir()
    part, sidecar = bundle._partial_paths(target, url)
    part.write_bytes(body[:CUT])
    kept = {"url": url, "validator": '"v1"', "total": len(body)}
    sidecar.write_text(json.dumps(kept))
    outside = tmp_path / "outside"
    outside.write_bytes(b"the user's")
    ODD_SIDECARS[odd](part, sidecar, kept, outside)
    before = outside.read_bytes()
    assert bundle.install(url, target, log=lambda _: None) == [bundle.EXTRA_REGRESSOR]
    assert seen == [(None, None)] and (target / bundle.EXTRA_REGRESSOR).read_bytes() == body
    assert outside.read_bytes() == before and _partials(target) == []


def test_a_connection_that_fails_while_a_download_is_under_way_is_tried_again(
    full_bundle, ranged, tmp_path, monkeypatch
):
    """Only a body cut off was tried again: the next try's connection failing (the network's blip
    that cut the body off) ended the install."""
    body = (full_bundle / bundle.EXTRA_REGRESSOR).read_bytes()
    url, seen = ranged(versions=[(body, {"ETag": '"v1"'})], cuts=[CUT])
    real_urlopen, calls = urllib.request.urlopen, []

    def refused_once_cut_off(request, timeout):
        calls.append(request.full_url)
        if len(calls) == 2:
            raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        return real_urlopen(request, timeout=timeout)

    monkeypatch.setattr(bundle.urllib.request, "urlopen", refused_once_cut_off)
    assert bundle.install(url, tmp_path / "t", log=lambda _: None) == [bundle.EXTRA_REGRESSOR]
    assert (tmp_path / "t" / bundle.EXTRA_REGRESSOR).read_bytes() == body
    assert len(calls) == 3 and seen == [(None, None), (f"bytes={CUT}-", '"v1"')]


def test_a_full_disk_frees_the_part_downloaded_and_says_so(full_bundle, ranged, tmp_path, monkeypatch):
    """It was said as a network error, and the part (up to gigabytes) was kept on the full disk."""
    body = (full_bundle / bundle.EXTRA_REGRESSOR).read_bytes()
    url, _ = ranged(versions=[(body, {"ETag": '"v1"'})])
    real_open_part = bundle._open_part

    class FullDisk:
        def __init__(self, out):
            self.out = out

        def close(self):
            self.out.close()

        def write(self, chunk):
            self.out.write(chunk[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bundle, "_open_part", lambda partial: FullDisk(real_open_part(partial)))
    target = tmp_path / "t"
    with pytest.raises(VibeError) as full:
        bundle.install(url, target, log=lambda _: None)
    assert str(full.value) == (
        f"The download of {bundle.EXTRA_REGRESSOR} could not be written in '{target}' ([Errno 28] No space left "
        "on device). Free some space there (a full disk), or install into another folder with --data-dir, then "
        "install again."
    )
    assert _partials(target) == [] and _installed(target) == []


def test_bytes_lost_by_a_close_that_failed_are_not_filled_with_zeros(full_bundle, ranged, tmp_path, monkeypatch):
    """A cut-off try whose close failed to write its last bytes (a full disk) left the part shorter
    than counted, and the next try continued past a gap of zeros: a file that may still pass its check."""
    body = (full_bundle / bundle.EXTRA_REGRESSOR).read_bytes()
    monkeypatch.setattr(bundle, "DOWNLOAD_TIMEOUT_SECONDS", 0.3)  # the cut: a read that times out
    url, _ = ranged(versions=[(body, {"ETag": '"v1"'})], cuts=[CUT], stall=1.5)
    real_open_part = bundle._open_part

    class LastBytesLost:
        def __init__(self, out):
            self.out, self.lost = out, False

        def write(self, chunk):
            self.out.write(chunk[:-10] if not self.lost else b"")  # the rest would be written at close...
            self.lost = True

        def close(self):
            self.out.close()
            raise OSError(errno.ENOSPC, "No space left on device")  # ...which the disk refused

    opened = []
    monkeypatch.setattr(
        bundle,
        "_open_part",
        lambda partial: (
            (opened.append(1), LastBytesLost(real_open_part(partial)))[1] if not opened else real_open_part(partial)
        ),
    )
    with pytest.raises(VibeError, match="shorter than the bytes received"):
        bundle.install(url, tmp_path / "t", log=lambda _: None)
    assert _partials(tmp_path / "t") == [] and _installed(tmp_path / "t") == []


def test_part_of_the_file_sent_for_all_of_it_is_refused(full_bundle, ranged, tmp_path):
    """A 206 to a request without Range was taken as the whole file, then called an invalid model file."""
    url, _ = ranged(versions=[((full_bundle / bundle.EXTRA_REGRESSOR).read_bytes(), {"ETag": '"v1"'})], part_of_it=100)
    with pytest.raises(
        VibeError, match=r"asked for the whole file, the server sent part of it \(206 Partial Content\)"
    ):
        bundle.install(url, tmp_path / "t", log=lambda _: None)
    assert _partials(tmp_path / "t") == [] and _installed(tmp_path / "t") == []


def _kept_download(target: Path, url: str, body: bytes) -> None:
    """What an interrupted install of ``url`` left in ``target``: its first CUT bytes, ETag "v1"."""
    target.mkdir()
    part, sidecar = bundle._partial_paths(target, url)
    part.write_bytes(body[:CUT])
    sidecar.write_text(json.dumps({"url": url, "validator": '"v1"', "total": len(body)}))


def test_a_kept_download_whose_file_grew_too_large_is_not_kept_again(full_bundle, ranged, tmp_path, monkeypatch):
    """The file changed and is now too large: the old part stayed, to be refused at every install for a week."""
    body = (full_bundle / bundle.EXTRA_REGRESSOR).read_bytes()
    monkeypatch.setitem(bundle.MAX_FILE_BYTES, bundle.EXTRA_REGRESSOR, len(body))
    url, seen = ranged(versions=[(body + bytes(1000), {"ETag": '"v2"'})])
    _kept_download(tmp_path / "t", url, body)
    with pytest.raises(VibeError, match="larger than the model data can be"):
        bundle.install(url, tmp_path / "t", log=lambda _: None)
    assert seen == [(f"bytes={CUT}-", '"v1"')] and _partials(tmp_path / "t") == []


def test_a_web_page_answering_a_continuation_keeps_the_part_downloaded(full_bundle, ranged, tmp_path):
    """A captive portal's sign-in page (or a proxy's error page) says nothing of the file: once past it,
    the same command continues the download."""
    body = (full_bundle / bundle.EXTRA_REGRESSOR).read_bytes()
    url, _ = ranged(versions=[(b"<html>sign in</html>", {"Content-Type": "text/html"})])
    _kept_download(tmp_path / "t", url, body)
    with pytest.raises(VibeError, match="a web page"):
        bundle.install(url, tmp_path / "t", log=lambda _: None)
    assert len(_partials(tmp_path / "t")) == 2


def test_a_progress_bar_that_cannot_be_written_is_not_taken_for_a_full_disk(full_bundle, ranged, tmp_path, monkeypatch):
    """`data install URL 2>&1 | head`: the bar's BrokenPipeError was called a full disk, and the part
    downloaded was deleted."""
    body = (full_bundle / bundle.EXTRA_REGRESSOR).read_bytes()
    url, _ = ranged(versions=[(body, {"ETag": '"v1"'})])
    _kept_download(tmp_path / "t", url, body)

    class ClosedTerminal:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(tqdm, "tqdm", ClosedTerminal)
    with pytest.raises(VibeError) as failed:
        bundle.install(url, tmp_path / "t", log=lambda _: None)
    assert "Broken pipe" in str(failed.value) and "full disk" not in str(failed.value)
    assert len(_partials(tmp_path / "t")) == 2  # the part downloaded stays, to be continued


def test_the_next_install_keeps_an_interrupted_download_for_a_week(full_bundle, tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    fresh = [target / f"{bundle.PARTIAL_PREFIX}0000000000000001.{suffix}" for suffix in ("part", "json")]
    old = [target / f"{bundle.PARTIAL_PREFIX}0000000000000002.{suffix}" for suffix in ("part", "json")]
    for path in fresh + old:
        path.write_bytes(b"x")
    week_ago = time.time() - 8 * 24 * 3600
    os.utime(fresh[1], (week_ago, week_ago))  # the sidecar is written once, the part as bytes come
    for path in old:
        os.utime(path, (week_ago, week_ago))
    said = []
    bundle.install(str(full_bundle / bundle.EXTRA_REGRESSOR), target, log=said.append)
    assert _partials(target) == sorted(path.name for path in fresh)
    assert f"removed 1 interrupted download(s) left for over 7 days in {target}" in said


def test_a_zip_cut_short_on_the_disk_is_called_damaged(official_zip, tmp_path):
    cut = tmp_path / "vibe_data.zip"
    cut.write_bytes(official_zip.read_bytes()[: official_zip.stat().st_size // 2])
    with pytest.raises(VibeError, match="is a zip archive that cannot be read: it is damaged or cut short"):
        bundle.install(str(cut), tmp_path / "t", log=lambda _: None)


def test_check_reports_special_and_impossible_files_without_reading_them(full_bundle):
    (full_bundle / bundle.SPIN_CHECKPOINT).unlink()
    os.mkfifo(full_bundle / bundle.SPIN_CHECKPOINT)
    with open(full_bundle / bundle.SMPL_FILE, "r+b") as f:
        f.truncate(bundle.MAX_FILE_BYTES[bundle.SMPL_FILE] + 1)
    statuses = {s.name: s for s in bundle.check_bundle(full_bundle)}
    assert statuses[bundle.SPIN_CHECKPOINT].status == "invalid"
    assert "not a regular file" in statuses[bundle.SPIN_CHECKPOINT].detail
    assert statuses[bundle.SMPL_FILE].status == "invalid"
    assert (
        f"{bundle.MAX_FILE_BYTES[bundle.SMPL_FILE] + 1:,} bytes, more than any real"
        in statuses[bundle.SMPL_FILE].detail
    )


# --------------------------------------------------------------------------------------------
# Invalid source files never replace installed ones
# --------------------------------------------------------------------------------------------


@pytest.fixture
def broken_source(full_bundle, tmp_path) -> Path:
    """Official names with broken contents (a text SMPL file, an empty regressor, a random
    checkpoint), beside one valid file."""
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / bundle.SMPL_FILE).write_text("not a model\n")
    (folder / bundle.EXTRA_REGRESSOR).write_bytes(b"")
    (folder / bundle.VIBE_CHECKPOINT).write_bytes(np.random.default_rng(0).bytes(5000))
    shutil.copy(full_bundle / bundle.H36M_REGRESSOR, folder)
    return folder


def _contents(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in folder.iterdir() if p.name not in (bundle.YOLO_WEIGHTS, bundle.INSTALL_LOCK)
    }


def test_install_keeps_the_installed_files_when_the_new_ones_are_invalid(full_bundle, broken_source, capsys):
    before = _contents(full_bundle)
    assert cli(["data", "install", str(broken_source), "--data-dir", str(full_bundle)]) == 2
    captured = capsys.readouterr()
    for name in (bundle.SMPL_FILE, bundle.EXTRA_REGRESSOR, bundle.VIBE_CHECKPOINT):
        assert f"kept the existing {name}: the new one is invalid: " in captured.out
    assert f"installed {bundle.H36M_REGRESSOR}: (17, 6890)" in captured.out
    assert f"'{broken_source / bundle.SMPL_FILE}' is not a readable SMPL model file" in captured.out  # the source
    assert ".download-" not in captured.out + captured.err  # never the staged copy
    assert "installed SMPL_NEUTRAL.pkl" not in captured.out
    err = captured.err
    assert err.count("error:") == 1 and f"{bundle.SMPL_FILE}, {bundle.EXTRA_REGRESSOR}, {bundle.VIBE_CHECKPOINT}" in err
    assert "is unchanged" in err and "vibe-mocap data check" in err
    assert _contents(full_bundle) == before
    assert bundle.bundle_ok(bundle.check_bundle(full_bundle))
    assert [p.name for p in full_bundle.iterdir() if p.name.startswith(".")] == [bundle.INSTALL_LOCK]


def test_install_of_an_invalid_file_into_an_empty_folder_installs_nothing_under_its_name(
    full_bundle, broken_source, tmp_path, capsys
):
    target = tmp_path / "fresh"
    with pytest.raises(VibeError, match=rf"Not installed: {bundle.SMPL_FILE}, "):
        bundle.install(str(broken_source), target)
    out = capsys.readouterr().out
    assert f"not installed {bundle.SMPL_FILE}: the new one is invalid, and none is installed: " in out
    assert _installed(target) == [bundle.H36M_REGRESSOR]
    # a valid file installs over an invalid one
    (target / bundle.SMPL_FILE).write_text("damaged")
    assert bundle.install(str(full_bundle / bundle.SMPL_FILE), target, log=lambda _: None) == [bundle.SMPL_FILE]
    assert (target / bundle.SMPL_FILE).read_bytes() == (full_bundle / bundle.SMPL_FILE).read_bytes()


def test_install_refuses_a_folder_in_a_model_files_place(full_bundle, tmp_path, capsys):
    target = tmp_path / "t"
    (target / bundle.SMPL_FILE).mkdir(parents=True)
    (target / bundle.SMPL_FILE / "notes.txt").write_text("the user's notes")
    assert cli(["data", "install", str(full_bundle), "--data-dir", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"'{target / bundle.SMPL_FILE}' is a folder where {bundle.SMPL_FILE} must be a file" in err
    assert ".download-" not in err
    assert _installed(target) == [bundle.SMPL_FILE]
    assert (target / bundle.SMPL_FILE / "notes.txt").read_text() == "the user's notes"


# --------------------------------------------------------------------------------------------
# The placeholder stands in only when no model data is installed
# --------------------------------------------------------------------------------------------


def _partial(folder: Path, how: str) -> Path:
    if how == "only-yolo":
        for f in folder.iterdir():
            if f.name != bundle.YOLO_WEIGHTS:
                f.unlink()
        return folder
    (folder / bundle.SMPL_FILE).unlink()
    if how == "folder":
        (folder / bundle.SMPL_FILE).mkdir()
    return folder


@pytest.mark.parametrize("how", ["missing", "folder", "only-yolo"])
def test_partial_model_data_fails_instead_of_running_the_placeholder(full_bundle, tmp_path, how):
    from vibe_server.data.loading import load_for_inference

    data_dir = _partial(full_bundle, how)
    placeholder = tmp_path / "placeholder"
    with pytest.raises(VibeError) as err:
        load_for_inference(data_dir, device="cpu", allow_synthetic=True, synthetic_dir=placeholder)
    text = str(err.value)
    assert f"The model data in {data_dir} is incomplete" in text
    smpl = "not a regular file" if how == "folder" else "missing"
    assert f"  {bundle.SMPL_FILE}: {smpl}" in text
    assert (f"  {bundle.VIBE_CHECKPOINT}: missing" in text) == (how == "only-yolo")
    assert f"'vibe-mocap data install PATH_OR_URL --data-dir {data_dir}'" in text
    assert f"'vibe-mocap data check --data-dir {data_dir}'" in text
    assert not placeholder.exists()


def test_no_model_data_still_runs_the_placeholder(synthetic_bundle, tmp_path):
    from vibe_server.data.loading import SYNTHETIC_MODEL_NAME, load_for_inference

    (tmp_path / "data" / "sample_video.mp4").parent.mkdir()  # other files are not model data
    (tmp_path / "data" / "sample_video.mp4").write_bytes(b"x")
    loaded = load_for_inference(tmp_path / "data", device="cpu", allow_synthetic=True, synthetic_dir=synthetic_bundle)
    assert loaded.model_name == SYNTHETIC_MODEL_NAME and loaded.data_dir == synthetic_bundle
    with pytest.raises(VibeError, match="Model data missing"):
        load_for_inference(tmp_path / "data", device="cpu")


def test_the_placeholders_folder_is_never_taken_for_the_model_data(synthetic_bundle, tmp_path, capsys):
    """Its folder is named in the messages: installed as the model data, `data check` called its random
    checkpoint valid and `infer` labelled its results with the official model's name."""
    from vibe_server.data.loading import SYNTHETIC_MODEL_NAME, load_for_inference

    placeholder = tmp_path / "synthetic-placeholder"
    shutil.copytree(synthetic_bundle, placeholder)
    (placeholder / synthetic.INSTALL_TOKEN).write_text("0" * 32, encoding="ascii")  # as its install writes it
    target = tmp_path / "installed"
    assert cli(["data", "install", str(placeholder), "--data-dir", str(target)]) == 2
    assert "holds the synthetic placeholder model (random weights" in capsys.readouterr().err
    assert _installed(target) == []
    assert load_for_inference(placeholder, device="cpu").model_name == SYNTHETIC_MODEL_NAME
    assert load_for_inference(synthetic_bundle, device="cpu").model_name == "vibe_model_wo_3dpw"  # no token


def test_the_python_batch_runs_no_placeholder_unless_asked(tmp_path):
    """EngineSpec() ran the random-weight placeholder without a word when the model data was missing;
    the command line asks for it (and says so before the run), the Python caller must too."""
    from vibe_server.batch.engine_adapter import EngineSpec, WorkerSetupError, load_worker_engine

    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkerSetupError, match="Model data missing"):
        load_worker_engine(EngineSpec(device="cpu", data_dir=str(tmp_path / "empty")))


def _placeholder_leftovers(folder: Path) -> list[str]:
    lock = f".{folder.name}.lock"  # kept: deleting a lock file would let two processes hold "it"
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.") and p.name != lock)


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_damaged_placeholder_is_written_again_not_reported_as_a_download(synthetic_bundle, tmp_path, damage):
    from vibe_server.data.loading import SYNTHETIC_MODEL_NAME, load_for_inference

    placeholder = tmp_path / "placeholder"  # what an interrupted first demo left (written in place)
    shutil.copytree(synthetic_bundle, placeholder)
    checkpoint = placeholder / bundle.VIBE_CHECKPOINT
    if damage == "truncated":
        os.truncate(checkpoint, checkpoint.stat().st_size // 2)
    else:
        checkpoint.unlink()
    logs = {1: [], 2: []}
    for run in (1, 2):
        loaded = load_for_inference(
            tmp_path / "data", device="cpu", allow_synthetic=True, synthetic_dir=placeholder, log=logs[run].append
        )
        assert loaded.model_name == SYNTHETIC_MODEL_NAME and loaded.data_dir == placeholder
    assert logs[1][-1] == f"Writing the synthetic placeholder model to {placeholder} (once)."
    assert any("is damaged; writing it again" in line for line in logs[1]) == (damage == "truncated")
    assert logs[2] == []  # written again once, then used as it is
    assert _placeholder_leftovers(placeholder) == []


def test_a_placeholder_an_older_version_wrote_with_repeated_faces_is_written_again(tmp_path, monkeypatch):
    """Older placeholders padded the body with repeated faces, which Blender's glTF exporter deletes
    from the character in the scene (Mesh.validate)."""
    from vibe_server.data.loading import load_for_inference

    placeholder = tmp_path / "placeholder"
    make_body_model = synthetic.make_body_model

    def padded_as_before(seed=0):
        model = make_body_model(seed)
        model.faces[-576:] = model.faces[:576]
        return model

    with monkeypatch.context() as m:
        m.setattr(synthetic, "make_body_model", padded_as_before)
        synthetic.install_synthetic_bundle(placeholder)
    assert synthetic.repeats_a_face(load_smpl_pkl(placeholder / bundle.SMPL_FILE).faces)
    log = []
    loaded = load_for_inference(
        tmp_path / "data", device="cpu", allow_synthetic=True, synthetic_dir=placeholder, log=log.append
    )
    assert f"The synthetic placeholder model in {placeholder} is from an older version" in log[0]
    assert not synthetic.repeats_a_face(load_smpl_pkl(placeholder / bundle.SMPL_FILE).faces)
    assert not synthetic.repeats_a_face(loaded.model.regressor.smpl.faces_tensor.numpy())
    assert _placeholder_leftovers(placeholder) == []


def _half_then_fail(real_save, error):
    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        os.truncate(f, os.path.getsize(f) // 2)  # cut short by a kill or a full disk
        raise error

    return save


@pytest.mark.parametrize("how", ["disk full", "interrupted", "killed"])
def test_an_interrupted_placeholder_write_leaves_no_bundle(tmp_path, monkeypatch, how):
    from vibe_server.data.loading import SYNTHETIC_MODEL_NAME, load_for_inference

    placeholder = tmp_path / "cache" / "placeholder"
    error = OSError(28, "No space left on device") if how == "disk full" else KeyboardInterrupt()
    with monkeypatch.context() as m:
        m.setattr(torch, "save", _half_then_fail(torch.save, error))
        if how == "killed":  # no clean-up runs
            m.setattr(synthetic, "_remove", lambda path: None)
        with pytest.raises(type(error)):
            load_for_inference(tmp_path / "data", device="cpu", allow_synthetic=True, synthetic_dir=placeholder)
    assert not os.path.lexists(placeholder)  # never a cut-short bundle under the real name
    leftovers = _placeholder_leftovers(placeholder)
    assert len(leftovers) == (how == "killed") and all(n.endswith(".part") for n in leftovers)

    if leftovers:  # a later install removes what a killed one left, once it is stale
        stale = time.time() - synthetic.STALE_SECONDS - 60
        os.utime(placeholder.parent / leftovers[0], (stale, stale))
    loaded = load_for_inference(tmp_path / "data", device="cpu", allow_synthetic=True, synthetic_dir=placeholder)
    assert loaded.model_name == SYNTHETIC_MODEL_NAME
    assert _placeholder_leftovers(placeholder) == []
    installed = set(bundle.REQUIRED_FILES) - {bundle.YOLO_WEIGHTS} | {synthetic.INSTALL_TOKEN}
    assert sorted(p.name for p in placeholder.iterdir()) == sorted(installed)


def test_placeholder_installed_meanwhile_by_another_process_is_kept(tmp_path, monkeypatch):

    placeholder = tmp_path / "placeholder"

    def write_while_another_process_finishes_first(folder, **options):
        (folder / "ours").write_text("ours")
        other = tmp_path / "other"
        other.mkdir()
        (other / "theirs").write_text("theirs")
        os.rename(other, placeholder)  # the other process's rename, before ours

    monkeypatch.setattr(synthetic, "write_synthetic_bundle", write_while_another_process_finishes_first)
    assert synthetic.install_synthetic_bundle(placeholder) == placeholder
    assert sorted(p.name for p in placeholder.iterdir()) == ["theirs"]
    assert _placeholder_leftovers(placeholder) == []


def test_a_damaged_placeholder_replaced_meanwhile_by_another_process_is_kept(tmp_path):

    placeholder = tmp_path / "placeholder"
    placeholder.mkdir()
    damaged = synthetic.folder_identity(placeholder)
    placeholder.rename(tmp_path / "gone")  # another process discarded it and installed its own
    placeholder.mkdir()
    (placeholder / "theirs").write_text("theirs")
    synthetic.discard_synthetic_bundle(placeholder, damaged)
    assert sorted(p.name for p in placeholder.iterdir()) == ["theirs"]
    synthetic.discard_synthetic_bundle(placeholder, synthetic.folder_identity(placeholder))
    assert not placeholder.exists() and _placeholder_leftovers(placeholder) == []


def _write_stub_bundle(folder: Path, **options) -> None:
    from vibe_server.data.loading import NETWORK_FILES

    for name in NETWORK_FILES:
        (folder / name).write_text("stub")


@pytest.mark.parametrize("damaged_by", ["an install", "an older version"])
def test_a_damaged_placeholder_deleted_and_written_again_by_another_process_is_kept(tmp_path, monkeypatch, damaged_by):
    """Two processes found the same placeholder damaged. The first deleted it and installed a fresh one,
    whose folder the file system may give the deleted one's inode number; the second's discard comes after."""

    monkeypatch.setattr(synthetic, "write_synthetic_bundle", _write_stub_bundle)
    placeholder = tmp_path / "placeholder"
    if damaged_by == "an install":
        synthetic.install_synthetic_bundle(placeholder)
    else:  # written in place, without a token
        placeholder.mkdir()
        _write_stub_bundle(placeholder)
    damaged = synthetic.folder_identity(placeholder)  # what both processes found and could not load

    synthetic.discard_synthetic_bundle(placeholder, damaged)  # the first process deletes it...
    assert not os.path.lexists(placeholder)
    synthetic.install_synthetic_bundle(placeholder)  # ...and installs a fresh one
    fresh = synthetic.folder_identity(placeholder)
    synthetic.discard_synthetic_bundle(placeholder, damaged)  # the second process's discard
    assert synthetic.folder_identity(placeholder) == fresh != damaged
    assert _placeholder_leftovers(placeholder) == []


def test_concurrent_first_loads_write_the_placeholder_once(tmp_path, monkeypatch):
    from vibe_server.data import loading, synthetic

    placeholder = tmp_path / "cache" / "placeholder"
    writes, first_writing, second_waiting = [], threading.Event(), threading.Event()

    def write(folder, **options):
        writes.append(folder)
        if len(writes) == 1:
            first_writing.set()
            second_waiting.wait(timeout=60)  # until the second load waits for this write (or writes too)
        else:
            second_waiting.set()
        _write_stub_bundle(folder)

    monkeypatch.setattr(synthetic, "write_synthetic_bundle", write)
    one_face = SimpleNamespace(regressor=SimpleNamespace(smpl=SimpleNamespace(faces_tensor=torch.tensor([[0, 1, 2]]))))
    monkeypatch.setattr(loading, "load_model", lambda folder, device: one_face)  # the stub bundle is no model
    logs, errors = {1: [], 2: []}, []

    def second_log(line):
        logs[2].append(line)
        if line.startswith("Waiting for another process"):
            second_waiting.set()

    def load(log):
        try:
            loading.load_for_inference(
                tmp_path / "data", device="cpu", allow_synthetic=True, synthetic_dir=placeholder, log=log
            )
        except BaseException as err:
            errors.append(err)

    first = threading.Thread(target=load, args=(logs[1].append,))
    first.start()
    assert first_writing.wait(timeout=60)
    second = threading.Thread(target=load, args=(second_log,))
    second.start()
    first.join(timeout=60)
    second.join(timeout=60)
    assert errors == [] and len(writes) == 1
    assert logs == {
        1: [f"Writing the synthetic placeholder model to {placeholder} (once)."],
        2: [f"Waiting for another process writing the placeholder model to {placeholder}."],
    }
    assert _placeholder_leftovers(placeholder) == []


def test_infer_on_partial_model_data_says_what_is_missing(full_bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # never the user's placeholder
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"fake")
    data_dir = _partial(full_bundle, "missing")
    assert cli(["infer", str(video), "--data-dir", str(data_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "SYNTHETIC" not in err and err.count("error:") == 1
    assert f"is incomplete:\n  {bundle.SMPL_FILE}: missing" in err


def test_serve_on_partial_model_data_answers_503_with_the_reason(full_bundle, tmp_path):
    from fastapi.testclient import TestClient

    from vibe_server.api.app import create_app
    from vibe_server.api.settings import Settings

    settings = Settings(
        token="t",
        data_dir=_partial(full_bundle, "missing"),
        jobs_dir=tmp_path / "jobs",
        device="cpu",
        allow_synthetic=True,
    )
    with TestClient(
        create_app(settings), base_url="http://127.0.0.1:8765", headers={"Authorization": "Bearer t"}
    ) as client:
        answer = client.get("/api/v1/body_model")
    assert answer.status_code == 503
    assert "is incomplete" in answer.json()["detail"] and bundle.SMPL_FILE in answer.json()["detail"]


# --------------------------------------------------------------------------------------------
# Files that load but are not what their name says: 'invalid', never a crash
# --------------------------------------------------------------------------------------------


def _generator(**changes) -> dict:
    """A gen_state_dict that loads: one official key of its shape (the container is checked before the keys)."""
    return {"encoder.linear.bias": torch.zeros(2048), **changes}


@pytest.mark.parametrize(
    "name, ckpt, match",
    [
        (bundle.VIBE_CHECKPOINT, {"gen_state_dict": [1, 2, 3]}, "'gen_state_dict' is a list"),
        (bundle.VIBE_CHECKPOINT, {"gen_state_dict": {1: torch.zeros(1)}}, "has the key 1"),
        (bundle.VIBE_CHECKPOINT, {"gen_state_dict": _generator(**{"encoder.linear.bias": 0})}, "value of type int"),
        (bundle.VIBE_CHECKPOINT_3DPW, {"gen_state_dict": _generator(), "performance": "abc"}, "'performance' is 'abc'"),
        (bundle.VIBE_CHECKPOINT, {"gen_state_dict": _generator(), "performance": torch.zeros(2)}, "'performance' is"),
        (bundle.SPIN_CHECKPOINT, {"model": [1]}, "'model' is a list"),
    ],
)
def test_a_checkpoint_of_the_wrong_structure_is_invalid(tmp_path, name, ckpt, match):
    torch.save(ckpt, tmp_path / name)
    status = bundle.check_file(name, tmp_path / name)
    assert status.status == "invalid" and re.search(match, status.detail), status.detail


def test_an_smpl_model_with_other_joint_parents_is_invalid(tmp_path, synthetic_bundle):
    from vibe_blender.core.smpl_model import load_smpl_pkl

    model = load_smpl_pkl(synthetic_bundle / bundle.SMPL_FILE)
    parents = model.parents.copy()
    parents[23] = 20
    arrays = {
        "v_template": model.v_template,
        "f": model.faces,
        "weights": model.lbs_weights,
        "shapedirs": model.shapedirs,
        "posedirs": model.posedirs,
        "J_regressor": model.J_regressor,
        "kintree_table": np.stack([parents, np.arange(24)]),
    }
    (tmp_path / bundle.SMPL_FILE).write_bytes(pickle.dumps(arrays, protocol=2))
    status = bundle.check_file(bundle.SMPL_FILE, tmp_path / bundle.SMPL_FILE)
    assert status.status == "invalid" and "are not SMPL's" in status.detail


UNFORESEEN_WORDS = "its content is not laid out as expected"  # a KeyError in words, not by its name


def test_any_failure_of_a_validator_is_invalid_and_the_install_goes_on(full_bundle, tmp_path, monkeypatch):
    def unforeseen(path):
        raise KeyError("an unforeseen problem")

    monkeypatch.setitem(bundle.CHECKS, bundle.MEAN_PARAMS, unforeseen)
    status = bundle.check_file(bundle.MEAN_PARAMS, full_bundle / bundle.MEAN_PARAMS)
    assert status.status == "invalid" and status.detail == f"unreadable as {bundle.MEAN_PARAMS} ({UNFORESEEN_WORDS})"
    logged = []
    with pytest.raises(VibeError, match=rf"Not installed: {bundle.MEAN_PARAMS} from"):
        bundle.install(str(full_bundle), tmp_path / "t", log=logged.append)
    assert set(_installed(tmp_path / "t")) == set(bundle.REQUIRED_FILES) - {bundle.MEAN_PARAMS}
    assert any(line.startswith(f"not installed {bundle.MEAN_PARAMS}: ") and UNFORESEEN_WORDS in line for line in logged)


# --------------------------------------------------------------------------------------------
# An archive's central directory is bounded before zipfile reads it
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: zip_bytes([Member("x", b"a")], copies=40), "a zip directory listing 40 entries, more than 10"),
        # the end record's count may lie: zipfile reads every entry the directory holds
        (lambda: zip_bytes([Member("x", b"a")], copies=40, declared=1), r"a zip directory of 1880 bytes"),
    ],
    ids=["many entries", "count understated"],
)
def test_an_archive_with_a_huge_directory_is_refused_before_zipfile_reads_it(tmp_path, monkeypatch, make, match):
    monkeypatch.setattr(bundle, "MAX_ARCHIVE_MEMBERS", 10)
    monkeypatch.setattr(bundle, "MAX_ARCHIVE_DIRECTORY_BYTES", 1000)
    archive = tmp_path / "vibe_data.zip"
    archive.write_bytes(make())
    opened = []
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: opened.append(a) or pytest.fail("ZipFile was reached"))
    with pytest.raises(VibeError, match=rf"Not installed: '{archive}' has {match}"):
        bundle.install(str(archive), tmp_path / "t", log=lambda _: None)
    assert _installed(tmp_path / "t") == []


def test_an_archive_whose_end_record_understates_its_entries_is_counted_again(tmp_path, monkeypatch):
    """A directory small enough for its bytes, whose end record says 1 entry: zipfile reads all 40.
    Before, the install went on past the documented bound on entries."""
    monkeypatch.setattr(bundle, "MAX_ARCHIVE_MEMBERS", 10)
    archive = tmp_path / "vibe_data.zip"
    archive.write_bytes(zip_bytes([Member("x", b"a")], copies=40, declared=1))
    with pytest.raises(
        VibeError, match=rf"Not installed: '{archive}' has a zip directory listing 40 entries, more than 10"
    ):
        bundle.install(str(archive), tmp_path / "t", log=lambda _: None)
    assert _installed(tmp_path / "t") == []


class _OddLength(_Payload):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "²")  # str.isdigit says yes, int() no
        self.end_headers()
        self.wfile.write(self.body)


def test_a_content_length_of_non_ascii_digits_is_no_length(tmp_path, monkeypatch):
    handler = type("Handler", (_OddLength,), {"body": bytes(5000)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(bundle, "MAX_DOWNLOAD_BYTES", 4000)
    try:
        with pytest.raises(VibeError, match="is larger than the model data can be"):  # bounded while reading
            bundle.install(f"http://127.0.0.1:{server.server_address[1]}/vibe_data.zip", tmp_path / "t")
    finally:
        server.shutdown()
        server.server_close()
    assert _installed(tmp_path / "t") == []

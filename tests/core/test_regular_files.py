"""Every reader of a file a user picks (or that another file names) opens it only as a regular file: a
FIFO would block the reader (in Blender, the whole UI) and a link to /dev/zero would read without end.
Each reader runs in a sandboxed child, so one that blocks or reads on fails its test instead of
hanging or filling the machine."""

import errno
import os

import pytest
from hostile_files import NOT_REGULAR_KINDS, make_not_regular, read_in_sandbox

from vibe_blender.core import regular_file
from vibe_blender.core.errors import VibeError
from vibe_blender.core.regular_file import NotRegularFileError, open_regular_file, open_user_file

NOT_READ = "is not a regular file (a device, FIFO or socket), so it was not read."

READERS = [  # (reader, the name the file has, words of its advice)
    ("vibe_blender.core.readers:read_motion_file", "take.npz", "Choose a VIBE Mocap result"),
    ("vibe_blender.core.readers:read_motion_file", "vibe_output.pkl", "Choose a VIBE Mocap result"),
    ("vibe_blender.core.readers.amass_npz:read_amass_npz", "walk.npz", "Choose an AMASS-style .npz"),
    ("vibe_blender.core.result_file:load_result", "take.npz", "Choose a VIBE Mocap result (.npz) file"),
    ("vibe_blender.core.smpl_model:load_body_model", "body_model.npz", "Download it again"),
    ("vibe_blender.core.smpl_model:load_smpl_pkl", "SMPL_NEUTRAL.pkl", "vibe-mocap data install"),
    ("vibe_blender.core.model_data:read_body_model", "SMPL_NEUTRAL.pkl", "vibe-mocap data install"),
    ("vibe_blender.core.model_data:read_body_model", "body_model.npz", "Download it again"),
    ("vibe_blender.core.retarget_map:load_map", "rig.json", "Choose a .json map saved from the Retarget panel"),
    ("vibe_blender.core.safe_npz:read_npy", "J_regressor_h36m.npy", ""),
]


@pytest.mark.parametrize("kind", NOT_REGULAR_KINDS)
@pytest.mark.parametrize("reader, name, advice", READERS, ids=[f"{r.split(':')[1]}-{n}" for r, n, _ in READERS])
def test_a_reader_refuses_a_fifo_or_a_device_at_once_naming_the_file(tmp_path, reader, name, advice, kind):
    path = make_not_regular(tmp_path / name, kind)
    outcome = read_in_sandbox(reader, path, memory_mb=1024, timeout_s=30)
    assert outcome.refused, outcome
    assert f"{name}' {NOT_READ}" in outcome.message or f"{name} {NOT_READ}" in outcome.message, outcome.message
    assert advice in outcome.message, outcome.message


@pytest.mark.parametrize("kind", NOT_REGULAR_KINDS)
def test_a_body_model_note_that_is_no_regular_file_counts_as_no_note(tmp_path, kind):
    """The note beside a cached body model is read at every capture: a FIFO or a device there is no note."""
    make_not_regular(tmp_path / "body_model.json", kind)
    outcome = read_in_sandbox(
        "vibe_blender.core.model_data:cached_body_model_note", tmp_path / "body_model.npz", timeout_s=30
    )
    assert outcome.message == "returned", outcome


def test_open_user_file_says_what_is_wrong_and_what_to_choose(tmp_path):
    (tmp_path / "map.json").write_bytes(b"{}")
    with open_user_file(tmp_path / "map.json", "the bone map", "Choose a map.") as file:
        assert file.read() == b"{}"
    with pytest.raises(VibeError) as missing:
        open_user_file(tmp_path / "gone.json", "the bone map", "Choose a map.")
    assert str(missing.value) == f"The bone map '{tmp_path / 'gone.json'}' does not exist. Choose a map."
    with pytest.raises(VibeError) as folder:
        open_user_file(tmp_path, "the bone map", "Choose a map.")
    assert str(folder.value) == f"The bone map '{tmp_path}' is a folder, not a file. Choose a map."


def test_a_folder_is_named_as_such_where_opening_it_is_permission_denied(tmp_path, monkeypatch):
    """Windows refuses to open a folder with EACCES, not EISDIR."""

    def open_as_windows_does(path, flags, *args):
        raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    monkeypatch.setattr(regular_file.os, "open", open_as_windows_does)
    with pytest.raises(VibeError, match=r"^The bone map '.*' is a folder, not a file\. Choose a map\.$"):
        open_user_file(tmp_path, "the bone map", "Choose a map.")


def test_a_file_held_by_a_lease_is_said_to_be_in_use(tmp_path, monkeypatch):
    """An open without blocking fails with EWOULDBLOCK while another program holds a lease (Samba)."""
    (tmp_path / "clip.mp4").write_bytes(b"video")

    def open_under_a_lease(path, flags, *args):
        raise BlockingIOError(errno.EWOULDBLOCK, "Resource temporarily unavailable", os.fspath(path))

    monkeypatch.setattr(regular_file.os, "open", open_under_a_lease)
    with pytest.raises(VibeError, match=r"is in use by another program .* try again in a moment\. Choose a video\.$"):
        open_user_file(tmp_path / "clip.mp4", "the video", "Choose a video.")


def test_a_folder_is_refused_as_open_refuses_it(tmp_path):
    """Linux opens a folder read-only without complaint; the reader gets open()'s IsADirectoryError."""
    with pytest.raises(IsADirectoryError):
        open_regular_file(tmp_path)
    make_not_regular(tmp_path / "pipe", "fifo")
    with pytest.raises(NotRegularFileError):
        open_regular_file(tmp_path / "pipe")


def test_a_regular_file_is_read_as_a_plain_open_reads_it(tmp_path):
    """O_NONBLOCK, there only to open a FIFO without waiting, is cleared on the file returned."""
    fcntl = pytest.importorskip("fcntl", reason="POSIX only: elsewhere the flag is never set")
    (tmp_path / "a.bin").write_bytes(b"data")
    with open_regular_file(tmp_path / "a.bin") as file:
        assert not fcntl.fcntl(file.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
        assert file.read() == b"data"

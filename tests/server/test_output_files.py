"""Output files: refused before any work when they would destroy an input, written atomically."""

import os

import pytest

from vibe_blender.core.errors import VibeError
from vibe_blender.core.output_paths import check_output_path
from vibe_server.output_files import atomic_write


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    def fail_halfway(f):
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "r.npz", fail_halfway)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_the_file_only_once_written(tmp_path):
    (tmp_path / "r.npz").write_bytes(b"old")
    atomic_write(tmp_path / "sub" / "r.npz", lambda f: f.write(b"new"))
    assert (tmp_path / "sub" / "r.npz").read_bytes() == b"new" and (tmp_path / "r.npz").read_bytes() == b"old"


def test_an_output_that_is_an_input_is_refused(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"frames")
    os.link(video, tmp_path / "hard-link.mp4")
    for same in (video, tmp_path / "." / "clip.mp4", tmp_path / "hard-link.mp4"):
        with pytest.raises(VibeError, match=r"The official pkl '.*' is the same file as the video '.*clip.mp4'"):
            check_output_path(same, "the official pkl", {"the video": video})
    assert video.read_bytes() == b"frames"
    assert check_output_path(tmp_path / "out.pkl", "the official pkl", {"the video": video, "none": None})


def test_an_output_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(VibeError, match=r"The result file '.*' is a folder; give the name of a file in it"):
        check_output_path(tmp_path, "the result file")


def test_an_output_inside_a_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("a file")
    for path in (tmp_path / "notes.txt" / "r.npz", tmp_path / "notes.txt" / "more" / "r.npz"):
        with pytest.raises(VibeError, match=r"The result file '.*' cannot be written: '.*notes.txt' is a file"):
            check_output_path(path, "the result file")
    assert check_output_path(tmp_path / "new" / "deeper" / "r.npz", "the result file")  # made when written

"""Files written atomically: whole under their name or absent, flushed, and private when asked."""

import errno
import os
import stat
from pathlib import Path

import pytest

from vibe_blender.core import atomic_file
from vibe_blender.core.atomic_file import atomic_save, atomic_write, remove_leftover_parts


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


def test_a_write_that_may_not_make_its_folder_leaves_a_missing_one_missing(tmp_path):
    """(A job folder deleted while its .pkl is built must not come back.)"""
    with pytest.raises(FileNotFoundError) as err:
        atomic_write(tmp_path / "gone" / "r.pkl", lambda f: f.write(b"new"), make_folder=False)
    assert err.value.filename == str(tmp_path / "gone" / "r.pkl") and list(tmp_path.iterdir()) == []


def test_an_output_whose_name_is_as_long_as_the_file_system_takes_is_written(tmp_path):
    """Before: its temporary name, 15 bytes longer, was refused (ENAMETOOLONG, naming the temporary file)."""
    path = tmp_path / ("a" * 251 + ".npz")  # 255 bytes: the longest name most file systems take
    atomic_write(path, lambda f: f.write(b"result"))
    assert path.read_bytes() == b"result" and list(tmp_path.iterdir()) == [path]


def test_the_leftovers_of_killed_writes_are_found_for_their_own_output_only(tmp_path):
    path, other = tmp_path / ("a" * 251 + ".npz"), tmp_path / "other.npz"
    for leftover in (atomic_file.part_path(path), atomic_file.part_path(other)):
        leftover.write_bytes(b"half")  # as a write killed outright leaves it
    (tmp_path / f".{path.name[-20:]}.0123abcd.part").write_bytes(b"half")  # an earlier version's, of another name
    (tmp_path / ".checkpoint.pth.tar.0123abcd.part").write_bytes(b"half")  # an earlier version's
    assert remove_leftover_parts(path) == 1 and remove_leftover_parts(tmp_path / "checkpoint.pth.tar") == 1
    assert len(list(tmp_path.iterdir())) == 2


def test_a_failed_write_tells_its_own_error_when_its_temporary_file_cannot_be_deleted(tmp_path, monkeypatch):
    def refuse(self, missing_ok=False):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    def disk_full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "unlink", refuse)
    with pytest.raises(OSError) as err:
        atomic_write(tmp_path / "r.npz", disk_full)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "r.npz")


def test_the_file_is_flushed_through_the_descriptor_held_since_it_was_made(tmp_path, monkeypatch):
    """Not through one opened by its name again once written: another open, which can fail or find
    another file there."""
    opened_after_the_save, saved, synced = [], [], []
    real_open, real_fsync = open, os.fsync

    def spy_open(file, mode="r", *args, **kwargs):
        if saved:
            opened_after_the_save.append(file)
        return real_open(file, mode, *args, **kwargs)

    def spy_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(atomic_file, "open", spy_open, raising=False)  # the builtin, as the module finds it
    monkeypatch.setattr(atomic_file.os, "fsync", spy_fsync)

    def save(tmp: Path) -> None:  # as a checkpoint saver writes: by the path
        tmp.write_bytes(b"checkpoint")
        saved.append(tmp.stat().st_ino)

    atomic_save(tmp_path / "c.pth.tar", save)
    assert opened_after_the_save == [] and synced == saved
    assert (tmp_path / "c.pth.tar").read_bytes() == b"checkpoint"


def test_a_failed_write_names_the_output_not_its_temporary_name(tmp_path):
    def disk_full(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")  # as a write() raises it: no file name

    with pytest.raises(OSError) as err:
        atomic_write(tmp_path / "r.npz", disk_full)
    assert err.value.filename == str(tmp_path / "r.npz") and list(tmp_path.iterdir()) == []


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX's")
def test_a_private_file_is_readable_by_its_owner_only_from_its_first_byte(tmp_path):
    """Made 0600 (in a 0700 folder when new) before anything is written in it, never opened up and
    closed again later; an old file that others could read is replaced by one they cannot."""
    path = tmp_path / "new_folder" / "take.npz"
    modes_while_written = []
    atomic_write(path, lambda f: modes_while_written.append(stat.S_IMODE(os.fstat(f.fileno()).st_mode)), private=True)
    assert modes_while_written == [0o600] and _mode(path) == 0o600 and _mode(path.parent) == 0o700
    shared = tmp_path / "shared.npz"
    shared.write_bytes(b"old")
    shared.chmod(0o644)
    atomic_file.atomic_write_bytes(shared, b"new", private=True)
    assert shared.read_bytes() == b"new" and _mode(shared) == 0o600
    umask = os.umask(0)
    os.umask(umask)
    atomic_file.atomic_write_bytes(tmp_path / "plain" / "r.npz", b"result")  # not private: as open() makes it
    assert _mode(tmp_path / "plain" / "r.npz") == 0o666 & ~umask and _mode(tmp_path / "plain") == 0o777 & ~umask


def test_the_leftovers_of_a_file_are_found_whether_its_folder_exists_or_not(tmp_path):
    path = tmp_path / "body_model.npz"
    old_style, new_style = tmp_path / ".body_model.npz.0a1b2c3d.part", atomic_file.part_path(path)
    for leftover in (old_style, new_style, tmp_path / ".token.0a1b2c3d.part"):
        leftover.write_bytes(b"cut off")
    assert sorted(atomic_file.leftover_parts(path)) == sorted([old_style, new_style])
    assert list(atomic_file.leftover_parts(tmp_path / "missing" / "body_model.npz")) == []

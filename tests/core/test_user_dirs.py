"""Per-user folders and the local token file (vibe_blender.core.user_dirs)."""

import os
import stat

import pytest
from hostile_files import NOT_REGULAR_KINDS, call_with_deadline, make_not_regular

from vibe_blender.core import atomic_file, user_dirs
from vibe_blender.core.errors import VibeError


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    monkeypatch.setattr(user_dirs.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(user_dirs.TOKEN_ENV_VAR, raising=False)
    return tmp_path / "config"


def test_linux_folders_follow_xdg(tmp_path, monkeypatch):
    monkeypatch.setattr(user_dirs.sys, "platform", "linux")
    for kind, var in (("config", "XDG_CONFIG_HOME"), ("data", "XDG_DATA_HOME"), ("cache", "XDG_CACHE_HOME")):
        monkeypatch.setenv(var, str(tmp_path / kind))
        assert user_dirs.user_dir(kind) == tmp_path / kind / "vibe-mocap"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_dirs.user_dir("cache") == tmp_path / "home" / ".cache" / "vibe-mocap"


def test_macos_and_windows_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(user_dirs.sys, "platform", "darwin")
    assert user_dirs.user_dir("data") == tmp_path / "Library" / "Application Support" / "vibe-mocap"
    assert user_dirs.user_dir("cache") == tmp_path / "Library" / "Caches" / "vibe-mocap"
    monkeypatch.setattr(user_dirs.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert user_dirs.user_dir("config") == tmp_path / "Local" / "vibe-mocap"
    assert user_dirs.user_dir("cache") == tmp_path / "Local" / "vibe-mocap" / "Cache"


def test_token_is_made_once_and_only_the_user_can_read_it(config_home):
    assert user_dirs.read_token() is None
    token = user_dirs.ensure_token()
    assert len(token) >= 40
    path = config_home / "vibe-mocap" / "token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert user_dirs.ensure_token() == token == user_dirs.read_token()


def test_environment_variable_overrides_the_file(config_home, monkeypatch):
    user_dirs.ensure_token()
    monkeypatch.setenv(user_dirs.TOKEN_ENV_VAR, "from-env")
    assert user_dirs.read_token() == "from-env"


@pytest.mark.parametrize("content", [b"", b"two words", b"x" * 1000, b"\x00\x01"])
def test_a_file_that_holds_no_token_is_refused(config_home, content):
    path = config_home / "vibe-mocap" / "token"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(VibeError, match="does not hold a token"):
        user_dirs.read_token()


@pytest.mark.parametrize("kind", NOT_REGULAR_KINDS)
def test_a_token_file_that_is_no_regular_file_is_refused_at_once(config_home, kind):
    """The add-on reads the token at every connection: a FIFO there would block it for ever."""
    path = user_dirs.token_path()
    path.parent.mkdir(parents=True)
    make_not_regular(path, kind)
    ran, err = call_with_deadline(user_dirs.read_token, fifo=path)
    assert not ran and isinstance(err, VibeError), err
    assert str(err) == (
        f"The server token file {path} is not a regular file (a device, FIFO or socket), so it was not read; "
        "delete it and start 'vibe-mocap serve' again to make a new one, or set $VIBE_MOCAP_TOKEN."
    )


def test_a_private_file_is_written_by_a_function_given_the_open_file(tmp_path):
    """A large file (a live take) is written as it is made: the function gets the open part file,
    and the file appears under its name, readable by this user only, once the function returns."""
    path = tmp_path / "new_folder" / "take.npz"
    seen_while_writing = []

    def write_in_pieces(file) -> None:
        for piece in (b"first ", b"second ", b"third"):
            file.write(piece)
            file.flush()
            seen_while_writing.append(path.exists())

    user_dirs.write_private_file(path, write_in_pieces)
    assert path.read_bytes() == b"first second third" and seen_while_writing == [False] * 3
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert list(path.parent.iterdir()) == [path]


def test_a_private_file_whose_writing_fails_leaves_the_old_one_and_no_part(tmp_path):
    path = tmp_path / "take.npz"
    user_dirs.write_private_file(path, b"the old take")

    def fill_the_disk(file) -> None:
        file.write(b"half a take")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        user_dirs.write_private_file(path, fill_the_disk)
    assert path.read_bytes() == b"the old take" and list(tmp_path.iterdir()) == [path]


def test_temporary_files_a_write_cut_off_left_a_day_ago_are_removed(tmp_path):
    """Each write has a temporary name of its own, so a download cut off by Blender being killed left
    its part behind for good; one a day old goes with the next write in its folder, whichever file it
    was for (a result's name is new each time: its part never matched a later name); fresher ones (a
    write running now) and files not named as parts stay."""
    target = tmp_path / "body_model.npz"
    stale, running, other, not_a_part = (
        tmp_path / name
        for name in (
            ".body_model.npz.0a1b2c3d.part",
            ".body_model.npz.9f8e7d6c.part",
            ".clip_1a2b3c4d.npz.0a1b2c3d.part",
            ".notes.txt.draft.part",
        )
    )
    stale_short = atomic_file.part_path(target)  # as writes name their temporary files now
    day_old = os.stat(tmp_path).st_mtime - user_dirs.STALE_PART_S - 60
    for part in (stale, stale_short, running, other, not_a_part):
        part.write_bytes(b"cut off")
    for part in (stale, stale_short, other, not_a_part):
        os.utime(part, (day_old, day_old))
    user_dirs.write_private_file(target, b"model")
    assert target.read_bytes() == b"model"
    assert not stale.exists() and not stale_short.exists() and not other.exists()
    assert running.exists() and not_a_part.exists()


def test_a_private_file_whose_name_is_as_long_as_the_file_system_takes_is_written(tmp_path):
    """Before: its temporary name, 15 bytes longer, was refused (ENAMETOOLONG)."""
    path = tmp_path / ("a" * 251 + ".npz")  # 255 bytes: the longest name most file systems take
    user_dirs.write_private_file(path, b"take")
    assert path.read_bytes() == b"take" and list(tmp_path.iterdir()) == [path]

"""One process per folder: a busy folder and a file system without locks get different messages."""

from __future__ import annotations

import errno

import pytest

from vibe_blender.core.errors import VibeError
from vibe_server.folder_lock import folder_lock

fcntl = pytest.importorskip("fcntl", reason="advisory locks are POSIX only (documented)")


def test_a_folder_held_by_another_run_is_busy_and_free_once_it_ends(tmp_path):
    with folder_lock(tmp_path, ".lock", "busy: wait for the other run"):
        with pytest.raises(VibeError, match="busy: wait for the other run"):
            with folder_lock(tmp_path, ".lock", "busy: wait for the other run"):
                pass
    with folder_lock(tmp_path, ".lock", "busy"):  # released
        pass


def test_a_file_system_without_locks_is_named_not_called_busy(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(VibeError, match=r"Cannot lock .*No locks available.*choose a folder on a local disk") as err:
        with folder_lock(tmp_path, ".lock", "busy"):
            pass
    assert "busy" not in str(err.value)

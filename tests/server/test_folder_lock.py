"""One process per folder: a busy folder and a file system without locks get different messages; a
caller that may run unguarded there is told; a forked process never keeps the lock."""

from __future__ import annotations

import errno
import os
import sys

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


def test_a_file_system_without_locks_runs_unguarded_when_the_caller_allows_it(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    warnings = []
    with folder_lock(tmp_path, ".lock", "busy", unguarded=warnings.append) as guarded:
        assert guarded is False
    assert warnings == [f"Cannot lock '{tmp_path / '.lock'}' (No locks available): its file system has no file locks"]
    monkeypatch.undo()
    with folder_lock(tmp_path, ".lock", "busy", unguarded=warnings.append) as guarded:
        assert guarded is True and len(warnings) == 1


def test_without_fcntl_the_folder_is_unguarded(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fcntl", None)  # as on Windows: the import fails
    with folder_lock(tmp_path, ".lock", "busy") as guarded:
        assert guarded is False


def test_a_process_forked_while_the_lock_is_held_does_not_keep_it(tmp_path):
    """A DataLoader worker is such a process: were the lock its too, a worker outliving its killed parent
    (or stuck on a hung network file system) would keep the folder busy."""
    go_on, started = os.pipe(), os.pipe()
    with folder_lock(tmp_path, ".lock", "busy"):
        pid = os.fork()
        if pid == 0:  # the child: says it runs, then waits for the parent's word
            os.write(started[1], b"x")
            os.read(go_on[0], 1)
            os._exit(0)
        try:
            assert os.read(started[0], 1) == b"x"
            with pytest.raises(VibeError, match="busy"):  # the child's closing it left the parent's lock
                with folder_lock(tmp_path, ".lock", "busy"):
                    pass
        except BaseException:
            os.write(go_on[1], b"x")
            os.waitpid(pid, 0)
            raise
    try:  # the parent let it go; the child still runs
        with folder_lock(tmp_path, ".lock", "busy: held by the forked child"):
            pass
    finally:
        os.write(go_on[1], b"x")
        os.waitpid(pid, 0)
        for fd in (*go_on, *started):
            os.close(fd)

"""A live take's journal: what a crash leaves of a recording reads back as the take it was, and a
journal that is damaged, cut off or hostile reads back bounded, as far as it is sound, or not at all
with one clear error."""

import os
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from vibe_blender.core import live_client, take_journal
from vibe_blender.core.live_client import LiveConnection, LiveFrameMessage, LivePersonFrame, LiveTake
from vibe_blender.core.take_journal import (
    FRAME_HEAD,
    HEADER,
    MAGIC,
    PERSON,
    JournalError,
    TakeJournal,
    orphaned_journals,
    read_journal,
)


def dead_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def person(track_id: int, index: int, seed: int) -> LivePersonFrame:
    rng = np.random.default_rng(seed)
    return LivePersonFrame(
        track_id,
        index,
        rng.uniform(-3, 3, 72).astype(np.float32),
        rng.uniform(-2, 2, 10).astype(np.float32),
        rng.uniform(-5, 5, 3).astype(np.float32),
    )


def frames() -> list[LiveFrameMessage]:
    """Frames of 0, 1 and 2 people, one with a person dropped."""
    people = [(), (1,), (1, 2), (2,), (), (1, 2)]
    return [
        LiveFrameMessage(i, 100.0 + i / 30, tuple(person(t, i, 10 * i + t) for t in ids), None, int(i == 3))
        for i, ids in enumerate(people)
    ]


def journaled_take(folder, owner=None) -> tuple[LiveTake, TakeJournal]:
    take = LiveTake(warnings=["YOLO fell back to HOG"])
    journal = TakeJournal.create(folder, scene_fps=25.0, results_dir=folder / "results", owner=owner)
    journal.add_warnings(take.warnings)
    for frame in frames():
        take.add(frame)
        journal.add_frame(frame)
    take.warnings.append("The video ended early")
    journal.add_warnings(take.warnings)
    journal.close()
    return take, journal


def assert_same_take(read: LiveTake, take: LiveTake) -> None:
    assert read.received_index == take.received_index and read.received_time_s == take.received_time_s
    assert read.people_dropped == take.people_dropped and read.track_ids == take.track_ids
    for t in take.track_ids:
        np.testing.assert_array_equal(read.frame_ids[t], take.frame_ids[t])
        np.testing.assert_array_equal(read.values_at(read.track_rows(t)), take.values_at(take.track_rows(t)))


def test_a_journal_reads_back_as_the_take_it_recorded(tmp_path):
    take, journal = journaled_take(tmp_path)
    found = read_journal(journal.path)
    assert_same_take(found.take, take)
    assert found.take.warnings == ["YOLO fell back to HOG", "The video ended early"]
    assert found.scene_fps == 25.0 and found.results_dir == tmp_path / "results" and found.damage is None
    assert journal.path.name.startswith(f"take-{os.getpid()}-") and journal.path.stat().st_mode & 0o077 == 0
    journal.remove()
    assert not journal.path.exists()


def test_a_journal_cut_off_by_a_crash_keeps_its_complete_frames(tmp_path):
    take, journal = journaled_take(tmp_path)
    data = journal.path.read_bytes()
    last_frame = data.rfind(b"F" + FRAME_HEAD.pack(5, 100.0 + 5 / 30, 0, 2))
    for cut in (last_frame + 1, last_frame + FRAME_HEAD.size + PERSON.itemsize + 7):
        journal.path.write_bytes(data[:cut])
        found = read_journal(journal.path)
        assert found.take.received_index == [0, 1, 2, 3, 4] and found.damage is None
        assert found.take.rows == take.rows - 2


def header(fps=24.0, folder=b"/results", pid=123, version=1, magic=MAGIC) -> bytes:
    return HEADER.pack(magic, version, 0, pid, 0, fps, len(folder)) + folder


@pytest.mark.parametrize(
    "data, error",
    [
        (b"PK\x03\x04 not a journal" + bytes(40), "is not a live take journal"),
        (b"VIBE", "is not a live take journal"),
        (header(version=9), "is of version 9; this add-on reads version 1"),
        (header(fps=float("nan")), "damaged header (its frame rate"),
        (header(fps=float("inf")), "damaged header (its frame rate"),
        (header(fps=-24.0), "damaged header (its frame rate"),
        (header()[:-3], "damaged header (its results folder)"),  # a folder longer than the file
        (header(folder=b"relative/folder"), "names no absolute results folder"),
    ],
)
def test_a_header_that_is_not_a_journals_is_one_clear_error(tmp_path, data, error):
    path = tmp_path / "take-1-0123456789abcdef.journal"
    path.write_bytes(data)
    with pytest.raises(JournalError, match=error.replace("(", r"\(").replace(")", r"\)")):
        read_journal(path)


def frame_record(index=2, time_s=2.0, dropped=0, count=1, people=None, person_index=None) -> bytes:
    if people is None:
        people = np.zeros(count, PERSON)
        people["track_id"] = np.arange(count)
    people["frame_index"] = index if person_index is None else person_index
    return b"F" + FRAME_HEAD.pack(index, time_s, dropped, count) + people.tobytes()


def bad_values(column: slice, value: float) -> np.ndarray:
    people = np.zeros(1, PERSON)
    people["values"][0, column] = value
    return people


@pytest.mark.parametrize(
    "record, why",
    [
        (frame_record(count=2**32 - 1, people=np.zeros(0, PERSON)), "more than 32 people"),
        (frame_record(count=1, dropped=2**32 - 1), "more than 32 people"),
        (frame_record(time_s=float("nan")), "frame_time_s must be a time"),
        (frame_record(time_s=float("inf")), "frame_time_s must be a time"),
        (frame_record(index=2**63), "frame_index must be a non-negative integer"),
        (frame_record(people=bad_values(slice(0, 1), float("nan"))), "pose holds non-finite numbers"),
        (frame_record(people=bad_values(slice(82, 83), 1e9)), "trans_cam_m holds a number beyond"),
        (frame_record(people=bad_values(slice(72, 73), -np.inf)), "betas holds non-finite numbers"),
        (frame_record(count=2, people=np.zeros(2, PERSON)), "a track id appears twice"),
        (frame_record(person_index=5), "a person's frame index is not its frame's"),
        (frame_record(time_s=0.5), "frames out of order"),  # before the frame before
        (frame_record(index=1), "frames out of order"),  # the same index as the frame before
        (b"W" + struct.pack("<H", 60_000) + bytes(60_000), "a warning too long"),
        (b"X", "a record of an unknown kind"),
    ],
)
def test_a_damaged_record_ends_the_reading_and_the_frames_before_are_kept(tmp_path, record, why):
    path = tmp_path / "take-1-0123456789abcdef.journal"
    path.write_bytes(header() + frame_record(index=1, time_s=1.0) + record + frame_record(index=7, time_s=9.0))
    tracemalloc.start()
    found = read_journal(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert found.take.received_index == [1] and why in found.damage and "after 1 frames" in found.damage
    assert peak < 2_000_000  # never what a count in the file asks for


def test_a_count_larger_than_the_file_is_a_cut_off_record_not_an_allocation(tmp_path):
    path = tmp_path / "take-1-0123456789abcdef.journal"
    path.write_bytes(header() + frame_record(index=1) + b"F" + FRAME_HEAD.pack(2, 2.0, 0, 32) + bytes(100))
    found = read_journal(path)
    assert found.take.received_index == [1] and found.damage is None


def test_a_journal_past_the_recording_limit_is_read_up_to_it(tmp_path, monkeypatch):
    take, journal = journaled_take(tmp_path)
    monkeypatch.setattr(live_client, "MAX_RECORDED_FRAMES", 3)
    found = read_journal(journal.path)
    assert found.take.rows == 3 and found.take.received_index == [0, 1, 2] and found.take.full


# what the lock tests rely on: flock, and a process start time that tells this process from another
LINUX_LOCKS = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's locks and process start times")


def crashed(journal: TakeJournal) -> Path:
    """The journal as its writer's process left it, ending: its file closed, its lock gone with it."""
    journal._file.close()
    return journal.path


@LINUX_LOCKS
def test_a_journal_is_recovered_once_its_writer_lets_it_go_whatever_its_pid(tmp_path):
    """Blenders in containers may share a pid (each its own pid namespace): the pid alone gave a
    running writer's journal to another run, which saved half a take and deleted the journal."""
    writing = journaled_take(tmp_path)[1]  # this process's, recording
    stopped = journaled_take(tmp_path, owner=(dead_pid(), 0))[1]  # stopped, not saved yet: still held
    elsewhere = (os.getpid(), take_journal.this_process()[1] + 1)  # this pid, in another pid namespace
    same_pid_elsewhere = crashed(journaled_take(tmp_path, owner=elsewhere)[1])
    mine_dropped = crashed(journaled_take(tmp_path)[1])  # this process's, its file closed: not a crash's
    junk = tmp_path / f"take-{os.getpid()}-0123456789abcdef.journal"
    junk.write_bytes(b"junk")  # nobody holds it: recovered, and said to be unreadable
    (tmp_path / "notes.txt").write_text("not a journal")
    assert orphaned_journals(tmp_path) == sorted([same_pid_elsewhere, junk])
    assert writing.path.exists() and stopped.path.exists() and mine_dropped.exists()
    stopped.remove()  # saved: deleted while held, then let go
    assert not stopped.path.exists() and orphaned_journals(tmp_path) == sorted([same_pid_elsewhere, junk])
    assert orphaned_journals(tmp_path / "missing") == []


@LINUX_LOCKS
def test_a_writer_that_meets_another_runs_look_at_its_new_journal_still_holds_it(tmp_path, monkeypatch):
    """A look by another Blender starting at that moment held the lock as the journal was made: the
    writer went on without it, and the next start recovered (and deleted) a journal still recording."""
    looked_at, real_lock = [], take_journal._lock

    def another_run_looking(fd):
        if not looked_at:
            looked_at.append(fd)
            return False  # held, for the moment another run looks
        return real_lock(fd)

    monkeypatch.setattr(take_journal, "_lock", another_run_looking)
    journal = TakeJournal.create(tmp_path, scene_fps=30.0, results_dir=tmp_path, owner=(dead_pid(), 0))
    monkeypatch.setattr(take_journal, "_lock", real_lock)
    assert looked_at and orphaned_journals(tmp_path) == []
    journal.remove()
    assert list(tmp_path.iterdir()) == []


@LINUX_LOCKS
def test_a_journal_being_recovered_is_not_recovered_twice(tmp_path, monkeypatch):
    path = crashed(journaled_take(tmp_path, owner=(dead_pid(), 0))[1])
    late = open(path, "rb")  # another run, starting at the same moment, that opened it before the delete
    with take_journal.recovering(path) as found:
        assert found is not None and found.take.rows == 6
        with take_journal.recovering(path) as again:  # held meanwhile
            assert again is None
        assert orphaned_journals(tmp_path) == []
        found.delete()
    assert not path.exists()
    with late:  # that run takes the lock once the first let go: what it holds was recovered and deleted
        monkeypatch.setattr(take_journal, "open_regular_file", lambda *a, **k: open(late.fileno(), "rb", closefd=False))
        with take_journal.recovering(path) as again:
            assert again is None
    monkeypatch.undo()
    with take_journal.recovering(path) as gone:
        assert gone is None


def test_where_there_are_no_locks_the_writers_pid_says(tmp_path, monkeypatch):
    monkeypatch.setattr(take_journal, "_lock", lambda fd: None)  # Windows, or a file system without locks
    journaled_take(tmp_path)  # this process's: still recording
    gone = journaled_take(tmp_path, owner=(dead_pid(), 0))[1].path
    if sys.platform.startswith("linux"):  # a pid reused by another process (another start) is gone too
        reused = journaled_take(tmp_path, owner=(os.getpid(), take_journal.this_process()[1] + 1))[1].path
    else:
        reused = gone
    broken = tmp_path / f"take-{os.getpid()}-0123456789abcdef.journal"
    broken.write_bytes(b"junk")  # judged by the pid of its name: alive
    huge = tmp_path / "take-9999999999-0123456789abcdef.journal"
    huge.write_bytes(b"junk")  # a pid no process has (os.kill raised OverflowError on it)
    assert orphaned_journals(tmp_path) == sorted({gone, reused, huge})


@pytest.mark.parametrize("platform", ["darwin", "linux", "win32"])
def test_a_pid_no_process_can_have_is_no_running_writer(monkeypatch, platform):
    monkeypatch.setattr(take_journal.sys, "platform", platform)
    assert not take_journal.process_running(2**32 - 1, 0) and not take_journal.process_running(0, 0)


def test_a_results_folder_that_does_not_decode_is_a_damaged_header(tmp_path, monkeypatch):
    monkeypatch.setattr(take_journal.os, "fsdecode", lambda raw: raw.decode("utf-8"))  # as on Windows
    path = tmp_path / "take-1-0123456789abcdef.journal"
    path.write_bytes(header(folder=b"/\xff\xfe"))
    with pytest.raises(JournalError, match=r"damaged header \(its results folder\)"):
        read_journal(path)


@pytest.mark.parametrize("fps", [0.0, -1.0, float("nan"), 2e6])
def test_a_frame_rate_the_reader_would_refuse_is_not_journaled(tmp_path, fps):
    with pytest.raises(OSError, match="cannot be journaled"):
        TakeJournal.create(tmp_path, scene_fps=fps, results_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_recording_is_journaled_as_it_goes_and_the_journal_goes_with_the_take(tmp_path):
    connection = LiveConnection(client=None)
    connection.recording_start(lambda: TakeJournal.create(tmp_path, scene_fps=30.0, results_dir=tmp_path))
    for frame in frames():
        connection._record(frame)
    take = connection.recording_stop()
    assert_same_take(read_journal(take.journal.path).take, take)
    path = take.journal.path
    take.drop_journal()
    assert not path.exists() and take.journal is None


def test_a_journal_that_cannot_be_written_stops_with_one_warning_and_the_take_goes_on(tmp_path):
    connection = LiveConnection(client=None)
    folder = tmp_path / "journals"
    connection.recording_start(lambda: TakeJournal.create(folder, scene_fps=30.0, results_dir=tmp_path))
    take = connection._take

    def refused(data):
        raise OSError(5, "Input/output error")  # the disk went away under the open journal

    take.journal._file.write = refused
    all_frames = frames()
    for frame in all_frames:
        connection._record(frame)
    assert take.journal is None and len(take.received_index) == len(all_frames)
    assert "still recorded in memory" in connection.journal_problem
    assert list(folder.iterdir()) == []  # what was written is removed: the take is in memory only

    (tmp_path / "file").write_text("")  # where the journal's folder would be
    connection.recording_start(lambda: TakeJournal.create(tmp_path / "file", scene_fps=30.0, results_dir=tmp_path))
    assert connection._take.journal is None and "could not be copied to disk" in connection.journal_problem


def test_a_journal_in_a_folder_that_cannot_be_made_is_an_oserror(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        TakeJournal.create(tmp_path / "file" / "sub", scene_fps=30.0, results_dir=tmp_path)

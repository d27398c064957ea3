"""The names of the add-on's live take files and the note of those saved on its way out
(vibe_blender.core.take_files): the next run reads the note to tell where they are, whatever it holds."""

import pytest
from hostile_files import NOT_REGULAR_KINDS, call_with_deadline, make_not_regular

from vibe_blender.core.take_files import (
    MAX_NOTED_TAKES,
    SAVED_ON_EXIT_NOTE,
    TAKE_NAME,
    forget_takes_saved_on_exit,
    new_take_path,
    note_take_saved_on_exit,
    takes_saved_on_exit,
)


def saved_take(folder):
    path = new_take_path(folder)
    path.write_bytes(b"take")
    return path


def test_noted_takes_are_told_oldest_first_until_forgotten(tmp_path):
    assert takes_saved_on_exit(tmp_path) == []  # no note
    first, second = saved_take(tmp_path), saved_take(tmp_path)
    assert TAKE_NAME.fullmatch(first.name) and first != second
    note_take_saved_on_exit(first)
    note_take_saved_on_exit(second)
    note_take_saved_on_exit(first)  # noted again: once, as the newest
    assert takes_saved_on_exit(tmp_path) == [second, first]
    second.unlink()  # a take the user removed is not told of
    assert takes_saved_on_exit(tmp_path) == [first]
    forget_takes_saved_on_exit(tmp_path)
    assert takes_saved_on_exit(tmp_path) == [] and first.is_file()
    forget_takes_saved_on_exit(tmp_path)  # nothing to forget


def test_only_the_newest_takes_are_noted(tmp_path):
    takes = [saved_take(tmp_path) for _ in range(MAX_NOTED_TAKES + 3)]
    for take in takes:
        note_take_saved_on_exit(take)
    assert takes_saved_on_exit(tmp_path) == takes[-MAX_NOTED_TAKES:]
    assert len((tmp_path / SAVED_ON_EXIT_NOTE).read_text().split()) == MAX_NOTED_TAKES


def test_a_note_that_is_not_ours_tells_only_of_take_files_in_its_folder(tmp_path):
    take = saved_take(tmp_path)
    (tmp_path / "live_20250101-000000_0000000g.npz").write_bytes(b"")  # not a name the add-on gives
    (tmp_path / "notes.txt").write_bytes(b"")
    lines = ["../../etc/passwd", "notes.txt", "live_20250101-000000_0000000g.npz", "\x1b[2J", take.name, "x" * 10_000]
    (tmp_path / SAVED_ON_EXIT_NOTE).write_bytes("\n".join(lines).encode() + b"\xff\n")
    assert takes_saved_on_exit(tmp_path) == [take]
    (tmp_path / SAVED_ON_EXIT_NOTE).unlink()
    (tmp_path / SAVED_ON_EXIT_NOTE).mkdir()
    assert takes_saved_on_exit(tmp_path) == []


@pytest.mark.parametrize("kind", NOT_REGULAR_KINDS)
def test_a_note_that_is_not_a_regular_file_is_not_read(tmp_path, kind):
    note = make_not_regular(tmp_path / SAVED_ON_EXIT_NOTE, kind)
    assert call_with_deadline(lambda: takes_saved_on_exit(tmp_path), fifo=note) == (True, [])

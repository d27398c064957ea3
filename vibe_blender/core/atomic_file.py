"""Files written atomically: to a temporary name in the same folder, then renamed into place.

``atomic_save`` writes to ``.<hash of the name>.<random>.part`` (short whatever the name's length),
flushes it to disk and renames it onto the real name, so a killed write never leaves a half-written
file under the real name, and a failed one leaves nothing. An OSError of the write names the real
file, not the temporary name. ``private=True`` makes the file readable by this user only (0600, in a
0700 folder when the folder is new). Only a process killed outright (SIGKILL, a power cut) leaves
its temporary file: ``remove_leftover_parts`` deletes those of one file, for a writer that knows no
other is at work.

Standard library only: the server, the command line and the add-on all write their files through it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

PART_SUFFIX = ".part"
PART_ID_LENGTH = 8  # hex digits that keep two writes of one file apart
NAME_HASH_LENGTH = 12  # hex digits of the file's name in its temporary name: whose leftover it is
PRIVATE_FILE_MODE, PRIVATE_FOLDER_MODE = 0o600, 0o700
# no space left, or the user's quota spent (EDQUOT is missing on Windows)
DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS


def _name_hash(name: str) -> str:
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:NAME_HASH_LENGTH]


def part_path(path: Path) -> Path:
    """A temporary name next to ``path`` of 27 bytes, whatever the length of ``path``'s own: a name near
    the file system's limit (255 bytes) takes no longer one. Random, so two writers of one file at
    once never write into one another's."""
    return path.with_name(f".{_name_hash(path.name)}.{uuid.uuid4().hex[:PART_ID_LENGTH]}{PART_SUFFIX}")


def atomic_write(
    path: str | Path, write: Callable[[object], object], *, make_folder: bool = True, private: bool = False
) -> None:
    """Call ``write(binary_file)`` on a temporary file next to ``path``, flush it to disk, rename it."""

    def write_file(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_save(path, write_file, make_folder=make_folder, private=private)


def atomic_write_bytes(path: str | Path, data: bytes, *, make_folder: bool = True, private: bool = False) -> None:
    atomic_write(path, lambda f: f.write(data), make_folder=make_folder, private=private)


def _private_opener(name: str, flags: int) -> int:
    return os.open(name, flags, PRIVATE_FILE_MODE)


def atomic_save(
    path: str | Path, save: Callable[[Path], object], *, make_folder: bool = True, private: bool = False
) -> None:
    """Call ``save(temporary_path)`` (a writer that takes a path, e.g. a checkpoint saver, and writes
    the file there in place), flush the file to disk and rename it onto ``path``; a failed or
    interrupted save leaves ``path`` as it was and no temporary file. ``make_folder=False``: a missing
    folder is a FileNotFoundError, never made again (a job folder deleted meanwhile stays deleted).
    ``private``: the file is readable by this user only, and a folder made for it too."""
    path = Path(path)
    tmp = part_path(path)
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE if private else 0o777)
    try:
        # made here, never one found there; flushed through the descriptor held since, not one opened
        # by name again (writable, as Windows needs for fsync)
        with open(tmp, "xb", opener=_private_opener if private else None) as made:
            save(tmp)
            os.fsync(made.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        if err.filename in (None, str(tmp), tmp):  # the user knows the file, not its temporary name
            err.filename = str(path)
        raise
    except BaseException:
        _discard(tmp)
        raise


def sync_folder(folder: str | Path) -> None:
    """Flush ``folder``'s entries to disk, so that a file renamed into it keeps its new name after a
    power cut. Best effort: Windows cannot open a folder, and some file systems refuse to sync one (the
    renamed file's own data is flushed before the rename)."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _discard(tmp: Path) -> None:
    """Delete a temporary file after a failed write; failing to, the write's own error is the one told."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


ANY_NAME_HASH = rf"[0-9a-f]{{{NAME_HASH_LENGTH}}}"  # (a regex) the name hash of any file's temporary name


def leftover_part_names(hashed: str, named: str) -> re.Pattern[str]:
    """The temporary names :func:`atomic_save` makes, ``.<hash of the name>.<random>.part``, and the longer
    ones of earlier versions, ``.<name>.<random>.part``, for the files whose name hash matches ``hashed``
    and whose name matches ``named`` (both regular expressions); match whole names with ``fullmatch``."""
    return re.compile(rf"\.(?:{hashed}|{named})\.[0-9a-f]{{{PART_ID_LENGTH}}}{re.escape(PART_SUFFIX)}")


def leftover_parts(path: str | Path) -> Iterator[Path]:
    """The temporary files of writes of ``path`` in its folder (only the names :func:`atomic_save`
    makes for it, and the longer ones of earlier versions, ``.<name>.<random>.part``): those of
    writes killed, or at work now. None when the folder is missing."""
    path = Path(path)
    yield from _named_in(path.parent, leftover_part_names(re.escape(_name_hash(path.name)), re.escape(path.name)))


def leftover_parts_of_any_file(folder: str | Path) -> Iterator[Path]:
    """The temporary files of writes of any file in ``folder`` (as :func:`leftover_parts`): a file
    whose name is new each time (a download's) leaves parts no later name matches."""
    yield from _named_in(Path(folder), leftover_part_names(ANY_NAME_HASH, r".+"))


def _named_in(folder: Path, names: re.Pattern[str]) -> Iterator[Path]:
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            if names.fullmatch(entry.name):
                yield entry


def remove_leftover_parts(path: str | Path) -> int:
    """Delete the temporary files that killed writes of ``path`` left in its folder (see
    :func:`leftover_parts`); returns how many. Only while no other process writes ``path``."""
    removed = 0
    for leftover in list(leftover_parts(path)):
        if leftover.is_symlink() or leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed

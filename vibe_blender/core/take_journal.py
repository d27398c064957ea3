"""A live take's journal: its frames appended to a file while it records, so that a crash of Blender
(or Blender killed) loses none of it. The next run reads back each journal whose writer is gone.

    journal = TakeJournal.create(folder, scene_fps=24.0, results_dir=results)
    journal.add_frame(frame); journal.add_warnings(take.warnings)   # as the take grows
    journal.remove()                                              # the take was saved or thrown away
    for path in orphaned_journals(folder):                        # the next run
        found = read_journal(path)                                # -> RecoveredTake (JournalError)

The file is ``take-<pid>-<random>.journal``: a header (magic, version, the writer's pid and process
start, the scene's frame rate at Record, the results folder), then records, each a tag byte and a
fixed layout (little-endian): a frame (index, time, people dropped, people) followed by its people
(track id, frame index, 85 float32: pose | betas | trans_cam_m), or a warning (UTF-8 text).

Writes are plain appends to an unbuffered file, with no fsync per frame: a process that crashes
keeps what the OS received, which is every frame written; only the machine losing power may lose
the last seconds. The writer holds a lock on its journal (where the system has one: not on Windows)
until the take is saved or thrown away, and so does a run recovering it: a lock is freed when its
process ends, however it ends, so a journal whose lock is free is one to recover, whatever the pid
(another Blender in a container may have the same one), and two runs never recover one twice.
The reader trusts nothing: a header that is not a journal's is an error, every count
is bounded by the limits of a live frame and by the bytes the file holds, every number passes the
checks a live frame passes (no dtype, pickle or size comes from the file), and the first record
that is incomplete (where the crash cut the file) or fails a check ends the reading: the frames
before it are kept.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import secrets
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from .errors import VibeError
from .live_client import (
    _BETAS,
    _POSE,
    _TRANS,
    MAX_PEOPLE_PER_FRAME,
    TAKE_ROW_WIDTH,
    LiveFrameMessage,
    LivePersonFrame,
    LiveTake,
    checked_index,
    checked_time,
    within_bounds,
)
from .regular_file import NotRegularFileError, open_regular_file
from .result_file import BETA_LIMIT, MAX_POSE_RAD, MAX_TRANSLATION_M
from .shown_text import display_text

JOURNAL_FOLDER = "live-takes"  # in the user's cache folder
JOURNAL_NAME = re.compile(r"take-(\d{1,10})-[0-9a-f]{16}\.journal")
MAGIC = b"VIBETAKE"
VERSION = 1
# magic, version, flags (none yet), writer pid, writer start (0: unknown), scene fps, results folder bytes
HEADER = struct.Struct("<8sHHIQdH")
FRAME_HEAD = struct.Struct("<QdII")  # frame index, frame time (s), people dropped, people
WARNING_HEAD = struct.Struct("<H")  # text bytes
FRAME_TAG, WARNING_TAG = b"F", b"W"
PERSON = np.dtype([("track_id", "<u4"), ("frame_index", "<u8"), ("values", "<f4", (TAKE_ROW_WIDTH,))])
MAX_FOLDER_BYTES = 4096
MAX_WARNING_BYTES = 4096
MAX_JOURNAL_WARNINGS = 64  # a session brings at most 8, and its end 8 more
MAX_FPS = 1_000_000.0  # far above any scene's (Blender allows 32767 / 0.0001); bounds only nonsense
MAX_PID = 2**31 - 1  # pids are positive C ints everywhere


class JournalError(VibeError):
    """A journal that cannot be read back (the file is left where it is)."""


@dataclass
class RecoveredTake:
    take: LiveTake
    scene_fps: float  # the scene's frame rate when Record was pressed
    results_dir: Path  # where the take was to be saved
    damage: str | None = None  # why reading stopped before the end of the file, when a record was bad
    delete: Callable[[], None] | None = None  # deletes the journal (from recovering(): still held); OSError


def _delete(path: Path, file: BinaryIO) -> None:
    """Delete the journal open in ``file``: while held, so that no other run takes it meanwhile; on
    Windows, which refuses to delete a file open here (and has no lock to keep), once closed."""
    if os.name == "nt":
        file.close()
    path.unlink(missing_ok=True)
    file.close()


# -- the writer's process ---------------------------------------------------------------------------
def _linux_start_ticks(pid: int) -> int | None:
    """Process ``pid``'s start (clock ticks after boot, /proc/<pid>/stat field 22); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # the name in parentheses may hold spaces
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else 0


def this_process() -> tuple[int, int]:
    """(pid, start): the start tells a reused pid apart where the system says it (Linux), else 0."""
    pid = os.getpid()
    start = _linux_start_ticks(pid) if sys.platform.startswith("linux") else None
    return pid, start or 0


def process_running(pid: int, start: int) -> bool:
    """Whether the process that wrote a journal still runs (when unsure: yes, its journal is left alone)."""
    if not 0 < pid <= MAX_PID:
        return False  # no process has it
    if sys.platform.startswith("linux"):
        now = _linux_start_ticks(pid)
        return now is not None and (start == 0 or now == start)  # another start: the pid was reused
    if sys.platform == "win32":
        return _windows_process_running(pid)
    try:
        os.kill(pid, 0)  # signal 0: only asks whether it exists
    except ProcessLookupError:
        return False
    except OSError:  # another user's (PermissionError): it runs
        return True
    return True


def _lock(fd: int) -> bool | None:
    """Take the lock on the open file ``fd`` without waiting: True, False when another open file
    (another process's, or another of this one's) holds it, None where there is no lock to take
    (Windows; a file system without locks): the writer's pid must say then."""
    try:
        import fcntl  # not on Windows
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # e.g. ENOLCK: this file system has no locks
        return None
    return True


def _windows_process_running(pid: int) -> bool:
    import ctypes  # Windows only: os.kill would end the process there

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


# -- writing ----------------------------------------------------------------------------------------
class TakeJournal:
    """The journal of one take, open for appending. Every method but :meth:`remove` raises OSError
    when the file cannot be written; the caller then gives the journal up (the take goes on)."""

    def __init__(self, path: Path, file: BinaryIO):
        self.path = path
        self._file: BinaryIO | None = file
        self._writing = True
        self._warnings: set[str] = set()

    @classmethod
    def create(
        cls, folder: Path, *, scene_fps: float, results_dir: Path, owner: tuple[int, int] | None = None
    ) -> TakeJournal:
        """A new journal in ``folder`` (made 0700 when new), its header written. ``owner``: (pid,
        start) of the writer, this process unless a test says otherwise."""
        pid, start = owner or this_process()
        if not 0 < scene_fps <= MAX_FPS:  # the reader would refuse the journal
            raise OSError(errno.EINVAL, f"a frame rate of {scene_fps} cannot be journaled")
        folder_bytes = os.fsencode(Path(results_dir).absolute())
        if len(folder_bytes) > MAX_FOLDER_BYTES:
            raise OSError(errno.ENAMETOOLONG, "the results folder's path is too long for the journal")
        header = HEADER.pack(MAGIC, VERSION, 0, pid, start, float(scene_fps), len(folder_bytes)) + folder_bytes
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"take-{pid}-{secrets.token_hex(8)}.journal"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_BINARY", 0)
        file = os.fdopen(os.open(path, flags, 0o600), "ab", buffering=0)  # unbuffered: each write reaches the OS
        if _lock(file.fileno()) is False:  # another run's look at it (it lets go at once): wait for it
            import fcntl  # (_lock found it: not Windows)

            fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # held until the take is saved or thrown away
        journal = cls(path, file)
        try:
            journal._append(header)
        except OSError:
            journal.remove()
            raise
        return journal

    def add_frame(self, frame: LiveFrameMessage) -> None:
        """Append a frame the take kept (as the take holds it: index and time on its timeline)."""
        people = np.zeros(len(frame.people), PERSON)
        for k, p in enumerate(frame.people):
            people["track_id"][k], people["frame_index"][k] = p.track_id, p.frame_index
            values = people["values"][k]
            values[_POSE], values[_BETAS], values[_TRANS] = p.pose, p.betas, p.trans_cam_m
        head = FRAME_HEAD.pack(frame.frame_index, frame.frame_time_s, frame.people_dropped, len(frame.people))
        self._append(FRAME_TAG + head + people.tobytes())

    def add_warnings(self, warnings: list[str]) -> None:
        """Append the warnings not written yet."""
        for text in warnings:
            if text not in self._warnings and len(self._warnings) < MAX_JOURNAL_WARNINGS:
                data = text.encode("utf-8", errors="replace")[:MAX_WARNING_BYTES]
                self._append(WARNING_TAG + WARNING_HEAD.pack(len(data)) + data)
                self._warnings.add(text)

    def _append(self, data: bytes) -> None:
        if self._file is None or not self._writing:
            raise OSError("the journal is closed")
        view = memoryview(data)
        while view:  # an unbuffered write may take part of the bytes
            written = self._file.write(view)
            if not written:
                raise OSError("the journal takes no more bytes")
            view = view[written:]

    def close(self) -> None:
        """Stop writing; the file stays (a take stopped but not saved yet), still held: no other run
        takes it for a crashed one's."""
        self._writing = False

    def remove(self) -> None:
        """Delete the journal, then let it go, never raising: one that cannot be deleted is read back
        by the next run (deleted while held: no other run recovers a take just saved)."""
        self._writing = False
        file, self._file = self._file, None
        try:
            if file is None:
                self.path.unlink(missing_ok=True)
            else:
                _delete(self.path, file)
        except OSError as err:
            print(f"VIBE Mocap: the live take journal '{self.path}' could not be removed ({err}).", file=sys.stderr)
        if file is not None:
            with contextlib.suppress(OSError):  # nothing was buffered: nothing is lost
                file.close()


# -- reading ----------------------------------------------------------------------------------------
def orphaned_journals(folder: Path) -> list[Path]:
    """The journals in ``folder`` whose writer no longer runs ([] without the folder): whose lock is
    free, or where there is no lock, whose writer's pid runs no more. A journal whose header cannot
    be read is judged by the pid in its name: it is read (and reported) only once that process is
    gone too."""
    try:
        paths = sorted(p for p in Path(folder).iterdir() if JOURNAL_NAME.fullmatch(p.name))
    except OSError:
        return []
    return [path for path in paths if not _held(path)]


def _held(path: Path) -> bool:
    """Whether a running writer (or a run recovering it) still holds the journal at ``path``. This
    process's own never counts as left (a take it dropped unsaved, whose file closed, is not a crash's)."""
    if _owner(path) == this_process():
        return True
    try:
        with open_regular_file(path, follow_symlink=False) as f:
            locked = _lock(f.fileno())  # let go at once, with the file
    except (OSError, NotRegularFileError):
        locked = None
    return not locked if locked is not None else process_running(*_owner(path))


@contextlib.contextmanager
def recovering(path: Path) -> Iterator[RecoveredTake | None]:
    """The take of the orphaned journal at ``path``, read and held for the block (delete it there once
    saved: no other run then recovers it too); None when another run holds it now, or it is gone.
    JournalError when it cannot be read."""
    try:
        f = open_regular_file(path, follow_symlink=False)
    except FileNotFoundError:  # another run recovered it meanwhile
        yield None
        return
    except (OSError, NotRegularFileError) as err:
        raise JournalError(f"The live take journal '{path}' cannot be read ({err}).") from None
    with f:
        if _lock(f.fileno()) is False or os.fstat(f.fileno()).st_nlink == 0:  # held, or recovered and deleted
            yield None
            return
        found = _read_open_journal(f, path)
        found.delete = functools.partial(_delete, path, f)
        yield found


def _owner(path: Path) -> tuple[int, int]:
    try:
        with open_regular_file(path, follow_symlink=False) as f:
            header = _read_header(f, path, os.fstat(f.fileno()).st_size)
        return header.pid, header.start
    except (OSError, NotRegularFileError, JournalError):
        return int(JOURNAL_NAME.fullmatch(path.name)[1]), 0


def read_journal(path: Path) -> RecoveredTake:
    """The take a journal holds (JournalError when the file is not a journal this version reads)."""
    try:
        with open_regular_file(path, follow_symlink=False) as f:
            return _read_open_journal(f, path)
    except (OSError, NotRegularFileError) as err:
        raise JournalError(f"The live take journal '{path}' cannot be read ({err}).") from None


def _read_open_journal(f: BinaryIO, path: Path) -> RecoveredTake:
    try:
        size = os.fstat(f.fileno()).st_size
        header = _read_header(f, path, size)
        take = LiveTake()
        damage = _read_records(f, size - header.size, take)
    except OSError as err:
        raise JournalError(f"The live take journal '{path}' cannot be read ({err}).") from None
    return RecoveredTake(take, header.scene_fps, header.results_dir, damage)


class _Header(NamedTuple):
    pid: int
    start: int
    scene_fps: float
    results_dir: Path
    size: int  # bytes, the results folder's included


def _read_header(f: BinaryIO, path: Path, size: int) -> _Header:
    """The header of the journal open in ``f`` (``size`` bytes); JournalError when it is not a journal's."""
    raw = f.read(HEADER.size)
    if len(raw) < HEADER.size or raw[:8] != MAGIC:
        raise JournalError(f"'{path}' is not a live take journal: its first bytes are not a journal's.")
    _, version, _, pid, start, fps, folder_size = HEADER.unpack(raw)
    if version != VERSION:
        raise JournalError(
            f"The live take journal '{path}' is of version {version}; this add-on reads version {VERSION}."
        )
    if not 0 < fps <= MAX_FPS or not 0 < pid <= MAX_PID:  # NaN fails the comparison too
        raise JournalError(f"The live take journal '{path}' has a damaged header (its frame rate or process).")
    if folder_size > min(MAX_FOLDER_BYTES, size - HEADER.size):
        raise JournalError(f"The live take journal '{path}' has a damaged header (its results folder).")
    try:
        results_dir = Path(os.fsdecode(f.read(folder_size)))
    except UnicodeDecodeError:  # (Windows decodes file names as UTF-8)
        raise JournalError(f"The live take journal '{path}' has a damaged header (its results folder).") from None
    if not results_dir.is_absolute() or "\0" in str(results_dir):
        raise JournalError(f"The live take journal '{path}' names no absolute results folder.")
    return _Header(pid, start, fps, results_dir, HEADER.size + folder_size)


class _Incomplete(Exception):
    """The file ends inside this record: where a crash cut it."""


def _read_records(f: BinaryIO, left: int, take: LiveTake) -> str | None:
    """Add the journal's records to ``take`` -> None when the file ended where a record ends or inside
    one (a crash), else why reading stopped early (a damaged record)."""
    reader = _BoundedReader(f, left)
    last: LiveFrameMessage | None = None
    while reader.left:
        try:
            tag = reader.read(1)
            if tag == FRAME_TAG:
                frame = _read_frame(reader, last)
                if not take.add(frame):  # the limit of a take: read up to it
                    return None
                last = frame
            elif tag == WARNING_TAG:
                _read_warning(reader, take)
            else:
                raise ValueError("a record of an unknown kind")
        except _Incomplete:
            return None
        except ValueError as err:
            return (
                f"The journal this take was recovered from is damaged after {len(take.received_index)} frames "
                f"({err}): the frames after were lost."
            )
    return None


class _BoundedReader:
    """Reads of a known number of bytes, never past what the file holds (_Incomplete there)."""

    def __init__(self, f: BinaryIO, left: int):
        self._f, self.left = f, max(0, left)

    def read(self, n: int) -> bytes:
        if n > self.left:
            raise _Incomplete
        data = self._f.read(n)
        if len(data) < n:  # the file shrank meanwhile
            raise _Incomplete
        self.left -= n
        return data


def _read_frame(reader: _BoundedReader, last: LiveFrameMessage | None) -> LiveFrameMessage:
    index, time_s, dropped, count = FRAME_HEAD.unpack(reader.read(FRAME_HEAD.size))
    index, time_s = checked_index(index, "frame_index"), checked_time(time_s, "frame_time_s")
    if count + dropped > MAX_PEOPLE_PER_FRAME:
        raise ValueError(f"a frame of more than {MAX_PEOPLE_PER_FRAME} people")
    if last is not None and (index <= last.frame_index or time_s < last.frame_time_s):
        raise ValueError("frames out of order")
    rows = np.frombuffer(reader.read(count * PERSON.itemsize), PERSON)
    people = tuple(_person(row, index) for row in rows)
    if len({p.track_id for p in people}) < len(people):
        raise ValueError("a track id appears twice in one frame")
    return LiveFrameMessage(index, time_s, people, None, dropped)


def _person(row: np.void, frame_index: int) -> LivePersonFrame:
    track_id = checked_index(int(row["track_id"]), "track_id", 2**31)
    if int(row["frame_index"]) != frame_index:
        raise ValueError("a person's frame index is not its frame's")
    values = row["values"]
    return LivePersonFrame(
        track_id,
        frame_index,
        within_bounds(values[_POSE], "pose", MAX_POSE_RAD),
        within_bounds(values[_BETAS], "betas", BETA_LIMIT),
        within_bounds(values[_TRANS], "trans_cam_m", MAX_TRANSLATION_M),
    )


def _read_warning(reader: _BoundedReader, take: LiveTake) -> None:
    (size,) = WARNING_HEAD.unpack(reader.read(WARNING_HEAD.size))
    if size > MAX_WARNING_BYTES or len(take.warnings) >= MAX_JOURNAL_WARNINGS:
        raise ValueError("a warning too long, or too many")
    text = display_text(reader.read(size).decode("utf-8", errors="replace"))
    if text not in take.warnings:
        take.warnings.append(text)

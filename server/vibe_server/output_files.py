"""Output files of the command line and the batch, written atomically (checked before the work by
``vibe_blender.core.output_paths``).

``atomic_write`` writes to a temporary name in the same folder (``.<name>.<random>.part``) and
renames it into place, so a killed write never leaves a half-written file under the real name, and
a failed one leaves nothing. An OSError of the write names the real output, not the temporary name.
Only a process killed outright (SIGKILL, a power cut) leaves its temporary file:
``remove_leftover_parts`` deletes those of one output, for a writer that knows no other is at work.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

PART_SUFFIX = ".part"
PART_ID_LENGTH = 8  # hex digits that keep two writes of one output apart
# no space left, or the user's quota spent (EDQUOT is missing on Windows)
DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS


def _part_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:PART_ID_LENGTH]}{PART_SUFFIX}")


def atomic_write(path: str | Path, write: Callable[[object], None], *, make_folder: bool = True) -> None:
    """Call ``write(binary_file)`` on a temporary file next to ``path``, flush it to disk, rename it."""

    def write_file(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_save(path, write_file, make_folder=make_folder)


def atomic_save(path: str | Path, save: Callable[[Path], None], *, make_folder: bool = True) -> None:
    """Call ``save(temporary_path)`` (a writer that takes a path, e.g. a checkpoint saver), flush the
    file to disk and rename it onto ``path``; a failed or interrupted save leaves ``path`` as it was
    and no temporary file. ``make_folder=False``: a missing folder is a FileNotFoundError, never made
    again (a job folder deleted meanwhile stays deleted)."""
    path = Path(path)
    tmp = _part_path(path)
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save(tmp)
        with open(tmp, "ab") as f:  # (append mode: writable, as Windows needs for fsync; changes nothing)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename in (None, str(tmp), tmp):  # the user knows the output, not its temporary name
            err.filename = str(path)
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_leftover_parts(path: str | Path) -> int:
    """Delete the temporary files that killed writes of ``path`` left in its folder (only the names
    :func:`atomic_save` makes for it); returns how many. Only while no other process writes ``path``."""
    path = Path(path)
    ours = re.compile(re.escape(f".{path.name}.") + f"[0-9a-f]{{{PART_ID_LENGTH}}}" + re.escape(PART_SUFFIX))
    removed = 0
    for leftover in path.parent.iterdir():
        if ours.fullmatch(leftover.name) and (leftover.is_symlink() or leftover.is_file()):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))

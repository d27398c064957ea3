"""Where a command may write an output file, checked before its (possibly long) work starts.

A folder, a name inside a file, a folder that takes no new files (read-only, no permission), or a
name that is also one of the command's inputs or other outputs is one clear message at once, not a
traceback after the run or a destroyed input. Standard library only: the Blender batch command uses
it too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

from .errors import VibeError


def check_output_path(path: str | Path, what: str, others: Mapping[str, str | Path | None] = ()) -> Path:
    """``path`` as the place of the output ``what`` (e.g. "the result file"): VibeError when it is a
    folder, or the same file as one of ``others`` ({description: path}, e.g. {"the video": video})."""
    path = Path(path)
    for description, other in dict(others).items():
        if other is not None and _same_file(path, Path(other)):
            raise VibeError(
                f"{what[0].upper()}{what[1:]} '{path}' is the same file as {description} '{other}': writing it "
                "would destroy that file. Choose another name."
            )
    if path.is_dir():
        raise VibeError(f"{what[0].upper()}{what[1:]} '{path}' is a folder; give the name of a file in it.")
    check_folder_can_hold(path.parent, what, path)
    return path


def check_folder_can_hold(folder: Path, what: str, path: Path) -> None:
    """VibeError when ``folder`` (made when missing) cannot be: the nearest existing part of it is a
    file, or it takes no new files (a probe file is made there and removed at once)."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise VibeError(
            f"{what[0].upper()}{what[1:]} '{path}' cannot be made: '{existing}' is a file, not a folder. "
            "Choose another folder."
        )
    problem = _write_problem(existing or Path("."))
    if problem:
        raise VibeError(
            f"{what[0].upper()}{what[1:]} '{path}' cannot be written: the folder '{existing}' takes no new "
            f"files ({problem}). Choose a folder you can write to."
        )


def _write_problem(folder: Path) -> str | None:
    """None when a file can be made in ``folder`` (an existing folder), else the system's reason."""
    probe = folder / f".vibe-write-test.{uuid.uuid4().hex[:8]}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        return err.strerror or str(err)
    try:
        os.unlink(probe)
    except OSError:  # made but not removable: the folder takes files, which is all this asks
        pass
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:  # unreadable: not provably the same
        return False


def check_output_folder(folder: str | Path, what: str) -> Path:
    """``folder`` as the folder of the output ``what`` (made when missing): VibeError when it, or the
    nearest existing part of it, is a file."""
    folder = Path(folder)
    check_folder_can_hold(folder, what, folder)
    return folder

"""Where a command may write an output file, checked before its (possibly long) work starts.

A folder, a name inside a file, or a name that is also one of the command's inputs or other outputs
is one clear message at once, not a traceback after the run or a destroyed input. Standard library
only: the Blender batch command uses it too.
"""

from __future__ import annotations

import os
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
    """VibeError when ``folder`` (made when missing) cannot be: the nearest existing part of it is a file."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise VibeError(
            f"{what[0].upper()}{what[1:]} '{path}' cannot be made: '{existing}' is a file, not a folder. "
            "Choose another folder."
        )


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

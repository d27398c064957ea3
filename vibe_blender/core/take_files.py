"""Where the add-on's live takes are saved, and the note of those saved on its way out.

A take is saved in the results folder as ``live_<date>-<time>_<random>.npz``. A take Stop Recording
had not saved when Blender quit, or when the add-on was disabled or reloaded, is saved there the
same way, and its name added to a note beside it (one name a line), which the next session reads to
tell the user where it is. The note is read bounded and checked, whatever the file holds: only names
of take files that exist in the folder are kept.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

from .regular_file import NotRegularFileError, open_regular_file
from .user_dirs import write_private_file

TAKE_NAME = re.compile(r"live_\d{8}-\d{6}_[0-9a-f]{8}\.npz")
SAVED_ON_EXIT_NOTE = "live_takes_saved_on_exit.txt"
MAX_NOTED_TAKES = 16  # the newest kept: more would only push what matters off the panel
_MAX_NOTE_BYTES = MAX_NOTED_TAKES * 64  # a name is 30 characters


def new_take_path(folder: Path) -> Path:
    """A new take file's path in ``folder``: dated, and random so that two saved in a second differ."""
    return Path(folder) / f"live_{time.strftime('%Y%m%d-%H%M%S')}_{uuid.uuid4().hex[:8]}.npz"


def takes_saved_on_exit(folder: Path) -> list[Path]:
    """The takes the note in ``folder`` names that are still there, oldest first ([] without a note)."""
    folder = Path(folder)
    try:
        with open_regular_file(folder / SAVED_ON_EXIT_NOTE) as f:
            raw = f.read(_MAX_NOTE_BYTES)
    except (OSError, NotRegularFileError):  # none, or not a note of ours: nothing to tell
        return []
    names = [name for name in raw.decode("ascii", errors="replace").splitlines() if TAKE_NAME.fullmatch(name)]
    return [folder / name for name in dict.fromkeys(names) if (folder / name).is_file()][-MAX_NOTED_TAKES:]


def note_take_saved_on_exit(path: Path) -> None:
    """Add the take at ``path`` to the note in its folder (OSError when it cannot be written)."""
    path = Path(path)
    noted = [p.name for p in takes_saved_on_exit(path.parent) if p.name != path.name]
    names = [*noted, path.name][-MAX_NOTED_TAKES:]
    write_private_file(path.parent / SAVED_ON_EXIT_NOTE, "".join(f"{name}\n" for name in names).encode("ascii"))


def forget_takes_saved_on_exit(folder: Path) -> None:
    """The user was told: remove the note (OSError when it cannot be removed)."""
    (Path(folder) / SAVED_ON_EXIT_NOTE).unlink(missing_ok=True)

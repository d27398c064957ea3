"""Output files of the command line and the batch, written atomically (checked before the work by
``vibe_blender.core.output_paths``).

``atomic_write`` writes to a temporary name in the same folder (``.<name>.<random>.part``) and
renames it into place, so a killed write never leaves a half-written file under the real name, and
a failed one leaves nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

PART_SUFFIX = ".part"


def atomic_write(path: str | Path, write: Callable[[object], None]) -> None:
    """Call ``write(binary_file)`` on a temporary file next to ``path``, flush it to disk, rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))

"""Readers for motion files that Blender can import without the server.

:func:`read_motion_file` picks the reader from the file's content: our result ``.npz``, the official
VIBE ``vibe_output.pkl`` (joblib) or an AMASS-style ``.npz`` (``poses``, ``trans``, ``betas``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ..errors import VibeError
from ..motion import MotionSet, from_result
from ..regular_file import open_user_file
from ..result_file import load_result
from ..safe_npz import npz_names
from .amass_npz import read_amass_npz
from .official_pkl import read_official_pkl

SUPPORTED = "a VIBE Mocap result (.npz), an official VIBE vibe_output.pkl or an AMASS-style .npz"


def read_motion_file(path: str | Path, *, fps: float | None = None, max_frames: int | None = None) -> MotionSet:
    """Any supported motion file -> MotionSet. fps: frame rate when the file stores none (official pkl,
    AMASS without mocap_framerate). max_frames: the most frames of one person the caller takes, which
    an AMASS file (one person) is refused past before its arrays are converted."""
    path = Path(path)
    with open_user_file(path, "the motion file", f"Choose {SUPPORTED}.") as file:
        is_zip = path.suffix.lower() != ".pkl" and zipfile.is_zipfile(file)
    if path.suffix.lower() == ".pkl":
        return read_official_pkl(path, fps=fps or 30.0)
    if not is_zip:
        raise VibeError(f"'{path.name}' is not {SUPPORTED}.")
    names = set(npz_names(path, label=f"'{path.name}'", hint=f"Choose {SUPPORTED}."))
    if "format" in names:
        return from_result(load_result(path))
    if "poses" in names:
        return read_amass_npz(path, fps=fps, max_frames=max_frames)
    raise VibeError(
        f"'{path.name}' is an .npz file but neither a VIBE Mocap result nor AMASS motion "
        f"(it holds {', '.join(sorted(names)[:8])}); choose {SUPPORTED}."
    )

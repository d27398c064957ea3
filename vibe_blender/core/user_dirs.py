"""Per-user folders of VIBE Mocap (config, data, cache) and the local access token.

Standard library only: the add-on runs inside Blender, where nothing may be installed, and the
server and the command line use the same helper so that both sides agree on every path. The
folders follow the platform's conventions (those of ``platformdirs``):

    Linux    $XDG_CONFIG_HOME/vibe-mocap   $XDG_DATA_HOME/vibe-mocap   $XDG_CACHE_HOME/vibe-mocap
    macOS    ~/Library/Application Support/vibe-mocap (config, data)  ~/Library/Caches/vibe-mocap
    Windows  %LOCALAPPDATA%\\vibe-mocap (config, data)                 %LOCALAPPDATA%\\vibe-mocap\\Cache

The token: every client of the server, local ones included, sends a bearer token. ``vibe-mocap
serve`` creates one on first use in a file only the user can read (0600 in a 0700 folder); the
command line and the add-on read it from there, so it never appears on a command line (``ps``).
``$VIBE_MOCAP_TOKEN`` overrides the file.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal

from .atomic_file import atomic_write, leftover_parts_of_any_file, part_path
from .errors import VibeError
from .regular_file import NOT_REGULAR, NotRegularFileError, open_regular_file

APP_NAME = "vibe-mocap"
TOKEN_ENV_VAR = "VIBE_MOCAP_TOKEN"
TOKEN_FILE_NAME = "token"
TOKEN_MAX_CHARS = 256  # a token is 43 characters; anything longer is not ours


def is_sendable_token(token: str) -> bool:
    """Whether ``token`` can be a token: a client sends it in an HTTP header (whose spaces at the ends
    are dropped), so printable ASCII without spaces, and not over TOKEN_MAX_CHARS."""
    return 0 < len(token) <= TOKEN_MAX_CHARS and token.isascii() and token.isprintable() and " " not in token


STALE_PART_S = 24 * 3600  # a temporary file this old is left by a write that was cut off

DirKind = Literal["config", "data", "cache"]


def user_dir(kind: DirKind) -> Path:
    """The per-user folder of this kind for VIBE Mocap (not created)."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local") / APP_NAME
        return base / "Cache" if kind == "cache" else base
    if sys.platform == "darwin":
        library = home / "Library"
        return library / ("Caches" if kind == "cache" else "Application Support") / APP_NAME
    xdg = {
        "config": ("XDG_CONFIG_HOME", home / ".config"),
        "data": ("XDG_DATA_HOME", home / ".local" / "share"),
        "cache": ("XDG_CACHE_HOME", home / ".cache"),
    }
    env_var, fallback = xdg[kind]
    return Path(os.environ.get(env_var) or fallback) / APP_NAME


def token_path() -> Path:
    return user_dir("config") / TOKEN_FILE_NAME


def read_token() -> str | None:
    """$VIBE_MOCAP_TOKEN, else the token file's content, else None (no server has made one yet)."""
    from_env = os.environ.get(TOKEN_ENV_VAR, "").strip()
    if from_env:
        return from_env
    path = token_path()
    try:
        with open_regular_file(path) as f:
            raw = f.read(TOKEN_MAX_CHARS + 1)
    except FileNotFoundError:
        return None
    except NotRegularFileError:
        raise VibeError(
            f"The server token file {path} {NOT_REGULAR}, so it was not read; delete it and start "
            f"'vibe-mocap serve' again to make a new one, or set ${TOKEN_ENV_VAR}."
        ) from None
    except OSError as err:
        raise VibeError(
            f"The server token file {path} cannot be read ({err.strerror}); "
            f"check its permissions or set ${TOKEN_ENV_VAR}."
        ) from None
    token = raw.decode("ascii", errors="replace").strip()
    if len(raw) > TOKEN_MAX_CHARS or not is_sendable_token(token):
        raise VibeError(
            f"The server token file {path} does not hold a token; delete it and start "
            "'vibe-mocap serve' again to make a new one."
        )
    return token


def fresh_part_path(path: Path) -> Path:
    """A temporary name beside ``path`` to write it under before renaming it into place
    (``atomic_file.part_path``: random, so that two writers of the same file at once, a capture and a
    live session downloading the body model, never write into one another's), once the temporary
    files of ``path`` that a write cut off (Blender killed) left a day ago or more are removed."""
    _remove_stale_parts(path)
    return part_path(path)


def _remove_stale_parts(path: Path) -> None:
    """Remove the temporary files in ``path``'s folder that a write cut off (Blender quit or killed)
    left STALE_PART_S ago or more, whichever file they were written for: a download's file has a new
    random name each time (a capture's result), so its part would never match a later name."""
    cutoff = time.time() - STALE_PART_S
    for part in list(leftover_parts_of_any_file(path.parent)):
        try:
            if part.lstat().st_mtime < cutoff:
                part.unlink()
        except OSError:  # gone meanwhile, or not ours to remove: it stays
            pass


def write_private_file(path: Path, data: bytes | Callable[[BinaryIO], object]) -> None:
    """``data`` in ``path``, readable by this user only (0600, made in a 0700 folder when new),
    replaced at once: a reader sees the old file or the new one, never a part.

    ``data`` is the bytes, or a function that writes them to the open binary file it is given, so
    that a large file (a live take) is written as it is made instead of first held whole in memory.
    Whatever fails, the part file is removed and the error raised."""
    path = Path(path)
    _remove_stale_parts(path)
    atomic_write(path, data if callable(data) else lambda f: f.write(data), private=True)


def ensure_token() -> str:
    """The token (see :func:`read_token`), created on first use: 32 random bytes, URL-safe, in a
    file that only this user can read."""
    token = read_token()
    if token is not None:
        return token
    path = token_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    except FileExistsError:  # another server made it a moment ago: use theirs
        return read_token() or token
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    return token

"""What the add-on knows about its local server and the model data, shared by ``server_control``
(which updates it from worker threads) and the preferences and panels (which only read it)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .core.local_server import LocalServer, ModelDataInstall, ModelFileState, ServerProgram


@dataclass
class _State:
    server: LocalServer | None = None
    program: ServerProgram | None = None
    program_error: str = ""
    program_epoch: int = 0  # one more each time another program is picked: older lookups store nothing
    looking: bool = False
    data_dir: str = ""
    data_files: list[ModelFileState] = field(default_factory=list)
    data_error: str = ""
    data_checks: int = 0  # data checks started: only the newest one's result is shown
    install: ModelDataInstall | None = None
    keep_server: bool = False  # the preference: the next server started outlives Blender
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _State()


def forget_program() -> None:
    """Another program was picked in the preferences: the next action looks for it again (a lookup
    still running for the one picked before stores nothing)."""
    with _state.lock:
        _state.program_epoch += 1
        _state.program, _state.program_error = None, ""


_program_lookup: dict = {"start": None}  # what looks for the program in the background (server_control sets it)


def set_program_lookup(start: Callable[[], None] | None) -> None:
    """What :func:`program_picked` starts (set by server_control, which imports the preferences that
    call it: they cannot import it back)."""
    _program_lookup["start"] = start


def program_picked() -> None:
    """The *vibe-mocap program* preference changed: forget the program found and look for the one
    picked (in the background; the preferences show the result)."""
    forget_program()
    if _program_lookup["start"] is not None:
        _program_lookup["start"]()


def set_keep_server(keep: bool) -> None:
    """The preference changed: servers started from now on stop with Blender unless ``keep``."""
    _state.keep_server = keep
    if _state.server is not None:
        _state.server.stop_with_parent = not keep


def program_state() -> tuple[ServerProgram | None, str, bool]:
    """(program found, or None; why none was found; still looking)."""
    return _state.program, _state.program_error, _state.looking

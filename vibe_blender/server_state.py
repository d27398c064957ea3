"""What the add-on knows about its local server and the model data, shared by ``server_control``
(which updates it from worker threads) and the preferences and panels (which only read it)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .core.local_server import LocalServer, ModelDataInstall, ModelFileState, ServerProgram


@dataclass
class _State:
    server: LocalServer | None = None
    program: ServerProgram | None = None
    program_error: str = ""
    looking: bool = False
    data_dir: str = ""
    data_files: list[ModelFileState] = field(default_factory=list)
    data_error: str = ""
    install: ModelDataInstall | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _State()


def program_state() -> tuple[ServerProgram | None, str, bool]:
    """(program found, or None; why none was found; still looking)."""
    return _state.program, _state.program_error, _state.looking

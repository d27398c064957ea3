"""The add-on's own local server and the model-data state, between worker threads and the UI.

One ``LocalServer`` per Blender session (``core/local_server.py`` does the work, off the main
thread). The panel reads :func:`server_status`, :func:`program_state` and :func:`model_data_state`;
:func:`tick` runs from ``bpy.app.timers`` to redraw while something is going on (timers never fire in
the ``bpy`` module build, so tests call it directly). The server stops when Blender quits or the
add-on is disabled, unless the user chose to keep it running.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bpy

from . import exit_hooks
from .core.client import check_online_access, is_loopback_url, server_url_or_default
from .core.errors import VibeError
from .core.local_server import (
    QUICK_STOP_S,
    LocalServer,
    ModelDataInstall,
    ModelFileState,
    ServerProgram,
    ServerStatus,
    connect_or_start,
    find_program,
    model_data_report,
)
from .core.model_data import PLACEHOLDER_MODEL, SERVER_FILES, runs_no_model
from .preferences import get_preferences, user_dir
from .redraw import redraw_panels
from .server_state import _state, program_state, set_keep_server, set_program_lookup  # noqa: F401 - program_state: the panels

TICK_S = 0.5
LOST_SERVER_SETTLE_S = 3.0  # a capture that lost the add-on's server waits this long for its state to say why
# the start of the add-on's server that runs the placeholder though model data was installed after it
_installed_after: dict = {"generation": None}
_activity: dict = {"probe": None}  # -> whether a capture or live session runs (set_activity_probe)
# the program epoch of the lookup look_for_program started, until tick sees it end
_lookup: dict = {"epoch": None}


def local_server() -> LocalServer:
    """The add-on's server, made on first use; main thread only (its folder is read from Blender, and
    two threads making it at once would make two)."""
    if _state.server is None:
        _state.server = LocalServer(log_dir=user_dir("server"), stop_with_parent=not _state.keep_server)
    return _state.server


def server_status() -> ServerStatus:
    """The add-on's server's state ("stopped" before it was first used: the panels never make its
    folder, whose failure the start reports)."""
    server = _state.server
    return server.snapshot() if server is not None else ServerStatus("stopped")


# -- the program ---------------------------------------------------------------------------------
def program_finder() -> Callable[[], ServerProgram]:
    """What finds the program from any thread: the one found, else the one picked in the preferences
    now (read here, on the main thread: worker threads never read bpy)."""
    program = _state.program
    if program is not None:
        return lambda: program
    epoch = _state.program_epoch  # before the preference: a program picked after it is a newer epoch
    picked = program_setting()
    return lambda: find_program_now(picked, epoch)


def program_setting() -> str:
    """The preferences' vibe-mocap program, absolute ('' = look in the repository's .venv, then PATH);
    main thread only."""
    return _absolute(get_preferences().server_program)


def find_program_now(picked: str, epoch: int) -> ServerProgram:
    """Find the program ``picked`` in the preferences ('' = the repository's .venv, then PATH), read
    in program epoch ``epoch``; remembered unless another program was picked since. Blocks for
    ``--version``: worker threads and operators only."""
    try:
        program = find_program(picked)
    except VibeError as err:
        _remember_program(epoch, None, str(err))
        raise
    _remember_program(epoch, program, "")
    return program


def _remember_program(epoch: int, program: ServerProgram | None, error: str) -> None:
    with _state.lock:  # the same lock as forget_program: a pick never lands between check and store
        if _state.program_epoch == epoch:
            _state.program, _state.program_error = program, error


def look_for_program() -> None:
    """Find the program in the background (the preferences and panel show the result)."""
    if _state.looking:  # tick looks again if another program was picked meanwhile
        return
    epoch = _state.program_epoch
    picked = program_setting()  # here: the thread must not read bpy
    _state.looking, _lookup["epoch"] = True, epoch

    def look():
        try:
            find_program_now(picked, epoch)  # again, even when one was found: the button looks again
        except VibeError:
            pass
        finally:
            _state.looking = False

    threading.Thread(target=look, daemon=True, name="vibe-find-program").start()
    _follow()


# -- start / stop --------------------------------------------------------------------------------
def start_server() -> None:
    """Start the add-on's server in the background (finding the program first, off the main thread)."""
    find = program_finder()
    local_server().start(lambda: find().path, data_dir=server_data_dir())
    _follow()


def restart_server() -> None:
    """Stop the add-on's server and start it again, in the background: it then uses the model data
    installed since it started."""
    find = program_finder()
    local_server().restart_in_background(lambda: find().path, data_dir=server_data_dir())
    _follow()


def restart_for_installed_data() -> bool:
    """Whether the add-on's server runs the placeholder, or no model at all (a partial install), though
    model data was installed after it started (it restarts on its own once no capture or live session
    runs; the panel says so)."""
    server = _state.server
    if server is None or _installed_after["generation"] is None:
        return False
    status = server.snapshot()
    return (
        server.generation == _installed_after["generation"]
        and status.state == "ready"
        and (status.model == PLACEHOLDER_MODEL or runs_no_model(status.model))
    )


def _note_installed_data() -> None:
    """Model data was installed: a running server is due for a restart should it run the placeholder
    (one still starting says which model it runs only once ready: :func:`restart_for_installed_data`)."""
    server = _state.server
    if server is not None and server.snapshot().running:
        _installed_after["generation"] = server.generation


def set_activity_probe(probe: Callable[[], bool]) -> None:
    """What tells whether a capture or live session uses the server now (set by the panels, which see
    them: this module cannot import the modules that import it)."""
    _activity["probe"] = probe


def _capture_or_live_running() -> bool:
    probe = _activity["probe"]
    return probe is None or bool(probe())  # unknown: never restarted under a capture


def stop_server() -> None:
    """Stop the add-on's server in the background (the panel shows "stopping" meanwhile); after a start
    that failed on a kept server that does not answer, end that one (``LocalServer.stop_kept_server``)."""
    if _state.server is not None:
        _state.server.stop_in_background()
        _follow()


@dataclass(frozen=True)
class ServerStart:
    """What starting the add-on's server from a capture's or live session's worker thread needs, read
    on the main thread when it starts (:func:`server_start`): worker threads never read bpy."""

    server: LocalServer
    find_program: Callable[[], ServerProgram]
    data_dir: str  # :func:`server_data_dir`


def server_start() -> ServerStart:
    """The :class:`ServerStart` of a capture or live session starting now; main thread only."""
    return ServerStart(local_server(), program_finder(), server_data_dir())


def server_for_capture(url: str, token: str, start: ServerStart) -> tuple[str, str]:
    """(url, token) to send a capture to, starting the add-on's server (``start``) when nothing
    answers at a loopback ``url``. Blocks until the server answers: call from the capture's worker
    thread."""
    return connect_or_start(url, token, start.server, start.find_program, data_dir=start.data_dir)


@dataclass(frozen=True)
class ChosenServer:
    """The server a capture or live session starting now goes to, read on the main thread
    (:func:`chosen_server`): its URL, the token typed for it, and for a URL on this machine how to
    start the add-on's server when nothing answers there (None for another machine's)."""

    url: str
    token: str
    start: ServerStart | None

    def reach(self) -> tuple[str, str]:
        """(url, token) to send to, once the add-on's server is started when it is to be and nothing
        answers. Blocks until the server answers: call from the worker thread."""
        return (self.url, self.token) if self.start is None else server_for_capture(self.url, self.token, self.start)


def chosen_server(server_url: str | None = None, token: str | None = None) -> ChosenServer:
    """The server of a capture or live session starting now: ``server_url`` and ``token``, else the
    preferences' (an empty URL is this machine's default). Refused when it is on another machine and
    Blender's online access is off. Main thread only."""
    prefs = get_preferences()
    url = server_url_or_default(server_url if server_url is not None else prefs.server_url)
    check_online_access(url, bpy.app.online_access)
    typed_token = token if token is not None else prefs.token
    return ChosenServer(url, typed_token, server_start() if is_loopback_url(url) else None)


def lost_server_message(url: str, *, settle_s: float = LOST_SERVER_SETTLE_S) -> str | None:
    """For a capture that lost its server at ``url``: when that was the add-on's own server and it has
    stopped, what to say instead of "Cannot reach ... start it with 'vibe-mocap serve'" (its random
    port is in no preference, and the panel shows why it stopped); else None. Waits up to ``settle_s``
    for the server's state to follow its process (the capture may notice first). Any thread."""
    server = _state.server
    if server is None or server.snapshot().url != url:
        return None
    deadline = time.monotonic() + settle_s
    while (status := server.snapshot()).state == "ready" and time.monotonic() < deadline:
        time.sleep(0.1)
    if status.state == "ready":
        return None
    why = status.message.split(". ")[0].rstrip(".") if status.message else f"the server is {status.state}"
    return (
        f"The capture lost the add-on's server: {why}. Its last lines are in the Server & Model Data panel; "
        "capture again to start it anew."
    )


def _stop_at_exit() -> None:
    """Blender is quitting or the add-on is disabled: stop the server, unless the user keeps it
    (then its address and token are noted for the next session). Blender waits QUICK_STOP_S for it at
    most, not its whole graceful stop: its running jobs run after the restart all the same. Nothing
    starts it after this (a capture still connecting, a restart under way) until the add-on is enabled."""
    if _state.server is None:
        return
    _state.server.close()
    try:
        keep = bool(get_preferences().keep_server_running)
    except Exception:  # preferences are gone while Blender shuts down: stop it
        keep = False
    if not (keep and _state.server.keep_for_next_session()):
        _state.server.stop(QUICK_STOP_S)


# -- model data ----------------------------------------------------------------------------------
def model_data_state() -> tuple[str, list[ModelFileState], str]:
    """(data folder, one state per file, the error of the last check)."""
    return _state.data_dir, _state.data_files, _state.data_error


def check_model_data() -> None:
    """``vibe-mocap data check`` in the background, of the folder the add-on's server reads
    (:func:`server_data_dir`); the panel shows the result of the newest check (an older one ending
    after it shows nothing: its folder or data may be outdated)."""
    find, data_dir, setting = program_finder(), server_data_dir(), data_dir_setting()
    # a folder that is gone is not given to the server, which reads its own: the check shows that
    # one, and says why, rather than listing every file as missing without naming the folder set
    gone = (
        f"The model-data folder set in the preferences ('{setting}') does not exist, so the server reads its "
        "own folder, shown above; pick an existing folder, or clear the setting."
        if setting and not os.path.isdir(setting)
        else ""
    )
    with _state.lock:
        _state.data_checks += 1
        this_check = _state.data_checks

    def show(**result) -> None:
        with _state.lock:
            if _state.data_checks == this_check:
                for name, value in result.items():
                    setattr(_state, name, value)

    def check():
        try:
            folder, files = model_data_report(find().path, data_dir=data_dir)
            show(data_dir=folder, data_files=files, data_error=gone)
        except VibeError as err:
            show(data_error=str(err))

    threading.Thread(target=check, daemon=True, name="vibe-check-data").start()
    _follow()


def install_model_data(source: str) -> ModelDataInstall:
    """``vibe-mocap data install SOURCE`` in the background (the same code path as the command line;
    the program is found there too, as finding runs it)."""
    if _state.install is not None and not _state.install.finished:
        raise VibeError("A model-data install is already running; wait for it to finish.")
    find = program_finder()
    _state.install = ModelDataInstall(lambda: find().path, source, data_dir=data_dir_setting()).start()
    _follow()
    return _state.install


def current_install() -> ModelDataInstall | None:
    return _state.install


def data_dir_setting() -> str:
    """The preferences' model-data folder, absolute ('' = the server's default); main thread only."""
    return _absolute(get_preferences().model_data_dir)


def _absolute(path: str) -> str:
    """A path from the preferences made absolute: a '//' path is relative to the .blend file, which
    only Blender knows ('' stays '': nothing picked)."""
    return bpy.path.abspath(path) if path else ""


def server_data_dir() -> str:
    """The model-data folder a server the add-on starts is given: the preferences' folder, unless it
    holds none of the files only the server reads, only body models (SMPL_NEUTRAL.pkl, body_model.npz)
    and whatever else the user keeps there (motion files): the server, which would find that an
    unfinished install, then keeps its own. A partly installed folder is given, and the server names
    what is missing. Main thread only."""
    folder = data_dir_setting()
    if folder and not any(os.path.lexists(Path(folder) / name) for name in SERVER_FILES):
        return ""
    return folder


# -- UI updates ----------------------------------------------------------------------------------
def busy() -> bool:
    install = _state.install
    starting_or_stopping = server_status().state in ("starting", "stopping")
    installing = install is not None and not install.finished
    looking = _state.looking or _lookup["epoch"] is not None
    return looking or starting_or_stopping or installing or restart_for_installed_data()


def tick() -> float | None:
    """Redraw the panels while something runs; when an install ends, check the data again, and
    restart the add-on's server when it runs the placeholder, once no capture or live session runs;
    look for the program again when another was picked while it was looked for."""
    if _lookup["epoch"] is not None and not _state.looking:
        looked_in, _lookup["epoch"] = _lookup["epoch"], None
        if looked_in != _state.program_epoch:
            look_for_program()
    install = _state.install
    if install is not None and install.finished and not getattr(install, "checked", False):
        install.checked = True
        check_model_data()
        if install.returncode == 0:  # installed (the check says which files are still missing)
            _note_installed_data()
    if restart_for_installed_data() and not _capture_or_live_running():
        _installed_after["generation"] = None
        restart_server()
    redraw_panels(("VIEW_3D", "PREFERENCES"))
    return TICK_S if busy() else None


def _follow() -> None:
    if not bpy.app.timers.is_registered(tick):
        # persistent: an install that ends after File > Open/New must still restart a placeholder server
        bpy.app.timers.register(tick, first_interval=TICK_S, persistent=True)


def register():
    exit_hooks.run_at_exit(_stop_at_exit)
    set_program_lookup(look_for_program)
    if _state.server is not None:  # enabled again in the same session
        _state.server.reopen()
    try:
        set_keep_server(bool(get_preferences().keep_server_running))
    except Exception:  # no preferences yet (the add-on is being enabled): the default stops with Blender
        pass


def unregister():
    set_program_lookup(None)
    exit_hooks.run_now(_stop_at_exit)
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)

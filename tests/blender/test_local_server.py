"""The add-on starts, watches and stops the REAL local server (the main .venv's vibe-mocap).

Each test isolates the server's folders (XDG_* in a temp dir): the synthetic placeholder model is
written there once, and no token or job of the user's is touched."""

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import bpy
import pytest
from capture_states import until_capture_state
from kept_server_stand_in import kept_stand_in

from vibe_blender import server_control
from vibe_blender.core.local_server import venv_program

pytestmark = pytest.mark.blender
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def isolated_user_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("user_dirs")
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")}
    for name in saved:
        os.environ[name] = str(base / name.lower())
    yield base
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def addon(isolated_user_dirs):
    import vibe_blender

    if not venv_program(REPO).is_file():
        pytest.fail("The main .venv's vibe-mocap is missing: run scripts/setup.sh first.")
    vibe_blender.register()
    yield
    server_control.stop_server()
    follow_until(lambda: server_control.server_status().state != "stopping", 60)  # before the quick stop
    vibe_blender.unregister()


def follow_until(condition, timeout_s=300.0):
    """Run the UI timer's step as Blender would, until ``condition()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        server_control.tick()
        assert time.monotonic() < deadline, server_control.server_status()
        time.sleep(0.2)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_panels_timer_goes_on_in_a_file_opened_meanwhile(addon):
    """It was not persistent: after File > Open/New an install that ended was never checked, and a
    placeholder server never restarted on the new data."""
    server_control._follow()
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)  # File > New
        assert bpy.app.timers.is_registered(server_control.tick)
    finally:
        if bpy.app.timers.is_registered(server_control.tick):  # it never fires in the bpy module
            bpy.app.timers.unregister(server_control.tick)


def test_the_panels_timer_redraws_nothing_where_the_context_has_no_window_manager(addon, monkeypatch):
    """It read the context's window manager unchecked, unlike the capture's timer: an AttributeError."""
    monkeypatch.setattr(bpy, "context", SimpleNamespace())
    assert server_control.tick() is None  # nothing runs: the timer ends


def test_start_and_stop_leave_no_process(addon):
    assert bpy.ops.vibe_mocap.server_start() == {"FINISHED"}
    follow_until(lambda: server_control.server_status().state in ("ready", "failed", "exited"))
    status = server_control.server_status()
    assert status.state == "ready", (status.message, status.log_tail)
    assert status.url.startswith("http://127.0.0.1:")
    assert status.model == "synthetic placeholder"
    pid = server_control.local_server()._process.pid
    assert bpy.ops.vibe_mocap.server_stop() == {"FINISHED"}
    assert server_control.server_status().state in ("stopping", "stopped")  # Blender does not wait
    follow_until(lambda: server_control.server_status().state == "stopped", 30)
    assert not pid_alive(pid)
    port = int(status.url.rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there any more


def test_two_blenders_at_once_each_run_a_server_of_their_own(addon):
    """A second Blender (a second LocalServer on the same add-on folder) starts the real server while
    the first one's runs: each has its own jobs folder (one server per jobs folder) and log."""
    from vibe_blender.core.local_server import LocalServer
    from vibe_blender.preferences import user_dir

    server_control.start_server()
    follow_until(lambda: server_control.server_status().state != "starting")
    first = server_control.local_server()
    assert first.snapshot().state == "ready", first.snapshot()
    second = LocalServer(log_dir=user_dir("server"))
    try:
        second.start(venv_program(REPO))
        status = second.wait_ready(300)
        assert status.state == "ready", (status.message, status.log_tail)
        assert first.snapshot().state == "ready" and status.url != first.snapshot().url
        assert second.jobs_dir != first.jobs_dir and second.log_path != first.log_path
        assert f"jobs in {first.jobs_dir}" in first.log_path.read_text()
        assert f"jobs in {second.jobs_dir}" in second.log_path.read_text()
    finally:
        second.stop()


def test_a_server_folder_that_cannot_be_made_is_one_clear_message(addon, monkeypatch, tmp_path):
    """Blender answers "" for a user folder it cannot make: the server's folder was then Blender's
    working folder. The panel still draws; Start Server says which folder and what to do."""
    from vibe_blender import preferences

    blocked = preferences.user_dir("server-blocked")
    blocked.rmdir()
    blocked.write_text("a file where the server folder should be")
    monkeypatch.chdir(tmp_path)  # Blender's working folder
    monkeypatch.setattr(server_control._state, "server", None)  # none made yet in this session
    monkeypatch.setattr(server_control, "user_dir", lambda name: preferences.user_dir(f"{name}-blocked"))
    try:
        assert server_control.server_status().state == "stopped"  # what the panel draws
        with pytest.raises(RuntimeError, match=rf"cannot make its folder '{re.escape(str(blocked))}'.*Move"):
            bpy.ops.vibe_mocap.server_start()
        assert server_control._state.server is None and list(tmp_path.iterdir()) == []
    finally:
        blocked.unlink()


def test_a_missing_program_gives_one_clear_message(addon, monkeypatch):
    from vibe_blender import preferences

    # outside Blender's add-on list the preferences are the defaults object: set the path there
    monkeypatch.setattr(preferences._Defaults, "server_program", "/nonexistent/vibe-mocap")
    monkeypatch.setattr(server_control._state, "program", None)
    assert bpy.ops.vibe_mocap.server_start() == {"FINISHED"}
    follow_until(lambda: server_control.server_status().state == "failed", 30)
    message = server_control.server_status().message
    assert "The vibe-mocap program set in the preferences ('/nonexistent/vibe-mocap') does not exist" in message


def test_a_server_that_dies_is_reported_with_its_log(addon):
    bpy.ops.vibe_mocap.server_start()
    follow_until(lambda: server_control.server_status().state != "starting")
    server_control.local_server()._process.kill()
    follow_until(lambda: server_control.server_status().state == "exited", 30)
    status = server_control.server_status()
    assert "stopped unexpectedly" in status.message and status.log_tail


def _blender_session(tmp_path, name: str, body: str) -> str:
    """Run a separate Blender (the bpy module) that registers the add-on and runs ``body``; its output.

    Python runs the exit handlers first (the add-on's stops or keeps the server), then tears the
    modules down, where the bpy module build can hang or crash; the first handler registered runs
    last and ends the process right after the others, as Blender's own quit does."""
    script = tmp_path / f"{name}.py"
    script.write_text(
        textwrap.dedent(f"""
        import atexit, os, signal, sys, time
        atexit.register(os._exit, 0)          # runs after the add-on's handler (last in, first out)
        sys.path.insert(0, {str(REPO)!r})
        import vibe_blender
        from vibe_blender import preferences, server_control

        def wait_ready():
            deadline = time.monotonic() + 300
            while server_control.server_status().state in ("stopped", "starting"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert server_control.server_status().state == "ready", server_control.server_status()
        """)
        + textwrap.dedent(body)
    )
    env = dict(os.environ, TMPDIR=str(tmp_path))  # Blender's session folder, which os._exit leaves behind
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert "SERVER_PID" in done.stdout, done.stdout + done.stderr
    return done.stdout


def _server_pid(output: str) -> int:
    return int(output.split("SERVER_PID")[1].split()[0])


def _gone_within(pid: int, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not pid_alive(pid)


@pytest.mark.parametrize("ending", ["quit", "crash"])
def test_the_server_stops_when_blender_quits_or_crashes(isolated_user_dirs, tmp_path, ending):
    """On a crash no exit handler runs: the server sees its standard input close."""
    output = _blender_session(
        tmp_path,
        ending,
        f"""
        vibe_blender.register()
        server_control.start_server()
        wait_ready()
        print("SERVER_PID", server_control.local_server()._process.pid, flush=True)
        if {ending!r} == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    assert _gone_within(_server_pid(output))


def test_quitting_blender_gives_the_server_less_time_than_stop_server(addon, monkeypatch):
    """Stop Server (in the background) waits for the server's whole graceful stop; Blender quitting or
    the add-on disabled waits QUICK_STOP_S only: the server records its running jobs as queued as its
    stop begins, so the kill that may follow loses none."""
    from vibe_blender.core import local_server

    waits = []
    monkeypatch.setattr(local_server.LocalServer, "stop", lambda self, timeout_s=None: waits.append(timeout_s))
    server_control.local_server()
    server_control._stop_at_exit()
    assert waits == [local_server.QUICK_STOP_S] and local_server.QUICK_STOP_S < local_server.GRACEFUL_STOP_S


@pytest.mark.parametrize("ending", ["quit", "crash"])
def test_a_kept_server_is_used_by_the_next_session_and_stopped_there(isolated_user_dirs, tmp_path, monkeypatch, ending):
    from vibe_blender import preferences

    output = _blender_session(
        tmp_path,
        "keep",
        f"""
        preferences._Defaults.keep_server_running = True  # outside the add-on list: the defaults object
        vibe_blender.register()
        server_control.start_server()
        wait_ready()
        while not server_control.local_server().kept_path.exists():  # noted once it answers
            time.sleep(0.05)
        server = server_control.local_server()
        print("SERVER_PID", server._process.pid, server_control.server_status().url, server.kept_path)
        sys.stdout.flush()
        if {ending!r} == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    pid, url, kept = _server_pid(output), *output.split("SERVER_PID")[1].split()[1:3]
    kept = Path(kept)
    try:
        time.sleep(1.0)
        assert pid_alive(pid)  # Blender quit; the server stays

        monkeypatch.setattr(preferences._Defaults, "keep_server_running", False)
        import vibe_blender

        vibe_blender.register()  # the next session
        try:
            assert kept.parent.parent == preferences.user_dir("server")  # in the quit Blender's folder
            assert kept.stat().st_mode & 0o777 == 0o600
            server_control.start_server()
            follow_until(lambda: server_control.server_status().state != "starting", 60)
            status = server_control.server_status()
            assert status.state == "ready" and status.url == url, status
            assert "earlier Blender session" in status.message
            server_control.stop_server()
            follow_until(lambda: server_control.server_status().state == "stopped", 30)
            assert _gone_within(pid) and not kept.exists()
        finally:
            vibe_blender.unregister()
    finally:
        if pid_alive(pid):
            os.kill(pid, 9)


class _Recorder:
    """Stands in for a panel's layout (panels cannot draw without a window): records each call."""

    def __init__(self, calls):
        self.calls = calls

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self

        return record


def _server_panel() -> tuple[str, list[str]]:
    """(the server panel's text, its buttons' operators)."""
    from vibe_blender.server_panels import VIEW3D_PT_vibe_server

    calls = []
    VIEW3D_PT_vibe_server.draw(type("Panel", (), {"layout": _Recorder(calls)})(), bpy.context)
    text = " ".join(kw.get("text", "") for name, _, kw in calls if name == "label")
    return text, [args[0] for name, args, _ in calls if name == "operator"]


def test_stop_kept_server_in_the_panel_stops_a_kept_server_that_did_not_answer(addon, tmp_path, monkeypatch):
    """A start fails on a server an earlier session kept running that does not answer in time: the
    panel offers Stop Kept Server, which stops that server (asked with its token) and forgets it."""
    from vibe_blender.core import local_server
    from vibe_blender.preferences import user_dir

    with kept_stand_in(tmp_path, user_dir("server"), monkeypatch) as (process, record):
        assert bpy.ops.vibe_mocap.server_start() == {"FINISHED"}
        follow_until(lambda: server_control.server_status().state not in ("stopped", "starting"), 60)
        status = server_control.server_status()
        assert status.state == "failed" and "does not answer in time" in status.message, status
        text, buttons = _server_panel()
        assert "press Stop Kept Server" in text
        assert buttons[:2] == ["vibe_mocap.server_stop", "vibe_mocap.server_start"]  # or try again
        (tmp_path / "hold").unlink()  # it answers again, late
        monkeypatch.setattr(local_server, "KEPT_SHUTDOWN_TIMEOUT_S", 10.0)  # in time even on a loaded machine
        assert bpy.ops.vibe_mocap.server_stop() == {"FINISHED"}
        follow_until(lambda: server_control.server_status().state != "stopping", 60)
        status = server_control.server_status()
        assert status.state == "stopped" and "stopped when asked; its record is removed" in status.message, status
        assert process.wait(10) == 0 and not record.exists()
        text, buttons = _server_panel()
        assert "stopped when asked" in text and "vibe_mocap.server_stop" not in buttons
        assert "vibe_mocap.server_start" in buttons


def test_model_data_is_shown_and_installed_with_the_command_line_code(addon, tmp_path, monkeypatch):
    """The install runs the command line's code; the server, running the placeholder, restarts on the
    installed data once no capture or live session runs (until then the panel says so, with a button)."""
    server_control.start_server()
    follow_until(lambda: server_control.server_status().state != "starting")
    assert server_control.server_status().model == "synthetic placeholder"
    main_python = REPO / ".venv" / "bin" / "python"
    source = tmp_path / "vibe_data"
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'server'}{os.pathsep}{REPO}")
    subprocess.run(
        [
            str(main_python),
            "-c",
            "import sys; from vibe_server.data.synthetic import write_synthetic_bundle;"
            " write_synthetic_bundle(sys.argv[1])",
            str(source),
        ],
        check=True,
        env=env,
    )

    assert bpy.ops.vibe_mocap.model_data_check() == {"FINISHED"}
    follow_until(lambda: server_control.model_data_state()[1] or server_control.model_data_state()[2], 120)
    data_dir, files, error = server_control.model_data_state()
    assert not error and Path(data_dir).parent == Path(os.environ["XDG_DATA_HOME"])
    assert {f.name: f.status for f in files}["SMPL_NEUTRAL.pkl"] == "missing"

    from types import SimpleNamespace

    from vibe_blender import jobs

    running = SimpleNamespace(snapshot=lambda: SimpleNamespace(finished=False))
    monkeypatch.setattr(jobs, "current_job", lambda: running)  # a capture runs
    install = server_control.install_model_data(str(source))
    follow_until(
        lambda: install.finished and any(f.status == "present" for f in server_control.model_data_state()[1]), 300
    )
    # installed, and the check's "missing" line: the synthetic bundle has no yolov3.weights
    assert install.returncode == 0 and any("yolov3.weights" in line and "missing" in line for line in install.lines)
    states = {f.name: f.status for f in server_control.model_data_state()[1]}
    assert states["SMPL_NEUTRAL.pkl"] == states["vibe_model_wo_3dpw.pth.tar"] == "present"

    server_control.tick()
    status = server_control.server_status()
    assert status.state == "ready" and status.model == "synthetic placeholder"  # not under a running capture
    text, buttons = _server_panel()
    assert "model data was installed after this server started" in text and "vibe_mocap.server_restart" in buttons
    assert "random until the model data is installed" not in text
    assert "Installed. The files marked missing or invalid above are still needed." in text  # yolov3.weights

    monkeypatch.setattr(jobs, "current_job", lambda: None)  # the capture ended
    follow_until(lambda: server_control.server_status().model not in ("synthetic placeholder", ""), 300)
    status = server_control.server_status()
    assert status.state == "ready" and status.model == "vibe_model_wo_3dpw", status
    assert "Placeholder" not in _server_panel()[0] and not server_control.restart_for_installed_data()


def test_capture_starts_the_server_imports_and_a_death_mid_job_loses_nothing(addon, monkeypatch):
    """Capture with nothing running: the add-on starts the real server, captures the bundled clip and
    imports it; then the server dies during a second capture, which is reported with the reason,
    while the first character and its result file stay."""
    from vibe_blender import jobs, preferences
    from vibe_blender.core.local_server import free_port
    from vibe_blender.importer import ImportOptions

    clip = REPO / "samples" / "one-person-walk.mp4"
    monkeypatch.setattr(preferences._Defaults, "server_url", f"http://127.0.0.1:{free_port()}")
    params = {"detector": "hog", "detection_stride": 2, "min_track_frames": 20}
    jobs.start_capture(str(clip), ImportOptions(), params=params, use_timer=False, poll_interval_s=0.2)
    states = set()
    deadline = time.monotonic() + 600
    while jobs.tick() is not None:
        states.add(jobs.current_job().snapshot().state)
        assert time.monotonic() < deadline, jobs.current_job().snapshot()
        time.sleep(0.2)
    first = jobs.current_job().snapshot()
    assert first.state == "done", first.message
    assert "connecting" in states and server_control.server_status().state == "ready"
    characters = jobs.last_import()
    assert characters and all(arm.name in bpy.data.objects for arm, _ in characters)

    jobs.start_capture(str(clip), ImportOptions(), params=params, use_timer=False, poll_interval_s=0.2)
    until_capture_state("queued", "running")
    server_control.local_server()._process.kill()
    deadline = time.monotonic() + 120
    while jobs.tick() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    second = jobs.current_job().snapshot()
    assert second.state == "failed" and second.message.startswith(
        "The capture lost the add-on's server: The server stopped unexpectedly (exit code -9). Its last lines are in"
    )
    follow_until(lambda: server_control.server_status().state == "exited", 30)
    assert "stopped unexpectedly" in server_control.server_status().message
    assert Path(first.result_path).is_file()
    assert all(arm.name in bpy.data.objects for arm, _ in characters)


def test_picking_another_program_forgets_the_one_found_and_looks_for_the_new_one(addon, monkeypatch):
    """Before: the preferences said 'Not looked for yet' until the user pressed the refresh button."""
    from vibe_blender import preferences, server_state
    from vibe_blender.core.local_server import ServerProgram

    old = ServerProgram(Path("/old/vibe-mocap"), "vibe-mocap 0", "PATH")
    monkeypatch.setattr(server_control._state, "program", old)
    monkeypatch.setattr(preferences._Defaults, "server_program", "/nonexistent/vibe-mocap")
    server_state.program_picked()  # the preference's update callback
    follow_until(lambda: not server_control.program_state()[2] and server_control.program_state()[1], 30)
    assert server_control.program_state()[0] is None
    assert "'/nonexistent/vibe-mocap') does not exist" in server_control.program_state()[1]
    assert bpy.ops.vibe_mocap.server_start() == {"FINISHED"}  # uses the program now picked
    follow_until(lambda: server_control.server_status().state == "failed", 30)
    assert "'/nonexistent/vibe-mocap') does not exist" in server_control.server_status().message


def test_a_model_data_folder_with_only_the_body_model_is_not_given_to_the_server(addon, tmp_path, monkeypatch):
    """The preference names 'the folder holding SMPL_NEUTRAL.pkl' (enough to import files); given to
    the server as --data-dir, such a folder was an unfinished install and every capture failed."""
    from vibe_blender import preferences

    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(b"body model")
    monkeypatch.setattr(preferences._Defaults, "model_data_dir", str(tmp_path))  # the add-on's preferences
    assert server_control.data_dir_setting() == str(tmp_path)  # imports and the install use it
    assert server_control.server_data_dir() == ""  # the server keeps its own model data
    checked = []  # ... and the data check looks there too (it listed the server's files missing here)
    monkeypatch.setattr(
        server_control, "model_data_report", lambda program, data_dir: checked.append(data_dir) or ("", [])
    )
    monkeypatch.setattr(server_control, "program_finder", lambda: lambda: SimpleNamespace(path="vibe-mocap"))
    server_control.check_model_data()
    follow_until(lambda: checked, 30)
    assert checked == [""]
    # nor with the body model's .npz, motion files or anything else the user keeps there (any .npz was
    # taken for model data)
    for other in ("body_model.npz", "walk_amass.npz", "notes.npy", "backup.tar"):
        (tmp_path / other).write_bytes(b"x")
    assert server_control.server_data_dir() == ""
    (tmp_path / "J_regressor_extra.npy").write_bytes(b"regressor")
    assert server_control.server_data_dir() == str(tmp_path)  # a model-data install, even a partial one


def _restore_after_test(monkeypatch) -> None:
    """The data check's result and the program lookup a test changes are put back after it."""
    for name in ("data_dir", "data_files", "data_error"):
        monkeypatch.setattr(server_control._state, name, getattr(server_control._state, name))
    monkeypatch.setitem(server_control._lookup, "epoch", server_control._lookup["epoch"])


class _ServerStandIn:
    """The add-on's server, as server_control sees it: its state and which start it is."""

    generation = 1

    def __init__(self, status):
        self.status = status

    def snapshot(self):
        return self.status


def test_a_server_still_starting_when_the_install_ends_restarts_on_the_installed_data(addon, monkeypatch):
    """Only a server already answering on the placeholder was noted: one still starting stayed on the
    placeholder (random motion), and the panel offered no restart."""
    from types import SimpleNamespace

    from vibe_blender.core.local_server import ServerStatus
    from vibe_blender.core.model_data import PLACEHOLDER_MODEL

    server = _ServerStandIn(ServerStatus("starting"))
    restarts = []
    monkeypatch.setattr(server_control._state, "server", server)
    monkeypatch.setattr(server_control._state, "install", SimpleNamespace(finished=True, returncode=0))
    monkeypatch.setitem(server_control._installed_after, "generation", None)
    monkeypatch.setattr(server_control, "check_model_data", lambda: None)
    monkeypatch.setattr(server_control, "restart_server", lambda: restarts.append(server.generation))
    capture_runs = [True]
    monkeypatch.setitem(server_control._activity, "probe", lambda: capture_runs[0])
    server_control.tick()  # the install ended while the server starts
    server.status = ServerStatus("ready", model=PLACEHOLDER_MODEL)
    assert server_control.restart_for_installed_data()  # the panel offers Restart
    server_control.tick()
    assert restarts == []  # not under a running capture
    capture_runs[0] = False
    server_control.tick()
    assert restarts == [1] and not server_control.restart_for_installed_data()


def test_a_server_that_loaded_no_model_is_shown_as_such_and_restarts_on_the_installed_data(addon, monkeypatch):
    """A partial install leaves the server without a model (not even the placeholder): the panel said
    'Running' with a check mark while every capture failed, and an install did not restart it."""
    from types import SimpleNamespace

    from vibe_blender.core.local_server import ServerStatus

    server = _ServerStandIn(ServerStatus("ready", url="http://127.0.0.1:5000", model="none (model data missing)"))
    restarts = []
    monkeypatch.setattr(server_control._state, "server", server)
    monkeypatch.setattr(server_control._state, "install", None)
    monkeypatch.setitem(server_control._installed_after, "generation", None)
    monkeypatch.setattr(server_control, "check_model_data", lambda: None)
    monkeypatch.setattr(server_control, "restart_server", lambda: restarts.append(server.generation))
    monkeypatch.setitem(server_control._activity, "probe", lambda: False)
    text, buttons = _server_panel()
    assert "The server loaded no model (model data missing): every capture fails." in text
    assert "vibe_mocap.server_restart" in buttons
    monkeypatch.setattr(server_control._state, "install", SimpleNamespace(finished=True, returncode=0))
    server_control.tick()  # the install ended
    assert restarts == [1]


def test_a_capture_that_lost_the_add_ons_server_says_so_and_not_to_start_vibe_mocap_serve(addon, monkeypatch):
    """'Cannot reach ... at http://127.0.0.1:44133. Start it with vibe-mocap serve, or check the server URL
    in the preferences' named a random port no preference holds, and a server other than the add-on's."""
    from vibe_blender.core.local_server import ServerStatus

    url = "http://127.0.0.1:44133"
    server = _ServerStandIn(ServerStatus("ready", url=url))
    monkeypatch.setattr(server_control._state, "server", server)
    assert server_control.lost_server_message("http://127.0.0.1:8765", settle_s=0.2) is None  # another server
    assert server_control.lost_server_message(url, settle_s=0.2) is None  # still answering: the client's words
    server.status = ServerStatus("exited", url=url, message="The server stopped unexpectedly (exit code 1). Its ...")
    assert server_control.lost_server_message(url, settle_s=0.2) == (
        "The capture lost the add-on's server: The server stopped unexpectedly (exit code 1). Its last lines are "
        "in the Server & Model Data panel; capture again to start it anew."
    )


def test_worker_threads_never_read_blender_and_captures_share_one_server(addon, tmp_path, monkeypatch):
    """The program lookup and the data check read the preferences in their threads, and the first
    capture or live session made the add-on's server (its folder read from Blender) in its worker,
    unlocked: two could be made. Blender's data is read on the main thread and handed on."""
    import threading

    from vibe_blender import jobs, live, preferences
    from vibe_blender.core.errors import VibeError
    from vibe_blender.core.local_server import ServerProgram, free_port
    from vibe_blender.importer import ImportOptions

    read_off_main = []

    def main_thread_only(name, function):
        def guarded(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread():
                read_off_main.append(name)
            return function(*args, **kwargs)

        return guarded

    for module in (server_control, jobs, live):
        for name in ("get_preferences", "user_dir"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, main_thread_only(name, getattr(module, name)))
    monkeypatch.setattr(preferences._Defaults, "server_program", "/picked/vibe-mocap")
    monkeypatch.setattr(preferences._Defaults, "model_data_dir", str(tmp_path))
    (tmp_path / "J_regressor_extra.npy").write_bytes(b"x")  # a model-data folder, which the server is given
    monkeypatch.setattr(server_control._state, "server", None)  # none made yet in this session
    monkeypatch.setattr(server_control._state, "program", None)

    def found(picked):
        return ServerProgram(Path(picked), "vibe-mocap 0", "the preferences")

    monkeypatch.setattr(server_control, "find_program", found)
    monkeypatch.setattr(server_control, "model_data_report", lambda program, data_dir: (data_dir, []))
    _restore_after_test(monkeypatch)
    reached = []

    def connect_or_start(url, token, server, find, data_dir=""):
        reached.append((server, find().path))
        raise VibeError("stopped here by the test")

    monkeypatch.setattr(server_control, "connect_or_start", connect_or_start)
    server_control.look_for_program()
    server_control.check_model_data()
    for thread in threading.enumerate():
        if thread.name in ("vibe-find-program", "vibe-check-data"):
            thread.join(30)
    video = tmp_path / "dance.mp4"
    video.write_bytes(b"\x00" * 4096)
    url = f"http://127.0.0.1:{free_port()}"
    jobs.start_capture(str(video), ImportOptions(), server_url=url, use_timer=False)
    jobs.current_job().join(30)
    session = live.start_live("0", server_url=url, token="", use_timer=False)
    session.connector.join(30)

    assert read_off_main == []
    assert server_control.model_data_state()[0] == str(tmp_path)
    server = server_control._state.server
    assert server is not None and reached == [(server, Path("/picked/vibe-mocap"))] * 2


def test_a_program_picked_while_the_last_one_is_looked_for_is_the_one_found(addon, monkeypatch):
    """The lookup of the program picked before finished last and was stored, and a lookup asked for
    meanwhile was dropped: the preferences showed the old program, and starts used it."""
    import threading

    from vibe_blender import preferences, server_state
    from vibe_blender.core.local_server import ServerProgram

    old_looked_for, old_may_end = threading.Event(), threading.Event()

    def found(picked):
        if picked == "/old/vibe-mocap":
            old_looked_for.set()
            assert old_may_end.wait(30)
        return ServerProgram(Path(picked), "vibe-mocap 0", "the preferences")

    monkeypatch.setattr(server_control, "find_program", found)
    monkeypatch.setattr(server_control._state, "program", None)
    monkeypatch.setattr(preferences._Defaults, "server_program", "/old/vibe-mocap")
    server_control.look_for_program()
    assert old_looked_for.wait(30)
    monkeypatch.setattr(preferences._Defaults, "server_program", "/new/vibe-mocap")
    server_state.forget_program()  # the preference's update callback
    server_control.look_for_program()  # the button, while the old lookup runs
    old_may_end.set()
    for thread in threading.enumerate():
        if thread.name == "vibe-find-program":
            thread.join(30)
    assert server_control.program_state()[0] is None  # the old one is not brought back
    follow_until(lambda: not server_control.busy(), 30)  # the timer looks for the new one
    program, error, looking = server_control.program_state()
    assert program is not None and program.path == Path("/new/vibe-mocap") and not error and not looking


def test_a_program_path_relative_to_the_blend_file_is_looked_for_beside_it(addon, monkeypatch, tmp_path):
    """A '//' path (the file browser's Relative Path) was looked for as it is, at the file system's root,
    while the model-data folder beside it was made absolute."""
    import threading

    from vibe_blender import preferences
    from vibe_blender.core.local_server import ServerProgram

    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    looked_for = []

    def found(picked):
        looked_for.append(picked)
        return ServerProgram(Path(picked), "vibe-mocap 0", "the preferences")

    monkeypatch.setattr(server_control, "find_program", found)
    monkeypatch.setattr(server_control._state, "program", None)
    monkeypatch.setattr(preferences._Defaults, "server_program", "//tools/vibe-mocap")
    _restore_after_test(monkeypatch)
    server_control.program_finder()()  # what starting the server looks for
    server_control.look_for_program()  # the preferences' button
    for thread in threading.enumerate():
        if thread.name == "vibe-find-program":
            thread.join(30)
    assert looked_for == [str(tmp_path / "tools" / "vibe-mocap")] * 2


def test_a_data_check_ending_after_a_newer_one_does_not_replace_its_result(addon, tmp_path, monkeypatch):
    """Check, change the model-data folder, check again: the first check, ending last, showed the
    files of the folder no longer set."""
    import threading

    from vibe_blender import preferences
    from vibe_blender.core.local_server import ModelFileState, ServerProgram

    older_checking, older_may_end = threading.Event(), threading.Event()

    def report(program, data_dir):
        if data_dir == str(tmp_path / "older"):
            older_checking.set()
            assert older_may_end.wait(30)
        return data_dir, [ModelFileState("SMPL_NEUTRAL.pkl", "present", data_dir)]

    monkeypatch.setattr(server_control, "model_data_report", report)
    _restore_after_test(monkeypatch)
    for folder in ("older", "newer"):  # model-data folders (the check looks where the server reads)
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "J_regressor_extra.npy").write_bytes(b"x")
    monkeypatch.setattr(server_control._state, "program", ServerProgram(Path("/vibe-mocap"), "vibe-mocap 0", "PATH"))
    monkeypatch.setattr(preferences._Defaults, "model_data_dir", str(tmp_path / "older"))
    server_control.check_model_data()
    assert older_checking.wait(30)
    monkeypatch.setattr(preferences._Defaults, "model_data_dir", str(tmp_path / "newer"))
    server_control.check_model_data()
    follow_until(lambda: server_control.model_data_state()[0] == str(tmp_path / "newer"), 30)
    older_may_end.set()
    for thread in threading.enumerate():
        if thread.name == "vibe-check-data":
            thread.join(30)
    data_dir, (file,), error = server_control.model_data_state()
    assert data_dir == file.detail == str(tmp_path / "newer") and not error


def test_a_data_check_of_a_folder_that_is_gone_says_so(addon, tmp_path, monkeypatch):
    """A model-data folder set in the preferences that does not exist: the check showed the server's
    own folder, every file missing, without a word about the folder set."""
    import threading

    from vibe_blender import preferences
    from vibe_blender.core.local_server import ModelFileState, ServerProgram

    checked = []

    def report(program, data_dir):
        checked.append(data_dir)
        return "/default/vibe-mocap", [ModelFileState("SMPL_NEUTRAL.pkl", "missing", "")]

    monkeypatch.setattr(server_control, "model_data_report", report)
    _restore_after_test(monkeypatch)
    monkeypatch.setattr(server_control._state, "program", ServerProgram(Path("/vibe-mocap"), "vibe-mocap 0", "PATH"))
    monkeypatch.setattr(preferences._Defaults, "model_data_dir", str(tmp_path / "nope"))
    server_control.check_model_data()
    for thread in threading.enumerate():
        if thread.name == "vibe-check-data":
            thread.join(30)
    data_dir, _, error = server_control.model_data_state()
    assert checked == [""] and data_dir == "/default/vibe-mocap"  # the server's own folder, as it reads
    assert f"('{tmp_path / 'nope'}') does not exist" in error and "pick an existing folder" in error

"""Finding, starting and watching the local server (vibe_blender.core.local_server), no bpy, no torch.

The real server is started in tests/blender/test_local_server.py; here small stand-in programs play
the failure cases that the real one cannot be made to show on cue (a broken install, a program that
hangs, a crash while starting)."""

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hostile_files import call_with_deadline
from kept_server_stand_in import kept_stand_in
from stalling_server import STALLS, StallingServer, trickle

from vibe_blender.core import local_server
from vibe_blender.core.client import ServerClient
from vibe_blender.core.errors import VibeError
from vibe_blender.core.serve_exit import PORT_TAKEN_EXIT_STATUS

TESTS = Path(__file__).resolve().parents[1]


def write_program(path, body: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    path.chmod(0o755)
    return path


def vibe_stand_in(folder: Path, prelude: str = "", serves_with: str = 'token=os.environ["VIBE_MOCAP_TOKEN"]') -> Path:
    """A program that serves like a VIBE server (tests/fake_vibe_server.py) on the port the add-on
    gives it, printing its arguments first, until it is ended; ``prelude`` runs first. serves_with:
    the FakeVibeServer's options (by default the token the add-on gives it)."""
    blob = folder / "served.npz"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(b"x")
    return write_program(
        folder / "vibe-mocap",
        f"""import os
sys.path[:0] = [{str(TESTS.parent)!r}, {str(TESTS.parent / 'server')!r}, {str(TESTS)!r}]
from fake_vibe_server import FakeVibeServer
args = sys.argv[1:]
print("ARGS", args, flush=True)
{prelude}
port = int(args[args.index("--port") + 1])
with FakeVibeServer({str(blob)!r}, {str(blob)!r}, {serves_with}, port=port):
    time.sleep(120)""",
    )


# as `vibe-mocap serve`: one server per jobs folder (its --jobs-dir, else the default one), a lock held
TAKES_THE_JOBS_FOLDER = """import fcntl
jobs = args[args.index("--jobs-dir") + 1] if "--jobs-dir" in args else os.environ["STAND_IN_DEFAULT_JOBS"]
os.makedirs(jobs, exist_ok=True)
lock = os.open(os.path.join(jobs, ".server.lock"), os.O_CREAT | os.O_RDWR)
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("Another VIBE Mocap server uses the jobs folder", jobs, flush=True)
    sys.exit(1)"""


def join_workers(timeout_s: float = 30.0) -> None:
    for thread in threading.enumerate():
        if thread.name == "vibe-local-server":
            thread.join(timeout_s)


@pytest.fixture
def no_path_program(monkeypatch):
    monkeypatch.setattr(local_server, "program_on_path", lambda: None)


def test_the_repository_venv_is_found_with_its_version(tmp_path, no_path_program):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "setup.sh").write_text("")  # a source tree
    write_program(local_server.venv_program(tmp_path), 'print("vibe-mocap 9.9.9")')
    program = local_server.find_program(repo_root=tmp_path)
    assert program.version == "vibe-mocap 9.9.9"
    assert program.found_in == "the repository's .venv"


def test_a_picked_program_wins_and_must_work(tmp_path, no_path_program):
    write_program(local_server.venv_program(tmp_path), 'print("vibe-mocap 1.0.0")')
    picked = write_program(tmp_path / "elsewhere" / "vibe-mocap", 'print("vibe-mocap 2.0.0")')
    assert local_server.find_program(str(picked), repo_root=tmp_path).version == "vibe-mocap 2.0.0"
    with pytest.raises(VibeError, match="does not exist"):
        local_server.find_program(str(tmp_path / "missing"), repo_root=tmp_path)


def test_a_broken_program_gives_one_clear_message(tmp_path, no_path_program):
    broken = write_program(tmp_path / "vibe-mocap", 'raise SystemExit("ModuleNotFoundError: No module named torch")')
    with pytest.raises(VibeError, match="not a working vibe-mocap program.*No module named torch"):
        local_server.find_program(str(broken), repo_root=tmp_path)
    not_executable = tmp_path / "plain-file"
    not_executable.write_text("hello")
    with pytest.raises(VibeError, match="cannot be run"):
        local_server.find_program(str(not_executable), repo_root=tmp_path)


def test_a_program_whose_python_is_gone_says_so(tmp_path, no_path_program):
    """A .venv moved or deleted leaves its scripts naming a Python that is gone: the message said 'No such
    file or directory' of a file that is there, told the user to pick that very file, and ended '..'."""
    program = local_server.venv_program(tmp_path)
    program.parent.mkdir(parents=True)
    program.write_text(f"#!{tmp_path / 'moved-venv' / 'bin' / 'python'}\nprint('vibe-mocap 9.9.9')\n")
    program.chmod(0o755)
    with pytest.raises(VibeError) as found:
        local_server.find_program(repo_root=tmp_path)
    message = str(found.value)
    assert "the Python its first line names is gone" in message and "No such file" not in message
    assert ".." not in message.replace(str(tmp_path), "")


def test_nothing_found_says_where_it_looked(tmp_path, no_path_program):
    with pytest.raises(VibeError, match=r"No vibe-mocap program found.*\.venv.*scripts/setup.sh") as found:
        local_server.find_program(repo_root=tmp_path)
    # an add-on installed from its zip: its folder is no repository, PATH was searched too, and the
    # message says which preference to set
    message = str(found.value)
    assert "not in the add-on's folder" in message and "repository" not in message.split(". Run")[0]
    assert "not on PATH" in message and "set 'vibe-mocap program' in the add-on preferences" in message
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "setup.sh").write_text("")
    with pytest.raises(VibeError, match=r"not in the repository's \.venv"):
        local_server.find_program(repo_root=tmp_path)


def test_windows_never_runs_a_program_from_the_current_folder(tmp_path, monkeypatch):
    """Windows' lookup (and shutil.which there) tries the current folder before PATH: Blender opened
    from a downloaded project's .blend ran that project's vibe-mocap.bat, even with the real program
    on PATH."""
    project, on_path = tmp_path / "project", tmp_path / "bin"
    for folder in (project, on_path):
        write_program(folder / "vibe-mocap.BAT", 'print("vibe-mocap 6.6.6")')
    monkeypatch.setenv("PATH", os.pathsep.join([".", "", str(on_path)]))
    monkeypatch.setenv("PATHEXT", os.pathsep.join([".COM", ".EXE", ".BAT"]))
    monkeypatch.chdir(project)  # Blender started by opening project/scene.blend
    monkeypatch.setattr(sys, "platform", "win32")
    assert local_server.program_candidates("", repo_root=tmp_path / "addon")[-1] == (
        "PATH",
        on_path / "vibe-mocap.BAT",
    )
    monkeypatch.setenv("PATH", os.pathsep.join([".", "project"]))  # only relative folders: none found
    monkeypatch.chdir(tmp_path)
    assert local_server.program_on_path() is None


def test_path_finds_the_first_runnable_program_in_its_absolute_folders(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "vibe-mocap").parent.mkdir()
    (first / "vibe-mocap").write_text("not runnable")  # as a shell, which skips it
    write_program(second / "vibe-mocap", 'print("vibe-mocap 2.0.0")')
    write_program(tmp_path / "here" / "vibe-mocap", 'print("vibe-mocap 0.0.1")')
    monkeypatch.chdir(tmp_path / "here")
    monkeypatch.setenv("PATH", os.pathsep.join(["", ".", str(first), str(second)]))
    assert local_server.find_program(repo_root=tmp_path / "addon").version == "vibe-mocap 2.0.0"


def test_a_hanging_program_times_out(tmp_path):
    hanging = write_program(tmp_path / "vibe-mocap", "time.sleep(30)")
    t0 = time.monotonic()
    with pytest.raises(VibeError, match="did not answer"):
        local_server.program_version(hanging, timeout_s=0.5)
    assert time.monotonic() - t0 < 10


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello from another program")

    def log_message(self, *args):
        pass


def test_who_answers_at_a_url():
    assert local_server.url_owner(f"http://127.0.0.1:{local_server.free_port()}") == "nothing"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert local_server.url_owner(f"http://127.0.0.1:{server.server_port}") == "other"
        server_ready = local_server.LocalServer(log_dir=".")
        with pytest.raises(VibeError, match="Another program answers"):
            local_server.connect_or_start(
                f"http://127.0.0.1:{server.server_port}",
                "",
                server_ready,
                find=lambda: pytest.fail("must not start anything"),
            )
    finally:
        server.shutdown()


class _DeepHealth(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = b"[" * 30_000 + b"]" * 30_000  # 60 kB, under the probe's 64 KiB: json.loads alone recurses out
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_deeply_nested_health_is_another_program():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DeepHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert local_server.url_owner(f"http://127.0.0.1:{server.server_port}") == "other"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("stall", STALLS.values(), ids=list(STALLS))
def test_a_program_whose_answer_never_ends_is_another_program(stall):
    """Each socket operation stays under timeout_s: only a limit on the whole answer (3 times that)
    ends it, so that a capture that asks who answers does not wait for ever."""
    with StallingServer(stall) as program:
        started = time.monotonic()
        ok, owner = call_with_deadline(lambda: local_server.url_owner(program.url, timeout_s=0.5), timeout_s=10)
        took = time.monotonic() - started
    assert (ok, owner) == (True, "other") and took < 5.0, took


def test_an_answer_cut_off_at_its_time_limit_counts_as_no_answer():
    """A kept server whose proof comes too slowly is busy (KeptServerBusy), not another program."""
    with StallingServer(trickle()) as program:
        ok, err = call_with_deadline(ServerClient(program.url, "token", timeout_s=0.3).health, timeout_s=10)
    assert not ok and isinstance(err, VibeError) and local_server.got_no_answer(err), err


def test_deeply_nested_model_data_report_is_one_clear_error(tmp_path):
    program = write_program(tmp_path / "vibe-mocap", "print('[' * 200_000 + ']' * 200_000)")
    with pytest.raises(VibeError, match=r"could not be checked with .* \(JSON nested deeper than 64 levels\)"):
        local_server.model_data_report(program)


def test_a_capture_starts_the_server_on_the_chosen_model_data(tmp_path):
    """Capture and Live start the server with the preferences' data folder, as Start Server does
    (without it the server would fall back to the placeholder model)."""
    started = {}

    class Recording(local_server.LocalServer):
        def start(self, program, *, port=0, data_dir=""):
            started.update(program=program(), data_dir=data_dir)
            self._set(state="ready", url="http://127.0.0.1:1")
            self._ready.set()

    program = local_server.ServerProgram(path=tmp_path / "vibe-mocap", version="vibe-mocap 0", found_in="PATH")
    url = f"http://127.0.0.1:{local_server.free_port()}"  # nobody answers there
    server = Recording(log_dir=tmp_path)
    assert local_server.connect_or_start(url, "", server, lambda: program, data_dir="/my/data") == (
        "http://127.0.0.1:1",
        server.token,
    )
    assert started == {"program": program.path, "data_dir": "/my/data"}


def test_a_vibe_server_at_the_preferences_url_comes_before_the_add_ons_own(tmp_path):
    """Before: the add-on's server, once running (the placeholder perhaps), took every capture, though a
    'vibe-mocap serve' with the real model answered at the URL of the preferences, as the panel showed."""
    from fake_vibe_server import FakeVibeServer

    blob = tmp_path / "x.npz"
    blob.write_bytes(b"x")
    own = local_server.LocalServer(log_dir=tmp_path)
    own._set(state="ready", url=f"http://127.0.0.1:{local_server.free_port()}")
    no_start = lambda: pytest.fail("must not start anything")  # noqa: E731
    with FakeVibeServer(blob, blob, token="users-token") as users:
        assert local_server.connect_or_start(users.url, "users-token", own, no_start) == (users.url, "users-token")
    nobody = f"http://127.0.0.1:{local_server.free_port()}"
    assert local_server.connect_or_start(nobody, "users-token", own, no_start) == (own.snapshot().url, own.token)
    same_port = own.snapshot().url.replace("127.0.0.1", "localhost") + "/"  # the add-on's server at that URL
    assert local_server.connect_or_start(same_port, "users-token", own, no_start) == (own.snapshot().url, own.token)


@pytest.mark.parametrize("prove", [False, True])
def test_a_program_posing_as_a_vibe_server_does_not_keep_the_add_ons_own_from_capturing(tmp_path, prove):
    """/health is public: a program at the preferences' URL (another account's, on the default port)
    that answers like a VIBE server but cannot prove it holds the token no longer blocks every capture."""
    from fake_vibe_server import FakeVibeServer

    blob = tmp_path / "x.npz"
    blob.write_bytes(b"x")
    own = local_server.LocalServer(log_dir=tmp_path)
    own._set(state="ready", url=f"http://127.0.0.1:{local_server.free_port()}")
    no_start = lambda: pytest.fail("must not start anything")  # noqa: E731
    with FakeVibeServer(blob, blob, token="another-token", prove=prove) as impostor:
        assert local_server.connect_or_start(impostor.url, "users-token", own, no_start) == (
            own.snapshot().url,
            own.token,
        )
        assert not any(a for a in impostor.authorizations if a)  # the user's token never went out


class _StartRecorded(local_server.LocalServer):
    """A LocalServer whose start only notes that it was asked (and is then ready at once)."""

    def start(self, program, *, port=0, data_dir=""):
        self.started = (program(), port)
        self._set(state="ready", url="http://127.0.0.1:1")
        self._ready.set()


@pytest.mark.parametrize("prove", [False, True])
@pytest.mark.parametrize("own_runs", [True, False])
def test_another_accounts_server_at_the_preferences_url_is_not_the_users_without_a_token(
    tmp_path, monkeypatch, prove, own_runs
):
    """A user who never ran 'vibe-mocap serve' has no token file (the add-on's own server gets its
    token from the add-on). Another account's VIBE server on the default port made every capture fail
    with "No access token", even while the add-on's own server was ready; and with that server not
    running yet, nothing started it."""
    from fake_vibe_server import FakeVibeServer

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no token file
    monkeypatch.delenv(local_server.TOKEN_ENV_VAR, raising=False)
    blob = tmp_path / "x.npz"
    blob.write_bytes(b"x")
    program = local_server.ServerProgram(path=tmp_path / "vibe-mocap", version="vibe-mocap 0", found_in="PATH")
    own = _StartRecorded(log_dir=tmp_path)
    if own_runs:
        own._set(state="ready", url=f"http://127.0.0.1:{local_server.free_port()}")
    with FakeVibeServer(blob, blob, token="another-accounts-token", prove=prove) as other:
        url, token = local_server.connect_or_start(other.url, "", own, lambda: program)
        assert (url, token) == (own.snapshot().url, own.token) and url != other.url
        assert not any(a for a in other.authorizations if a)
    assert getattr(own, "started", None) == (None if own_runs else (program.path, 0))  # on a port of its own


def test_a_server_on_this_machine_that_does_not_prove_the_users_token_is_replaced_by_the_add_ons_own(tmp_path):
    """With a token, too: a VIBE server at a 127.0.0.1 URL that is not the user's no longer blocks
    Capture while the add-on's own server is not running: that one is started (on a free port)."""
    from fake_vibe_server import FakeVibeServer

    blob = tmp_path / "x.npz"
    blob.write_bytes(b"x")
    program = local_server.ServerProgram(path=tmp_path / "vibe-mocap", version="vibe-mocap 0", found_in="PATH")
    own = _StartRecorded(log_dir=tmp_path)
    with FakeVibeServer(blob, blob, token="another-accounts-token") as other:
        assert local_server.connect_or_start(other.url, "users-token", own, lambda: program) == (
            "http://127.0.0.1:1",
            own.token,
        )
    assert own.started == (program.path, 0)
    with FakeVibeServer(blob, blob, token="users-token") as users:  # the user's own server is used
        assert local_server.connect_or_start(users.url, "users-token", own, lambda: program) == (
            users.url,
            "users-token",
        )


def test_nothing_is_started_for_a_remote_url():
    server = local_server.LocalServer(log_dir=".")
    with pytest.raises(VibeError, match="starts a server only on this machine"):
        local_server.connect_or_start("http://192.0.2.1:9", "", server, find=lambda: pytest.fail("no start"))


def test_a_program_that_dies_while_starting_is_reported_with_its_log(tmp_path):
    dying = write_program(
        tmp_path / "vibe-mocap", 'print("loading the model"); print("RuntimeError: boom", file=sys.stderr); sys.exit(3)'
    )
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    server.start(dying)
    status = server.wait_ready(30)
    assert status.state == "failed"
    assert "exit code 3" in status.message
    assert "RuntimeError: boom" in status.log_tail


# `vibe-mocap serve` on a taken port: its exit status says so, its words are the system's (here a German
# Windows'); a server older than that status said it only in words, English ones on Linux
PORT_TAKEN = (
    'print("error: The server cannot listen on http://127.0.0.1:8765/api/v1 (Normalerweise darf jede '
    f'Socketadresse nur jeweils einmal verwendet werden)"); sys.exit({PORT_TAKEN_EXIT_STATUS})'
)
OLD_SERVERS_PORT_TAKEN = (
    'print("ERROR: [Errno 98] error while attempting to bind on address: address already in use"); sys.exit(1)'
)


@pytest.mark.parametrize("says_so", [PORT_TAKEN, OLD_SERVERS_PORT_TAKEN])
def test_a_port_in_use_is_named(tmp_path, says_so):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        program = write_program(tmp_path / "vibe-mocap", says_so)
        server = local_server.LocalServer(log_dir=tmp_path / "log")
        server.start(program, port=port)
        status = server.wait_ready(30)
    assert status.state == "failed"
    assert f"Port {port} is taken by another program" in status.message


class _ReadyRecorder(threading.Event):
    """The event a start sets when it is over, recording the state published at that moment."""

    def __init__(self, server):
        super().__init__()
        self.server, self.states_when_set = server, []

    def set(self):
        self.states_when_set.append(self.server.snapshot().state)
        super().set()


def test_a_start_timeout_is_reported_as_a_failure_every_time(tmp_path):
    """The program never answers: each waiter wakes to "failed" with the reason, never "stopped"."""
    silent = write_program(tmp_path / "vibe-mocap", 'print("loading model...", flush=True); time.sleep(60)')
    for _ in range(3):
        server = local_server.LocalServer(log_dir=tmp_path / "log", start_timeout_s=4.0)  # Python starts in it
        server._ready = _ReadyRecorder(server)
        server.start(silent)
        status = server.wait_ready(30)
        assert status.state == "failed" and "did not answer within 4 s" in status.message, status
        assert "loading model..." in status.log_tail
        assert server._ready.states_when_set == ["failed"]
        assert server._process.wait(10) is not None  # the program was ended


def test_a_picked_port_taken_before_the_server_binds_it_is_picked_again_once(tmp_path):
    first_try = tmp_path / "tried"
    prelude = f"if not os.path.exists({str(first_try)!r}):\n    open({str(first_try)!r}, 'w').close()\n"
    prelude += f"    {PORT_TAKEN}"
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    server.start(vibe_stand_in(tmp_path / "stand-in", prelude))
    first_url = server.snapshot().url
    status = server.wait_ready(30)
    try:
        assert status.state == "ready", status
        assert status.url != first_url and local_server.url_owner(status.url) == "vibe"
    finally:
        server.stop()


@pytest.mark.parametrize(
    "serves_with, reason",
    [
        ('token=os.environ["VIBE_MOCAP_TOKEN"], prove=False', "is older than this add-on"),
        ('token="a-token-of-its-own"', "did not prove that it holds this add-on's access token"),
    ],
)
def test_a_server_whose_answer_is_refused_fails_its_start_at_once_saying_why(tmp_path, serves_with, reason):
    """An older vibe-mocap on PATH (no proof), or a wrapper that ignores the token it is given: the
    server answered at once, yet the add-on polled it for the whole start timeout (5 minutes), then
    said it "did not answer"."""
    server = local_server.LocalServer(log_dir=tmp_path / "log", start_timeout_s=120)
    started = time.monotonic()
    server.start(vibe_stand_in(tmp_path / "stand-in", serves_with=serves_with))
    status = server.wait_ready(60)
    assert status.state == "failed" and reason in status.message, status
    assert time.monotonic() - started < 30
    assert server._process.wait(10) is not None  # the program was ended


def test_an_answer_of_another_program_on_a_picked_port_is_not_the_servers(tmp_path, monkeypatch):
    """Another program (here another account's VIBE server) takes the picked port before the server
    binds it, and answers its /health meanwhile: the server, which then exits saying its port is
    taken, is started again on another port, as when nothing answered."""
    from fake_vibe_server import FakeVibeServer

    blob = tmp_path / "x.npz"
    blob.write_bytes(b"x")
    with FakeVibeServer(blob, blob, token="another-accounts-token") as other:
        taken = int(other.url.rsplit(":", 1)[1])
        ports = iter([taken, local_server.free_port()])
        monkeypatch.setattr(local_server, "free_port", lambda: next(ports))
        prelude = f'if args[args.index("--port") + 1] == "{taken}":\n    time.sleep(1); {PORT_TAKEN}'
        server = local_server.LocalServer(log_dir=tmp_path / "log")
        server.start(vibe_stand_in(tmp_path / "stand-in", prelude))
        status = server.wait_ready(60)
        try:
            assert status.state == "ready", status
            assert status.url != other.url and local_server.url_owner(status.url) == "vibe"
        finally:
            server.stop()
        assert ("GET", "/api/v1/health") in [(m, p.split("?")[0]) for m, p in other.requests]


def test_a_picked_port_taken_twice_says_so(tmp_path):
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    server.start(write_program(tmp_path / "vibe-mocap", PORT_TAKEN))
    status = server.wait_ready(30)
    assert status.state == "failed"
    assert (
        "each free when picked, were taken by other programs" in status.message
        and "start the server again" in status.message
    )
    assert "let the add-on pick" not in status.message


def test_the_token_goes_through_the_environment_not_the_command_line(tmp_path):
    spy = write_program(
        tmp_path / "vibe-mocap",
        'import os; print("ARGS", sys.argv[1:]); print("TOKEN", os.environ.get("VIBE_MOCAP_TOKEN")); sys.exit(0)',
    )
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    server.start(spy, port=12345)
    server.wait_ready(30)
    log = server.log_path.read_text()
    assert f"TOKEN {server.token}" in log
    assert server.token not in log.split("TOKEN")[0]
    assert "'--host', '127.0.0.1', '--port', '12345'" in log


def test_a_server_stopped_while_its_program_is_found_is_never_launched(tmp_path):
    marker = tmp_path / "launched"
    program = write_program(tmp_path / "vibe-mocap", f"open({str(marker)!r}, 'w').close(); time.sleep(30)")

    def slow_find():
        time.sleep(1.0)  # '--version' takes a while
        return program

    server = local_server.LocalServer(log_dir=tmp_path / "log")
    server.start(slow_find)
    server.stop()  # Stop pressed (or Blender quitting) while the program is being found
    time.sleep(2.0)
    assert not marker.exists() and server._process is None
    assert server.snapshot().state == "stopped"


def test_the_server_is_told_to_stop_with_blender_unless_kept(tmp_path):
    argv = tmp_path / "argv"
    program = write_program(tmp_path / "vibe-mocap", f"open({str(argv)!r}, 'w').write(' '.join(sys.argv)); sys.exit(1)")
    for stop_with_parent, expected in ((True, True), (False, False)):
        server = local_server.LocalServer(log_dir=tmp_path / "log", stop_with_parent=stop_with_parent)
        server.start(program)
        server.wait_ready(30)
        assert ("--stop-on-stdin-close" in argv.read_text()) is expected
        assert "--cancel-unfinished-jobs" in argv.read_text().split()  # its captures end when it stops


def test_a_server_launched_to_outlive_blender_is_asked_to_stop_before_it_is_ended(tmp_path, monkeypatch):
    """With 'Keep the server running' on, the server has no standard input to close; on Windows, where
    terminating is killing, Stop Server killed it at once (its running job was failed at the next
    start). It is now asked with POST /shutdown first, and given its graceful stop."""
    blob = tmp_path / "served.npz"
    blob.write_bytes(b"x")
    program = write_program(
        tmp_path / "vibe-mocap",
        f"""import os
sys.path[:0] = [{str(TESTS.parent)!r}, {str(TESTS.parent / 'server')!r}, {str(TESTS)!r}]
from fake_vibe_server import FakeVibeServer
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
with FakeVibeServer({str(blob)!r}, {str(blob)!r}, token=os.environ["VIBE_MOCAP_TOKEN"], port=port) as server:
    server.shutdown_asked.wait(60)
    time.sleep(0.5)  # its graceful stop
    sys.exit(0 if server.shutdown_asked.is_set() else 5)""",
    )
    monkeypatch.setattr(local_server, "TERMINATE_IS_KILL", True)  # as on Windows
    server = local_server.LocalServer(log_dir=tmp_path / "log", stop_with_parent=False)
    server.start(program)
    assert server.wait_ready(60).state == "ready"
    process = server._process
    assert process.stdin is None
    server.stop(10)
    assert process.returncode == 0  # it stopped as asked (killed: -9)


def test_stop_in_background_returns_at_once(tmp_path):
    slow_to_stop = "import signal; signal.signal(signal.SIGTERM, lambda *a: time.sleep(1.5) or sys.exit(0))"
    program = write_program(tmp_path / "vibe-mocap", slow_to_stop + "; time.sleep(60)")
    server = local_server.LocalServer(log_dir=tmp_path / "log", start_timeout_s=60)
    server.start(program)
    deadline = time.monotonic() + 30
    while server._process is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # the program installed its handler
    t0 = time.monotonic()
    server.stop_in_background()
    assert time.monotonic() - t0 < 0.5 and server.snapshot().state == "stopping"
    with pytest.raises(VibeError, match="still stopping"):
        server.start(program)
    deadline = time.monotonic() + 30
    while server.snapshot().state != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.skipif(sys.platform == "win32", reason="a SIGTERM handler is POSIX")
def test_stop_server_waits_for_the_servers_graceful_stop_and_a_quick_stop_kills_sooner(tmp_path, monkeypatch):
    """Stop Server gives the server its whole graceful stop (GRACEFUL_STOP_S, here 5 s) before it kills
    it: it killed at 10 s a server that may take 25 s. Blender quitting waits QUICK_STOP_S (here
    0.5 s) only: the server's running jobs are recorded as queued at once, so a kill loses none."""
    monkeypatch.setattr(local_server, "GRACEFUL_STOP_S", 5.0)
    monkeypatch.setattr(local_server, "QUICK_STOP_S", 0.5)
    handler = "import signal; signal.signal(signal.SIGTERM, lambda *a: time.sleep(2) or sys.exit(0))"
    program = write_program(tmp_path / "vibe-mocap", handler + "; print('HANDLER', flush=True); time.sleep(60)")
    codes = []
    for quick in (False, True):
        server = local_server.LocalServer(log_dir=tmp_path / "log", start_timeout_s=60)
        server.start(program)
        _until(lambda server=server: server._process is not None and "HANDLER" in server.log_path.read_text())
        process = server._process
        server.stop(local_server.QUICK_STOP_S if quick else None)
        codes.append(process.returncode)
    assert codes == [0, -signal.SIGKILL]


def test_a_slow_stop_that_ends_after_a_new_start_leaves_that_start_alone(tmp_path, monkeypatch):
    """Stop Server (a graceful stop, in the background), then the add-on disabled (a quick stop) and a
    capture starting the server again before the graceful stop is done: that stop, ending last, marked
    the new server "stopped" and the capture failed with "The server is stopped."."""
    program = write_program(tmp_path / "vibe-mocap", "time.sleep(60)")
    server = local_server.LocalServer(log_dir=tmp_path / "log", start_timeout_s=60)
    server.start(program)
    _until(lambda: server._process is not None)
    graceful_may_end, ends = threading.Event(), []
    end_process = local_server._end_process

    def end(process, timeout_s, **kwargs):
        ends.append(timeout_s)
        if len(ends) == 1:  # the graceful stop waits for the server longer than the quick one
            graceful_may_end.wait(30)
        end_process(process, timeout_s, **kwargs)

    monkeypatch.setattr(local_server, "_end_process", end)
    graceful = threading.Thread(target=server.stop)
    graceful.start()
    _until(lambda: ends)
    server.stop(0.5)
    assert server.snapshot().state == "stopped"
    program_found = threading.Event()
    server.start(lambda: program_found.wait(30) and program)
    graceful_may_end.set()
    graceful.join(30)
    try:
        assert server.wait_ready(0.2).state == "starting"  # neither marked stopped nor woken as ready
    finally:
        server.stop()
        program_found.set()


SLOW_TO_STOP = (
    "import signal; signal.signal(signal.SIGTERM, lambda *a: time.sleep(1.5) or sys.exit(0)); "
    "print('HANDLER', flush=True)"
)


def _started(server, program) -> None:
    """Start ``server`` and wait until its process runs its SIGTERM handler (SLOW_TO_STOP)."""
    server.start(program)
    _until(lambda: server._process is not None and "HANDLER" in server.log_path.read_text())


def _join_threads(name: str) -> None:
    for thread in threading.enumerate():
        if thread.name == name:
            thread.join(30)


def test_a_restart_stopped_meanwhile_starts_nothing(tmp_path):
    """The add-on restarted its server on newly installed data and was disabled during the restart's
    stop (a quick stop): the restart then started a server nothing watched any more."""
    program = write_program(tmp_path / "vibe-mocap", SLOW_TO_STOP + "; time.sleep(60)")
    server = local_server.LocalServer(log_dir=tmp_path / "log", start_timeout_s=60)
    _started(server, program)
    server.restart_in_background(program)
    _until(lambda: server._stops == 1)  # the restart's stop began
    server.stop(0.5)
    _join_threads("vibe-restart-server")
    assert server.snapshot().state == "stopped" and server.generation == 1 and server._process.poll() is not None


def test_a_start_found_late_leaves_the_running_servers_log_alone(tmp_path):
    """A start stopped while its program was found, then Start again: the first start's worker, once
    its program was found, emptied the log of the server the second start runs."""
    program = write_program(tmp_path / "vibe-mocap", 'print("SERVING", flush=True); time.sleep(60)')
    finding, first_found = threading.Event(), threading.Event()

    def find_slowly():
        finding.set()
        first_found.wait(30)
        return program

    server = local_server.LocalServer(log_dir=tmp_path / "log", start_timeout_s=60)
    server.start(find_slowly)
    first_worker = next(t for t in threading.enumerate() if t.name == "vibe-local-server")
    assert finding.wait(30)
    server.stop()
    server.start(program)
    try:
        _until(lambda: server.log_path.is_file() and "SERVING" in server.log_path.read_text())
        first_found.set()
        first_worker.join(30)
        assert "SERVING" in server.log_path.read_text()
    finally:
        server.stop(0.5)


def test_a_capture_during_a_restart_waits_for_it_and_uses_its_server(tmp_path):
    """The add-on restarts its server on its own once model data is installed: a capture started during
    the restart's stop failed with "The local server is still stopping"."""
    program = vibe_stand_in(tmp_path / "bin", prelude=SLOW_TO_STOP)
    found = local_server.ServerProgram(path=program, version="vibe-mocap 0", found_in="PATH")
    server = local_server.LocalServer(log_dir=tmp_path / "log", start_timeout_s=60)
    server.start(program)
    assert server.wait_ready(60).state == "ready"
    try:
        server.restart_in_background(program)
        nobody = f"http://127.0.0.1:{local_server.free_port()}"  # the preferences' URL: nothing answers
        url, token = local_server.connect_or_start(nobody, "", server, lambda: found)
        _join_threads("vibe-restart-server")
        status = server.snapshot()
        assert status.state == "ready" and (url, token) == (status.url, server.token)
        assert server.generation == 2  # one server started after the stop: the capture's or the restart's
    finally:
        server.stop(0.5)


def test_a_capture_still_connecting_when_the_add_on_is_disabled_starts_nothing(tmp_path):
    """A capture waiting for a stop under way to end, then the add-on disabled: the capture started a
    server after it, which nothing watched any more; enabled again, starts work."""
    program = write_program(tmp_path / "vibe-mocap", SLOW_TO_STOP + "; time.sleep(60)")
    found = local_server.ServerProgram(path=program, version="vibe-mocap 0", found_in="PATH")
    server = local_server.LocalServer(log_dir=tmp_path / "log", start_timeout_s=60)
    _started(server, program)
    server.stop_in_background()
    outcome = []

    def capture():
        nobody = f"http://127.0.0.1:{local_server.free_port()}"
        try:
            local_server.connect_or_start(nobody, "", server, lambda: found)
        except VibeError as err:
            outcome.append(str(err))

    waiting = threading.Event()
    start_unless_running = server.start_unless_running

    def noted_start_unless_running(*args, **kwargs):
        waiting.set()
        return start_unless_running(*args, **kwargs)

    server.start_unless_running = noted_start_unless_running
    connecting = threading.Thread(target=capture)
    connecting.start()
    assert waiting.wait(30)  # it waits for the stop
    server.close()  # the add-on disabled: then its quick stop
    server.stop(0.5)
    connecting.join(60)
    assert outcome and "disabled" in outcome[0] and server.generation == 1
    assert server.snapshot().state == "stopped"
    server.reopen()
    server.start(program)
    try:
        assert server.snapshot().state == "starting" and server.generation == 2
    finally:
        server.stop(0.5)


def test_a_background_stop_that_fails_unexpectedly_says_so(tmp_path, monkeypatch):
    """An unexpected error in Stop Server's thread left the state "stopping" for good: Start refused,
    and a capture waited for it."""
    program = write_program(tmp_path / "vibe-mocap", "time.sleep(60)")
    server = local_server.LocalServer(log_dir=tmp_path / "log", start_timeout_s=60)
    server.start(program)
    _until(lambda: server._process is not None)
    process = server._process
    monkeypatch.setattr(local_server, "_end_process", lambda *args: (_ for _ in ()).throw(PermissionError(1, "x")))
    server.stop_in_background()
    _until(lambda: server.snapshot().state != "stopping")
    status = server.snapshot()
    assert status.state == "failed" and "while stopping the server" in status.message and "report" in status.message
    monkeypatch.undo()
    server.stop(0.5)  # (the process itself)
    assert process.poll() is not None


def test_a_capture_waits_a_bounded_time_for_a_stop_that_does_not_end(tmp_path, monkeypatch):
    monkeypatch.setattr(local_server, "STOPPING_WAIT_S", 0.5)
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    server._set(state="stopping")  # a stop that hangs
    with pytest.raises(VibeError, match="still stopping; try again in a moment"):
        server.start_unless_running(lambda: pytest.fail("nothing is launched"))
    assert server.generation == 0


def test_a_background_stop_that_runs_late_leaves_a_newer_start_alone(tmp_path):
    program_found = threading.Event()
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    server.start(lambda: program_found.wait(30) and tmp_path / "never-launched")
    first = server.generation
    server.stop(0.5)
    server.start(lambda: program_found.wait(30) and tmp_path / "never-launched")
    try:
        server.stop(of_start=first)  # Stop Server pressed for the first start, its thread late
        assert server.snapshot().state == "starting" and server.generation == first + 1
    finally:
        server.stop()
        program_found.set()


def test_ending_a_kept_server_that_ends_after_a_new_start_leaves_that_start_alone(tmp_path, monkeypatch):
    """Stop Kept Server runs up to a minute; the add-on disabled and enabled meanwhile and the server
    started again: its end marked the new start "stopped"."""
    record = tmp_path / "log" / "instance-1" / local_server.KEPT_SERVER_FILE
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    kept_may_end = threading.Event()

    def end_kept_server(record):
        kept_may_end.wait(30)
        return True, "The server an earlier Blender session kept running is stopped."

    monkeypatch.setattr(local_server.LocalServer, "_end_kept_server", staticmethod(end_kept_server))
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    ending = threading.Thread(target=server.stop_kept_server, args=(record,))
    ending.start()
    server.stop(0.5)  # the add-on disabled
    program_found = threading.Event()
    server.start(lambda: program_found.wait(30) and tmp_path / "never-launched")
    kept_may_end.set()
    ending.join(30)
    try:
        assert server.snapshot().state == "starting"
    finally:
        server.stop()
        program_found.set()


# as `vibe-mocap serve --stop-on-stdin-close`: the end of its standard input or SIGTERM begins its stop
# (noted in EVENTS, in the order seen), which takes STOP_TAKES_S
ASKED_TO_STOP = """import os, signal, threading
events, stop_takes_s = sys.argv[1], float(sys.argv[2])
def note(event):
    with open(events, "a") as f:
        f.write(event + "\\n")
signal.signal(signal.SIGTERM, lambda *a: note("SIGTERM"))
def stop_at_end_of_input():
    while sys.stdin.buffer.read(65536):
        pass
    note("EOF")
    time.sleep(stop_takes_s)
    os._exit(0)
threading.Thread(target=stop_at_end_of_input, daemon=True).start()
note("READY")
while True:
    time.sleep(60)"""


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in notes SIGTERM, which is POSIX")
@pytest.mark.parametrize("platform", ["posix", "nt"])
@pytest.mark.parametrize("stop_takes_s", [0.2, 4.0, 60.0])
def test_ending_the_server_closes_its_input_before_any_signal(tmp_path, monkeypatch, platform, stop_takes_s):
    """The server is asked to stop through the end of its standard input first, which works on every
    platform: on Windows terminate() kills at once, so the server would never begin its stop (its
    running job recorded as queued). On POSIX SIGTERM follows STDIN_STOP_S later (here 2 s), for a
    server not watching its input yet; on Windows nothing but the kill, after the whole wait."""
    monkeypatch.setattr(local_server, "STDIN_STOP_S", 2.0)  # margins of 2 s
    monkeypatch.setattr(local_server, "TERMINATE_IS_KILL", platform == "nt")
    events = tmp_path / "events"
    program = write_program(tmp_path / "vibe-mocap", ASKED_TO_STOP)
    process = subprocess.Popen([str(program), str(events), str(stop_takes_s)], stdin=subprocess.PIPE)
    _until(lambda: events.exists() and "READY" in events.read_text())
    t0 = time.monotonic()
    local_server._end_process(process, 6.0)
    elapsed_s = time.monotonic() - t0
    seen = events.read_text().split()[1:]
    if stop_takes_s < 2.0:  # stopped before any signal
        assert (seen, process.returncode) == (["EOF"], 0)
    elif stop_takes_s < 6.0:  # stopping when SIGTERM came, on POSIX: it stops all the same
        assert (seen, process.returncode) == (["EOF", "SIGTERM"] if platform == "posix" else ["EOF"], 0)
    else:  # killed once the whole wait is over
        assert seen[0] == "EOF" and process.returncode == -signal.SIGKILL and 6.0 <= elapsed_s < 8.0
    assert process.stdin.closed


def test_docs_state_the_longest_wait_when_blender_quits():
    """Blender quitting waits QUICK_STOP_S for the server, then KILLED_WAIT_S for a killed one to be
    gone; a kept server is asked over HTTP instead (the token proof and POST /shutdown), no longer."""
    quick, killed, request = local_server.QUICK_STOP_S, local_server.KILLED_WAIT_S, local_server.KEPT_SHUTDOWN_REQUEST_S
    docs = " ".join((TESTS.parent / "docs" / "blender.md").read_text().split())
    assert (
        f"Blender waits {quick + killed:.0f} s for it at most: {quick:.0f} s for its stop, then {killed:.0f} s for "
        f"a killed server to be gone (a server kept from an earlier session is asked with `POST /shutdown` "
        f"instead: two requests of {request:.0f} s at most)" in docs
    )
    assert 2 * request <= quick + killed


KEPT_TOKEN = "kept-token-" + "k" * 32  # the shape of the add-on's own tokens
OTHER_TOKEN = "other-token-" + "o" * 32


@pytest.mark.skipif(sys.platform == "win32", reason="the jobs folder's lock is POSIX")
def test_two_blenders_at_once_each_have_a_server_of_their_own(tmp_path, monkeypatch):
    """Two Blender sessions (two LocalServers on the same add-on folder) each start a server: each
    has its own jobs folder and its own log, so neither is refused nor loses the other's log."""
    monkeypatch.setenv("STAND_IN_DEFAULT_JOBS", str(tmp_path / "default-jobs"))
    program = vibe_stand_in(tmp_path / "stand-in", TAKES_THE_JOBS_FOLDER)
    first, second = (local_server.LocalServer(log_dir=tmp_path / "addon") for _ in range(2))
    try:
        first.start(program)
        assert first.wait_ready(30).state == "ready", first.snapshot()
        second.start(program)
        status = second.wait_ready(30)
        assert status.state == "ready", status
        assert status.url != first.snapshot().url
        assert first.jobs_dir != second.jobs_dir and first.log_path != second.log_path
        for server in (first, second):
            assert f"'--jobs-dir', '{server.jobs_dir}'" in server.log_path.read_text()
    finally:
        first.stop()
        second.stop()


@pytest.mark.skipif(sys.platform == "win32", reason="a kept server is told by its jobs folder's POSIX lock")
def test_a_folder_in_use_is_skipped_and_unused_ones_lose_their_jobs(tmp_path):
    import fcntl

    base = tmp_path / "addon"
    for n in (1, 2, 3, 4):
        (base / f"instance-{n}" / "jobs" / "0123456789abcdef").mkdir(parents=True)
        (base / f"instance-{n}" / "server.log").write_text("old log")
    other_blender = local_server._try_lock(base / "instance-1" / local_server.INSTANCE_LOCK)
    kept_server = os.open(base / "instance-2" / "jobs" / ".server.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(kept_server, fcntl.LOCK_EX)  # a server kept running after its Blender quit
    try:
        folder, fd = local_server.claim_instance_folder(base)
        assert folder == base / "instance-3"
        assert local_server._try_lock(folder / local_server.INSTANCE_LOCK) is None  # held for this Blender
        os.close(fd)
    finally:
        os.close(other_blender)
        os.close(kept_server)
    for n in (1, 2, 3):  # in use, or now ours: untouched
        assert (base / f"instance-{n}" / "jobs" / "0123456789abcdef").is_dir()
    assert not (base / "instance-4" / "jobs").exists() and not (base / "instance-4" / "server.log").exists()


def _until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.skipif(sys.platform == "win32", reason="the jobs folder's lock is POSIX")
def test_a_second_blender_never_uses_or_stops_the_server_another_running_blender_keeps(tmp_path, monkeypatch):
    """Both Blenders keep their server when they quit. The second one starts a server of its own
    (the first one's is noted as kept as soon as it answers, but its Blender still uses it), and its
    restart (newly installed model data) and Stop Server leave the first one's server running; once
    the first Blender is gone, the next start uses its server, and holds its folder meanwhile."""
    monkeypatch.setenv("STAND_IN_DEFAULT_JOBS", str(tmp_path / "default-jobs"))
    program = vibe_stand_in(tmp_path / "stand-in", TAKES_THE_JOBS_FOLDER)
    base = tmp_path / "addon"
    first, second, third, fourth = (local_server.LocalServer(log_dir=base, stop_with_parent=False) for _ in range(4))
    try:
        first.start(program)
        assert first.wait_ready(30).state == "ready", first.snapshot()
        _until(first.kept_path.exists)
        first_url, first_process = first.snapshot().url, first._process

        second.start(program)
        status = second.wait_ready(30)
        assert status.state == "ready" and status.url != first_url and not second._kept, status
        assert second.jobs_dir != first.jobs_dir
        generation = second.generation
        second.restart_in_background(program)
        _until(lambda: second.generation > generation and second.snapshot().state == "ready")
        second.stop()
        assert first_process.poll() is None and local_server.url_owner(first_url) == "vibe"
        assert first.snapshot().state == "ready"
        assert json.loads(first.kept_path.read_text())["url"] == first_url

        os.close(first._instance_fd)  # the first Blender quits, keeping its server
        first._instance_fd = None
        third.start(lambda: pytest.fail("the kept server is used"))
        status = third.wait_ready(30)
        assert status.state == "ready" and status.url == first_url and third._kept, status
        fourth.start(program)  # the kept server's folder is held by the Blender that uses it now
        status = fourth.wait_ready(30)
        assert status.state == "ready" and status.url != first_url and not fourth._kept, status
        assert fourth.jobs_dir != first.jobs_dir
    finally:
        for server in (fourth, third, second, first):
            server.stop()


@pytest.fixture
def proving_server(tmp_path):
    """A stand-in VIBE server holding the token KEPT_TOKEN (it proves it on /health)."""
    sys.path.insert(0, str(TESTS))  # tests/fake_vibe_server.py
    from fake_vibe_server import FakeVibeServer

    (tmp_path / "result.npz").write_bytes(b"x")
    with FakeVibeServer(tmp_path / "result.npz", tmp_path / "result.npz", token=KEPT_TOKEN) as server:
        yield server


def _kept_record(server, record) -> Path:
    """A record left by a Blender that used the first folder and quit: its path."""
    path = Path(server.log_dir) / "instance-1" / local_server.KEPT_SERVER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record if isinstance(record, str) else json.dumps(record))
    return path


def test_a_kept_server_is_used_again_when_it_proves_the_token(tmp_path, proving_server):
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    record = _kept_record(server, {"url": proving_server.url, "token": KEPT_TOKEN})
    server.start(lambda: pytest.fail("nothing is launched"))
    status = server.wait_ready(30)
    assert status.state == "ready" and status.url == proving_server.url and server.token == KEPT_TOKEN
    assert "earlier Blender session" in status.message
    assert local_server._try_lock(record.parent / local_server.INSTANCE_LOCK) is None  # its folder: held while used
    server.stop()
    assert ("POST", "/api/v1/shutdown") in proving_server.requests
    assert not record.exists()
    fd = local_server._try_lock(record.parent / local_server.INSTANCE_LOCK)
    assert fd is not None  # and let go once stopped
    os.close(fd)


def test_a_kept_servers_watch_that_ends_after_a_new_start_leaves_its_record_and_folder(
    tmp_path, proving_server, monkeypatch
):
    """The watch of a kept server checks it for seconds; stopped and started again meanwhile (the same
    kept server used again), the old watch removed the new start's record and let go of its folder."""
    block_next, checking, check_may_end, checks = threading.Event(), threading.Event(), threading.Event(), []

    def url_owner(url, **kwargs):
        checks.append(url)
        if block_next.is_set():  # the first start's watch: the server seems gone once this ends
            block_next.clear()
            checking.set()
            check_may_end.wait(30)
            return None
        return "vibe"

    monkeypatch.setattr(local_server, "KEPT_WATCH_S", 0.05)
    monkeypatch.setattr(local_server, "url_owner", url_owner)
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    kept = {"url": proving_server.url, "token": KEPT_TOKEN}
    record = _kept_record(server, kept)
    before = set(threading.enumerate())
    server.start(lambda: pytest.fail("nothing is launched"))
    (first_watch,) = {t for t in set(threading.enumerate()) - before if t.name == "vibe-local-server"}
    assert server.wait_ready(30).state == "ready"
    block_next.set()
    assert checking.wait(30)
    server.stop()
    _kept_record(server, kept)  # kept again, by another Blender that has quit since
    server.start(lambda: pytest.fail("nothing is launched"))
    try:
        assert server.wait_ready(30).state == "ready" and server._kept
        check_may_end.set()
        first_watch.join(30)
        assert record.exists() and server.snapshot().state == "ready"
        assert local_server._try_lock(record.parent / local_server.INSTANCE_LOCK) is None  # still held
    finally:
        check_may_end.set()
        server.stop()


@pytest.mark.parametrize(
    "record",
    [
        {"url": "http://127.0.0.1:{port}", "token": OTHER_TOKEN},  # cannot prove it
        {"url": "http://192.0.2.1:{port}", "token": KEPT_TOKEN},  # not this machine
        {"url": "http://127.0.0.1:99999", "token": KEPT_TOKEN},  # no such port
        {"url": "http://127.0.0.1:{port}"},  # no token
        {"url": "http://127.0.0.1:{port}", "token": ""},  # empty: the user's token file
        {"url": "http://127.0.0.1:{port}", "token": 5},  # not a text
        {"url": "http://127.0.0.1:{port}", "token": "a b"},  # not a token of the add-on's
        {"url": "http://127.0.0.1:{port}", "token": KEPT_TOKEN, "pid": "4242"},  # a process id that is no number
        {"url": "http://127.0.0.1:{port}", "token": KEPT_TOKEN, "pid": True},
        {"url": "http://127.0.0.1:{port}", "token": KEPT_TOKEN, "pid": 0},
        ["http://127.0.0.1:{port}", KEPT_TOKEN],  # not a record
        "[[[[",  # damaged
    ],
)
def test_a_kept_record_that_fails_any_check_is_dropped(tmp_path, proving_server, record, monkeypatch):
    monkeypatch.setenv("VIBE_MOCAP_TOKEN", KEPT_TOKEN)  # the user's own token, for their own server
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    port = proving_server.url.rsplit(":", 1)[1]

    def filled(value):
        return value.format(port=port) if isinstance(value, str) else value

    if isinstance(record, dict):
        record = {k: filled(v) for k, v in record.items()}
    elif isinstance(record, list):
        record = [filled(v) for v in record]
    path = _kept_record(server, record)
    assert not server.adopt_kept_server()
    assert not path.exists()
    assert all(f"Bearer {KEPT_TOKEN}" != a for a in proving_server.authorizations)


class _Answers(http.server.BaseHTTPRequestHandler):
    """Another program's answer to every request: ``status``, ``content_type`` and ``body``."""

    status, content_type, body = 404, "text/plain", b"not found"

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    "answer",
    [
        (404, "text/plain", b"not found"),
        (200, "text/html", b"<html>a web page</html>"),
        (200, "application/json", b'{"status": "ok", "api_version": 1, "device": "cpu"}'),  # no proof
        (500, "application/json", b'{"detail": "boom"}'),
    ],
)
def test_a_kept_record_of_a_port_where_another_program_answers_is_dropped_and_a_server_started(tmp_path, answer):
    handler = type("Answer", (_Answers,), dict(zip(("status", "content_type", "body"), answer)))
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        server = local_server.LocalServer(log_dir=tmp_path / "log")
        record = _kept_record(server, {"url": f"http://127.0.0.1:{other.server_port}", "token": KEPT_TOKEN})
        for _ in range(2):  # the second start no longer meets the record
            server.start(write_program(tmp_path / "vibe-mocap", "sys.exit(1)"))
            status = server.wait_ready(30)
            assert status.state == "failed" and "exited while starting" in status.message, status
            assert not record.exists()
    finally:
        other.shutdown()
        other.server_close()


def test_a_record_with_a_token_that_is_no_text_never_leaves_the_start_hanging(tmp_path, proving_server):
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    record = _kept_record(server, {"url": proving_server.url, "token": 5})
    server.start(write_program(tmp_path / "vibe-mocap", "sys.exit(1)"))
    status = server.wait_ready(30)
    assert status.state == "failed" and "exited while starting" in status.message, status
    assert not record.exists()


class _SlowProof(http.server.BaseHTTPRequestHandler):
    """A VIBE Mocap server's public /health at once, but its proof of the token only after 3 s."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        if "challenge=" in self.path:
            time.sleep(3.0)
        body = json.dumps({"status": "ok", "api_version": 1, "device": "cpu"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_kept_server_that_does_not_prove_its_token_in_time_keeps_its_record(tmp_path, monkeypatch):
    monkeypatch.setattr(local_server, "KEPT_CHECK_TIMEOUT_S", 0.5)
    slow = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowProof)
    slow.daemon_threads = True
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    try:
        server = local_server.LocalServer(log_dir=tmp_path / "log")
        record = _kept_record(server, {"url": f"http://127.0.0.1:{slow.server_port}", "token": KEPT_TOKEN})
        with pytest.raises(local_server.KeptServerBusy, match="does not answer in time.*try again in a moment") as err:
            server.adopt_kept_server()
        assert "press Stop Kept Server" in str(err.value) and err.value.record == record  # how to end it
        assert record.exists()
    finally:
        slow.shutdown()
        slow.server_close()


SHOWS_COMMAND_LINES = Path("/proc/self/cmdline").is_file()  # Linux: a kept server's process can be proved


def _start_blocked_by(base: Path, record: Path) -> local_server.LocalServer:
    """A new session's server whose start failed on the kept server of ``record``, which does not answer."""
    server = local_server.LocalServer(log_dir=base)
    server.start(lambda: pytest.fail("nothing is launched while a kept server blocks"))
    status = server.wait_ready(30)
    assert status.state == "failed" and "press Stop Kept Server" in status.message, status
    assert status.blocking_record == record
    return server


def _stop_kept(server: local_server.LocalServer) -> local_server.ServerStatus:
    """Stop Server pressed in the failed state: it returns at once ("stopping"), then says what was done."""
    t0 = time.monotonic()
    server.stop_in_background()
    assert time.monotonic() - t0 < 0.5
    _until(lambda: server.snapshot().state != "stopping")
    return server.snapshot()


@pytest.mark.skipif(sys.platform == "win32", reason="the jobs folder's lock is POSIX")
def test_stop_kept_server_asks_a_kept_server_that_answers_again_and_the_next_start_is_clean(tmp_path, monkeypatch):
    base = tmp_path / "addon"
    with kept_stand_in(tmp_path, base, monkeypatch) as (process, record):
        server = _start_blocked_by(base, record)
        (tmp_path / "hold").unlink()  # it answers again: it is asked to shut down, with its token
        monkeypatch.setattr(local_server, "KEPT_SHUTDOWN_TIMEOUT_S", 10.0)  # in time even on a loaded machine
        status = _stop_kept(server)
        assert status.state == "stopped" and "stopped when asked; its record is removed" in status.message, status
        assert process.wait(10) == 0 and not record.exists() and status.blocking_record is None
        server.start(vibe_stand_in(tmp_path / "new-server"))  # a new server, of this Blender's own
        try:
            status = server.wait_ready(30)
            assert status.state == "ready" and not server._kept, status
        finally:
            server.stop()


@pytest.mark.skipif(not SHOWS_COMMAND_LINES, reason="only Linux shows another process's command line")
@pytest.mark.parametrize("ignores_term", [False, True])
def test_stop_kept_server_ends_a_kept_server_that_never_answers_as_it_provably_is_that_server(
    tmp_path, monkeypatch, ignores_term
):
    base = tmp_path / "addon"
    with kept_stand_in(tmp_path, base, monkeypatch, on_term="ignore" if ignores_term else "") as (process, record):
        status = _stop_kept(_start_blocked_by(base, record))
        assert status.state == "stopped", status
        if ignores_term:
            done = f"did not answer, nor stop within 2 s of SIGTERM, so its process ({process.pid}) was killed"
        else:
            done = f"did not answer, so its process ({process.pid}) was ended (SIGTERM)"
        assert f"{done}; its record is removed" in status.message, status.message
        assert process.wait(10) == (-signal.SIGKILL if ignores_term else -signal.SIGTERM) and not record.exists()


@pytest.mark.skipif(not SHOWS_COMMAND_LINES, reason="only Linux shows another process's command line")
def test_stop_kept_server_says_a_kept_server_that_accepted_the_stop_but_did_not_stop_in_time_was_killed(
    tmp_path, monkeypatch
):
    """It answers the shutdown request but its stop hangs: it gets its whole graceful stop (here 2 s),
    then it is killed, and the message says so (it said the server had not answered)."""
    base = tmp_path / "addon"
    with kept_stand_in(tmp_path, base, monkeypatch, stuck_stopping=True) as (process, record):
        server = _start_blocked_by(base, record)
        (tmp_path / "hold").unlink()  # it answers again
        monkeypatch.setattr(local_server, "KEPT_SHUTDOWN_TIMEOUT_S", 10.0)  # in time even on a loaded machine
        t0 = time.monotonic()
        status = _stop_kept(server)
        assert time.monotonic() - t0 >= 2.0  # its graceful stop, not less
        assert status.state == "stopped", status
        assert (
            f"accepted the request to stop but had not stopped 2 s later, so its process ({process.pid}) was "
            "killed; its record is removed"
        ) in status.message, status.message
        assert process.wait(10) == -signal.SIGKILL and not record.exists()


@pytest.mark.skipif(not SHOWS_COMMAND_LINES, reason="only Linux shows another process's command line")
def test_stop_kept_server_that_ends_just_after_its_sigterm_wait_was_stopped_by_it(tmp_path, monkeypatch):
    """SIGTERM, and its stop takes a little longer than the wait: by the time of the SIGKILL the
    process is gone (no command line left to prove). That is the SIGTERM's success, not a server
    'no longer running' to end by hand."""
    base = tmp_path / "addon"
    waits = []
    gone_within, prove = local_server._gone_within, local_server.not_the_kept_server

    with kept_stand_in(tmp_path, base, monkeypatch, on_term="5") as (process, record):

        def noted_wait(url, jobs_dir, timeout_s):
            waits.append(gone_within(url, jobs_dir, timeout_s))
            return waits[-1]

        def proof_once_the_wait_is_over(pid, jobs_dir):
            if waits == [False]:  # the SIGTERM's wait is over: the process ends now, before the next proof
                process.wait(10)  # (reaped, as the init process reaps a kept server whose Blender quit)
            return prove(pid, jobs_dir)

        monkeypatch.setattr(local_server, "_gone_within", noted_wait)
        monkeypatch.setattr(local_server, "not_the_kept_server", proof_once_the_wait_is_over)
        status = _stop_kept(_start_blocked_by(base, record))
        assert waits == [False] and process.returncode == 0  # it stopped on its own, after the SIGTERM
        assert status.state == "stopped", status
        done = f"did not answer, so its process ({process.pid}) was ended (SIGTERM); its record is removed"
        assert done in status.message and "yourself" not in status.message, status.message
        assert not record.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="the jobs folder's lock is POSIX")
@pytest.mark.parametrize("named", ["no process", "an unrelated process", "another server"])
def test_stop_kept_server_never_ends_a_process_that_is_not_provably_that_server(tmp_path, monkeypatch, named):
    """The record names no process (an earlier version's), or one that is not that server (its pid
    reused since, or a record changed by hand): nothing is ended; the record is removed all the same,
    so that the next start starts a server beside the one that does not answer, and the message says
    to end that one by hand."""
    bystander = None
    base = tmp_path / "addon"
    with kept_stand_in(tmp_path, base, monkeypatch) as (process, record):
        if named == "an unrelated process":
            bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        elif named == "another server":  # a server of another add-on folder, on another jobs folder
            bystander = local_server.LocalServer(log_dir=tmp_path / "other-addon")
            bystander.start(vibe_stand_in(tmp_path / "other-server", TAKES_THE_JOBS_FOLDER))
            assert bystander.wait_ready(30).state == "ready"
        fields = json.loads(record.read_text())
        fields.pop("pid")
        if bystander is not None:
            fields["pid"] = bystander.pid if named == "an unrelated process" else bystander._process.pid
        record.write_text(json.dumps(fields))
        try:
            server = _start_blocked_by(base, record)
            status = _stop_kept(server)
            assert status.state == "failed" and "did not answer, and the add-on cannot end it" in status.message
            expected = {
                "no process": "does not name its process",
                "an unrelated process": "is not a 'vibe-mocap serve'",
                "another server": "serves another jobs folder",
            }[named]
            if not SHOWS_COMMAND_LINES and named != "no process":
                expected = "this system does not show which program a process runs"
            assert expected in status.message and "end that 'vibe-mocap serve'" in status.message, status.message
            assert process.poll() is None and not record.exists()
            if named == "an unrelated process":
                assert bystander.poll() is None
            elif named == "another server":
                assert bystander._process.poll() is None and bystander.snapshot().state == "ready"
            server.start(vibe_stand_in(tmp_path / "new-server", TAKES_THE_JOBS_FOLDER))  # beside the one kept
            try:
                assert server.wait_ready(30).state == "ready" and not server._kept
            finally:
                server.stop()
        finally:
            if isinstance(bystander, subprocess.Popen):
                bystander.kill()
                bystander.wait(10)
            elif bystander is not None:
                bystander.stop()


@pytest.mark.skipif(sys.platform == "win32", reason="the jobs folder's lock is POSIX")
def test_stop_kept_server_leaves_a_kept_server_that_another_blender_took_over(tmp_path, monkeypatch):
    base = tmp_path / "addon"
    with kept_stand_in(tmp_path, base, monkeypatch) as (process, record):
        server = _start_blocked_by(base, record)
        other_blender = local_server._try_lock(record.parent / local_server.INSTANCE_LOCK)  # it uses it now
        try:
            status = _stop_kept(server)
        finally:
            os.close(other_blender)
        assert status.state == "stopped" and "Another Blender session uses" in status.message, status
        assert process.poll() is None and record.exists()


def _closes_without_answering(listener: socket.socket) -> None:
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:  # the test closed the listener
            return
        with connection:
            connection.recv(65536)


@pytest.mark.parametrize("behaviour", ["never answers", "closes without answering"])
def test_a_kept_record_of_a_port_where_another_program_gives_no_answer_is_dropped_and_a_server_started(
    tmp_path, monkeypatch, behaviour
):
    """The kept server is gone and another program took its port: a start must not stay refused,
    asking to end a 'vibe-mocap serve' process that does not exist."""
    monkeypatch.setattr(local_server, "KEPT_CHECK_TIMEOUT_S", 0.5)
    with socket.socket() as other:  # "never answers": connections wait in the system's backlog
        other.bind(("127.0.0.1", 0))
        other.listen(16)
        if behaviour == "closes without answering":
            threading.Thread(target=_closes_without_answering, args=(other,), daemon=True).start()
        server = local_server.LocalServer(log_dir=tmp_path / "log")
        url = f"http://127.0.0.1:{other.getsockname()[1]}"
        assert local_server.url_owner(url) == "other"
        record = _kept_record(server, {"url": url, "token": KEPT_TOKEN})
        server.start(write_program(tmp_path / "vibe-mocap", "sys.exit(1)"))
        status = server.wait_ready(30)
        assert status.state == "failed" and "exited while starting" in status.message, status
        assert not record.exists()


def test_only_a_server_launched_to_outlive_blender_is_kept_and_stop_forgets_it(tmp_path):
    program = write_program(tmp_path / "vibe-mocap", "time.sleep(60)")
    for stop_with_parent in (True, False):
        server = local_server.LocalServer(log_dir=tmp_path / "log", stop_with_parent=stop_with_parent)
        server.start(program)
        while server._process is None:
            time.sleep(0.05)
        server._set(state="ready")  # as once /health answers
        server.stop_with_parent = not server.stop_with_parent  # the preference changed since: no matter
        assert server.keep_for_next_session() is (not stop_with_parent)
        if not stop_with_parent:
            server._write_kept_record(server.snapshot().url)  # as once it answered
        server.stop()
        assert not server.kept_path.exists()


def test_a_server_stopped_as_it_becomes_ready_leaves_no_kept_record(tmp_path):
    """Stop pressed between "ready" and the noting of a server launched to outlive Blender: the next
    session finds no record of a server that is gone."""

    class StopAtReady(local_server.LocalServer):
        def _set_if_current(self, generation, **changes):
            published = super()._set_if_current(generation, **changes)
            if published and changes.get("state") == "ready":
                self.stop()
            return published

    server = StopAtReady(log_dir=tmp_path / "log", stop_with_parent=False)
    server.start(vibe_stand_in(tmp_path / "stand-in"))
    join_workers()
    assert server.snapshot().state == "stopped" and server._process.poll() is not None
    assert not server.kept_path.exists()


def test_the_kept_record_is_private(tmp_path):
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    server._instance = tmp_path / "log" / "instance-2"  # as claimed at the launch
    server._write_kept_record("http://127.0.0.1:1")
    assert server.kept_path == tmp_path / "log" / "instance-2" / local_server.KEPT_SERVER_FILE
    assert json.loads(server.kept_path.read_text()) == {"url": "http://127.0.0.1:1", "token": server.token}
    assert server.kept_path.stat().st_mode & 0o777 == 0o600


def test_each_start_has_a_token_of_its_own(tmp_path):
    program = write_program(tmp_path / "vibe-mocap", "sys.exit(1)")
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    tokens = []
    for _ in range(2):
        server.start(program)
        tokens.append(server.token)
        server.wait_ready(30)
    assert tokens[0] != tokens[1]


def test_stop_while_a_kept_server_is_checked_leaves_the_add_on_stopped(tmp_path, proving_server, monkeypatch):
    server = local_server.LocalServer(log_dir=tmp_path / "log")
    record = _kept_record(server, {"url": proving_server.url, "token": KEPT_TOKEN})
    health = local_server.ServerClient.health
    checking, may_answer = threading.Event(), threading.Event()

    def slow_health(client, *args, **kwargs):
        checking.set()
        may_answer.wait(30)
        return health(client, *args, **kwargs)

    monkeypatch.setattr(local_server.ServerClient, "health", slow_health)
    server.start(lambda: pytest.fail("nothing is launched"))
    assert checking.wait(30)
    server.stop()
    may_answer.set()
    join_workers()
    assert server.snapshot().state == "stopped" and not server._kept
    assert record.exists()  # that server still runs: the next start uses it
    fd = local_server._try_lock(record.parent / local_server.INSTANCE_LOCK)
    assert fd is not None  # its folder is not held
    os.close(fd)


def test_an_install_without_a_program_says_why(tmp_path):
    def no_program():
        raise VibeError("No vibe-mocap program found: …")

    install = local_server.ModelDataInstall(no_program, str(tmp_path / "source")).start()
    install.join(10)
    # a failure (2), not the command's 1, "installed, but files are still missing": the panel said "Installed."
    assert install.returncode == local_server.INSTALL_FAILED == 2
    assert list(install.lines) == ["No vibe-mocap program found: …"]


def test_the_program_writes_utf8_and_output_that_is_not_is_read_all_the_same(tmp_path, no_path_program):
    """Python writes a pipe in the system's code page (cp1252 on Windows: 'José' as b'Jos\\xe9'): the
    program is asked for UTF-8, and bytes that are not are replaced, never an exception that left an
    install "running" for the rest of the session."""
    program = write_program(
        tmp_path / "vibe-mocap",
        """import os
if sys.argv[1:] == ["--version"]:
    print("vibe-mocap 9.9.9", os.environ.get("PYTHONIOENCODING"), flush=True)
    sys.stderr.buffer.write(b"Jos\\xe9\\n")
else:
    sys.stdout.buffer.write(b"Model data in C:\\\\Users\\\\Jos\\xe9\\n")
    print("PYTHONIOENCODING", os.environ.get("PYTHONIOENCODING"), flush=True)""",
    )
    assert local_server.program_version(program).startswith("vibe-mocap 9.9.9 utf-8")
    install = local_server.ModelDataInstall(program, str(tmp_path / "source")).start()
    install.join(30)
    assert install.returncode == 0
    assert list(install.lines) == ["Model data in C:\\Users\\Jos\ufffd", "PYTHONIOENCODING utf-8"]

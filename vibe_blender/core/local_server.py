"""The local server, run by the add-on: find the ``vibe-mocap`` program, start it, watch it, stop it.

No bpy here: the Blender layer calls these from operators and timers, and the tests drive them
directly. Nothing blocks the caller: starting, waiting for ``/health`` and watching the process run
in a worker thread, and :meth:`LocalServer.snapshot` tells the UI where things stand.

What the add-on runs, and why (docs/blender.md says the same to users):
- ``vibe-mocap --version`` to check that the program it found works;
- ``vibe-mocap serve --host 127.0.0.1 --port N --jobs-dir DIR --stop-on-stdin-close`` with a fresh
  random token passed in the environment (``$VIBE_MOCAP_TOKEN``, never on the command line where
  ``ps`` shows it); the server binds loopback only, on a free port, keeps its jobs and log in a folder
  of this Blender's own (a server per jobs folder: each Blender running at once has its own server),
  and stops when Blender exits, even when it crashes (the system closes its standard input). When
  the user keeps it running after Blender quits, its address, token and process id are kept in a
  file only the user can read, in that folder, and a later session uses it again once that Blender
  is gone and the server proved it holds that token (``server_proof.py``);
- ``vibe-mocap data check --json`` and ``vibe-mocap data install SOURCE`` for the model data, so the
  add-on installs with exactly the command line's code and never installs anything into Blender.
"""

from __future__ import annotations

import errno
import functools
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from . import safe_json
from .client import (
    ANSWER_TIME_FACTOR,
    API,
    AnswerTooSlow,
    ConnectionWatch,
    NoAccessToken,
    ServerClient,
    ServerProofError,
    ServerUnreachable,
    is_loopback_url,
    validate_server_url,
)
from .errors import VibeError
from .serve_exit import PORT_TAKEN_EXIT_STATUS
from .server_stop import GRACEFUL_STOP_S
from .user_dirs import TOKEN_ENV_VAR, write_private_file

PROGRAM_NAME = "vibe-mocap"
TERMINATE_IS_KILL = os.name == "nt"  # Popen.terminate() is TerminateProcess there: no signal to ask with
REPO_ROOT = Path(__file__).resolve().parents[2]  # the source tree, when the add-on runs from it
VERSION_TIMEOUT_S = 60.0
START_TIMEOUT_S = 300.0  # the first start may write the placeholder model
HEALTH_POLL_S = 0.3
PROOF_TIMEOUT_S = 5.0  # for a server at the preferences' URL to prove it holds the token
# A starting server whose port another program holds exits; meanwhile that program may answer its
# /health: an answer refused counts as the server's own once the server still runs this long after it.
REFUSED_ANSWER_WAIT_S = 3.0
# How long a server asked to stop gets before it is killed: Stop Server and Stop Kept Server (in the
# background) wait for its whole graceful stop (GRACEFUL_STOP_S); Blender quitting, the add-on disabled
# and a start that timed out wait this long only. A kill any time after the stop began leaves the
# running jobs to run after the restart (the server records them as queued at once).
QUICK_STOP_S = 10.0
KILLED_WAIT_S = 5.0  # for a killed process to be gone (Blender quitting waits QUICK_STOP_S + this at most)
STDIN_STOP_S = 1.0  # on POSIX, SIGTERM follows the end of a server's standard input after this long
STOPPING_WAIT_S = GRACEFUL_STOP_S + KILLED_WAIT_S + 10.0  # a capture waits this long for a restart's stop
LOG_TAIL_LINES = 15
INSTALL_FAILED = 2  # a model-data install's exit status when it failed ('vibe-mocap data install' uses 2 too)
# how a server before PORT_TAKEN_EXIT_STATUS said its port was taken: in the system's words, English only
OLD_PORT_TAKEN_WORDS = ("address already in use", "errno 98", "errno 48", "only one usage of each socket")

ServerState = Literal["stopped", "starting", "ready", "stopping", "failed", "exited"]
# in the folder of the Blender that launched it (below): a server left running for the next session
KEPT_SERVER_FILE = "kept_server.json"
# Each Blender's server has a folder of its own in the log folder (instance-1, instance-2, ...): its
# jobs and its log, as a server needs a jobs folder of its own (vibe_server/commands/serve.py).
INSTANCE_FOLDER = "instance-{}"
INSTANCE_LOCK = ".instance.lock"  # held by the Blender that uses the folder, until it exits
SERVER_LOCK = ".server.lock"  # the server's own lock in its jobs folder (SERVER_LOCK_NAME in serve.py)
MAX_INSTANCES = 100
KEPT_WATCH_S = 2.0  # how often a kept server is checked
UrlOwner = Literal["vibe", "nothing", "other"]


# ---------------------------------------------------------------------------------------------
# Finding the program


@dataclass(frozen=True)
class ServerProgram:
    path: Path
    version: str  # "vibe-mocap 0.1.0"
    found_in: str  # "preferences" | "the repository's .venv" | "the add-on's folder" | "PATH"


def venv_program(root: Path) -> Path:
    """Where scripts/setup.sh puts the program inside ``root``'s ``.venv``."""
    if sys.platform == "win32":
        return root / ".venv" / "Scripts" / f"{PROGRAM_NAME}.exe"
    return root / ".venv" / "bin" / PROGRAM_NAME


def program_candidates(user_path: str = "", *, repo_root: Path = REPO_ROOT) -> list[tuple[str, Path]]:
    """Where to look, in order: the path the user picked, the repository's .venv, then PATH."""
    candidates = []
    if user_path:
        candidates.append(("preferences", Path(user_path).expanduser()))
    # an add-on installed from its zip runs from Blender's extensions folder, which is no repository
    where = "the repository's .venv" if (repo_root / "scripts" / "setup.sh").is_file() else "the add-on's folder"
    candidates.append((where, venv_program(repo_root)))
    on_path = program_on_path()
    if on_path:
        candidates.append(("PATH", on_path))
    return candidates


def program_on_path() -> Path | None:
    """The vibe-mocap program in the first of PATH's folders holding it (on Windows with any of
    PATHEXT's endings), as a shell finds it, but in absolute folders only: Windows' own lookup, and
    ``shutil.which`` there, tries the current folder first, and Blender opened from a downloaded
    project's .blend runs in that project's folder, where a ``vibe-mocap.bat`` would be run."""
    names = [PROGRAM_NAME]
    if sys.platform == "win32":
        endings = os.environ.get("PATHEXT") or ".COM;.EXE;.BAT;.CMD"
        names = [PROGRAM_NAME + ending for ending in endings.split(os.pathsep) if ending]
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if not os.path.isabs(folder):  # "", "." or a relative folder: where Blender happens to run
            continue
        for name in names:
            path = Path(folder) / name
            if path.is_file() and os.access(path, os.X_OK):
                return path
    return None


def program_env(**extra: str) -> dict[str, str]:
    """The environment the vibe-mocap program runs in: its output unbuffered, and in UTF-8 whatever the
    system's code page (a user folder named 'José' came out in cp1252 on Windows, which no UTF-8
    reading takes)."""
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", **extra)


def run_program(command: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    """``command`` (the vibe-mocap program and its arguments) run to its end, its output read as UTF-8
    (anything else replaced, never an exception)."""
    return subprocess.run(
        command,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        env=program_env(),
    )


def program_version(path: Path, *, timeout_s: float = VERSION_TIMEOUT_S) -> str:
    """``path --version`` -> "vibe-mocap X.Y.Z"; VibeError saying why when it is not a working program."""
    try:
        done = run_program([str(path), "--version"], timeout_s)
    except subprocess.TimeoutExpired:
        raise VibeError(
            f"'{path}' did not answer '--version' within {timeout_s:.0f} s; check that it is the vibe-mocap program."
        ) from None
    except OSError as err:
        if err.errno == errno.ENOENT and path.is_file():  # the script is there, the Python it names is not
            raise VibeError(
                f"'{path}' cannot be run: the Python its first line names is gone (its environment was moved "
                "or deleted); run 'bash scripts/setup.sh' again in the VIBE Mocap folder."
            ) from None
        raise VibeError(
            f"'{path}' cannot be run ({err.strerror}); pick the vibe-mocap program "
            "made by scripts/setup.sh (.venv/bin/vibe-mocap)."
        ) from None
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0 or not output.startswith(PROGRAM_NAME):
        last = output.splitlines()[-1] if output else f"exit code {done.returncode}"
        raise VibeError(
            f"'{path}' is not a working vibe-mocap program ({last[:200]}); "
            "run scripts/setup.sh again or pick another program in the preferences."
        )
    return output.splitlines()[0]


def find_program(user_path: str = "", *, repo_root: Path = REPO_ROOT) -> ServerProgram:
    """The first working program of :func:`program_candidates`. A program the user picked must
    work (its error is raised); an automatic find that fails says where it looked."""
    problems = []
    for found_in, path in program_candidates(user_path, repo_root=repo_root):
        if not path.is_file():
            if found_in == "preferences":
                raise VibeError(f"The vibe-mocap program set in the preferences ('{path}') does not exist.")
            problems.append(f"not in {found_in} ({path})")
            continue
        try:
            return ServerProgram(path=path, version=program_version(path), found_in=found_in)
        except VibeError as err:
            if found_in == "preferences":
                raise
            problems.append(str(err))
    if not any(found_in == "PATH" for found_in, _ in program_candidates(user_path, repo_root=repo_root)):
        problems.append("not on PATH")
    raise VibeError(
        "No vibe-mocap program found: " + "; ".join(p.rstrip(".") for p in problems) + ". Run 'bash scripts/setup.sh' "
        "in the VIBE Mocap folder, then set 'vibe-mocap program' in the add-on preferences to the .venv/bin/vibe-mocap "
        "it made there (or put vibe-mocap on PATH)."
    )


# ---------------------------------------------------------------------------------------------
# Who answers at a URL


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port(parsed: urllib.parse.ParseResult) -> int:
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def listens(url: str, *, timeout_s: float = 2.0) -> bool:
    """Whether a program accepts connections at ``url``'s address (a VibeError when ``url`` is no server
    URL: :func:`validate_server_url`)."""
    parsed = validate_server_url(url)
    try:
        socket.create_connection((parsed.hostname, _port(parsed)), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def url_owner(url: str, *, timeout_s: float = 2.0) -> UrlOwner:
    """ "vibe" when a VIBE Mocap server answers /health at ``url``, "nothing" when nobody listens,
    "other" when another program does. /health is public: the probe sends no token, so a foreign
    program never sees it, and reads at most 64 KiB of the answer, which must be whole within
    ANSWER_TIME_FACTOR times ``timeout_s`` (a program that trickles it, or never ends it, is "other")."""
    if not listens(url, timeout_s=timeout_s):
        return "nothing"
    parsed = validate_server_url(url)
    connection_class = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    conn = connection_class(parsed.hostname, _port(parsed), timeout=timeout_s)
    watch = ConnectionWatch(conn)
    try:
        conn.connect()
        watch.until(time.monotonic() + ANSWER_TIME_FACTOR * timeout_s)
        conn.request("GET", parsed.path.rstrip("/") + API + "/health")
        response = conn.getresponse()
        health = safe_json.loads(response.read(65536)) if response.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        health = None
    finally:
        watch.close()
        conn.close()
    if watch.expired:  # cut off: what it read may even parse
        return "other"
    return "vibe" if isinstance(health, dict) and health.get("api_version") == 1 else "other"


# ---------------------------------------------------------------------------------------------
# A folder of its own for each Blender's server


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``path`` (made when missing), kept by this
    process until it is closed or the process ends, even in a crash; None when another process
    holds it (or the file is a link). A file system without such locks: the descriptor, unlocked."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        return None
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):  # held by another process
        os.close(fd)
        return None
    except OSError:  # no locks on this file system: used unguarded, as the server's own lock is
        pass
    return fd


def _server_runs_in(jobs_dir: Path) -> bool:
    """Whether a server holds the jobs folder's lock (one kept running after its Blender quit). Windows
    has no such lock (the server's folder is not guarded there): False."""
    if sys.platform == "win32":
        return False
    import fcntl

    try:
        fd = os.open(jobs_dir / SERVER_LOCK, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return False
    except OSError:  # cannot tell: leave it alone
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:  # no locks on this file system: nothing to tell a server by
        return False
    finally:
        os.close(fd)


def claim_instance_folder(base: Path) -> tuple[Path, int]:
    """(folder, lock descriptor): the first ``base/instance-N`` that no other Blender holds and no
    kept server runs in, locked by this process until it exits. The other unused folders lose their
    jobs and log, so that folders of Blenders gone do not pile up (the captures' results are in the
    add-on's own results folder); not on Windows, where a kept server's folder cannot be told. VibeError
    when every folder is in use."""
    claimed = None
    for n in range(1, MAX_INSTANCES + 1):
        folder = Path(base) / INSTANCE_FOLDER.format(n)
        fd = _try_lock(folder / INSTANCE_LOCK)
        if fd is None:
            continue
        if _server_runs_in(folder / "jobs"):
            os.close(fd)
            continue
        claimed = folder, fd
        break
    if claimed is None:
        raise VibeError(
            f"The {MAX_INSTANCES} server folders in '{base}' are all in use by other Blender sessions or "
            "servers kept running; stop some of them, then start the server again."
        )
    for folder in sorted(Path(base).glob(INSTANCE_FOLDER.format("*"))):
        if folder == claimed[0] or not folder.is_dir():
            continue
        fd = _try_lock(folder / INSTANCE_LOCK)
        if fd is None:
            continue
        try:
            if sys.platform != "win32" and not _server_runs_in(folder / "jobs"):  # Windows: cannot tell
                shutil.rmtree(folder / "jobs", ignore_errors=True)
                (folder / "server.log").unlink(missing_ok=True)
        finally:
            os.close(fd)
    return claimed


# ---------------------------------------------------------------------------------------------
# The managed process


class KeptServerBusy(VibeError):
    """The server an earlier session kept running is there but does not answer in time; ``record`` is
    its record (:meth:`LocalServer.stop_kept_server` ends that server and removes it)."""

    def __init__(self, message: str, record: Path):
        super().__init__(message)
        self.record = record


KEPT_URL_PATTERN = re.compile(r"http://127\.0\.0\.1:(\d{1,5})")
KEPT_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{32,128}")  # the add-on's tokens: secrets.token_urlsafe(32)
KEPT_CHECK_TIMEOUT_S = 5.0
KEPT_SHUTDOWN_REQUEST_S = 5.0  # for each request of Stop Server's POST /shutdown to a kept server
KEPT_SHUTDOWN_TIMEOUT_S = 10.0  # for the shutdown request to a kept server that did not answer in time
MAX_PID = 2**31 - 1


@dataclass(frozen=True)
class KeptRecord:
    """What the record of a server kept running for the next session holds."""

    url: str
    token: str
    pid: int | None  # its process (None in the records of versions before it was noted)


def kept_record_fields(raw: bytes) -> KeptRecord:
    """The fields of a kept-server record; ValueError when it is damaged: not JSON, not this
    machine's address, not a token the add-on makes (never empty: an empty token would stand for
    the user's own token file), or a process id that is no positive number."""
    record = safe_json.loads(raw)
    if not isinstance(record, dict):
        raise ValueError("not a record")
    url, token, pid = record.get("url"), record.get("token"), record.get("pid")
    match = KEPT_URL_PATTERN.fullmatch(url) if isinstance(url, str) else None
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise ValueError("not this machine's address")
    if not (isinstance(token, str) and KEPT_TOKEN_PATTERN.fullmatch(token)):
        raise ValueError("not a token of the add-on's")
    if pid is not None and (type(pid) is not int or not 1 <= pid <= MAX_PID):
        raise ValueError("not a process id")
    return KeptRecord(url, token, pid)


def kept_server_runs(url: str, jobs_dir: Path) -> bool:
    """Whether a kept server may still be there: a server holds its jobs folder's lock, or a program
    still listens at its address (the one sign on Windows, which has no such lock)."""
    return _server_runs_in(jobs_dir) or listens(url)


def _gone_within(url: str, jobs_dir: Path, timeout_s: float) -> bool:
    """Whether the kept server at ``url`` is gone within ``timeout_s`` (:func:`kept_server_runs`)."""
    deadline = time.monotonic() + timeout_s
    while kept_server_runs(url, jobs_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(HEALTH_POLL_S)
    return True


def not_the_kept_server(pid: int | None, jobs_dir: Path) -> str | None:
    """Why process ``pid`` cannot be proved to be the kept server of ``jobs_dir``; None when it is: its
    command line runs the vibe-mocap program's ``serve`` on that jobs folder (which only the server
    launched in that instance folder does: a Blender launches servers only in a folder it holds). Only
    Linux shows another process's command line (/proc); elsewhere nothing proves it."""
    if pid is None:
        return "its record, made by an earlier version, does not name its process"
    if not Path("/proc/self/cmdline").is_file():
        return "this system does not show which program a process runs"
    try:
        args = [os.fsdecode(arg) for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if arg]
    except OSError:
        return f"process {pid}, which its record names, is no longer running"
    if "serve" not in args or not any(Path(a).name.startswith(PROGRAM_NAME) for a in args[: args.index("serve")]):
        return f"process {pid}, which its record names, is not a 'vibe-mocap serve'"
    try:
        serves_that_folder = os.path.samefile(args[args.index("--jobs-dir") + 1], jobs_dir)
    except (ValueError, IndexError, OSError):
        serves_that_folder = False
    if not serves_that_folder:
        return f"process {pid}, which its record names, serves another jobs folder than '{jobs_dir}'"
    return None


def _end_kept_process(pid: int | None, url: str, jobs_dir: Path, *, asked: bool) -> tuple[str, str | None]:
    """End the kept server's process ``pid``: SIGTERM (unless it was ``asked`` to stop already, over
    HTTP), then SIGKILL when it is not gone within GRACEFUL_STOP_S; each signal only while the process
    is still proved to be that server (:func:`not_the_kept_server`). -> (what ended it, None) once it
    is gone: "itself" (before any signal), "SIGTERM" or "SIGKILL"; else ("", why it cannot be ended).
    A process gone after a signal was sent was ended by that signal, also when it is no longer there
    to be proved."""
    ended_by = "itself"
    for name in ("SIGTERM", "SIGKILL")[1 if asked else 0 :]:
        problem = not_the_kept_server(pid, jobs_dir)
        if problem is not None:
            if not kept_server_runs(url, jobs_dir):  # it ended meanwhile
                return ended_by, None
            return "", problem
        try:
            os.kill(pid, getattr(signal, name))  # (by name: Windows has no SIGKILL, nor gets this far)
        except ProcessLookupError:  # it ended between the proof and the signal
            return ended_by, None
        except OSError as err:
            return "", f"process {pid} cannot be ended ({err.strerror or err})"
        ended_by = name
        if _gone_within(url, jobs_dir, GRACEFUL_STOP_S if name == "SIGTERM" else KILLED_WAIT_S):
            return ended_by, None
    return "", f"process {pid} still runs after it was killed"


def got_no_answer(err: VibeError) -> bool:
    """Whether a request's VibeError means no answer came through (a timeout, a refused, reset or
    closed connection), as opposed to an answer that was refused (an HTTP error, a bad body, a failed
    proof). The client raises it while handling the socket's error, which stays its context, or as
    AnswerTooSlow when an answer was cut off at its time limit."""
    return isinstance(err, AnswerTooSlow) or isinstance(err.__context__, (TimeoutError, ConnectionError))


@dataclass(frozen=True)
class ServerStatus:
    state: ServerState
    url: str = ""
    message: str = ""
    log_tail: tuple[str, ...] = ()
    model: str = ""  # what /health says the server runs
    elapsed_s: float = 0.0
    # the record of a kept server that made the start fail (KeptServerBusy): Stop Server ends that server
    blocking_record: Path | None = None

    @property
    def running(self) -> bool:
        return self.state in ("starting", "ready")


@dataclass
class LocalServer:
    """One ``vibe-mocap serve`` process started by the add-on.

    log_dir: the add-on's server folder, holding the folder of this Blender's server (``instance-N``:
    its jobs, ``server.log`` and the record of a server kept running, see
    :func:`claim_instance_folder`);
    synthetic: serve the labelled placeholder model when the model data is missing, so that Capture
    works before the data is installed;
    stop_with_parent: the server stops when this process exits (off: it may be kept running, see
    :meth:`keep_for_next_session`; read at each start).
    """

    log_dir: Path
    synthetic: bool = True
    stop_with_parent: bool = True
    serve_args: tuple[str, ...] = ()  # more `vibe-mocap serve` options (tools and tests; the add-on adds none)
    start_timeout_s: float = START_TIMEOUT_S
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    _status: ServerStatus = field(default_factory=lambda: ServerStatus("stopped"))
    _process: subprocess.Popen | None = None
    _stopping: bool = False
    _generation: int = 0  # of the latest start: a worker of an earlier start launches nothing
    _stops: int = 0  # stops begun: a restart starts again only when no other stop came meanwhile
    _closed: bool = False  # the add-on is disabled or Blender quits: nothing starts any more (close)
    _kept: bool = False  # the server is one an earlier session kept running (no process handle)
    _lock: threading.RLock = field(default_factory=threading.RLock)  # stop() sets its state under it
    _ready: threading.Event = field(default_factory=threading.Event)
    _instance: Path | None = None  # this Blender's folder in log_dir, claimed at the first launch
    _instance_fd: int | None = None  # its lock, held until Blender exits
    _instance_lock: threading.Lock = field(default_factory=threading.Lock)  # one claim at a time
    _kept_folder: Path | None = None  # the folder of the kept server used, locked while it is used ...
    _kept_fd: int | None = None  # ... by this descriptor

    @property
    def log_path(self) -> Path:
        """The log of the server this add-on launched (in its own folder: see :func:`claim_instance_folder`)."""
        return (self._instance or Path(self.log_dir)) / "server.log"

    @property
    def jobs_dir(self) -> Path | None:
        """The jobs folder of the server this add-on launches (None before the first launch)."""
        return self._instance / "jobs" if self._instance else None

    def snapshot(self) -> ServerStatus:
        with self._lock:
            return self._status

    def _set(self, **changes) -> None:
        with self._lock:
            self._status = ServerStatus(**{**self._status.__dict__, **changes})

    def _set_if_current(self, generation: int, **changes) -> bool:
        """:meth:`_set`, only while the start ``generation`` still counts (checked under the same lock)."""
        with self._lock:
            if self._stopping or generation != self._generation:
                return False
            self._status = ServerStatus(**{**self._status.__dict__, **changes})
            return True

    def start(self, program: Path | Callable[[], Path], *, port: int = 0, data_dir: str = "") -> None:
        """Start the server in the background (returns at once, already "starting"); follow it with
        :meth:`snapshot`. A server an earlier session kept running is used again when it proves it
        holds its token. program: the vibe-mocap program, or a function that finds it (it runs in the
        background too, as finding runs the program once)."""
        pick_port, port = not port, port or free_port()
        url = f"http://127.0.0.1:{port}"
        with self._lock:  # checked and begun at once: two starts at the same moment launch one server
            if self._closed:
                raise VibeError("The add-on was disabled; enable it again to start the server.")
            state = self._status.state
            if state in ("starting", "ready"):
                raise VibeError("The local server is already running; stop it first.")
            if state == "stopping":
                raise VibeError("The local server is still stopping; start it again in a moment.")
            self._generation += 1
            generation = self._generation
            self._stopping, self._process, self._kept = False, None, False
            self.token = secrets.token_urlsafe(32)  # a token seen by an earlier server opens nothing now
            self._ready.clear()
            self._set(
                state="starting",
                url=url,
                message="Starting the server…",
                log_tail=(),
                model="",
                elapsed_s=0.0,
                blocking_record=None,
            )
        threading.Thread(
            target=self._work,
            args=(program, port, pick_port, data_dir, generation),
            daemon=True,
            name="vibe-local-server",
        ).start()

    def start_unless_running(self, program: Path | Callable[[], Path], *, data_dir: str = "") -> None:
        """:meth:`start`, unless the server starts or runs already (a capture, a live session and Start
        Server at the same moment launch one server); a stop under way (a restart's) is waited for
        first, STOPPING_WAIT_S at most. Blocks while it waits: worker threads only."""
        deadline = time.monotonic() + STOPPING_WAIT_S
        while True:
            with self._lock:
                state = self._status.state
                if state in ("starting", "ready"):
                    return
                if state != "stopping":
                    self.start(program, data_dir=data_dir)
                    return
            if time.monotonic() > deadline:
                raise VibeError("The local server is still stopping; try again in a moment.")
            time.sleep(HEALTH_POLL_S)

    def wait_ready(self, timeout_s: float | None = None) -> ServerStatus:
        """Block until the server answers or failed (for worker threads and tests, never the UI)."""
        self._ready.wait(timeout_s)
        return self.snapshot()

    def close(self) -> None:
        """The add-on is disabled or Blender quits: no start any more (a capture still connecting, a
        restart under way) until :meth:`reopen`. Does not stop the server: :meth:`stop` does."""
        with self._lock:
            self._closed = True

    def reopen(self) -> None:
        """The add-on is enabled again: starts are allowed."""
        with self._lock:
            self._closed = False

    def stop(self, timeout_s: float | None = None, *, of_start: int | None = None) -> bool:
        """Stop the server (asked to stop, then killed after ``timeout_s``, by default its whole
        graceful stop, GRACEFUL_STOP_S: :func:`_end_process`; a kept one is asked over HTTP); safe to
        call at any time, also while it is starting (nothing is launched or used after it). Blocks: the
        UI calls :meth:`stop_in_background`; Blender quitting waits QUICK_STOP_S, and KILLED_WAIT_S
        more for a killed server to be gone (a kept one: two requests of KEPT_SHUTDOWN_REQUEST_S).
        of_start: the :attr:`generation` the caller meant to stop (a background stop): a start made
        since is left alone. Whether the stop went through (False: left alone)."""
        with self._lock:
            if of_start is not None and of_start != self._generation:
                return False
            self._stopping, self._stops = True, self._stops + 1
            generation, process, kept, kept_folder = self._generation, self._process, self._kept, self._kept_folder
            url, token = self._status.url, self.token
        if kept:
            self._shutdown_kept(url, token)
        if process is not None:
            # one launched to outlive Blender has no standard input to close: asked over HTTP instead
            # (where terminating is killing, Windows, it would be killed at once)
            asked = process.stdin is None and process.poll() is None and _asked_to_shut_down(url, token)
            _end_process(process, GRACEFUL_STOP_S if timeout_s is None else timeout_s, asked=asked)
        if kept and kept_folder is not None:
            (kept_folder / KEPT_SERVER_FILE).unlink(missing_ok=True)
        with self._lock:  # held to the end: a start cannot come between the check and the state set
            if self._generation != generation:
                # a quicker stop (the add-on disabled) and a new start came meanwhile: that start's
                # state, record and folder are its own
                return True
            if self._outlives(process):
                (self._instance / KEPT_SERVER_FILE).unlink(missing_ok=True)
            self._release_kept_folder()
            self._set(state="stopped", message="The server is stopped.", blocking_record=None)
            self._ready.set()
        return True

    @property
    def generation(self) -> int:
        """How many starts there were: any start after a moment makes it larger than it was then."""
        with self._lock:
            return self._generation

    def restart_in_background(self, program: Path | Callable[[], Path], *, data_dir: str = "") -> None:
        """:meth:`stop`, then :meth:`start` again (reading the model data as it is now), in a worker
        thread; the state is "stopping" until the new start."""
        with self._lock:  # read here: the thread may run late
            self._stopping, stops, generation = True, self._stops, self._generation
            self._set(state="stopping", message="Restarting the server…")

        def restart():
            # stopped otherwise meanwhile (the add-on disabled, maybe enabled and started again): it stays so
            if not self.stop(of_start=generation) or self._stops != stops + 1:
                return
            try:
                self.start(program, data_dir=data_dir)
            except VibeError:  # started meanwhile (Start Server, a capture): that start reads the data too
                pass

        self._in_background(restart, "vibe-restart-server")

    def stop_in_background(self) -> None:
        """:meth:`stop` in a worker thread; the state is "stopping" until it is done. After a start
        that failed on a kept server that does not answer, :meth:`stop_kept_server` instead."""
        with self._lock:  # the state and the start it stops read here, together: the thread may run late
            status, generation = self._status, self._generation
            if status.state == "failed" and status.blocking_record is not None:
                self._set(state="stopping", message="Stopping the server an earlier Blender session kept running…")
                work = functools.partial(self.stop_kept_server, status.blocking_record, of_start=generation)
            elif status.running:
                self._stopping = True  # the start's worker no longer says "ready"
                self._set(state="stopping", message="Stopping the server…")
                work = functools.partial(self.stop, of_start=generation)
            else:
                return
        self._in_background(work, "vibe-stop-server")

    def _in_background(self, work: Callable[[], object], name: str) -> None:
        """Run a stop or restart in a thread; an unexpected error ends it "failed", saying so (the state
        never stays "stopping", which a capture would wait for and Start refuses)."""

        def run() -> None:
            try:
                work()
            except Exception as err:  # noqa: BLE001  the thread must never die silently
                message = f"Unexpected error in the add-on while stopping the server: {err!r}. Please report it."
                self._set(state="failed", message=message, log_tail=self.log_tail())
                self._ready.set()

        threading.Thread(target=run, daemon=True, name=name).start()

    def _current(self, generation: int) -> bool:
        """Whether the start ``generation`` is still the one that counts (not stopped, not replaced)."""
        with self._lock:
            return not self._stopping and generation == self._generation

    # -- a server kept running for the next session ----------------------------------------------
    @property
    def kept_path(self) -> Path | None:
        """The record of the kept server this Blender uses, else of the server it launches (None
        before either)."""
        folder = self._kept_folder or self._instance
        return folder / KEPT_SERVER_FILE if folder is not None else None

    @staticmethod
    def _outlives(process: subprocess.Popen | None) -> bool:
        """A process launched without --stop-on-stdin-close (it may outlive Blender)."""
        return process is not None and "--stop-on-stdin-close" not in process.args

    def keep_for_next_session(self) -> bool:
        """Blender is quitting and the user keeps the server: True when the running server may stay
        (launched to outlive Blender, its record written when it became ready, or itself a kept
        one); False when there is nothing to keep, or it was launched to stop with Blender."""
        with self._lock:
            process, kept, state = self._process, self._kept, self._status.state
        return state == "ready" and (kept or self._outlives(process))

    def _write_kept_record(self, url: str, generation: int | None = None) -> None:
        """Note the server at ``url``, launched in this Blender's instance folder, for the next
        session; with ``generation``, only while that start still counts (checked under the lock that
        Stop takes first: a server stopped meanwhile is never noted)."""
        with self._lock:
            if generation is not None and (self._stopping or generation != self._generation):
                return
            record = {"url": url, "token": self.token}
            if self._process is not None:  # what Stop Kept Server ends when that server stops answering
                record["pid"] = self._process.pid
            write_private_file(self._instance / KEPT_SERVER_FILE, json.dumps(record).encode())

    def adopt_kept_server(self, generation: int | None = None) -> bool:
        """Use a server an earlier session kept running: the first instance folder holding a valid
        record whose Blender is gone (its lock is free: this Blender then holds it while it uses that
        server) and whose server proves it holds the recorded token. A server whose Blender still
        runs is left to it: this Blender starts a server of its own. A record is removed when it is
        damaged, is in this Blender's own folder (a server it launched, gone since), nothing listens
        at its address, whatever answers there is not that server proving the token, or another
        program holds the port without answering (a timeout, a reset or closed connection); it is
        kept only when a VIBE Mocap server answers there but its proof does not come through in time
        (KeptServerBusy: a start then fails, saying so; :meth:`stop_kept_server` can end that
        server). Blocks (requests of a few seconds per record, each answer within its time limit): worker
        threads only."""
        for n in range(1, MAX_INSTANCES + 1):
            folder = Path(self.log_dir) / INSTANCE_FOLDER.format(n)
            record = folder / KEPT_SERVER_FILE
            if not record.is_file():
                continue
            if folder == self._instance:
                record.unlink(missing_ok=True)
                continue
            fd = _try_lock(folder / INSTANCE_LOCK)
            if fd is None:  # its Blender still runs and uses it
                continue
            adopted = False
            try:
                adopted = self._adopt(folder, fd, generation)
            finally:
                if not adopted:
                    os.close(fd)
            if adopted:
                return True
            with self._lock:
                if self._stopping or (generation is not None and generation != self._generation):
                    return False
        return False

    def _adopt(self, folder: Path, folder_fd: int, generation: int | None) -> bool:
        """:meth:`adopt_kept_server` for the record in ``folder``, once that folder is locked
        (``folder_fd``, kept while the server is used)."""
        record = folder / KEPT_SERVER_FILE
        try:
            raw = record.read_bytes()[:4096]
        except OSError:
            return False
        owner: UrlOwner = "nothing"
        try:
            kept = kept_record_fields(raw)
            url, token = kept.url, kept.token
            owner = url_owner(url)
            if owner == "nothing":
                raise ValueError("nothing listens there any more")
            health = ServerClient(url, token, timeout_s=KEPT_CHECK_TIMEOUT_S).health()  # proves the token first
        except VibeError as err:
            if owner != "vibe" or not got_no_answer(err):  # not that server proving its token
                record.unlink(missing_ok=True)
                return False
            raise KeptServerBusy(
                f"The server an earlier Blender session kept running ({url}) does not answer in time ({err}); "
                "try again in a moment. If it stays like this, press Stop Kept Server (Server & Model Data "
                "panel): it stops that server and forgets it, so that the next start starts a new one.",
                record,
            ) from None
        except ValueError:
            record.unlink(missing_ok=True)  # damaged, or gone: start a new one
            return False
        with self._lock:
            if self._stopping or (generation is not None and generation != self._generation):
                return False  # stopped while it was being checked: it stays as it is, for the next start
            self._kept, self.token, self._kept_folder, self._kept_fd = True, token, folder, folder_fd
            self._status = ServerStatus(
                state="ready",
                url=url,
                message="Using the server an earlier Blender session kept running.",
                model=str(health.get("model", "")),
            )
        self._ready.set()
        return True

    def _watch_kept(self, url: str, generation: int) -> None:
        while True:
            time.sleep(KEPT_WATCH_S)
            if not self._current(generation):
                return
            if url_owner(url) != "vibe":
                with self._lock:  # the check took seconds: a stop or new start since owns the record and folder
                    if not self._current(generation):
                        return
                    self.kept_path.unlink(missing_ok=True)
                    self._release_kept_folder()
                    stopped = "The server kept from an earlier session stopped; start it again."
                    self._set(state="exited", message=stopped)
                return

    def _release_kept_folder(self) -> None:
        """Let go of the kept server's folder (this Blender no longer uses that server)."""
        with self._lock:
            fd, self._kept_fd, self._kept_folder = self._kept_fd, None, None
        if fd is not None:
            os.close(fd)

    @staticmethod
    def _shutdown_kept(url: str, token: str) -> None:
        _asked_to_shut_down(url, token)

    def stop_kept_server(self, record: Path, of_start: int | None = None) -> None:
        """End the server whose record ``record`` made a start fail (KeptServerBusy: an earlier session
        kept it running, and it does not answer in time) and remove that record, so that the next start
        starts a new server. The server is asked to shut down with the record's token; when it does not
        stop, its process is ended if it provably is that server (:func:`not_the_kept_server`), never
        another process. The state then says what was done: "stopped", or "failed" when the server may
        still run (the record is removed all the same: the next start starts a server beside it). A
        server that another Blender uses by now is left to it, record and all. Blocks (up to about
        a minute: the shutdown request, the server's graceful stop, a kill): the UI calls
        :meth:`stop_in_background` (``of_start``: the :attr:`generation` then)."""
        generation = self.generation if of_start is None else of_start
        folder_fd = _try_lock(record.parent / INSTANCE_LOCK)
        if folder_fd is None:
            message = (
                "Another Blender session uses the server an earlier session kept running, so it is left running; "
                "Start Server starts a server of this Blender's own."
            )
            self._set_unless_started_since(generation, state="stopped", message=message, blocking_record=None)
            return
        try:
            stopped, message = self._end_kept_server(record)
            record.unlink(missing_ok=True)
        finally:
            os.close(folder_fd)
        state = "stopped" if stopped else "failed"
        self._set_unless_started_since(generation, state=state, message=message, blocking_record=None)

    def _set_unless_started_since(self, generation: int, **changes) -> None:
        """:meth:`_set` with an empty log tail, unless a start came after ``generation`` (that start's
        state stands: this work took long, and the add-on may have been disabled and enabled)."""
        with self._lock:
            if generation == self._generation:
                self._set(log_tail=(), **changes)

    @staticmethod
    def _end_kept_server(record: Path) -> tuple[bool, str]:
        """:meth:`stop_kept_server`'s work, once the record's folder is held: (stopped, what was done)."""
        jobs_dir = record.parent / "jobs"
        kept_server = "The server an earlier Blender session kept running"
        removed = "its record is removed, so Start Server starts a new one"
        try:
            kept = kept_record_fields(record.read_bytes()[:4096])
        except (OSError, ValueError):  # changed since the start read it
            if not _server_runs_in(jobs_dir):
                return True, f"{kept_server} is gone; {removed}."
            return False, (
                f"{kept_server} cannot be stopped here: its record is damaged. The record is removed, so Start "
                f"Server starts a new server beside it; end the 'vibe-mocap serve' that uses '{jobs_dir}' yourself."
            )
        try:
            ServerClient(kept.url, kept.token, timeout_s=KEPT_SHUTDOWN_TIMEOUT_S).shutdown()
        except VibeError:
            accepted = False  # no answer, or not from that server: ended below when it provably is that server
        else:
            accepted = True
            if _gone_within(kept.url, jobs_dir, GRACEFUL_STOP_S):
                return True, f"{kept_server} stopped when asked; {removed}."
        if not kept_server_runs(kept.url, jobs_dir):
            return True, f"{kept_server} has stopped; {removed}."
        ended_by, problem = _end_kept_process(kept.pid, kept.url, jobs_dir, asked=accepted)
        late = f"{GRACEFUL_STOP_S:.0f} s"
        what = f"accepted the request to stop but had not stopped {late} later" if accepted else "did not answer"
        if problem is None:
            return True, {
                "itself": f"{kept_server} has stopped; {removed}.",
                "SIGTERM": f"{kept_server} did not answer, so its process ({kept.pid}) was ended (SIGTERM); {removed}.",
                "SIGKILL": f"{kept_server} {what}{'' if accepted else f', nor stop within {late} of SIGTERM'}, so its "
                f"process ({kept.pid}) was killed; {removed}.",
            }[ended_by]
        process = f" (process {kept.pid})" if kept.pid is not None else ""
        return False, (
            f"{kept_server} ({kept.url}) {what}, and the add-on cannot end it: {problem}. Its record is "
            f"removed, so Start Server starts a new server beside it; end that 'vibe-mocap serve'{process} yourself "
            "to free the memory it holds."
        )

    # -- the worker thread -------------------------------------------------------------------
    def _work(self, program, port: int, pick_port: bool, data_dir: str, generation: int) -> None:
        """The worker thread: :meth:`_launch_and_watch`, whose unexpected error ends the start saying
        so (a start never stays "starting" with nobody working on it)."""
        try:
            self._launch_and_watch(program, port, pick_port, data_dir, generation)
        except Exception as err:  # noqa: BLE001  the thread must never die silently
            message = f"Unexpected error in the add-on while running the server: {err!r}. Please report it."
            if self._set_if_current(generation, state="failed", message=message, log_tail=self.log_tail()):
                self._ready.set()

    def _launch_and_watch(
        self, program: Path | Callable[[], Path], port: int, pick_port: bool, data_dir: str, generation: int
    ) -> None:
        t0 = time.monotonic()
        try:
            if self.adopt_kept_server(generation):
                self._watch_kept(self.snapshot().url, generation)
                return
        except KeptServerBusy as err:
            if self._set_if_current(
                generation, state="failed", message=str(err), log_tail=(), blocking_record=err.record
            ):
                self._ready.set()
            return
        if not self._current(generation):  # stopped while a kept server was checked
            return
        try:
            program = program() if callable(program) else program
        except VibeError as err:  # no program: a failed start that says why
            if self._set_if_current(generation, state="failed", message=str(err), log_tail=()):
                self._ready.set()
            return
        try:
            with self._instance_lock:
                if self._instance is None:
                    self._instance, self._instance_fd = claim_instance_folder(Path(self.log_dir))
        except VibeError as err:
            if self._set_if_current(generation, state="failed", message=str(err), log_tail=()):
                self._ready.set()
            return
        ports = [port]
        while True:  # a port picked here may be taken before the server binds it: then once more, on another
            url = f"http://127.0.0.1:{ports[-1]}"
            process = self._launch(self._command(program, ports[-1], data_dir), t0, generation)
            if process is None:
                return
            outcome = self._wait_for_health(url, t0, process, generation)
            if outcome != "port taken":
                break
            if not pick_port or len(ports) == 2:
                taken = (
                    f"Ports {ports[0]} and {ports[1]}, each free when picked, were taken by other programs "
                    "before the server could use them; start the server again."
                    if len(ports) == 2
                    else f"Port {ports[0]} is taken by another program; stop that program or let the add-on "
                    "pick a free port."
                )
                self._fail(taken, t0, generation)
                return
            ports.append(free_port())
            if not self._set_if_current(generation, url=f"http://127.0.0.1:{ports[-1]}"):
                return
        if outcome != "ready":
            return
        if self._outlives(process):  # noted now: a crash of Blender leaves it findable too
            self._write_kept_record(url, generation)
        code = process.wait()
        self._set_if_current(
            generation,
            state="exited",
            message=f"The server stopped unexpectedly (exit code {code}). Its last lines are below; start it again.",
            log_tail=self.log_tail(),
            elapsed_s=time.monotonic() - t0,
        )

    def _command(self, program: Path, port: int, data_dir: str) -> list[str]:
        command = [str(program), "serve", "--host", "127.0.0.1", "--port", str(port), "--jobs-dir", str(self.jobs_dir)]
        command.append("--cancel-unfinished-jobs")  # a capture ends when its server stops: nobody follows its job
        if data_dir:
            command += ["--data-dir", str(data_dir)]
        if self.synthetic:
            command.append("--synthetic")
        if self.stop_with_parent:
            command.append("--stop-on-stdin-close")
        return command + list(self.serve_args)

    def _launch(self, command: list[str], t0: float, generation: int) -> subprocess.Popen | None:
        """The server process, its output in the log (started afresh); None when the start was stopped
        meanwhile or the program could not be run (then the start failed, saying why)."""
        env = program_env(**{TOKEN_ENV_VAR: self.token})
        # the system closes this pipe when Blender exits or crashes: the server's sign to stop
        stdin = subprocess.PIPE if self.stop_with_parent else subprocess.DEVNULL
        try:
            with self._lock:
                if not self._current(generation):  # stopped while finding the program: its log is another's
                    return None
                with open(self.log_path, "wb") as log:
                    self._process = subprocess.Popen(
                        command, stdout=log, stderr=subprocess.STDOUT, stdin=stdin, env=env
                    )
                return self._process
        except OSError as err:
            self._fail(f"The server program could not be started ({err.strerror}).", t0, generation)
            return None

    def _wait_for_health(
        self, url: str, t0: float, process: subprocess.Popen, generation: int
    ) -> Literal["ready", "port taken", "failed"]:
        """Poll /health until the server answers ("ready"), exits ("port taken" when its exit status
        says another program holds its port: the caller says so; else "failed", said here), takes too
        long ("failed"), or answers in a way the add-on refuses ("failed" with that reason: an older
        server, another API version, a program that ignores the token it was given), polled only while
        nothing answers."""
        client = ServerClient(url, self.token, timeout_s=2.0)
        while self._current(generation):
            code = process.poll()
            if code is not None:
                tail = self.log_tail()
                if code == PORT_TAKEN_EXIT_STATUS or any(
                    words in line.lower() for line in tail for words in OLD_PORT_TAKEN_WORDS
                ):
                    return "port taken"
                self._fail(f"The server exited while starting (exit code {code}).", t0, generation)
                return "failed"
            try:
                health = client.health()
            except VibeError as err:
                if not (isinstance(err, ServerUnreachable) or got_no_answer(err)):  # an answer, refused
                    if _exited_within(process, REFUSED_ANSWER_WAIT_S):
                        continue  # another program answered on its port, which it then found taken
                    _end_process(process, QUICK_STOP_S)
                    self._fail(str(err), t0, generation)
                    return "failed"
                health = None
            if health is not None:
                model, elapsed_s = str(health.get("model", "")), time.monotonic() - t0
                if not self._set_if_current(
                    generation, state="ready", message="The server is running.", model=model, elapsed_s=elapsed_s
                ):
                    return "failed"
                self._ready.set()
                return "ready"
            if time.monotonic() - t0 > self.start_timeout_s:
                _end_process(process, QUICK_STOP_S)  # without publishing "stopped": the waiter must see why it failed
                self._fail(f"The server did not answer within {self.start_timeout_s:.0f} s.", t0, generation)
                return "failed"
            self._set_if_current(generation, elapsed_s=time.monotonic() - t0)
            time.sleep(HEALTH_POLL_S)
        return "failed"

    def _fail(self, message: str, t0: float, generation: int) -> None:
        """The start ``generation`` failed: say why, with the log's last lines, then wake the waiters
        (a start stopped or replaced meanwhile has said what it has to say)."""
        if self._set_if_current(
            generation,
            state="failed",
            message=message + " Last lines of its log are below.",
            log_tail=self.log_tail(),
            elapsed_s=time.monotonic() - t0,
        ):
            self._ready.set()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> tuple[str, ...]:
        """The last lines of the server's log (at most 64 KiB read)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ()
        return tuple(deque((line for line in text.splitlines() if line.strip()), maxlen=lines))


def _asked_to_shut_down(url: str, token: str) -> bool:
    """Whether the server at ``url`` accepted ``POST /shutdown`` (False: gone, or no answer in time)."""
    try:
        ServerClient(url, token, timeout_s=KEPT_SHUTDOWN_REQUEST_S).shutdown()
    except VibeError:
        return False
    return True


def _end_process(process: subprocess.Popen, timeout_s: float, *, asked: bool = False) -> None:
    """Stop ``process``, killed when it still runs ``timeout_s`` after it was asked (then waited
    KILLED_WAIT_S more). It is asked by closing its standard input first: the add-on's server
    (``--stop-on-stdin-close``) begins its graceful stop on that on every platform, where Windows has
    no signal to ask with (``terminate()`` is TerminateProcess, already a kill: a process without that
    pipe is killed at once there, unless ``asked`` otherwise: over HTTP). On POSIX it is also sent
    SIGTERM, STDIN_STOP_S later (at once when not asked): the stop of a server not yet watching its
    input, harmless to one stopping."""
    deadline = time.monotonic() + timeout_s
    asked = asked or process.stdin is not None
    if process.stdin is not None:
        try:
            process.stdin.close()
        except OSError:  # the pipe is broken: the process is gone or going
            pass
    if process.poll() is not None:
        return
    if not TERMINATE_IS_KILL:
        if asked and _exited_within(process, min(STDIN_STOP_S, timeout_s)):
            return
        process.terminate()
        asked = True
    if not (asked and _exited_within(process, deadline - time.monotonic())):
        process.kill()
        _exited_within(process, KILLED_WAIT_S)


def _exited_within(process: subprocess.Popen, timeout_s: float) -> bool:
    try:
        process.wait(max(0.0, timeout_s))
    except subprocess.TimeoutExpired:
        return False
    return True


def same_local_server(url: str, other: str) -> bool:
    """Whether two server URLs reach the same server on this machine (127.0.0.1 and localhost alike,
    by port)."""
    return (
        is_loopback_url(url)
        and is_loopback_url(other)
        and _port(urllib.parse.urlparse(url)) == _port(urllib.parse.urlparse(other))
    )


def _holds_users_token(url: str, token: str) -> bool:
    """Whether the VIBE server at ``url`` proves it holds the user's token (/health is public: any
    program can answer it like one). False for another account's server (on the default port, while
    the add-on's own runs on another), a program posing as one, and any server when the user has no
    token at all (the add-on's own server writes no token file)."""
    try:
        ServerClient(url, token, timeout_s=PROOF_TIMEOUT_S).health()
    except (NoAccessToken, ServerProofError):
        return False
    return True


def connect_or_start(
    url: str, token: str, server: LocalServer, find: Callable[[], ServerProgram], *, data_dir: str = ""
) -> tuple[str, str]:
    """The (url, token) to send a capture to. A VIBE server answering at ``url`` (the preferences')
    is used first once it proves it holds the user's ``token`` (typed, else ``$VIBE_MOCAP_TOKEN`` or
    the token file); else the add-on's own server when it runs; when nothing answers at a loopback
    ``url``, or only a server that is not the user's (another account's, or any when the user has no
    token), the add-on's server is started on a free port (with the model data in ``data_dir``, the
    preferences' folder) and waited for. Blocks: call it from a worker thread."""
    status = server.snapshot()
    own = status.state == "ready"
    if own and same_local_server(url, status.url):
        return status.url, server.token  # the add-on's server is the one at that URL: its own token
    owner = url_owner(url)
    if owner == "vibe" and not (own or is_loopback_url(url)):
        return url, token  # another machine's, with no server to fall back on: the capture's proof says why
    if owner == "vibe" and _holds_users_token(url, token):
        return url, token
    if own:  # (another program at the URL does not keep the add-on's server from being used)
        return status.url, server.token
    if owner == "other":
        raise VibeError(
            f"Another program answers at {url}; it is not a VIBE Mocap server. Change the "
            "server URL in the add-on preferences, or stop that program."
        )
    if not is_loopback_url(url):
        raise VibeError(
            f"No VIBE Mocap server answers at {url}. The add-on starts a server only on this "
            "machine: start it on that computer, or set a 127.0.0.1 URL."
        )
    server.start_unless_running(lambda: find().path, data_dir=data_dir)
    status = server.wait_ready(server.start_timeout_s + 5)
    if status.state != "ready":
        raise VibeError(status.message + ("\n" + "\n".join(status.log_tail) if status.log_tail else ""))
    return status.url, server.token


# ---------------------------------------------------------------------------------------------
# Model data, through the program's own commands


@dataclass(frozen=True)
class ModelFileState:
    name: str
    status: str  # "present" | "missing" | "invalid"
    detail: str


def model_data_report(
    program: Path, *, data_dir: str = "", timeout_s: float = 120.0
) -> tuple[str, list[ModelFileState]]:
    """``vibe-mocap data check --json`` -> (data folder, one state per file)."""
    command = [str(program), "data", "check", "--json"] + (["--data-dir", data_dir] if data_dir else [])
    try:
        done = run_program(command, timeout_s)
        report = safe_json.loads(done.stdout[-1_000_000:])
        files = [ModelFileState(str(f["name"]), str(f["status"]), str(f.get("detail", ""))) for f in report["files"]]
        return str(report["data_dir"]), files
    except subprocess.TimeoutExpired:
        raise VibeError(f"Checking the model data took over {timeout_s:.0f} s; try again.") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise VibeError(f"The model data could not be checked with '{program}' ({err}).") from None


@dataclass
class ModelDataInstall:
    """``vibe-mocap data install SOURCE`` in the background; ``lines`` is its output so far."""

    program: Path | Callable[[], Path]  # or a function that finds it (run in the background)
    source: str
    data_dir: str = ""
    lines: deque = field(default_factory=lambda: deque(maxlen=200))
    # the command's: 0 installed, 1 installed but the check still misses files, 2 (INSTALL_FAILED) failed
    returncode: int | None = None
    _thread: threading.Thread | None = None

    def start(self) -> ModelDataInstall:
        self._thread = threading.Thread(target=self._install, daemon=True, name="vibe-data-install")
        self._thread.start()
        return self

    @property
    def finished(self) -> bool:
        return self.returncode is not None

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _install(self) -> None:
        try:
            program = self.program() if callable(self.program) else self.program
        except VibeError as err:  # no program: the install fails saying why
            self.lines.append(str(err))
            self.returncode = INSTALL_FAILED
            return
        command = [str(program), "data", "install", self.source]
        if self.data_dir:
            command += ["--data-dir", self.data_dir]
        try:
            with subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                encoding="utf-8",
                errors="replace",
                stdin=subprocess.DEVNULL,
                env=program_env(),
            ) as process:
                for line in process.stdout:
                    self.lines.append(line.rstrip()[:500])
                self.returncode = process.wait()
        except OSError as err:
            self.lines.append(f"error: the install could not be started ({err.strerror})")
            self.returncode = -1
        finally:
            if self.returncode is None:  # never "installing" for the rest of the session
                self.returncode = INSTALL_FAILED

"""``vibe-mocap serve``: the HTTP job server for the Blender add-on (see docs/server.md)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import socket
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from vibe_blender.core.errors import VibeError
from vibe_blender.core.output_paths import check_output_folder
from vibe_blender.core.serve_exit import PORT_TAKEN_EXIT_STATUS
from vibe_blender.core.server_stop import REQUEST_GRACE_S
from vibe_blender.core.user_dirs import TOKEN_ENV_VAR, ensure_token, token_path

from ..api.settings import DEFAULT_PORT, Settings, check_port, check_upload_limits, default_jobs_dir
from ..folder_lock import folder_lock
from ..value_range import POSITIVE
from .shared_arguments import add_data_dir_argument, add_device_argument

# after Ctrl-C, SIGTERM, POST /shutdown or the end of standard input, requests still running get this
# long (a stalled client cannot keep the server alive; a second Ctrl-C cuts them off at once); the job
# workers then get their own JOB_STOP_S (the add-on waits for both: vibe_blender/core/server_stop.py)
GRACEFUL_SHUTDOWN_S = REQUEST_GRACE_S
INTERRUPTED_EXIT_STATUS = 130  # as a program ended by Ctrl-C: 128 + SIGINT
SERVER_LOCK_NAME = ".server.lock"  # in the jobs folder: one server per jobs folder
# the limit on open files asked for where the hard limit is none (macOS: OPEN_MAX, the most it grants)
OPEN_FILES_WITHOUT_HARD_LIMIT = 10240
# /health's proof is an HMAC under the token that any client may ask for and guess the token against
# offline, as fast as its own hardware goes: a token needs 128 random bits, 22 characters of base64
MIN_TOKEN_CHARS = 22
MAKE_TOKEN_COMMAND = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
# the limits checked as the user typed them (Settings names them in bytes)
POSITIVE_FLAGS = (
    "max_upload_mb",
    "max_queued_jobs",
    "max_queued_upload_mb",
    "probe_timeout_s",
    "keep_finished_days",
    "keep_finished_jobs",
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..api.jobs import JobManager


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the inference server for the Blender add-on",
        description="Serve the HTTP job API. Binds 127.0.0.1 by default. Every client sends the "
        f"server's token: --token, else ${TOKEN_ENV_VAR}, else the token file in the "
        "user's config folder (made on first start, readable by this user only; "
        "the add-on reads it from there).",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument(
        "--token",
        help=f"the token clients must send, at least {MIN_TOKEN_CHARS} random characters (visible to every "
        f"account in 'ps': prefer ${TOKEN_ENV_VAR} or the token file, the default)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name clients use for this server in the Host header (repeatable)",
    )
    add_data_dir_argument(p)
    p.add_argument(
        "--jobs-dir", default=str(default_jobs_dir()), help="where uploads and results are kept (default: %(default)s)"
    )
    add_device_argument(p, help="auto or cuda (a job worker per visible GPU, else one on the CPU), cpu or cuda:N")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="auto (default): fp16 on CUDA, bf16 on a CPU with AVX512-BF16 or AMX, else fp32; "
        "a job with params {\"official\": true} always runs in fp32",
    )
    p.add_argument("--fast", action="store_true", help="bf16 (CPU) / fp16 (CUDA) even where auto chooses fp32")
    defaults = Settings()
    p.add_argument(
        "--max-upload-mb",
        type=int,
        default=defaults.max_upload_bytes // 1024**2,
        help="largest accepted upload (default %(default)s MiB)",
    )
    p.add_argument(
        "--max-queued-jobs",
        type=int,
        default=defaults.max_queued_jobs,
        help="jobs queued or running at once; more are refused with 429 (default %(default)s)",
    )
    p.add_argument(
        "--max-queued-upload-mb",
        type=int,
        default=defaults.max_queued_upload_bytes // 1024**2,
        help="disk held by the uploads of unfinished jobs; more is refused with 507 (default %(default)s MiB)",
    )
    p.add_argument(
        "--probe-timeout-s",
        type=float,
        default=defaults.probe_timeout_s,
        help="time to open a submitted video; a slower one is refused with 415 (default %(default)s s)",
    )
    p.add_argument(
        "--keep-finished-days",
        type=float,
        default=defaults.keep_finished_days,
        help="finished jobs and their results are deleted after this many days (default %(default)s)",
    )
    p.add_argument(
        "--keep-finished-jobs",
        type=int,
        default=defaults.keep_finished_jobs,
        help="at most this many finished jobs are kept, the oldest deleted first; the newest 16 are each kept "
        "at least an hour (default %(default)s)",
    )
    p.add_argument(
        "--stop-on-stdin-close",
        action="store_true",
        help="stop when standard input closes (the add-on's server stops with Blender, even when Blender crashes)",
    )
    p.add_argument(
        "--cancel-unfinished-jobs",
        action="store_true",
        help="cancel the jobs the last stop left queued instead of running them again (for a client that does "
        "not follow its jobs across a restart, like the Blender add-on's own server)",
    )
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="when the model data is missing, serve a labelled random-weight placeholder model",
    )
    p.set_defaults(run=run)


def resolve_token(cli_token: str | None) -> tuple[str, str]:
    """(token, where it comes from): --token, else $VIBE_MOCAP_TOKEN, else the token file (made
    when absent). VibeError for a token shorter than MIN_TOKEN_CHARS, saying how to replace it."""
    use_the_file = "the token file is used then, made with a random token on the first start"
    if cli_token:
        token, named = cli_token, "--token"
        source = (
            f"--token (other accounts on this machine can read it in 'ps'; prefer ${TOKEN_ENV_VAR} or the token file)"
        )
        remedy = f"Make one with {MAKE_TOKEN_COMMAND}, or leave --token out: {use_the_file}."
    elif os.environ.get(TOKEN_ENV_VAR, "").strip():
        token, source = ensure_token(), f"${TOKEN_ENV_VAR}"
        named, remedy = f"${TOKEN_ENV_VAR}", f"Make one with {MAKE_TOKEN_COMMAND}, or unset it: {use_the_file}."
    else:
        named = f"the token file {token_path()}"
        token, source = ensure_token(), f"{named} (the add-on and other local tools read it there)"
        remedy = "Delete the file and start again: a random one is made."
    if len(token) < MIN_TOKEN_CHARS:
        raise VibeError(
            f"The token from {named} is {len(token)} characters long; a server token needs at least "
            f"{MIN_TOKEN_CHARS} random characters, as any client can ask /health for a proof made with the token "
            f"and guess the token against it offline. {remedy}"
        )
    return token, source


def check_number_flags(args: argparse.Namespace) -> None:
    """VibeError for a --port that is no TCP port, naming the first limit flag that is not a positive
    finite number, or for a --max-upload-mb over --max-queued-upload-mb."""
    check_port(args.port)
    for name in POSITIVE_FLAGS:
        value = getattr(args, name)
        if value not in POSITIVE:
            raise VibeError(f"--{name.replace('_', '-')} must be a positive finite number; got {value:g}.")
    check_upload_limits(args.max_upload_mb * 1024**2, args.max_queued_upload_mb * 1024**2)


def server_url(host: str, port: int) -> str:
    """The API's address for ``host`` (an IPv6 address in brackets)."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/api/v1"


class PortTaken(VibeError):
    """Another program holds the port: ``serve`` exits with PORT_TAKEN_EXIT_STATUS, which the add-on
    reads (it then starts its server on another port) where the message's words are the system's."""

    exit_status = PORT_TAKEN_EXIT_STATUS


# a port in use, as POSIX and Windows number it (Python keeps the Winsock code there: 10048)
PORT_TAKEN_ERRNOS = {errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE)}


def bind_listening_sockets(host: str, port: int) -> list[socket.socket]:
    """The sockets the server listens on, bound now to ``host``:``port``, each address the host
    names as uvicorn's asyncio server binds it: the port is the server's from before the model loads
    (nothing takes it meanwhile), and one it cannot have is said at once. PortTaken when another
    program holds it; VibeError for any other reason (a port below 1024, an address this machine
    lacks)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise VibeError(f"--host {host} is not an address of this machine ({err.strerror}); e.g. 127.0.0.1.") from None
    bound = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):  # each once, as asyncio does
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # a family this machine lacks (IPv6): asyncio's server skips it too
                continue
            bound.append(sock)
            if os.name != "nt":  # as asyncio's server: a port a stopped server left in TIME_WAIT is free
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as err:
                taken = err.errno in PORT_TAKEN_ERRNOS
                raise (PortTaken if taken else VibeError)(
                    f"The server cannot listen on {server_url(host, port)} ({err.strerror or err}): "
                    f"{_BIND_ADVICE.get(err.errno, _BIND_ADVICE[errno.EADDRINUSE])}"
                ) from None
        if not bound:
            raise VibeError(f"--host {host} names no address this machine can listen on; e.g. 127.0.0.1.")
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


_BIND_ADVICE = {
    errno.EADDRINUSE: "another server or program uses that port (connect to it, or stop it), or give this one "
    "another with --port.",
    errno.EACCES: "a port below 1024 needs administrator rights; give one above 1023 with --port.",
    errno.EADDRNOTAVAIL: "the --host address is not one of this machine's; give one it has (e.g. 127.0.0.1).",
}


def run(args: argparse.Namespace) -> int:
    check_number_flags(args)  # before the jobs folder, its lock and the token file are made
    # start-up: uvicorn, FastAPI and torch load only when the server really starts
    from ..api.app import create_app
    from ..api.job_store import prepare_jobs_dir
    from ..data.loading import resolve_device
    from ..pipeline.cpu_features import choose_precision
    from ..pipeline.precision import check_precision

    device = resolve_device(args.device)  # checks it; 'auto'/'cuda' stay: one worker per GPU
    precision = choose_precision(args.precision, fast=args.fast, device=device)
    # the engine's own check (fp16 needs CUDA) now: at load time the server would listen without a model
    check_precision(precision, device)
    token, token_source = resolve_token(args.token)
    settings = Settings(
        host=args.host,
        port=args.port,
        token=token,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        jobs_dir=prepare_jobs_dir(check_output_folder(args.jobs_dir, "the jobs folder")),
        device=args.device if args.device in ("auto", "cuda") else device,
        precision=precision,
        max_upload_bytes=args.max_upload_mb * 1024**2,
        max_queued_jobs=args.max_queued_jobs,
        max_queued_upload_bytes=args.max_queued_upload_mb * 1024**2,
        probe_timeout_s=args.probe_timeout_s,
        keep_finished_days=args.keep_finished_days,
        keep_finished_jobs=args.keep_finished_jobs,
        allow_synthetic=args.synthetic,
        allowed_hosts=tuple(args.allowed_host),
        cancel_unfinished_jobs=args.cancel_unfinished_jobs,
    )
    busy = (
        f"Another VIBE Mocap server uses the jobs folder {settings.jobs_dir}; connect to that one, stop it, "
        "or give this one a folder of its own with --jobs-dir."
    )
    # held before the app reads the folder: each server would mark the other's running jobs failed
    with folder_lock(settings.jobs_dir, SERVER_LOCK_NAME, busy):
        app = create_app(settings)  # validates the settings
        sockets = bind_listening_sockets(args.host, args.port)
        try:
            print(
                f"VIBE Mocap server on {server_url(args.host, args.port)} (jobs in {settings.jobs_dir})\n"
                f"Clients send 'Authorization: Bearer <token>'; the token comes from {token_source}.",
                flush=True,
            )
            return run_app(
                app,
                host=args.host,
                port=args.port,
                stop_on_stdin_close=args.stop_on_stdin_close,
                sockets=sockets,
            )
        finally:
            for sock in sockets:
                sock.close()


def run_app(
    app: FastAPI,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    stop_on_stdin_close: bool = False,
    graceful_shutdown_s: float = GRACEFUL_SHUTDOWN_S,
    sockets: list[socket.socket] | None = None,
) -> int:
    """Serve ``app`` with uvicorn until stopped (Ctrl-C, SIGTERM, POST /shutdown, or with
    ``stop_on_stdin_close`` the end of standard input), then give running requests
    ``graceful_shutdown_s`` (a second Ctrl-C cuts them off) and stop the job workers; print one line
    saying so and return the exit status: 0, or 130 when a second Ctrl-C cut requests off. No proxy
    headers trusted (the client address is the socket's, which the loopback checks rely on), no
    Server or Date header; the limit on open files raised first (:func:`raise_open_files_limit`).
    sockets: bound to ``host``:``port`` already (:func:`bind_listening_sockets`); None: uvicorn binds
    them once the app has started."""
    import uvicorn  # start-up: uvicorn loads only when a server really starts

    from ..api.http_protocol import HeadersDeadlineProtocol  # start-up: these import uvicorn too
    from ..api.uvicorn_server import GracefulServer

    raise_open_files_limit()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=HeadersDeadlineProtocol,
        log_level=log_level,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=graceful_shutdown_s,
    )
    server = GracefulServer(config, on_stop=partial(_begin_jobs_stop, app), sockets=sockets)
    app.state.request_stop = lambda: server.request_stop("POST /shutdown")
    if stop_on_stdin_close and sys.stdin is not None:
        at_end_of_input = partial(server.request_stop, "the end of standard input")
        threading.Thread(target=_stop_at_end_of_input, args=(at_end_of_input,), daemon=True, name="vibe-stdin").start()
    server.run()
    print(_stop_message(server.stop_cause, forced=server.forced, jobs=app.state.jobs), flush=True)
    return INTERRUPTED_EXIT_STATUS if server.forced else 0


def raise_open_files_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit: the usual soft limit (1024 on
    Linux, 256 on macOS) let a few hundred idle connections take every socket the server may open, so
    that no client could connect. Nothing where there is no such limit (Windows)."""
    try:
        import resource  # optional: Windows has none (and no such limit)
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WITHOUT_HARD_LIMIT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):  # a system that grants less keeps the limit it had
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _stop_message(cause: str | None, *, forced: bool, jobs: JobManager | None) -> str:
    """The one line a stopped server prints (``jobs``: None when it stopped before its start-up ended)."""
    if forced:
        line = "VIBE Mocap server stopped at once (Ctrl-C while stopping): requests still running were cut off."
    else:
        line = f"VIBE Mocap server stopped ({cause})." if cause else "VIBE Mocap server stopped."
    unfinished = jobs.queue_length() if jobs is not None else 0
    if unfinished:
        kept = "1 unfinished job is" if unfinished == 1 else f"{unfinished} unfinished jobs are"
        fate = (
            "will be cancelled at the next start (--cancel-unfinished-jobs)"
            if jobs.cancel_unfinished
            else "will run at the next start"
        )
        line += f" {kept} kept and {fate}."
    return line


def _begin_jobs_stop(app: FastAPI) -> None:
    """The stop begins: running jobs are recorded as queued at once (``JobManager.begin_stop``)."""
    jobs = app.state.jobs  # None when the server stopped before its start-up ended
    if jobs is not None:
        jobs.begin_stop()


def _stop_at_end_of_input(request_stop: Callable[[], None]) -> None:
    """The parent holds our standard input open and never writes; when it exits or crashes, the
    system closes it and the read ends."""
    try:
        while sys.stdin.buffer.read(65536):
            pass
    except (OSError, ValueError):  # no usable standard input: the same as its end
        pass
    request_stop()

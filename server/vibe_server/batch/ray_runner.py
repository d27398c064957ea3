"""The batch on a Ray cluster: one actor per GPU (or per CPU slot), each loads its engine once.

A video is submitted only when an actor is free, so at most one video per actor is in flight (inputs
are read lazily; 10 000 inputs cost 10 000 small items, never their bytes). The driver keeps which
video each task was submitted for and checks every reply (the record's fields, the result file)
before it records or writes anything. Actors restart after a crash or a lost node (up to
``MAX_ACTOR_RESTARTS`` times) and the video they were on is retried (``max_task_retries``); its
result path is deterministic and written by rename, and the driver writes one manifest line per
video, so a retry leaves no duplicate. A video whose retries are used up gets a failed record. An
actor gone for good (its restarts used up) takes no more videos, and the one it was running runs on
another actor (up to ``MAX_ACTORS_LOST_PER_VIDEO`` actors lost on one video, then it fails); when
every actor died while loading the model, the batch stops, as the local pool does.

Transfer: ``shared`` (inputs and outputs on a path every node sees, the default) or
``object-store`` (the driver sends each video's bytes and writes each result itself: for small
clips when nodes share no file system). With ``shared``, each actor first checks that it sees OUTDIR
and the first video at the driver's paths (``shared_paths_problem``); an actor that does not gets no
video, since it would compute each one in full and leave its result on its own node's disk.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import signal
import socket
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType

from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import load_result
from vibe_blender.core.shown_text import printable

from ..pipeline.options import RunOptions
from ..pipeline.video import check_video_path, check_video_stat
from .engine_adapter import (
    EngineSpec,
    OutputDiskFull,
    WorkerSetupError,
    died_loading,
    load_worker_engine,
    process_video,
    write_result,
)
from .inputs import BatchItem, check_inside
from .manifest import make_record, record_problem, shared_probe_path
from .progress import BatchProgress

TRANSFERS = ("shared", "object-store")
MAX_TASK_RETRIES = 2  # a video that kills its actor 3 times is marked failed
# An actor's restarts (Ray's count, for its whole life): two such videos, or lost nodes. Finite, so that an
# actor dying while it loads the model (out of memory) is gone after as many tries, and the driver hears of it.
MAX_ACTOR_RESTARTS = 2 * (MAX_TASK_RETRIES + 1)
OBJECT_STORE_MAX_BYTES = 256 << 20  # larger videos must be on a shared path
MAX_ACTORS_LOST_PER_VIDEO = 2  # a video during which this many actors die for good is marked failed
CPUS_PER_CPU_ACTOR = 2
WAIT_STEP_S = 1.0  # the driver looks at its actors' progress this often
PENDING_NOTE_S = 20.0  # no actor started after this long: look why (at most this often), and say so
ERROR_TEXT_CHARS = 300  # of a failed task's error in its record (Ray's own messages run to tracebacks)
CONNECT_TIMEOUT_S = 5.0  # an address that does not answer within this is unreachable
# A Ray head (GCS or Ray Client) speaks gRPC: to HTTP/2's client preface it answers with a SETTINGS frame.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
HTTP2_SETTINGS = 0x04


class VideoActor:
    """Holds one engine; ``process`` runs one video (its path, or its bytes in object-store mode)."""

    def __init__(self, spec: EngineSpec, options: RunOptions) -> None:
        self.options = options
        self.name = f"ray {socket.gethostname()}:{os.getpid()} ({spec.device})"
        try:
            self.engine, self.setup_error = load_worker_engine(spec, options), None
        except Exception as err:  # noqa: BLE001 - a raising constructor kills the actor and hides the reason
            # reported with the first video, then the batch stops
            self.engine, self.setup_error = None, str(err) if isinstance(err, WorkerSetupError) else repr(err)

    def ready(self) -> bool:
        """Answers once the actor has started (its engine loaded, or its setup error kept)."""
        return True

    def check_shared_paths(
        self, probe_path: str, probe_content: bytes, video_path: str | None
    ) -> tuple[str, str | None]:
        """(this node, as Ray names it; why it cannot work on the shared path, or None)."""
        return node_name(), shared_paths_problem(probe_path, probe_content, video_path)

    def process(
        self, item: BatchItem, data: bytearray | None, probe: tuple[str, bytes] | None = None
    ) -> tuple[dict, bytes | None]:
        """probe: (path, content) of the driver's probe file in shared mode, checked again before each
        video: Ray may have restarted this actor on another node since its first check."""
        if self.setup_error is not None:
            return {"setup_error": self.setup_error}, None
        shared = data is None  # shared path: the actor writes the result itself; else the driver does
        problem = shared_paths_problem(*probe, item.input_path) if shared and probe is not None else None
        if problem is not None:  # computed in full, its result would stay on this node's own disk
            return make_record(item, "failed", error=f"Node {node_name()} {problem}.", worker=self.name), None
        try:
            record, result = process_video(
                self.engine, item, self.options, worker=self.name, data=data, write_output=shared
            )
        except OutputDiskFull as err:  # raised, Ray would wrap it in its own traceback
            return {"stop_error": str(err)}, None
        return record, None if shared else result


def node_name() -> str:
    """The node this process runs on: its host name and the address the cluster lists it under."""
    try:
        import ray  # optional extra: this runs in an actor, where Ray is there

        node_id = ray.get_runtime_context().get_node_id()
        [address] = [node["NodeManagerAddress"] for node in ray.nodes() if node.get("NodeID") == node_id]
        return f"{socket.gethostname()} ({address})"
    except Exception:  # noqa: BLE001 - outside Ray, or a Ray that tells it otherwise: the host name alone
        return socket.gethostname()


def shared_paths_problem(probe_path: str, probe_content: bytes, video_path: str | None) -> str | None:
    """Why this node cannot work on the shared path, or None: it must find the probe file the driver wrote
    in OUTDIR at the driver's path with the driver's content, and the video at ``video_path`` (unless None)
    pass the driver's checks of a video (``check_video_path``) here too. It only reads: a missing folder is never
    made here (results written into it would stay on this node's own disk)."""
    output_dir = os.path.dirname(probe_path)
    try:
        with open(probe_path, "rb") as probe:
            found = probe.read(len(probe_content) + 1)
    except OSError as err:
        return f"does not see the output folder '{output_dir}' ({err.strerror or type(err).__name__})"
    if found != probe_content:  # another folder at that path (this node's own disk, another mount)
        return f"does not see the output folder '{output_dir}' (another folder is at that path there)"
    if video_path is None:
        return None
    try:
        check_video_path(video_path, f"'{video_path}'")
    except VibeError as err:
        return f"cannot use the input video at the driver's path: {str(err).rstrip('.')}"
    return None


@contextlib.contextmanager
def shared_probe(output_dir: str | Path) -> Iterator[tuple[str, bytes]]:
    """(path, content) of a small file of random content the driver writes in ``output_dir`` for the actors
    to find (``shared_paths_problem``); deleted after the block, also on Ctrl-C (one a killed run left
    is a leftover the next run deletes)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)  # on the driver only: the folder the batch writes to
    path, content = shared_probe_path(output_dir), secrets.token_hex(16).encode("ascii")
    with open(path, "xb") as probe:
        probe.write(content)
    try:
        yield str(path), content
    finally:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _import_ray():
    try:
        import ray  # optional extra: only --ray needs it
    except ImportError as err:
        raise VibeError(
            "--ray needs Ray, which is not installed: pip install -e '.[ray]' in the VIBE Mocap checkout "
            "(on the driver and on every node of the cluster)."
        ) from err
    return ray


def _actor_layout(ray, device: str) -> tuple[dict, int, str]:
    """(actor resources, number of actors, device inside each actor) from the resources of the cluster's
    live nodes: an actor runs on one node, so it asks for no more CPUs than the largest node has, and
    only as many actors are made as fit on the nodes. VibeError when the cluster has nothing to run an
    actor on (yet: an autoscaler may add nodes)."""
    nodes = [node.get("Resources") or {} for node in ray.nodes() if node.get("Alive")]
    gpus = sum(int(node.get("GPU", 0)) for node in nodes)
    if device != "cpu" and gpus > 0:
        return {"num_gpus": 1}, gpus, "cuda:0"  # Ray shows each actor only its own GPU
    if device.startswith("cuda"):
        raise VibeError(f"Device '{device}' was asked for but the Ray cluster has no GPU; use --device cpu.")
    largest = int(max((node.get("CPU", 0) for node in nodes), default=0))
    if largest < 1:
        total = {name: sum(node.get(name, 0) for node in nodes) for name in ("CPU", "GPU")}
        raise VibeError(
            f"The Ray cluster has no {'CPU' if device == 'cpu' else 'CPU or GPU'} to run the batch on yet (it has "
            f"CPU {total['CPU']:g}, GPU {total['GPU']:g}, and no node with a whole CPU): add worker nodes, or "
            "wait until its autoscaler has started some, or start the head with CPUs ('ray start --head "
            "--num-cpus N'); then run the same command again."
        )
    per_actor = min(CPUS_PER_CPU_ACTOR, largest)
    return {"num_cpus": per_actor}, sum(int(node.get("CPU", 0)) // per_actor for node in nodes), "cpu"


def _needs(resources: dict) -> str:
    """What one actor waits for, in words."""
    if "num_gpus" in resources:
        return "a GPU"
    return f"{resources['num_cpus']} CPU{'s' if resources['num_cpus'] > 1 else ''}"


def _payload(item: BatchItem, transfer: str) -> tuple[bytearray | None, str | None]:
    """(bytes to send, or None for a shared path; an error message when the video cannot be sent). A video
    the driver finds missing, unreadable or no regular file fails here, in the local pool's words: no node
    is to blame for it."""
    try:
        check_video_path(item.input_path, item.input_path)
    except VibeError as err:
        return None, str(err)
    if transfer == "shared":
        return None, None
    try:
        return read_video_bytes(item.input_path, OBJECT_STORE_MAX_BYTES), None
    except VibeError as err:
        return None, str(err)
    except OSError as err:
        return None, f"Cannot read the video ({err}); check the path."


def read_video_bytes(path: str, limit: int) -> bytearray:
    """The bytes of the video file at ``path``; VibeError when what opens there is no regular file (a
    pipe, which would block the driver, or a device such as /dev/zero, which never ends) or holds more
    than ``limit`` bytes, also when it grows while it is read. Memory follows what the file holds: the
    bytes are read into one buffer of the file's size, which is returned as it is (no second copy)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a pipe opens at once, without waiting for a writer
    try:
        status = os.fstat(fd)  # of the file opened, not of one the name led to before
        check_video_stat(status, f"'{path}'")
        size = status.st_size
        if size <= limit:
            data = bytearray(size + 1)  # one byte more: a file that grew while it is read shows
            read = _read_into(fd, data, 0)
            if read > size:  # it grew: read on, up to the limit and one byte (rare: the buffer grows)
                data.extend(bytes(limit + 1 - len(data)))
                read = _read_into(fd, data, read)
            if read <= limit:
                del data[read:]  # shorter, in the same memory
                return data
            size = read
    finally:
        os.close(fd)
    raise VibeError(
        f"The video is {size / 2**20:.0f} MiB or more, more than the object store takes per clip "
        f"({limit >> 20} MiB); put it on a shared path and use --transfer shared."
    )


def _read_into(fd: int, buffer: bytearray, start: int) -> int:
    """Read the file ``fd`` into ``buffer`` from ``start`` until the buffer is full or the file ends;
    returns how many bytes the buffer holds then."""
    with io.FileIO(fd, closefd=False) as file, memoryview(buffer) as view:
        while start < len(view):
            count = file.readinto(view[start:])
            if not count:
                break
            start += count
    return start


def run_ray(
    items: list[BatchItem],
    spec: EngineSpec,
    options: RunOptions,
    *,
    address: str | None,
    transfer: str,
    on_record: Callable[[dict], None],
    progress: BatchProgress,
    output_dir: str | Path,
) -> None:
    """Process ``items`` on the Ray cluster at ``address`` (None: $RAY_ADDRESS, the last cluster started
    on this machine, else a new local one). ``on_record`` gets each finished video's record; results
    the driver writes must lie inside ``output_dir``."""
    if transfer not in TRANSFERS:
        raise VibeError(f"Unknown transfer '{transfer}'; use {' or '.join(TRANSFERS)}.")
    ray = _import_ray()

    address = init_address(address)
    started_here = not ray.is_initialized()
    if started_here:
        try:
            with keeping_the_sigterm_handler():
                ray.init(address=address, include_dashboard=False, logging_level="WARNING")
        except ConnectionError as err:
            raise VibeError(
                f"Cannot reach the Ray cluster at '{address}' ({err}); start it with "
                "'ray start --head' or give its address."
            ) from err
        except Exception as err:  # a Ray or Python version unlike the cluster's, a local cluster that failed to start
            raise VibeError(_init_failed(address, err)) from err
    try:
        resources, count, device = _actor_layout(ray, spec.device)
        count = min(count, len(items))
        if spec.device == "auto" and device == "cpu":
            print(
                f"Note: the Ray cluster has no GPU (yet), so the batch runs on {count} CPU actor(s) of "
                f"{_needs(resources)} each.",
                file=sys.stderr,
            )
        actor_class = ray.remote(VideoActor).options(
            max_restarts=MAX_ACTOR_RESTARTS, max_task_retries=MAX_TASK_RETRIES, **resources
        )
        actor_spec = replace(spec, device=device, threads=resources.get("num_cpus"))
        actors = [actor_class.remote(actor_spec, options) for _ in range(count)]
        _drive(
            ray,
            actors,
            items,
            transfer,
            on_record,
            progress,
            output_dir=output_dir,
            needs=_needs(resources),
            unscheduled=lambda: unscheduled_actors(actors),
        )
    finally:
        if started_here:
            ray.shutdown()


@contextlib.contextmanager
def keeping_the_sigterm_handler() -> Iterator[None]:
    """The SIGTERM handler of before the block set back after it: ``ray.init`` puts in its own (an exit
    with status 1, which reads as a failed video), where the batch's stops the actors and exits with 143
    as documented. Only the main thread can set handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if handler is not None:  # None: set outside Python, which cannot be set back
            signal.signal(signal.SIGTERM, handler)


def init_address(address: str | None) -> str | None:
    """The address for ``ray.init``: ``address`` (else $RAY_ADDRESS), checked to answer; with neither,
    Ray's own choice, the cluster last started on this machine, unless that one is gone without
    'ray stop' (a crash, a reboot): Ray would retry its recorded address for minutes, so a new local
    cluster starts, and a note says why."""
    given = address or os.environ.get("RAY_ADDRESS") or None
    if given is not None:
        check_reachable(given)
        return address
    recorded = last_started_cluster()
    if recorded is None:
        return None
    try:
        check_reachable(recorded)
    except VibeError:
        print(
            f"Note: the Ray cluster last started on this machine ({recorded}) does not answer (it ended without "
            "'ray stop'); starting a new local one.",
            file=sys.stderr,
        )
        return "local"
    return None


def last_started_cluster() -> str | None:
    """The address 'ray start' recorded on this machine, found as Ray finds it when given no address
    (None when there is none, or this Ray version looks elsewhere)."""
    try:
        from ray._private.services import find_bootstrap_address  # Ray's own lookup; private, so guarded
    except ImportError:
        return None
    try:
        return find_bootstrap_address(None) or None
    except Exception:  # noqa: BLE001 - whatever it is, Ray's own ray.init decides then
        return None


def check_reachable(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """VibeError unless the cluster at ``address`` ("HOST:PORT" or "ray://HOST:PORT"; None, "auto"
    and "local" are Ray's to resolve) accepts a connection and answers as a gRPC server does: Ray
    itself would retry for minutes."""
    if address is None or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise VibeError(
            f"'{address}' is not a Ray cluster address: give HOST:PORT (the head node's, e.g. 10.0.0.5:6379), "
            "'auto', or no address to start a cluster on this machine."
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as connection:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return  # a TLS head does not speak cleartext HTTP/2: accepting the connection must do
            connection.settimeout(timeout_s)
            connection.sendall(HTTP2_PREFACE)
            answer = _read_up_to(connection, 9)  # one HTTP/2 frame header
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise VibeError(
            f"Cannot reach the Ray cluster at '{address}' ({reason}); start it with 'ray start --head' "
            "or give its head node's address."
        ) from None
    if len(answer) < 9 or answer[3] != HTTP2_SETTINGS:
        raise VibeError(
            f"'{address}' accepts connections but is not a Ray cluster's head (it does not answer as one); "
            "give the head node's address (the one 'ray start --head' prints, port 6379 by default)."
        )


def _read_up_to(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _drive(
    ray,
    actors: list,
    items: list[BatchItem],
    transfer: str,
    on_record,
    progress: BatchProgress,
    *,
    output_dir,
    needs: str = "its resources",
    unscheduled: Callable[[], int | None] = lambda: None,
) -> None:
    shared = transfer == "shared" and bool(items)
    # shared: the actors answer the shared-path checks before they take videos (SharedPathChecks)
    with shared_probe(output_dir) if shared else contextlib.nullcontext() as probe:
        checks = SharedPathChecks(actors, *probe, video_the_driver_sees(items)) if shared else None
        idle = list(actors) if checks is None else []
        running: dict = {}  # task -> (actor, video): the driver, not the reply, says which video a result is for
        waiting = deque(items)
        pending = Pending(ray, actors, needs, unscheduled)
        died_loading_count = 0
        lost: dict[str, int] = {}  # video key -> actors gone for good while they ran it
        start_error = ""  # why the first actor that never started failed (a module missing on a node, ...)
        checking = {} if checks is None else checks.tasks
        while waiting or running:
            while idle and waiting:  # backpressure: one video per free actor
                item = waiting.popleft()
                data, error = _payload(item, transfer)
                if error is not None:
                    on_record(make_record(item, "failed", error=error))
                    continue
                actor = idle.pop()
                running[actor.process.remote(item, data, checks and checks.probe)] = (actor, item)
            if not running and not (waiting and checking):
                if waiting and died_loading_count == len(actors):
                    raise VibeError(DIED_LOADING)
                if waiting and checks is not None and checks.left_out and not checks.passing:
                    raise checks.none_sees_error()
                if waiting:  # every actor is gone
                    raise VibeError(
                        f"No Ray actor is left to run the remaining {len(waiting)} video(s): they failed to start "
                        f"or died too often{start_error}; check the cluster's logs ('ray logs'), then run the same "
                        "command again to resume."
                    )
                break
            progress.worker_status("ray", pending.status() or f"{len(running)} videos running")
            done, _ = ray.wait(list(checking) + list(running), num_returns=1, timeout=WAIT_STEP_S)
            if not done:
                pending.check()
                continue
            pending.started = True
            [task] = done
            if task in checking:
                actor = checking.pop(task)
                try:
                    if checks.passed(ray.get(task)):
                        idle.append(actor)
                except ray.exceptions.RayActorError as err:  # gone before it took a video: it takes none
                    start_error = start_error or _start_error(err)
                    died_loading_count += not _never_started(err) and pending.died_loading(actor)
                except ray.exceptions.RayError as err:
                    checks.failed(f"could not run the check ({_message_line(err, 0)})")
                if not checking:
                    checks.note_left_out()
                continue
            actor, item = running.pop(task)
            try:
                reply = ray.get(task)
            except ray.exceptions.RayActorError as err:
                init_failed = _never_started(err)
                start_error = start_error or _start_error(err)
                loading = not init_failed and pending.died_loading(actor)
                if init_failed or loading or _gone(ray, err):
                    died_loading_count += loading
                    if not (init_failed or loading):  # it died running this video: maybe of it
                        lost[item.key] = lost.get(item.key, 0) + 1
                    if lost.get(item.key, 0) < MAX_ACTORS_LOST_PER_VIDEO:
                        waiting.appendleft(item)  # another actor runs it
                    else:  # it would use up every actor, and the batch would end with none left
                        on_record(make_record(item, "failed", error=_LOST))
                    continue
                idle.append(actor)  # Ray has restarted it
                on_record(make_record(item, "failed", error=_DIED))
                continue
            except ray.exceptions.RayError as err:  # the task's own failure, its result lost with a node, ...
                idle.append(actor)  # (an actor gone for good fails its next video at once, and that one runs again)
                on_record(make_record(item, "failed", error=_task_failed(err)))
                continue
            if (
                isinstance(reply, tuple)
                and len(reply) == 2
                and isinstance(reply[0], dict)
                and "setup_error" in reply[0]
            ):
                raise VibeError(f"The Ray actors could not load the model: {reply[0]['setup_error']}")
            if isinstance(reply, tuple) and len(reply) == 2 and isinstance(reply[0], dict) and "stop_error" in reply[0]:
                raise OutputDiskFull(str(reply[0]["stop_error"]))
            idle.append(actor)
            on_record(_checked(item, reply, transfer, output_dir))
        if checks is not None:
            checks.note_left_out()  # the videos ran out before every actor answered: those left out so far


def video_the_driver_sees(items: list[BatchItem], looked_at: int = 16) -> str | None:
    """The path of the first of (at most ``looked_at``) ``items`` that is a regular file for the driver now,
    for the actors to check they see it too; None when none is: a video deleted since the batch started
    fails alone, and must not make every node look blind."""
    for item in items[:looked_at]:
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.stat(item.input_path).st_mode):
                return item.input_path
    return None


class SharedPathChecks:
    """The actors' answers to whether they see OUTDIR and the first video at the driver's paths
    (``shared_paths_problem``): ``tasks`` (check task -> actor) until each has answered, ``left_out``
    (node -> why) for those that do not; one note names those, and when no actor sees them the batch
    stops with one error instead of running any video."""

    def __init__(self, actors: list, probe_path: str, probe_content: bytes, video_path: str | None) -> None:
        self.probe = (probe_path, probe_content)  # each video's task checks it again (an actor restarted elsewhere)
        self.tasks = {actor.check_shared_paths.remote(probe_path, probe_content, video_path): actor for actor in actors}
        self.left_out: dict[str, str] = {}  # node -> why its actors take no video (the first actor's answer)
        self.left_out_actors = 0
        self.passing = 0
        self.noted = False

    def passed(self, reply: object) -> bool:
        """Whether the actor that answered ``reply`` may take videos; one that may not is counted out."""
        if isinstance(reply, tuple) and len(reply) == 2 and reply[1] is None:
            self.passing += 1
            return True
        node, problem = reply if isinstance(reply, tuple) and len(reply) == 2 else ("?", f"answered {reply!r}")
        self.failed(printable(str(problem))[:ERROR_TEXT_CHARS], printable(str(node)))
        return False

    def failed(self, problem: str, node: str = "(unknown node)") -> None:
        self.left_out.setdefault(node, problem)
        self.left_out_actors += 1

    def _why(self) -> str:
        """The first node left out and why, then the other such nodes."""
        (node, problem), *others = self.left_out.items()
        return f"node {node} {problem}" + (f" (left out too: {', '.join(n for n, _ in others)})" if others else "")

    def note_left_out(self) -> None:
        """Once, when some actors take videos and others were left out: which nodes, and why."""
        if self.noted or not self.left_out or not self.passing:
            return
        self.noted = True
        print(
            f"Note: {self.left_out_actors} Ray actor(s) are left out, as their node does not see the shared paths: "
            f"{self._why()}. With --transfer shared, mount OUTDIR and the inputs at the same path on every node, or "
            f"use --transfer object-store; the batch runs on the other {self.passing} actor(s).",
            file=sys.stderr,
        )

    def none_sees_error(self) -> VibeError:
        return VibeError(
            f"No Ray actor can work on the shared paths: {self._why()}. With --transfer shared (the default) OUTDIR "
            "and the inputs must be mounted at the same path on every node of the cluster: mount them so, or use "
            "--transfer object-store (the driver sends each video and writes each result). No video was run."
        )


class Pending:
    """Until an actor has started (its ``__init__``, which loads the model, has returned): how long the
    batch has waited, and why once it is long enough to wonder. ``unscheduled()`` says how many actors
    the cluster has not given a process yet (it has no free CPU or GPU for them, and says nothing), or
    None when Ray does not tell; the others are loading the model."""

    def __init__(
        self, ray: ModuleType, actors: list, needs: str, unscheduled: Callable[[], int | None] = lambda: None
    ) -> None:
        self.ray, self.count, self.needs, self.unscheduled = ray, len(actors), needs, unscheduled
        self.pings = [actor.ready.remote() for actor in actors]  # each answers once its actor has started
        self.ping_of = {id(actor): ping for actor, ping in zip(actors, self.pings, strict=True)}
        self.since = time.monotonic()
        self.looked = -PENDING_NOTE_S  # when the actors' state was last looked at (since ``since``)
        self.waiting_for_resources: int | None = None  # actors the cluster has not started, when known
        self.started = False
        self.noted = False

    def check(self) -> None:
        if self.started:
            return
        self.started = bool(self.ray.wait(self.pings, num_returns=1, timeout=0)[0])
        waited = time.monotonic() - self.since
        if self.started or self.noted or waited < PENDING_NOTE_S or waited - self.looked < PENDING_NOTE_S:
            return
        self.looked = waited
        self.waiting_for_resources = self.unscheduled()
        if self.waiting_for_resources == 0:
            return  # every actor is loading the model: nothing to note (yet)
        self.noted = True
        if self.waiting_for_resources is None:
            note = (
                f"none of the {self.count} Ray actor(s) has started and loaded the model after {waited:.0f} s. "
                f"Each needs {self.needs}: the cluster starts an actor once it has that free, and the actor then "
                "loads the model, which can take a while. If this goes on, check 'ray status' (does the cluster "
                f"have {self.needs} free? are nodes joining?)."
            )
        else:
            note = (
                f"{self.waiting_for_resources} of the {self.count} Ray actor(s) still wait for {self.needs} free "
                f"on the cluster after {waited:.0f} s: the cluster starts an actor once it has that free, and "
                "the actor then loads the model. Check 'ray status' (are nodes joining? is the autoscaler "
                "adding some?)."
            )
        print(
            f"Note: {note} The batch goes on when they start; Ctrl-C stops it, and the same command resumes it.",
            file=sys.stderr,
        )

    def died_loading(self, actor: object) -> bool:
        """Whether ``actor``, whose task failed with its death, died for good before it had loaded the
        model: its ping failed too (Ray fails the calls to a dead actor together)."""
        ping = self.ping_of[id(actor)]
        if not self.ray.wait([ping], num_returns=1, timeout=WAIT_STEP_S)[0]:
            return False  # still restarting: Ray may bring it back
        try:
            self.ray.get(ping)
        except self.ray.exceptions.RayActorError:
            return True
        return False

    def status(self) -> str | None:
        if self.started:
            return None
        waited = time.monotonic() - self.since
        if self.waiting_for_resources == 0:
            return f"{self.count} actor(s) loading the model ({waited:.0f} s)"
        if self.waiting_for_resources:
            return (
                f"{self.waiting_for_resources} of {self.count} actor(s) waiting for {self.needs} free on the "
                f"cluster ({waited:.0f} s)"
            )
        return (
            f"waiting for {self.count} actor(s) to start and load the model ({waited:.0f} s; each needs {self.needs})"
        )


def unscheduled_actors(actors: list) -> int | None:
    """How many of ``actors`` have no worker process yet (the cluster has not found the resources they
    ask for), from the cluster's actor table; None when this Ray does not tell (a private API)."""
    try:
        from ray._private import state  # Ray is optional: imported only where a Ray batch runs

        pids = [state.actors(actor._actor_id.hex()).get("Pid") for actor in actors]
    except Exception:  # noqa: BLE001 - whatever a Ray version does here, the batch goes on and says less
        return None
    if any(not isinstance(pid, int) for pid in pids):
        return None
    return sum(1 for pid in pids if pid == 0)


def _gone(ray: ModuleType, err: Exception) -> bool:
    """Whether the actor of a task that failed with ``err`` is dead for good (its restarts used up): Ray
    says so (ActorDiedError) apart from an actor that restarts (ActorUnavailableError) since it has the
    two; before, every such actor is taken to restart."""
    exceptions = ray.exceptions
    return hasattr(exceptions, "ActorUnavailableError") and isinstance(err, getattr(exceptions, "ActorDiedError", ()))


DIED_LOADING = died_loading("Free memory on the cluster's nodes or choose another --device")
_DIED = (
    f"The Ray actor running this video died {MAX_TASK_RETRIES + 1} times (out of memory, a crash in "
    "native code, or lost nodes); check the file plays, or run it alone with 'vibe-mocap infer'."
)


_LOST = (
    f"{MAX_ACTORS_LOST_PER_VIDEO} Ray actors died for good while running this video (out of memory, a crash in "
    "native code, or lost nodes); check the file plays, or run it alone with 'vibe-mocap infer'."
)


def _never_started(err: Exception) -> bool:
    """Whether a RayActorError says the actor's constructor raised: it never started."""
    return getattr(err, "actor_init_failed", False)


def _start_error(err: Exception) -> str:
    """For "No Ray actor is left": why an actor that never started failed, or '' (it did start)."""
    return f" (the first to fail to start: {_message_line(err, -1)})" if _never_started(err) else ""


def _init_failed(address: str | None, err: Exception) -> str:
    """The message for a ``ray.init`` that failed otherwise than by an unreachable address."""
    why = _message_line(err, 0)
    if address in (None, "local"):
        return (
            f"Cannot start a local Ray cluster ({why}); Ray's logs are in its session folder "
            "(/tmp/ray/session_latest/logs): free what it names (disk space in /tmp, a port), or start the "
            "cluster with 'ray start --head' and give its address."
        )
    versions = (
        " The driver and every node need the same versions of Ray and Python." if "version" in str(err).lower() else ""
    )
    return f"Cannot join the Ray cluster at '{address}' ({why}).{versions}"


def _message_line(err: Exception, index: int) -> str:
    """A line of Ray's message for ``err``, shown as it is: its first (what happened) or last (-1: the
    exception that ended a task or actor, below Ray's traceback)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return printable((lines or [type(err).__name__])[index])[:ERROR_TEXT_CHARS]


def _task_failed(err: Exception) -> str:
    """A failed record's message for a Ray task that failed otherwise than by its actor's death: the
    exception the task raised (a RayTaskError's cause), else the first line of Ray's own message."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        why = f"{type(cause).__name__}: {cause}"
    else:
        why = f"{type(err).__name__}: {_message_line(err, 0)}"
    return (
        f"The Ray task for this video failed ({why[:ERROR_TEXT_CHARS]}); check the cluster's logs ('ray logs'), "
        "then run the batch again with --retry-failed."
    )


def _checked(item: BatchItem, reply: object, transfer: str, output_dir) -> dict:
    """The manifest record for ``item`` from an actor's reply, after checking it: fields of the right
    types, and for a done video a readable result file (written here from the reply's bytes, or made by
    the actor on the shared path). Anything else becomes a failed record."""
    record, data = reply if isinstance(reply, tuple) and len(reply) == 2 else (reply, None)
    problem = record_problem(record)
    if problem is not None:
        return make_record(item, "failed", error=_bad_reply(f"its record is unusable: {problem}"))
    if record["status"] == "failed":
        return make_record(item, "failed", seconds=record["seconds"], error=record["error"], worker=record["worker"])
    if transfer != "shared":
        check_inside(item.output_path, output_dir)  # a link made during the run: stop, write nothing outside
    try:
        if transfer == "shared":
            result = load_result(item.output_path)  # the actor wrote it: it must be there and whole for us too
        else:
            if not isinstance(data, bytes):
                raise VibeError("it sent no result file")
            result = load_result(io.BytesIO(data))
            write_result(item.output_path, data)
    except (VibeError, OSError) as err:
        return make_record(
            item, "failed", worker=record["worker"], error=_bad_reply(f"its result file is unusable: {err}")
        )
    return make_record(
        item,
        "done",
        tracks=len(result.tracks),
        frames=record["frames"],
        seconds=record["seconds"],
        worker=record["worker"],
        warnings=record.get("warnings", []),  # checked to be texts; absent from an earlier version's actor
    )


def _bad_reply(why: str) -> str:
    return (
        f"The Ray actor's answer for this video cannot be used ({why}); check that every node runs the same "
        "VIBE Mocap version and sees OUTDIR at the same path (or use --transfer object-store), then run the "
        "batch again with --retry-failed."
    )

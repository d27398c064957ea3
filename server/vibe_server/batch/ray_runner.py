"""The batch on a Ray cluster: one actor per GPU (or per CPU slot), each loads its engine once.

Scheduling is Ray's ``ActorPool``: a video is submitted only when an actor is free, so at most one
video per actor is in flight (inputs are read lazily; 10 000 inputs cost 10 000 small items, never
their bytes). Actors restart after a crash or a lost node (``max_restarts=-1``) and the video they
were on is retried (``max_task_retries``); its result path is deterministic and written by rename,
and the driver writes one manifest line per video, so a retry leaves no duplicate. A video whose
retries are used up gets a failed record.

Transfer: ``shared`` (inputs and outputs on a path every node sees, the default) or
``object-store`` (the driver sends each video's bytes and writes each result itself: for small
clips when nodes share no file system).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from vibe_blender.core.errors import VibeError

from ..output_files import atomic_write_bytes
from ..pipeline.options import RunOptions
from .engine_adapter import EngineSpec, WorkerSetupError, load_engine, process_video
from .inputs import BatchItem
from .manifest import make_record
from .progress import BatchProgress

TRANSFERS = ("shared", "object-store")
MAX_TASK_RETRIES = 2  # a video that kills its actor 3 times is marked failed
OBJECT_STORE_MAX_BYTES = 256 << 20  # larger videos must be on a shared path
CPUS_PER_CPU_ACTOR = 2
CONNECT_TIMEOUT_S = 5.0  # an address that does not answer within this is unreachable


class VideoActor:
    """Holds one engine; ``process`` runs one video (its path, or its bytes in object-store mode)."""

    def __init__(self, spec: EngineSpec, options: RunOptions) -> None:
        self.options = options
        self.name = f"ray {socket.gethostname()}:{os.getpid()} ({spec.device})"
        try:
            self.engine, self.setup_error = load_engine(spec), None
        except WorkerSetupError as err:  # reported with the first video, then the batch stops
            self.engine, self.setup_error = None, str(err)

    def process(self, item: BatchItem, data: bytes | None) -> tuple[dict, bytes | None]:
        if self.setup_error is not None:
            return {"setup_error": self.setup_error}, None
        if data is None:  # shared path: the actor writes the result itself
            record, _ = process_video(self.engine, item, self.options, worker=self.name)
            return record, None
        with tempfile.TemporaryDirectory(prefix="vibe-batch-") as folder:
            local = Path(folder) / ("input" + Path(item.key).suffix)
            local.write_bytes(data)
            return process_video(
                self.engine, item, self.options, worker=self.name, input_path=str(local), write_output=False
            )


def _import_ray():
    try:
        import ray  # optional extra: only --ray needs it
    except ImportError as err:
        raise VibeError(
            "--ray needs Ray, which is not installed: pip install 'vibe-mocap[ray]' "
            "(on the driver and on every node of the cluster)."
        ) from err
    return ray


def _actor_layout(ray, device: str) -> tuple[dict, int, str]:
    """(actor resources, number of actors, device inside each actor) from the cluster's resources."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if device != "cpu" and gpus > 0:
        return {"num_gpus": 1}, gpus, "cuda:0"  # Ray shows each actor only its own GPU
    if device.startswith("cuda"):
        raise VibeError(f"Device '{device}' was asked for but the Ray cluster has no GPU; use --device cpu.")
    cpus = int(resources.get("CPU", 1))
    per_actor = min(CPUS_PER_CPU_ACTOR, cpus)
    return {"num_cpus": per_actor}, max(1, cpus // per_actor), "cpu"


def _payload(item: BatchItem, transfer: str) -> tuple[bytes | None, str | None]:
    """(bytes to send, or None for a shared path; an error message when the video cannot be sent)."""
    if transfer == "shared":
        return None, None
    try:
        size = os.path.getsize(item.input_path)
        if size > OBJECT_STORE_MAX_BYTES:
            return None, (
                f"The video is {size / 2**20:.0f} MiB, more than the object store takes per clip "
                f"({OBJECT_STORE_MAX_BYTES >> 20} MiB); put it on a shared path and use --transfer shared."
            )
        return Path(item.input_path).read_bytes(), None
    except OSError as err:
        return None, f"Cannot read the video ({err}); check the path."


def run_ray(
    items: list[BatchItem],
    spec: EngineSpec,
    options: RunOptions,
    *,
    address: str | None,
    transfer: str,
    on_record: Callable[[dict], None],
    progress: BatchProgress,
) -> None:
    """Process ``items`` on the Ray cluster at ``address`` (None: $RAY_ADDRESS, the last cluster started
    on this machine, else a new local one). ``on_record`` gets each finished video's record."""
    if transfer not in TRANSFERS:
        raise VibeError(f"Unknown transfer '{transfer}'; use {' or '.join(TRANSFERS)}.")
    ray = _import_ray()
    from ray.util import ActorPool  # optional dependency: the ray extra (checked just above)

    check_reachable(address)
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING")
        except ConnectionError as err:
            raise VibeError(
                f"Cannot reach the Ray cluster at '{address}' ({err}); start it with "
                "'ray start --head' or give its address."
            ) from err
    try:
        resources, count, device = _actor_layout(ray, spec.device)
        actor_class = ray.remote(VideoActor).options(max_restarts=-1, max_task_retries=MAX_TASK_RETRIES, **resources)
        actor_spec = replace(spec, device=device, threads=resources.get("num_cpus"))
        pool = ActorPool([actor_class.remote(actor_spec, options) for _ in range(min(count, len(items)))])
        _drive(ray, pool, items, transfer, on_record, progress)
    finally:
        if started_here:
            ray.shutdown()


def check_reachable(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """VibeError unless the cluster at ``address`` ("HOST:PORT" or "ray://HOST:PORT"; None, "auto"
    and "local" are Ray's to resolve) accepts a connection: Ray itself would retry for minutes."""
    if address is None or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise VibeError(
            f"'{address}' is not a Ray cluster address: give HOST:PORT (the head node's, e.g. 10.0.0.5:6379), "
            "'auto', or no address to start a cluster on this machine."
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise VibeError(
            f"Cannot reach the Ray cluster at '{address}' ({reason}); start it with 'ray start --head' "
            "or give its head node's address."
        ) from None


def _drive(ray, pool, items: list[BatchItem], transfer: str, on_record, progress: BatchProgress) -> None:
    by_key = {item.key: item for item in items}
    outstanding: set[str] = set()
    queue = iter(items)
    exhausted = False
    while True:
        while not exhausted and pool.has_free():  # backpressure: one video per free actor
            item = next(queue, None)
            if item is None:
                exhausted = True
                break
            data, error = _payload(item, transfer)
            if error is not None:
                on_record(make_record(item, "failed", error=error))
                continue
            outstanding.add(item.key)
            pool.submit(lambda actor, job: actor.process.remote(*job), (item, data))
        if not pool.has_next():
            break
        progress.worker_status("ray", f"{len(outstanding)} videos running")
        try:
            record, data = pool.get_next_unordered()
        except ray.exceptions.RayActorError:
            continue  # retries used up: reported below, by key
        if "setup_error" in record:
            raise VibeError(f"The Ray actors could not load the model: {record['setup_error']}")
        item = by_key[record["input"]]
        if data is not None and record["status"] == "done":
            atomic_write_bytes(item.output_path, data)
        outstanding.discard(item.key)
        on_record(record)
    for key in sorted(outstanding):
        on_record(
            make_record(
                by_key[key],
                "failed",
                error=(
                    f"The Ray actor running this video died {MAX_TASK_RETRIES + 1} times (out of memory, a crash in "
                    "native code, or lost nodes); check the file plays, or run it alone with 'vibe-mocap infer'."
                ),
            )
        )

"""The engine the batch tests load in worker processes and Ray actors (by name, as
``tests.server.batch_fakes:tiny_engine``): the tiny VIBE model on real decoded video, with a scripted
tracker (one person in the middle of every frame) so that it runs in a fraction of a second per clip.

A video whose name starts with ``crash-once`` kills its worker process halfway through the first
time it is run (a marker file next to it records that), to test that a dead worker's video is retried;
one whose name starts with ``crash-always`` kills it every time, and ``crash-at-start`` as soon as
the worker hands it to the engine (right after the worker said which video it starts). ``failing_engine`` cannot be
loaded (like a GPU out of memory); ``dying_engine`` kills its worker while it loads (like the
out-of-memory killer). ``FakeRay`` stands in for Ray's ``wait``/``get`` and actors in the Ray
driver's bookkeeping tests.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tests.server.conftest import ScriptedFrontEnd, TinyVIBE
from vibe_server.batch import ray_runner
from vibe_server.pipeline import video
from vibe_server.pipeline.engine import Engine
from vibe_server.pipeline.frontend import FrontEnd

CRASH_PREFIX = "crash-once"
CRASH_ALWAYS_PREFIX = "crash-always"
CRASH_AT_START_PREFIX = "crash-at-start"
LOAD_ERROR = "CUDA out of memory while loading the checkpoint"
CRASH_AT_FRAME = 6
SLOW_PREFIX = "slow"
NO_MOUNT = Path("/nonexistent-shared-mount")  # where a fake node without the shared file system looks
SLOW_FRAME_S = 0.25  # a 12-frame clip takes 3 s: a kill in a test lands while it runs


def _one_person(reader, detector, *, detection_stride=1, adaptive_detection=False):
    """One track (id 1): a box over the middle of each frame; 'slow*' videos take SLOW_FRAME_S a frame
    (no adaptive detection here: one still person needs none)."""
    path = Path(str(reader.path))
    slow = path.name.startswith(SLOW_PREFIX)
    for frame_index, frame in reader:
        if frame_index == CRASH_AT_FRAME and path.name.startswith(CRASH_PREFIX):
            _crash_once(path)
        if frame_index == CRASH_AT_FRAME and path.name.startswith(CRASH_ALWAYS_PREFIX):
            os._exit(17)
        if frame_index % detection_stride == 0:
            detector.detect([frame])
        if slow:
            time.sleep(SLOW_FRAME_S)
        h, w = frame.shape[:2]
        yield frame_index, frame, [(1, np.array([w / 2, h / 2, w / 3, h / 1.5]))]


def _crash_once(path: Path) -> None:
    marker = path.with_name(path.name + ".crashed")
    if not marker.exists():
        marker.write_text("the worker was killed here once\n")
        os._exit(17)  # like a worker killed by the OOM killer


class _TinyEngine(Engine):
    def run(self, video_path, options=None, **kwargs):
        if Path(str(video_path)).name.startswith(CRASH_AT_START_PREFIX):
            os._exit(17)  # the moment the worker hands the video over, right after it said which one it starts
        return super().run(video_path, options, **kwargs)


def tiny_engine(data_dir=None, *, device="cpu", precision="fp32", allow_synthetic=False):
    import torch

    torch.set_num_threads(1)
    scripted = ScriptedFrontEnd()
    frontend = FrontEnd(
        open_video=video.open_video,
        make_detector=scripted.make_detector,
        stream_people=_one_person,
        crop_people=scripted.crop_people,
    )
    return _TinyEngine(
        TinyVIBE(), model_name="tiny test model", data_dir=None, device=device, precision=precision, frontend=frontend
    )


def report_then_die(channel) -> None:
    """A worker that says which video it starts (the first in the batch) and dies at once."""
    from vibe_server.batch import local_pool

    local_pool._status_queue = channel
    local_pool._report(local_pool.START, 0)
    os._exit(17)


def full_disk_engine(data_dir=None, *, device="cpu", precision="fp32", allow_synthetic=False):
    """The tiny engine in a worker whose output disk is full (a full disk cannot be made in a test)."""
    from vibe_server.batch import engine_adapter

    def no_space(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    engine_adapter.atomic_write_bytes = no_space  # this worker process only
    return tiny_engine(data_dir, device=device, precision=precision)


def failing_engine(data_dir=None, *, device="cpu", precision="fp32", allow_synthetic=False):
    raise RuntimeError(LOAD_ERROR)


def dying_engine(data_dir=None, *, device="cpu", precision="fp32", allow_synthetic=False):
    os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer ends a process


class FakeActor:
    """A Ray actor handle: ``actor.process.remote(item, data)`` -> a task of ``FakeRay``;
    ``actor.ready.remote()`` -> a task that answers once the actor has started;
    ``actor.check_shared_paths.remote(...)`` -> a task that runs the real check on this machine, as on a
    node named ``node`` that mounts the shared file system at ``mounted_at`` (None: at the driver's
    paths). One that ``dies_loading`` is gone for good before it has loaded the model: its ping and its
    tasks fail."""

    def __init__(self, ray: FakeRay, dies_loading: bool = False, node: str = "node0", mounted_at: Path | None = None):
        self.process = self
        self.ready = SimpleNamespace(remote=lambda: ray.ping(self))
        self.check_shared_paths = SimpleNamespace(remote=lambda *paths: ray.check(self, *paths))
        self.dies_loading = dies_loading
        self.node, self.mounted_at = node, mounted_at
        self._ray = ray

    def seen_path(self, path: str | None) -> str | None:
        """Where this node finds what the driver sees at ``path``."""
        if path is None or self.mounted_at is None:
            return path
        return str(self.mounted_at / Path(path).relative_to("/"))

    def remote(self, item, data, probe=None):
        self.probes = [*getattr(self, "probes", []), probe]  # what each video's task was given to check
        return self._ray.start(self, item, data)


class FakeRay:
    """``wait`` and ``get`` over tasks whose outcome is ``reply(item, data)`` (a value, or an exception
    to raise); ``most`` is the largest number of tasks in flight at once. The first ``not_started``
    calls of ``wait`` find nothing done, as while a cluster has not started the actors yet."""

    class RayError(Exception):
        """Ray's base error: a task's result lost with its node (ObjectLostError), a cancelled task, ..."""

    class RayActorError(RayError):
        def __init__(self, actor_init_failed: bool = False, message: str = "actor died"):
            super().__init__(message)
            self.actor_init_failed = actor_init_failed

    class RayTaskError(RayError):
        """The exception ``cause`` the task raised, as Ray hands it to the driver."""

        def __init__(self, cause: BaseException):
            super().__init__(f"ray::VideoActor.process() (pid=4711, ip=10.0.0.5)\n  Traceback ...\n{cause!r}")
            self.cause = cause

    class ActorDiedError(RayActorError):
        """The actor is dead for good (its restarts used up)."""

    class ActorUnavailableError(RayActorError):
        """The actor died and restarts (Ray >= 2.2x tells the two apart)."""

    exceptions = SimpleNamespace(
        RayError=RayError,
        RayActorError=RayActorError,
        RayTaskError=RayTaskError,
        ActorDiedError=ActorDiedError,
        ActorUnavailableError=ActorUnavailableError,
    )

    def __init__(self, reply, not_started: int = 0):
        self.reply, self.tasks, self.pings, self.checks, self.most = reply, {}, {}, {}, 0
        self.submitted, self.ran_on = [], []  # the key of each video submitted, and the actor it went to
        self.not_started = not_started

    def actors(self, count: int, dying_while_loading: int = 0, without_mount: int = 0) -> list[FakeActor]:
        """``count`` actors, of which the first ``dying_while_loading`` die while loading the model and the
        last ``without_mount`` run on nodes ('node-without-mount<i>') that see no shared path of the driver."""
        return [
            FakeActor(
                self,
                dies_loading=index < dying_while_loading,
                node=f"node{index}" if index < count - without_mount else f"node-without-mount{index}",
                mounted_at=None if index < count - without_mount else NO_MOUNT,
            )
            for index in range(count)
        ]

    def check(self, actor: FakeActor, probe_path: str, probe_content: bytes, video_path: str):
        task = object()
        self.checks[task] = (actor, probe_path, probe_content, video_path)
        return task

    def ping(self, actor: FakeActor):
        task = object()
        self.pings[task] = actor
        return task

    def start(self, actor, item, data):
        task = object()
        self.tasks[task] = (actor, item, data)
        self.submitted.append(item.key)
        self.ran_on.append(actor)
        self.most = max(self.most, len(self.tasks))
        return task

    def wait(self, tasks, num_returns=1, timeout=None):
        if self.not_started > 0:
            self.not_started -= 1
            return [], list(tasks)
        return tasks[:num_returns], tasks[num_returns:]

    def get(self, task):
        if task in self.checks:
            actor, probe_path, probe_content, video_path = self.checks.pop(task)
            if actor.dies_loading:
                raise self.ActorDiedError()
            problem = ray_runner.shared_paths_problem(
                actor.seen_path(probe_path), probe_content, actor.seen_path(video_path)
            )
            return actor.node, problem
        if task in self.pings:
            if self.pings[task].dies_loading:
                raise self.ActorDiedError()
            return True
        actor, item, data = self.tasks.pop(task)
        outcome = self.ActorDiedError() if actor.dies_loading else self.reply(item, data)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

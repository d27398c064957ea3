"""``vibe-mocap batch --ray`` on a local Ray cluster (2 CPUs, bound to 127.0.0.1): the same result
arrays as a local run, through a shared path and through the object store, and an actor killed
midway is restarted and its video retried, with one manifest line per video."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray  # the optional extra .[ray]; the test extra has it

from tests.server.batch_fakes import CRASH_PREFIX
from tests.server.test_batch import ENGINE, ROOT, batch_args, cut_clips, manifest_lines, place
from vibe_server.batch import ray_runner
from vibe_server.batch.manifest import MANIFEST_NAME
from vibe_server.cli import main


@pytest.fixture(scope="module")
def local_cluster():
    """One in-process Ray cluster for the module; its workers import the test engine by name."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{ROOT / 'server'}")
        patch.setenv("OMP_NUM_THREADS", "1")
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            logging_level="WARNING",
            log_to_driver=False,
        )
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def clip_bank(tmp_path_factory) -> dict[str, Path]:
    return cut_clips(tmp_path_factory.mktemp("clips"))


def assert_same_arrays(left: Path, right: Path, names) -> None:
    for name in names:
        a = np.load(left / Path(name).with_suffix(".npz"))
        b = np.load(right / Path(name).with_suffix(".npz"))
        assert a.files == b.files
        for key in a.files:
            if key not in ("meta_keys", "meta_values"):  # meta holds the device and versions
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")


def test_ray_results_equal_the_local_run(local_cluster, clip_bank, tmp_path, capsys):
    layout = {"walk.mp4": "walk.mp4", "day2/sign.mp4": "sign.mp4", "day2/street.mp4": "street.mp4"}
    inputs = place(clip_bank, tmp_path / "in", layout)
    assert main(batch_args(inputs, out=tmp_path / "local", extra=["--jobs", "1"])) == 0
    capsys.readouterr()
    assert main(batch_args(inputs, out=tmp_path / "ray", extra=["--ray"])) == 0
    # --device auto on a cluster without GPUs: it says what it runs on instead
    assert "has no GPU (yet), so the batch runs on 1 CPU actor(s) of 2 CPUs each" in capsys.readouterr().err
    assert main(batch_args(inputs, out=tmp_path / "store", extra=["--ray", "--transfer", "object-store"])) == 0
    assert_same_arrays(tmp_path / "local", tmp_path / "ray", layout)
    assert_same_arrays(tmp_path / "local", tmp_path / "store", layout)
    for out in ("ray", "store"):
        records = manifest_lines(tmp_path / out)
        assert sorted(r["input"] for r in records) == sorted(layout)
        assert all(r["status"] == "done" and r["worker"].startswith("ray ") for r in records)
    assert not list(tmp_path.rglob("*.part"))


def test_a_killed_ray_actor_is_restarted_and_its_video_retried(local_cluster, clip_bank, tmp_path):
    inputs = place(
        clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4", f"{CRASH_PREFIX}.mp4": "sign.mp4", "b.mp4": "street.mp4"}
    )
    out = tmp_path / "out"
    assert main(batch_args(inputs, out=out, extra=["--ray"])) == 0
    assert (inputs / f"{CRASH_PREFIX}.mp4.crashed").is_file()  # the actor process did die
    records = manifest_lines(out)
    assert sorted(r["input"] for r in records) == ["a.mp4", "b.mp4", f"{CRASH_PREFIX}.mp4"]
    assert all(r["status"] == "done" for r in records)
    assert sorted(p.name for p in out.glob("*.npz")) == ["a.npz", "b.npz", f"{CRASH_PREFIX}.npz"]


def test_while_the_cluster_has_no_free_cpu_the_batch_waits_and_says_why(
    local_cluster, clip_bank, tmp_path, capsys, monkeypatch
):
    from vibe_server.batch import ray_runner

    monkeypatch.setattr(ray_runner, "PENDING_NOTE_S", 1.0)
    waits = []  # the batch's account of its actors that have not started
    real_init = ray_runner.Pending.__init__
    monkeypatch.setattr(
        ray_runner.Pending, "__init__", lambda self, *a, **k: real_init(self, *a, **k) or waits.append(self)
    )

    @ray.remote(num_cpus=2)
    class Other:  # another job holding the cluster's CPUs until the batch has said it waits for them
        def ping(self) -> bool:
            return True

    other = Other.remote()
    ray.get(other.ping.remote())
    out = tmp_path / "out"
    seen, ended = {}, threading.Event()

    def release_once_the_batch_waits() -> None:
        try:
            deadline = time.monotonic() + 120
            while not (waits and waits[0].noted) and not ended.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            seen["waiting"] = waits[0].waiting_for_resources if waits else "no batch"
            seen["records"] = manifest_lines(out) if (out / MANIFEST_NAME).is_file() else []
        finally:
            ray.kill(other)

    release = threading.Thread(target=release_once_the_batch_waits)
    release.start()
    try:
        inputs = place(clip_bank, tmp_path / "in", {"walk.mp4": "walk.mp4"})
        assert main(batch_args(inputs, out=out, extra=["--ray"])) == 0
    finally:
        ended.set()
        release.join()
    assert seen == {"waiting": 1, "records": []}  # while the CPUs were held: waiting, nothing recorded
    assert "1 of the 1 Ray actor(s) still wait for 2 CPUs free on the cluster" in capsys.readouterr().err
    [record] = manifest_lines(out)  # once they were free, the batch went on
    assert record["status"] == "done"


def test_ray_tells_an_actor_that_loads_its_model_from_one_the_cluster_has_not_started(local_cluster, tmp_path):
    """A slow model load is not mistaken for a cluster without free CPUs."""
    from vibe_server.batch.ray_runner import unscheduled_actors

    @ray.remote(num_cpus=2)
    class Loading:
        def __init__(self, gate: str) -> None:  # loads "the model" until the gate opens
            while not os.path.exists(gate):
                time.sleep(0.05)

        def ready(self) -> bool:
            return True

    gate = tmp_path / "gate"
    loading = Loading.remote(str(gate))
    waiting = None
    try:
        deadline = time.monotonic() + 120
        while unscheduled_actors([loading]) != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert unscheduled_actors([loading]) == 0  # its process runs __init__
        waiting = Loading.remote(str(gate))  # no CPU is left for it
        assert ray.wait([waiting.ready.remote()], timeout=1.0)[0] == []
        deadline = time.monotonic() + 30
        while unscheduled_actors([loading, waiting]) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # the cluster registers the new actor first
        assert unscheduled_actors([loading, waiting]) == 1
    finally:
        gate.touch()
        for actor in (loading, waiting):
            if actor is not None:
                ray.get(actor.ready.remote(), timeout=120)
                ray.kill(actor)


def batch_on_the_cluster(argv: list[str], timeout_s: float = 180) -> subprocess.CompletedProcess:
    """``vibe-mocap batch ... --ray ADDRESS`` (the module's cluster) in a process of its own, as on a real
    cluster's head node; TimeoutExpired (the process killed) when it runs longer than ``timeout_s``."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'server'}", "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "vibe_server", *argv, "--ray", ray.get_runtime_context().gcs_address],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_the_cli_joins_a_running_cluster_by_its_address(local_cluster, clip_bank, tmp_path):
    inputs = place(clip_bank, tmp_path / "in", {"walk.mp4": "walk.mp4"})
    run = batch_on_the_cluster(batch_args(inputs, out=tmp_path / "out"))
    assert run.returncode == 0, run.stderr[-2000:]
    [record] = manifest_lines(tmp_path / "out")
    assert record["status"] == "done" and record["worker"].startswith("ray ")


def test_ray_actors_that_die_while_loading_the_model_stop_the_batch_with_one_error(local_cluster, clip_bank, tmp_path):
    """Before: Ray restarted them without end (max_restarts=-1), and the batch waited for ever."""
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4", "b.mp4": "sign.mp4"})
    argv = batch_args(inputs, out=tmp_path / "out")
    argv[argv.index(ENGINE)] = "tests.server.batch_fakes:dying_engine"
    run = batch_on_the_cluster(argv, timeout_s=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.count("error:") == 1 and f"error: {ray_runner.DIED_LOADING}" in run.stderr
    assert manifest_lines(tmp_path / "out") == []  # no video is blamed


@pytest.mark.parametrize(
    "address, message",
    [("127.0.0.1:1", "Cannot reach the Ray cluster at '127.0.0.1:1'"), ("head-node", "is not a Ray cluster address")],
)
def test_an_unreachable_or_malformed_cluster_address_is_one_clear_error_at_once(
    clip_bank, tmp_path, capsys, address, message
):
    """Ray itself retries an address that answers nothing for minutes; the batch says so at once."""
    import time

    inputs = place(clip_bank, tmp_path / "in", {"walk.mp4": "walk.mp4"})
    started = time.perf_counter()
    assert main(batch_args(inputs, out=tmp_path / "out", extra=["--ray", address])) != 0
    assert time.perf_counter() - started < 30
    assert message in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.npz"))


def test_a_cluster_that_ended_without_ray_stop_is_replaced_by_a_new_local_one(
    local_cluster, tmp_path, monkeypatch, capsys
):
    """With no address, Ray connects to the cluster 'ray start' recorded on this machine; a record left
    by a crash made it retry that address for minutes. The batch checks the record first."""
    import socket

    from vibe_server.batch.ray_runner import init_address, last_started_cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # where Ray keeps its record
    assert last_started_cluster() is None and init_address(None) is None  # no record: Ray starts one
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        gone = f"127.0.0.1:{closed.getsockname()[1]}"
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(gone)
    assert last_started_cluster() == gone
    assert init_address(None) == "local"
    assert f"the Ray cluster last started on this machine ({gone}) does not answer" in capsys.readouterr().err
    live = ray.get_runtime_context().gcs_address  # a cluster that runs: Ray's own choice stands
    (tmp_path / "ray" / "ray_current_cluster").write_text(live)
    assert init_address(None) is None and capsys.readouterr().err == ""

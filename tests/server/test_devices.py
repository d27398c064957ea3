"""How many cores and workers: the count works on every platform."""

import os
import subprocess
import sys
from pathlib import Path

from vibe_server.pipeline import devices


def test_usable_cores_falls_back_to_all_cores_where_there_is_no_affinity(monkeypatch):
    # macOS and Windows have no os.sched_getaffinity (and Python < 3.13 no os.process_cpu_count)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    assert devices.usable_cores() == 12
    assert devices.default_jobs("cpu") >= 1
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert devices.usable_cores() == 1


def test_usable_cores_follows_the_affinity_where_there_is_one(monkeypatch):
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert devices.usable_cores() == 3


def test_the_engine_imports_without_sched_getaffinity():
    server = Path(__file__).resolve().parents[2] / "server"
    code = (
        "import os\n"
        "for name in ('sched_getaffinity', 'process_cpu_count'):\n"
        "    if hasattr(os, name): delattr(os, name)\n"
        "from vibe_server.pipeline import engine\n"
        "print(engine.DECODE_WORKERS)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(server), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1

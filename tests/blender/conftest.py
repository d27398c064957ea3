"""Fixtures for the Blender suite (``pytest -m blender`` inside a bpy venv, see scripts/test_blender.sh).

The smplx reference (vertices and joints for random poses and shapes of the synthetic model) is made
by tests/blender/make_smplx_reference.py with the main .venv, which has torch and smplx; this suite
only reads the arrays. $VIBE_SMPLX_REFERENCE names the folder; when unset it is generated here.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # testdata.py, fake_vibe_server.py, server_process.py
sys.path.insert(0, str(Path(__file__).resolve().parent))  # blender_eval.py, capture_states.py
from testdata import OFFICIAL_PKL, REAL_CLIPS  # noqa: E402  (needs the path above)

_user_resources: tempfile.TemporaryDirectory | None = None  # Blender's prefs and extensions, when ours
if importlib.util.find_spec("bpy") is None:
    collect_ignore_glob = ["test_*.py"]  # not a bpy venv: nothing here can run (scripts/test_blender.sh runs it)
elif "BLENDER_USER_RESOURCES" not in os.environ:  # keep Blender's prefs and extensions out of the user's home
    _user_resources = tempfile.TemporaryDirectory(prefix="vibe_blender_user_")  # removed when the run ends
    os.environ["BLENDER_USER_RESOURCES"] = _user_resources.name


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory) -> Path:
    folder = os.environ.get("VIBE_SMPLX_REFERENCE")
    if folder:
        return Path(folder)
    main_python = REPO / ".venv" / "bin" / "python"
    if not main_python.exists():
        pytest.fail("No smplx reference: set VIBE_SMPLX_REFERENCE or create the main .venv (scripts/setup.sh).")
    out = tmp_path_factory.mktemp("smplx_reference")
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'server'}")
    subprocess.run(
        [str(main_python), str(REPO / "tests/blender/make_smplx_reference.py"), str(out)], check=True, env=env, cwd=REPO
    )
    return out


@pytest.fixture(scope="session")
def reference(reference_dir):
    import numpy as np

    with np.load(reference_dir / "reference.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def body_model(reference_dir):
    from vibe_blender.core.smpl_model import load_body_model

    return load_body_model(reference_dir / "body_model.npz")


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    return REAL_CLIPS


@pytest.fixture(scope="session")
def official_pkl() -> Path:
    return OFFICIAL_PKL


@pytest.fixture
def empty_scene():
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy.context.scene
    bpy.ops.wm.read_factory_settings(use_empty=True)


_FIDELITY: dict[str, tuple[float, float]] = {}


@pytest.fixture(scope="session")
def fidelity_log() -> dict:
    """name -> (max vertex error, max joint error) in metres; printed in the summary."""
    return _FIDELITY


def pytest_terminal_summary(terminalreporter):
    if not _FIDELITY:
        return
    import bpy

    terminalreporter.section(f"max error vs smplx, Blender {bpy.app.version_string}")
    for name, (v, j) in sorted(_FIDELITY.items()):
        terminalreporter.write_line(f"{name:16s} vertices {v:.2e} m   joints {j:.2e} m")


def pytest_sessionfinish(session, exitstatus):
    session.config.vibe_exitstatus = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End a bpy run without the bpy module's exit-time C++ destructors.

    After Rigify has generated a rig, bpy 4.5 deadlocks and 4.2 crashes in those destructors, once
    every test has passed and the summary is printed. The exit status stays pytest's own. Exiting so
    skips the clean-up at exit too, so the temporary folders (ours and Blender's) are removed here.
    """
    if "bpy" in sys.modules and hasattr(config, "vibe_exitstatus"):
        import bpy

        session_temp = Path(bpy.app.tempdir)
        if session_temp.name.startswith("blender_"):  # Blender's own folder, not the system's it falls back to
            shutil.rmtree(session_temp, ignore_errors=True)
        if _user_resources is not None:
            _user_resources.cleanup()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.vibe_exitstatus)

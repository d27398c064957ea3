"""The add-on's command-line tools in a Python without Blender's module: one line and exit status 2,
not a traceback (the export tool printed ModuleNotFoundError's)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WITHOUT_BPY = (
    "import sys; sys.modules['bpy'] = None; import runpy; runpy.run_module('vibe_blender.{}', run_name='__main__')"
)


@pytest.mark.parametrize(
    "command, args",
    [("batch", ["take.npz", "--model-dir", "data", "-o", "take.blend"]), ("export", ["take.blend", "-o", "walk.fbx"])],
)
def test_a_python_without_bpy_gets_one_line_naming_the_setup(command, args, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "server")])}
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_BPY.format(command), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: this command runs Blender as a Python module (bpy)")
    assert f"-m vibe_blender.{command} ...'" in run.stderr and run.stderr.count("\n") == 1

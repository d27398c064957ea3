"""The extension zip: built and validated with Blender's own tool, installed and enabled in Blender."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.blender
REPO = Path(__file__).resolve().parents[2]

INSTALL_AND_CHECK = r"""
import json, sys, bpy
result = bpy.ops.extensions.package_install_files(filepath=sys.argv[-1], repo="user_default", enable_on_install=True)
module = "bl_ext.user_default.vibe_mocap"
prefs = bpy.context.preferences.addons[module].preferences
import importlib
preferences = importlib.import_module(module + ".vibe_blender.preferences")
facts = {
    "result": sorted(result), "enabled": module in bpy.context.preferences.addons,
    "server_url": prefs.server_url, "operators": [hasattr(bpy.ops.vibe_mocap, n) for n in
        ("capture", "cancel_capture", "import_motion", "refit_bones")],
    "panel": hasattr(bpy.types, "VIEW3D_PT_vibe_mocap"),
    "panel_category": getattr(bpy.types, "VIEW3D_PT_vibe_mocap").bl_category,
    "results_dir": str(preferences.user_dir("results")),
    "extension_user_dir": bpy.utils.extension_path_user(module),
    "scene_settings": hasattr(bpy.context.scene, "vibe_mocap"),
}
import addon_utils
addon_utils.disable(module)
facts["disabled_cleanly"] = not hasattr(bpy.types, "VIEW3D_PT_vibe_mocap")
print("FACTS" + json.dumps(facts))
"""


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run(
        ["bash", str(REPO / "scripts/build_extension.sh"), "--output-dir", str(out)],
        env=dict(os.environ, BPY_PYTHON=sys.executable),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (zip_path,) = out.glob("vibe_mocap-*.zip")
    return zip_path


def test_zip_holds_only_the_add_on(extension_zip):
    names = zipfile.ZipFile(extension_zip).namelist()
    top = ("blender_manifest.toml", "__init__.py", "LICENSE")  # the GPL asks for its text with every copy
    assert all(name in names for name in top)
    assert "vibe_blender/core/skeleton.py" in names and "vibe_blender/panels.py" in names
    stray = [n for n in names if n not in top and not n.startswith("vibe_blender/")]
    assert stray == []
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_the_permissions_name_the_camera(extension_zip):
    """Start Live with its defaults has the local server open camera 0, yet the permissions the
    Get Extensions list shows named only the network and files. The built (and validated) manifest
    now declares the camera too."""
    import tomllib

    manifest = tomllib.loads(zipfile.ZipFile(extension_zip).read("blender_manifest.toml").decode())
    assert set(manifest["permissions"]) == {"network", "files", "camera"}
    assert "camera" in manifest["permissions"]["camera"].lower()


def test_zip_installs_enables_and_disables(extension_zip, tmp_path):
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    run = subprocess.run(
        [sys.executable, "-c", INSTALL_AND_CHECK, str(extension_zip)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("FACTS")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    facts = json.loads(lines[0][5:])
    assert facts["result"] == ["FINISHED"] and facts["enabled"]
    assert facts["server_url"] == "http://127.0.0.1:8765"
    assert all(facts["operators"]) and facts["panel"] and facts["panel_category"] == "Mocap"
    assert facts["scene_settings"]
    assert facts["results_dir"].startswith(facts["extension_user_dir"])  # user files only under the extension's dir
    assert facts["disabled_cleanly"]

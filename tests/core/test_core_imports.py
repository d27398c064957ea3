"""vibe_blender.core must import without bpy (and without torch): it is shared with the server."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_core_module_imports_without_bpy_or_torch():
    code = (
        "import sys, pkgutil, importlib\n"
        "sys.modules['bpy'] = None; sys.modules['mathutils'] = None; sys.modules['torch'] = None\n"
        "import vibe_blender, vibe_blender.core as core\n"
        "names = [m.name for m in pkgutil.walk_packages(core.__path__, 'vibe_blender.core.')]\n"
        "for n in names: importlib.import_module(n)\n"
        "assert 'vibe_blender.core.readers.official_pkl' in names and 'vibe_blender.core.client' in names\n"
        "print(len(names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 12


def test_add_on_package_imports_without_bpy():
    """Blender imports the package before register(); only register() may pull in bpy."""
    code = "import sys; sys.modules['bpy'] = None\nimport vibe_blender\nassert callable(vibe_blender.register)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr

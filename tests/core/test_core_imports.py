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


def test_keyframes_are_written_in_one_place():
    """Blender 4.2 / 4.4 / 5.0 differ in where F-curves live: only keyframes.py may touch them."""
    writers = []
    for path in (REPO / "vibe_blender").rglob("*.py"):
        text = path.read_text()
        if any(s in text for s in ("fcurves.new", "keyframe_points", "keyframe_insert", "action.fcurves")):
            writers.append(path.relative_to(REPO).as_posix())
    assert writers == ["vibe_blender/keyframes.py"]


def test_core_imports_only_core_numpy_and_stdlib():
    """core/ never reaches into the bpy layer of vibe_blender (nor bpy, mathutils, torch)."""
    import ast

    for path in (REPO / "vibe_blender" / "core").rglob("*.py"):
        package = path.relative_to(REPO).with_suffix("").parts[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ((node.module,) if node.module else ()))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                target = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            else:
                continue
            assert target.split(".")[0] not in ("bpy", "mathutils", "torch", "bpy_extras"), (path, target)
            if target.startswith("vibe_blender"):
                assert target.startswith("vibe_blender.core"), (path, target)

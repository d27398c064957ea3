"""Every public function and method of the server has type hints on its parameters and its return."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server" / "vibe_server"
# Not hinted yet: FastAPI resolves these annotations at run time (an Engine hint would import torch with
# the API), and these files are being reworked; hint them with that rework.
NOT_YET = {
    "api/app.py": {"default_engine_loader", "lifespan"},
    "api/deps.py": {"get_engine"},
    "api/jobs.py": {"JobManager.__init__"},
    "api/routes/body_model.py": {"body_model"},
    "api/routes/jobs.py": {"probe_video", "create_job"},
    "commands/data.py": {"add_parser"},
    "data/bundle.py": {"check_bundle"},
    "pipeline/video.py": {"open_video", "VideoReader.__init__"},
}


def _unhinted(path: Path) -> list[str]:
    found = []

    def visit(node: ast.AST, owner: str = "") -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                visit(child, child.name + ".")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if child.name.startswith("_") and child.name != "__init__":
                    continue
                params = [
                    a
                    for a in child.args.posonlyargs + child.args.args + child.args.kwonlyargs
                    if a.arg not in ("self", "cls")
                ]
                if any(a.annotation is None for a in params) or (child.returns is None and child.name != "__init__"):
                    found.append(owner + child.name)

    visit(ast.parse(path.read_text()))
    return found


def test_public_functions_have_type_hints():
    missing = []
    for path in sorted(SERVER.rglob("*.py")):
        name = path.relative_to(SERVER).as_posix()
        missing += [f"{name}: {f}" for f in _unhinted(path) if f not in NOT_YET.get(name, set())]
    assert not missing, missing


def test_the_check_sees_a_missing_hint(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "def f(x) -> int:\n    return 1\nclass A:\n    def g(self, y: int):\n        pass\n"
        "    def _h(self, z):\n        pass\n"
    )
    assert _unhinted(source) == ["f", "A.g"]

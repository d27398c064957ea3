"""The package layering (docs/architecture.md), checked on the source: the import graph of
``vibe_server`` and ``vibe_blender``, function-level imports included, has no cycle; the server
imports only ``vibe_blender.core``, never the bpy layer; ``vibe_blender.core`` imports no bpy and no
torch; ``model/`` reads no file; every function-level import says why it is not at the top."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"vibe_server": ROOT / "server" / "vibe_server", "vibe_blender": ROOT / "vibe_blender"}


def _module_files() -> dict[str, Path]:
    """'vibe_server.pipeline.engine' -> its file (packages by their __init__.py)."""
    modules = {}
    for top, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str) -> list[tuple[str, ast.stmt, bool]]:
    """(imported module, the statement, at function level) for each project module ``module`` imports."""
    tree = ast.parse(MODULES[module].read_text())
    inside_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside_function.update(id(n) for n in ast.walk(node) if n is not node)
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module).split(".")
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            # `from package import submodule` imports the submodule; `from module import name` the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != module:
                found.append((target, node, id(node) in inside_function))
    return found


GRAPH = {module: sorted({target for target, _, _ in _imports(module)}) for module in MODULES}


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_function_level_and_relative_imports():
    engine_imports = GRAPH["vibe_server.pipeline.engine"]
    assert "vibe_server.pipeline.progress" in engine_imports  # relative, module level
    assert "vibe_server.geometry" in engine_imports  # absolute, inside a method
    assert _find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": ["b"], "b": []}) is None


def test_the_packages_have_no_import_cycle():
    assert _find_cycle(GRAPH) is None, f"import cycle: {' -> '.join(_find_cycle(GRAPH))}"


def test_the_server_imports_only_the_add_on_core():
    bad = [
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if m.startswith("vibe_server")
        for t in targets
        if t.startswith("vibe_blender") and not t.startswith("vibe_blender.core")
    ]
    assert not bad, bad


def test_the_add_on_core_needs_neither_bpy_nor_torch():
    bad = []
    for module, path in MODULES.items():
        if module.startswith("vibe_blender.core"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and not node.level
                    else []
                )
                bad += [
                    f"{module} imports {n}"
                    for n in names
                    if n.split(".")[0] in ("bpy", "torch", "mathutils", "bmesh")
                    or (n.startswith("vibe_blender") and not n.startswith("vibe_blender.core"))
                ]
    assert not bad, bad


def test_model_holds_no_file_io():
    """model/ is the nn.Modules and their maths; files are read by data/loading.py."""
    readers = ("np.load", "torch.load", "open", "load_smpl_pkl", "Path", "checkpoints", "bundle", "loading")
    bad = []
    for module, path in MODULES.items():
        if module.startswith("vibe_server.model."):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    name = ast.unparse(node.func)
                    if name in readers:
                        bad.append(f"{module} calls {name}")
            bad += [
                f"{module} imports {t}"
                for t in GRAPH[module]
                if t.startswith(("vibe_server.data", "vibe_server.checkpoints"))
            ]
    assert not bad, bad


# Which part may import which (docs/architecture.md): each part only what is below it.
CORE, SERVER = "vibe_blender.core", "vibe_server"
MAY_IMPORT = {
    "vibe_blender.core": set(),
    "vibe_blender": {CORE},  # the bpy layer
    "vibe_server.geometry": set(),
    "vibe_server.folder_lock": {CORE},
    "vibe_server.command_signals": set(),
    "vibe_server.value_range": set(),
    "vibe_server.checkpoints": {CORE},
    "vibe_server.model": {"vibe_server.geometry", CORE},
    "vibe_server.data": {
        "vibe_server.model",
        "vibe_server.checkpoints",
        "vibe_server.folder_lock",
        CORE,
    },
    "vibe_server.pipeline": {
        "vibe_server.data",
        "vibe_server.geometry",
        "vibe_server.value_range",
        CORE,
        SERVER,
    },
    "vibe_server.evaluate": {"vibe_server.geometry", "vibe_server.model", CORE},
    "vibe_server.train": {
        "vibe_server.checkpoints",
        "vibe_server.data",
        "vibe_server.evaluate",
        "vibe_server.folder_lock",
        "vibe_server.geometry",
        "vibe_server.model",
        "vibe_server.pipeline",
        "vibe_server.value_range",
        CORE,
    },
    "vibe_server.api": {
        "vibe_server.pipeline",
        "vibe_server.data",
        "vibe_server.value_range",
        CORE,
        SERVER,
    },
    "vibe_server.batch": {
        "vibe_server.pipeline",
        "vibe_server.data",
        "vibe_server.folder_lock",
        "vibe_server.command_signals",
        CORE,
    },
    SERVER: {"vibe_server.data"},  # load_model and __version__
}


def _part(module: str) -> str:
    """The part of MAY_IMPORT a module belongs to (commands and the CLI: None, they may import anything)."""
    for part in sorted(MAY_IMPORT, key=len, reverse=True):
        if module == part or module.startswith(part + "."):
            if part == SERVER and module != SERVER:
                return None
            return part
    return None


def test_each_part_imports_only_the_parts_below_it():
    bad = []
    for module, targets in GRAPH.items():
        part = _part(module)
        if part is None:
            continue
        for target in targets:
            other = _part(target) or target
            if other != part and other not in MAY_IMPORT[part]:
                bad.append(f"{module} imports {target}")
    assert not bad, bad


def _import_runs(body: list[ast.stmt]):
    """The first statement of each run of consecutive import statements in ``body`` and nested blocks."""
    previous_was_import = False
    for node in body:
        is_import = isinstance(node, (ast.Import, ast.ImportFrom))
        if is_import and not previous_was_import:
            yield node
        previous_was_import = is_import
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, None)
            if isinstance(inner, list) and inner and isinstance(inner[0], ast.AST):
                yield from _import_runs(inner)


def test_every_function_level_import_says_why():
    """Imports belong at the top; one inside a function needs a comment (on it or on the line above)
    naming its reason: start-up time or an optional dependency."""
    missing = []
    for module, path in MODULES.items():
        if not module.startswith("vibe_server"):
            continue
        lines = path.read_text().splitlines()
        for func in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in _import_runs(func.body):
                    above = lines[node.lineno - 2] if node.lineno > 1 else ""
                    if "#" not in lines[node.lineno - 1] and "#" not in above:
                        missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not missing, "function-level imports without a reason:\n" + "\n".join(missing)

"""The setup, test, demo and build scripts: the disk-space check (too little room stops them with one
message that says what needs the space and what to do, before pip or a test fails deep inside on a
full disk), and how each script fails: loudly, with one message that says what to do, never by
skipping work and reporting success."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def need_free_space(mib: int, folder: Path) -> subprocess.CompletedProcess:
    script = f'source scripts/free_space.sh && need_free_space {mib} "{folder}" "the thing" && echo fits'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPOSITORY, timeout=60)


def test_too_little_space_stops_with_one_message(tmp_path):
    done = need_free_space(10**12, tmp_path)  # a million TiB
    assert done.returncode == 1 and done.stdout == ""
    message = done.stderr.strip()
    assert message.startswith(f"Not enough disk space for the thing: it needs about {10**12} MiB in {tmp_path}")
    assert "MiB free. Free some space" in message and len(message.splitlines()) == 1


def test_enough_space_goes_on_silently(tmp_path):
    done = need_free_space(1, tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "fits\n", "")


# The setup, test, demo and build scripts, each run in a scratch copy of scripts/ with small shell stubs
# for the Pythons and venvs, so nothing is installed and no suite runs.

# One stub plays a base Python X.Y and every venv made from it: `-m venv [--clear] DIR` copies it to
# DIR/bin/python (with pip, unless FAKE_NO_ENSUREPIP), `-m pip install` marks bpy installed (or fails
# with FAKE_PIP_ERROR), `-c "import bpy..."` works once it is, `-m pytest` logs and passes.
FAKE_PYTHON = r"""#!/bin/sh
venv="$(dirname "$(dirname "$0")")"
case "$1" in
    --version) echo "Python @VERSION@.9" ;;
    -c) case "$2" in
            *"version_info[:2] != (@TUPLE@)"*) exit 0 ;;
            *"import bpy"*) [ -f "$venv/bpy-installed" ] || { echo "No module named 'bpy'" >&2; exit 1; } ;;
            *) exit 1 ;;
        esac ;;
    -m) case "$2" in
            venv) shift 2
                if [ "$1" = --clear ]; then shift; rm -rf "$1"; fi
                mkdir -p "$1/bin" && cp "$0" "$1/bin/python" && echo "venv $1" >> "$FAKE_LOG"
                if [ -n "$FAKE_NO_ENSUREPIP" ]; then echo "ensurepip is not available" >&2; exit 1; fi
                touch "$1/has-pip" ;;
            pip) [ -f "$venv/has-pip" ] || { echo "No module named pip" >&2; exit 1; }
                [ "$3" = --version ] && exit 0
                echo "pip $venv $*" >> "$FAKE_LOG"
                if [ -n "$FAKE_PIP_ERROR" ]; then echo "ERROR: $FAKE_PIP_ERROR" >&2; exit 1; fi
                touch "$venv/bpy-installed" ;;
            pytest) echo "pytest $venv $*" >> "$FAKE_LOG" ;;
            *) echo "$*" >> "$FAKE_LOG" ;;
        esac ;;
esac
"""


def write_stub(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def fake_python(path: Path, version: str) -> Path:
    return write_stub(path, FAKE_PYTHON.replace("@VERSION@", version).replace("@TUPLE@", version.replace(".", ", ")))


def scratch_checkout(tmp_path: Path, **stubbed_scripts: str) -> Path:
    """scripts/ copied into tmp_path/repo, with the named scripts replaced by the given text."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for script in (REPOSITORY / "scripts").glob("*.sh"):
        (repo / "scripts" / script.name).write_text(script.read_text())
    for name, text in stubbed_scripts.items():
        write_stub(repo / "scripts" / f"{name}.sh", text)
    return repo


def script_env(tmp_path: Path, pythons: dict[str, str | None], **extra: str) -> dict[str, str]:
    """PATH starts with python3.11 / python3.13 stubs: a working one for a version, or one that is no
    Python at all for None; pyenv's folder is empty, and no Python variable is inherited."""
    bin_dir = tmp_path / "bin"
    for version, works in pythons.items():
        if works:
            fake_python(bin_dir / f"python{version}", version)
        else:
            write_stub(bin_dir / f"python{version}", "#!/bin/sh\nexit 127\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "PYTHON311", "PYTHON313", "BPY_VERSIONS")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYENV_ROOT=str(tmp_path / "no-pyenv"), FAKE_LOG=str(tmp_path / "log"))
    env.update(extra)
    return env


def run_script(repo: Path, script: str, env: dict[str, str], *args: str, cwd: Path | None = None):
    return subprocess.run(
        ["bash", str(repo / "scripts" / script), *args],
        capture_output=True, text=True, cwd=cwd or repo, env=env, timeout=120,
    )  # fmt: skip


def log_lines(tmp_path: Path) -> list[str]:
    log = tmp_path / "log"
    return log.read_text().splitlines() if log.exists() else []


def test_setup_blender_without_python_3_11_is_an_error_that_names_the_variable(tmp_path):
    repo = scratch_checkout(tmp_path)
    done = run_script(repo, "setup_blender.sh", script_env(tmp_path, {"3.11": None, "3.13": "3.13"}))
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "needs Python 3.11" in done.stderr
    assert "set PYTHON=/path/to/python3.11" in done.stderr
    assert not list(repo.glob(".venv-bpy-*"))


def test_setup_blender_takes_python_3_11_from_the_variable(tmp_path):
    repo = scratch_checkout(tmp_path)
    python = fake_python(tmp_path / "elsewhere" / "py311", "3.11")
    env = script_env(tmp_path, {"3.11": None, "3.13": None}, PYTHON=str(python), BPY_VERSIONS="5.0")
    done = run_script(repo, "setup_blender.sh", env)
    assert done.returncode == 0, done.stderr
    assert ".venv-bpy-5.0 ready: bpy 5.0.1" in done.stdout


def test_setup_blender_skips_only_5_2_without_python_3_13(tmp_path):
    repo = scratch_checkout(tmp_path)
    done = run_script(repo, "setup_blender.sh", script_env(tmp_path, {"3.11": "3.11", "3.13": None}))
    assert done.returncode == 0, done.stderr
    assert "skip bpy 5.2: it needs Python 3.13" in done.stdout
    assert sorted(p.name for p in repo.glob(".venv-bpy-*")) == [".venv-bpy-4.2", ".venv-bpy-4.5", ".venv-bpy-5.0"]
    for v in ("4.2", "4.5", "5.0"):
        assert f".venv-bpy-{v} ready" in done.stdout
    # named explicitly, 5.2 must be set up
    env = script_env(tmp_path, {"3.11": "3.11", "3.13": None}, BPY_VERSIONS="5.2")
    done = run_script(repo, "setup_blender.sh", env)
    assert done.returncode == 1 and "set PYTHON313=/path/to/python3.13" in done.stderr


def test_setup_blender_makes_a_half_made_venv_again(tmp_path):
    repo = scratch_checkout(tmp_path)
    env = script_env(tmp_path, {"3.11": "3.11", "3.13": None}, BPY_VERSIONS="4.5", FAKE_NO_ENSUREPIP="1")
    done = run_script(repo, "setup_blender.sh", env)
    assert done.returncode == 1 and "ensurepip is not available" in done.stderr
    assert "could not create .venv-bpy-4.5" in done.stderr
    assert (repo / ".venv-bpy-4.5/bin/python").exists()  # half made: a Python without pip
    del env["FAKE_NO_ENSUREPIP"]
    done = run_script(repo, "setup_blender.sh", env)
    assert done.returncode == 0, done.stderr
    assert "making it again" in done.stdout and ".venv-bpy-4.5 ready: bpy 4.5.15" in done.stdout
    assert [line.split()[0] for line in log_lines(tmp_path)] == ["venv", "venv", "pip"]


def test_setup_blender_shows_a_failed_pip_install_and_fails(tmp_path):
    repo = scratch_checkout(tmp_path)
    env = script_env(tmp_path, {"3.11": "3.11", "3.13": None}, BPY_VERSIONS="4.2", FAKE_PIP_ERROR="no bpy==4.2.23")
    done = run_script(repo, "setup_blender.sh", env)
    assert done.returncode == 1
    assert "ERROR: no bpy==4.2.23" in done.stdout + done.stderr
    assert "pip could not install bpy==4.2.23" in done.stderr and "ready" not in done.stdout


def test_setup_blender_refuses_an_unknown_version(tmp_path):
    repo = scratch_checkout(tmp_path)
    env = script_env(tmp_path, {"3.11": "3.11", "3.13": None}, BPY_VERSIONS="4.3")
    done = run_script(repo, "setup_blender.sh", env)
    assert done.returncode == 1 and "unknown Blender version '4.3'" in done.stderr


def blender_test_checkout(tmp_path: Path, versions: tuple[str, ...]) -> tuple[Path, dict[str, str]]:
    """A checkout whose setup_blender.sh does nothing, with working bpy venvs for these versions."""
    repo = scratch_checkout(tmp_path, setup_blender="#!/bin/sh\nexit 0\n", setup="#!/bin/sh\nexit 0\n")
    fake_python(repo / ".venv/bin/python", "3.11")
    for v in versions:
        (fake_python(repo / f".venv-bpy-{v}/bin/python", "3.11").parents[1] / "bpy-installed").touch()
    return repo, script_env(tmp_path, {})


def test_blender_suite_fails_when_a_required_version_did_not_run(tmp_path):
    repo, env = blender_test_checkout(tmp_path, ("4.2", "5.0"))
    done = run_script(repo, "test_blender.sh", env)
    assert done.returncode == 1 and "passed" not in done.stdout
    assert "Blender suite failed: 4.5 (not set up)" in done.stderr
    assert "5.2" in done.stdout  # skipped, and says so


def test_blender_suite_passes_without_5_2_unless_it_is_named(tmp_path):
    repo, env = blender_test_checkout(tmp_path, ("4.2", "4.5", "5.0"))
    done = run_script(repo, "test_blender.sh", env)
    assert done.returncode == 0, done.stderr
    assert "Blender suite passed: Blender 4.2 4.5 5.0" in done.stdout
    assert len([line for line in log_lines(tmp_path) if line.startswith("pytest")]) == 6
    done = run_script(repo, "test_blender.sh", dict(env, BPY_VERSIONS="5.0 5.2"))
    assert done.returncode == 1 and "Blender suite failed: 5.2 (not set up)" in done.stderr


def demo_checkout(tmp_path: Path, bpy_works: bool) -> tuple[Path, dict[str, str]]:
    """setup_blender.sh stubbed: it succeeds when bpy works, else fails as the real one does."""
    setup_blender = (
        "#!/bin/sh\nexit 0\n" if bpy_works else "#!/bin/sh\necho 'bpy 5.0 could not be installed' >&2\nexit 1\n"
    )
    repo = scratch_checkout(tmp_path, setup_blender=setup_blender, setup="#!/bin/sh\nexit 0\n")
    write_stub(repo / ".venv/bin/vibe-mocap", '#!/bin/sh\necho "vibe-mocap $*" >> "$FAKE_LOG"\n')
    bpy_python = fake_python(repo / ".venv-bpy-5.0/bin/python", "3.11")
    if bpy_works:
        (bpy_python.parents[1] / "bpy-installed").touch()
    return repo, script_env(tmp_path, {})


def test_demo_takes_relative_paths_from_the_folder_it_is_run_in(tmp_path):
    repo, env = demo_checkout(tmp_path, bpy_works=True)
    here = tmp_path / "here"
    here.mkdir()
    (here / "clip.mp4").write_bytes(b"")
    done = run_script(repo, "demo.sh", dict(env, DEMO_OUT="results"), "clip.mp4", cwd=here)
    assert done.returncode == 0, done.stderr
    infer, batch = log_lines(tmp_path)
    assert infer.startswith(f"vibe-mocap infer {here}/clip.mp4 -o {here}/results/clip.npz")
    assert batch.startswith(f"-m vibe_blender.batch {here}/results/clip.npz") and f"--video {here}/clip.mp4" in batch
    assert batch.endswith("--overwrite")  # run again, it replaces its own .blend and FBX (batch refuses otherwise)
    assert (here / "results").is_dir() and not (repo / "results").exists()


def test_demo_names_its_outputs_after_the_file_not_a_dotted_folder(tmp_path):
    """Before: my.clips/take made out/my.npz, and a folder given as the video was "No such video file"."""
    repo, env = demo_checkout(tmp_path, bpy_works=True)
    (tmp_path / "my.clips").mkdir()
    for name in ("take", ".hidden"):
        (tmp_path / "my.clips" / name).write_bytes(b"")
        done = run_script(repo, "demo.sh", env, str(tmp_path / "my.clips" / name))
        assert done.returncode == 0, done.stderr
        assert log_lines(tmp_path)[-2].startswith(f"vibe-mocap infer {tmp_path}/my.clips/{name} -o out/{name}.npz")
    done = run_script(repo, "demo.sh", env, str(tmp_path / "my.clips"))
    assert (
        done.returncode == 1
        and done.stderr == f"{tmp_path}/my.clips is a folder; give one video file (for many: vibe-mocap batch).\n"
    )


def test_demo_stops_before_inference_when_blender_does_not_work(tmp_path):
    repo, env = demo_checkout(tmp_path, bpy_works=False)
    (repo / "clip.mp4").write_bytes(b"")
    done = run_script(repo, "demo.sh", env, "clip.mp4")
    assert done.returncode == 1 and "bpy 5.0 could not be installed" in done.stderr
    assert log_lines(tmp_path) == []
    done = run_script(repo, "demo.sh", env, "missing.mp4")
    assert done.returncode == 1 and "No such video file" in done.stderr


# build_extension.sh, with a fake bpy whose extension tool logs its arguments and writes the zip.
FAKE_BPY = """import os
class utils:
    system_resource = staticmethod(lambda kind: os.environ["FAKE_BPY_SCRIPTS"])
"""
FAKE_BLENDER_EXT = """import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1] == "build":
    out = sys.argv[sys.argv.index("--output-dir") + 1]
    open(os.path.join(out, "vibe_mocap-0.1.0.zip"), "w").close()
"""


def fake_bpy_python(tmp_path: Path, with_bpy: bool) -> Path:
    site = tmp_path / "site"
    site.mkdir(parents=True)
    if with_bpy:
        (site / "bpy").mkdir()
        (site / "bpy/__init__.py").write_text(FAKE_BPY)
    else:  # whatever the Python running the tests holds, bpy does not import here
        (site / "bpy.py").write_text("raise ImportError(\"No module named 'bpy'\")\n")
    return write_stub(tmp_path / "bin" / "python", f"#!/bin/sh\nPYTHONPATH='{site}' exec '{sys.executable}' \"$@\"\n")


def test_build_extension_without_bpy_says_what_to_do(tmp_path):
    python = fake_bpy_python(tmp_path, with_bpy=False)
    done = subprocess.run(
        ["bash", "scripts/build_extension.sh", "--output-dir", str(tmp_path / "dist")],
        capture_output=True, text=True, cwd=REPOSITORY, env=dict(os.environ, BPY_PYTHON=str(python)), timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert f"bpy is not importable in {python}; run scripts/setup_blender.sh" in done.stderr
    assert not (tmp_path / "dist").exists()


def test_build_extension_argument_errors_show_the_usage(tmp_path):
    for args in (["--output-dir"], ["--output-dir="], ["--outdir", "x"]):
        done = subprocess.run(
            ["bash", "scripts/build_extension.sh", *args], capture_output=True, text=True, cwd=REPOSITORY, timeout=60
        )
        assert done.returncode == 2 and done.stdout == "", args
        message, usage = done.stderr.splitlines()
        assert ("needs a folder" in message or "unknown argument '--outdir'" in message) and usage.startswith("usage:")


def test_build_extension_in_a_folder_with_spaces(tmp_path):
    root = tmp_path / "a b"
    python = fake_bpy_python(root, with_bpy=True)
    write_stub(root / "scripts dir/addons_core/bl_pkg/cli/blender_ext.py", FAKE_BLENDER_EXT)
    write_stub(root / "scripts dir/modules/_bpy_internal/extensions/tags.py", "")
    repo = scratch_checkout(root)
    (repo / "blender_manifest.toml").write_text('version = "0.1.0"\n')
    env = dict(os.environ, BPY_PYTHON=str(python), FAKE_BPY_SCRIPTS=str(root / "scripts dir"))
    env["FAKE_LOG"] = str(root / "log")
    done = run_script(repo, "build_extension.sh", env, "--output-dir", "out dir", cwd=root)
    assert done.returncode == 0, done.stderr
    zip_path = root / "out dir/vibe_mocap-0.1.0.zip"
    assert zip_path.exists() and done.stdout.splitlines()[-2].startswith(f"Built {zip_path}  (Blender: ")
    assert done.stdout.splitlines()[-1].endswith("/.venv/bin/vibe-mocap (made by scripts/setup.sh).")
    tags = f"--valid-tags={root}/scripts dir/modules/_bpy_internal/extensions/tags.py"
    calls = [json.loads(line) for line in (root / "log").read_text().splitlines()]
    assert calls == [
        ["validate", tags, "."],
        ["build", tags, "--source-dir", ".", "--output-dir", str(root / "out dir")],
        ["validate", tags, str(zip_path)],
    ]


def test_a_relative_python_is_taken_from_the_callers_folder(tmp_path):
    """PYTHON=./py311 named the caller's file, but the script looked for it after changing to the
    repository's folder and said no Python 3.11 was found."""
    repo = scratch_checkout(tmp_path)
    caller = tmp_path / "elsewhere"
    fake_python(caller / "py311", "3.11")
    env = script_env(tmp_path, {"3.11": None}, PYTHON="./py311", BPY_VERSIONS="5.0")
    done = run_script(repo, "setup_blender.sh", env, cwd=caller)
    assert done.returncode == 0, done.stderr
    assert (repo / ".venv-bpy-5.0" / "bpy-installed").is_file()  # made with the caller's Python


def test_setup_refuses_a_python_it_was_given_that_does_not_run_instead_of_using_another(tmp_path):
    repo = scratch_checkout(tmp_path)
    env = script_env(tmp_path, {"3.11": "3.11"}, PYTHON="./no-such-python")
    done = run_script(repo, "setup.sh", env, cwd=tmp_path)
    assert done.returncode == 1 and not (repo / ".venv").exists()
    assert f"'{tmp_path}/no-such-python' is not a Python that runs" in done.stderr
    assert "Set PYTHON=/path/to/python3.11" in done.stderr


def test_the_install_check_names_a_missing_dependency(monkeypatch):
    """setup.sh installs again when a dependency went missing, not only when pyproject.toml changed."""
    import importlib.metadata

    sys.path.insert(0, str(REPOSITORY / "scripts"))
    try:
        import installed
    finally:
        sys.path.pop(0)
    assert installed.missing() == []  # this checkout's venv: everything is there
    real_version = importlib.metadata.version

    def without_ray(name):
        if name == "ray":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(installed.metadata, "version", without_ray)
    assert installed.missing() == ["ray"]


def test_the_python_suite_runs_when_blender_cannot_be_set_up_and_the_run_still_fails(tmp_path):
    fails = "#!/bin/sh\necho 'bpy 5.2 could not be installed' >&2\nexit 1\n"
    repo = scratch_checkout(
        tmp_path, setup="#!/bin/sh\nexit 0\n", setup_blender=fails, test_blender="#!/bin/sh\nexit 0\n"
    )
    fake_python(repo / ".venv/bin/python", "3.11")
    (repo / ".venv/has-pip").touch()
    done = run_script(repo, "test.sh", script_env(tmp_path, {}))
    assert done.returncode == 1
    assert "bpy 5.2 could not be installed" in done.stderr and "The Blender suite did not run" in done.stderr
    assert [line.split()[0] for line in log_lines(tmp_path)] == ["pytest"]  # the Python suite ran

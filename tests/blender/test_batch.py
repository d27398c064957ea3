"""python -m vibe_blender.batch: a motion file -> .blend + FBX, as the README's demo runs it."""

import os
import subprocess
import sys
from pathlib import Path

import bpy
import pytest

from vibe_blender.core.errors import VibeError

pytestmark = pytest.mark.blender
REPO = Path(__file__).resolve().parents[2]


def run_batch(reference_dir, *args: str) -> subprocess.CompletedProcess:
    """``python -m vibe_blender.batch`` on the reference result and body model, with ``args``."""
    result, body = str(reference_dir / "result.npz"), str(reference_dir / "body_model.npz")
    command = [sys.executable, "-m", "vibe_blender.batch", result, "--body-model", body, *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_batch_writes_blend_and_fbx(reference_dir, tmp_path):
    blend, fbx = tmp_path / "out" / "capture.blend", tmp_path / "out" / "capture.fbx"
    run = run_batch(reference_dir, "-o", str(blend), "--fbx", str(fbx))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"Wrote {blend}" in run.stdout and f"Wrote {fbx}" in run.stdout and "blender " in run.stdout
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    armatures = sorted(o.name for o in bpy.data.objects if o.type == "ARMATURE")
    assert armatures == ["track_1", "track_2"]
    assert all(bpy.data.objects[a].animation_data.action for a in armatures)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.fbx(filepath=str(fbx), anim_offset=0.0, ignore_leaf_bones=False)
    imported = [o for o in bpy.data.objects if o.type == "ARMATURE"]
    assert len(imported) == 2 and all(len(o.data.bones) == 24 for o in imported)
    bpy.ops.wm.read_factory_settings(use_empty=True)


def test_batch_reports_a_bad_body_model(reference_dir, tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "vibe_blender.batch",
            str(reference_dir / "result.npz"),
            "--model-dir",
            str(tmp_path),
            "-o",
            str(tmp_path / "x.blend"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1
    assert "has no SMPL_NEUTRAL.pkl" in run.stderr and "Traceback" not in run.stderr


def test_batch_without_bpy_says_which_python_to_use_in_one_line(reference_dir, tmp_path):
    """Run with a Python that has no bpy (here: bpy made unimportable), it points to the bpy venv."""
    code = "import sys; sys.modules['bpy'] = None; from vibe_blender.batch import main; sys.exit(main(sys.argv[1:]))"
    argv = [str(reference_dir / "result.npz"), "--body-model", str(reference_dir / "body_model.npz")]
    run = subprocess.run(
        [sys.executable, "-c", code, *argv, "-o", str(tmp_path / "x.blend")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    [line] = run.stderr.splitlines()
    assert "scripts/setup_blender.sh" in line and ".venv-bpy-" in line and not (tmp_path / "x.blend").exists()


def test_batch_with_a_bpy_that_fails_to_load_says_why_in_one_line(reference_dir, tmp_path):
    """A bpy that is installed but cannot load (a system library missing) is not reported as no bpy."""
    fake = tmp_path / "fake" / "bpy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise ImportError("libXi.so.6: cannot open shared object file: No such file or directory")\n'
    )
    argv = [str(reference_dir / "result.npz"), "--body-model", str(reference_dir / "body_model.npz")]
    run = subprocess.run(
        [sys.executable, "-m", "vibe_blender.batch", *argv, "-o", str(tmp_path / "x.blend")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), str(REPO)])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    [line] = run.stderr.splitlines()
    assert "libXi.so.6: cannot open shared object file" in line and "does not have" not in line
    assert "bpy" in line and not (tmp_path / "x.blend").exists()


def test_batch_with_model_data_folder_and_official_pkl(official_pkl, tmp_path):
    from vibe_server.data.synthetic import write_smpl_files

    write_smpl_files(tmp_path / "vibe_data", seed=0)
    blend = tmp_path / "official.blend"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "vibe_blender.batch",
            str(official_pkl),
            "--model-dir",
            str(tmp_path / "vibe_data"),
            "-o",
            str(blend),
            "--fps",
            "24",
            "--correctives",
            "drivers",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "frames 1-32 at 24 fps" in run.stdout and blend.is_file()


def test_batch_says_once_that_a_file_without_frame_rate_got_30_fps(official_pkl, tmp_path, capsys):
    """Before: the official pkl (no frame rate stored) played at 30 fps without a word."""
    from vibe_blender.batch import main
    from vibe_server.data.synthetic import write_smpl_files

    write_smpl_files(tmp_path / "vibe_data", seed=0)
    argv = [str(official_pkl), "--model-dir", str(tmp_path / "vibe_data"), "-o", str(tmp_path / "x.blend")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    [warning] = [line for line in out.splitlines() if "stores no frame rate" in line]
    assert "imported at 30 fps" in warning and "--fps" in warning and "at 30 fps, in" in out
    assert main([*argv, "--fps", "24", "--overwrite"]) == 0
    assert "stores no frame rate" not in capsys.readouterr().out
    bpy.ops.wm.read_factory_settings(use_empty=True)


@pytest.mark.parametrize(
    "flag, value, said",
    [
        # before: the official pkl was called damaged for a wrong --fps, and 0 was taken as 30
        *(("--fps", fps, "0.01..32767") for fps in ("-5", "nan", "100000", "0")),
        # before: exit status 1, and only once the motion file was read
        *(("--max-characters", count, "1 or more") for count in ("0", "-3", "two")),
    ],
)
def test_batch_refuses_a_flag_out_of_its_range_as_a_usage_error(official_pkl, tmp_path, capsys, flag, value, said):
    from vibe_blender.batch import main

    argv = [str(official_pkl), "--model-dir", str(tmp_path), "-o", str(tmp_path / "x.blend"), flag, value]
    with pytest.raises(SystemExit) as exit_status:
        main(argv)
    error = capsys.readouterr().err
    assert exit_status.value.code == 2 and f"argument {flag}" in error and said in error
    assert f"got '{value}'" in error and "damaged" not in error


def test_batch_refuses_an_fbx_file_not_ending_in_fbx_before_any_work(reference_dir, tmp_path, capsys):
    """Before: '--fbx scene.blend' wrote FBX over the user's .blend and said it wrote it."""
    from vibe_blender.batch import main

    theirs = tmp_path / "scene.blend"
    theirs.write_bytes(b"the user's scene")
    argv = [str(reference_dir / "result.npz"), "--body-model", str(reference_dir / "body_model.npz")]
    assert main([*argv, "-o", str(tmp_path / "c.blend"), "--fbx", str(theirs)]) == 1
    assert "must end in .fbx; got" in capsys.readouterr().err
    assert theirs.read_bytes() == b"the user's scene" and not (tmp_path / "c.blend").exists()


def test_batch_replaces_an_existing_output_only_when_given_overwrite(reference_dir, tmp_path, capsys):
    """Before: a second run (or an -o naming the user's own scene) replaced the .blend and FBX without a
    word, and left the earlier .blend beside it as .blend1."""
    from vibe_blender.batch import main

    blend, fbx = tmp_path / "c.blend", tmp_path / "c.fbx"
    argv = [str(reference_dir / "result.npz"), "--body-model", str(reference_dir / "body_model.npz")]
    assert main([*argv, "-o", str(blend), "--fbx", str(fbx)]) == 0
    earlier = blend.read_bytes(), fbx.read_bytes()
    capsys.readouterr()
    assert main([*argv, "-o", str(blend), "--fbx", str(tmp_path / "new.fbx")]) == 1
    error = capsys.readouterr().err
    assert f"The .blend file '{blend}' already exists, and batch replaces a file only when given --overwrite" in error
    assert "give another name (-o PATH) or move the file away; to replace it, add --overwrite." in error
    assert main([*argv, "-o", str(tmp_path / "new.blend"), "--fbx", str(fbx)]) == 1
    assert f"The FBX file '{fbx}' already exists" in capsys.readouterr().err
    assert (blend.read_bytes(), fbx.read_bytes()) == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.blend", "c.fbx"]
    assert main([*argv, "-o", str(blend), "--fbx", str(fbx), "--overwrite", "--max-characters", "1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.blend", "c.fbx"]  # no c.blend1, no part
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    assert [o.name for o in bpy.data.objects if o.type == "ARMATURE"] == ["track_2"]  # the new one
    bpy.ops.wm.read_factory_settings(use_empty=True)


def test_batch_writes_neither_file_when_the_fbx_export_fails(reference_dir, tmp_path, capsys, monkeypatch):
    """Before: the .blend was saved first: a failed FBX export left a new .blend (over an earlier one)
    while the error spoke of the FBX only."""
    from vibe_blender import batch, export

    def disk_full(path, *args, **kwargs):
        raise VibeError(f"Blender's FBX exporter could not write '{path}'; check that the disk has free space.")

    argv = [str(reference_dir / "result.npz"), "--body-model", str(reference_dir / "body_model.npz")]
    with monkeypatch.context() as m:
        m.setattr(export, "export_fbx", disk_full)
        assert batch.main([*argv, "-o", str(tmp_path / "new.blend"), "--fbx", str(tmp_path / "new.fbx")]) == 1
    assert "FBX exporter could not write" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
    blend, fbx = tmp_path / "c.blend", tmp_path / "c.fbx"
    assert batch.main([*argv, "-o", str(blend), "--fbx", str(fbx)]) == 0
    earlier = blend.read_bytes(), fbx.read_bytes()
    monkeypatch.setattr(export, "export_fbx", disk_full)
    assert batch.main([*argv, "-o", str(blend), "--fbx", str(fbx), "--overwrite"]) == 1
    assert (blend.read_bytes(), fbx.read_bytes()) == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.blend", "c.fbx"]
    bpy.ops.wm.read_factory_settings(use_empty=True)


def test_batch_and_export_end_in_one_line_on_ctrl_c(reference_dir, tmp_path, capsys, monkeypatch):
    from vibe_blender import batch, export, importer

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importer, "import_motion_file", ctrl_c)
    argv = [str(reference_dir / "result.npz"), "--body-model", str(reference_dir / "body_model.npz")]
    assert batch.main([*argv, "-o", str(tmp_path / "c.blend")]) == 130
    assert capsys.readouterr().err == "interrupted\n" and not (tmp_path / "c.blend").exists()
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    monkeypatch.setattr(export, "export", ctrl_c)
    assert export.main([str(blend), "-o", str(tmp_path / "x.fbx")]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_batch_help_says_what_root_motion_does_and_its_default(capsys):
    from vibe_blender.batch import main

    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "in_place: it stays over the origin (default: full)" in help_text


def test_batch_imports_at_most_max_characters(reference_dir, tmp_path, capsys):
    from vibe_blender.batch import main

    argv = [str(reference_dir / "result.npz"), "--body-model", str(reference_dir / "body_model.npz")]
    assert main([*argv, "-o", str(tmp_path / "one.blend"), "--max-characters", "1"]) == 0
    assert "holds 2 people; importing the 1 seen in the most frames" in capsys.readouterr().out
    assert len([o for o in bpy.data.objects if o.type == "ARMATURE"]) == 1
    bpy.ops.wm.read_factory_settings(use_empty=True)


def test_batch_refuses_outputs_that_would_destroy_an_input_before_any_work(reference_dir, tmp_path, capsys):
    from vibe_blender.batch import main

    motion = tmp_path / "motion.npz"
    motion.write_bytes((reference_dir / "result.npz").read_bytes())
    argv = [str(motion), "--body-model", str(reference_dir / "body_model.npz")]
    assert main([*argv, "-o", str(motion)]) == 1
    assert (
        "The .blend file" in capsys.readouterr().err
        and motion.read_bytes() == (reference_dir / "result.npz").read_bytes()
    )
    assert main([*argv, "-o", str(tmp_path / "a.blend"), "--fbx", str(motion)]) == 1
    assert "The FBX file" in capsys.readouterr().err and not (tmp_path / "a.blend").exists()
    assert main([*argv, "-o", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err


def test_batch_refuses_an_output_not_ending_in_blend_before_any_work(reference_dir, tmp_path, capsys):
    """Before: '-o x.txt' wrote a .blend file named x.txt."""
    from vibe_blender.batch import main

    argv = [str(reference_dir / "result.npz"), "--body-model", str(reference_dir / "body_model.npz")]
    assert main([*argv, "-o", str(tmp_path / "out" / "x.txt")]) == 1
    assert "must end in .blend; got" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux) for a place no one can write")
@pytest.mark.parametrize(
    "output, message",
    [
        ("/proc/vibe-mocap/capture.blend", "cannot be written: the folder '/proc' takes no new files"),
        ("/proc/self/capture.blend", "cannot be written: the folder '/proc/self' takes no new files"),
    ],
)
def test_batch_reports_an_output_it_cannot_write_in_one_line(reference_dir, tmp_path, output, message):
    run = run_batch(reference_dir, "-o", output)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert message in run.stderr and "Traceback" not in run.stderr
    assert len([line for line in run.stderr.splitlines() if line.startswith("error:")]) == 1

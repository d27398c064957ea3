"""Output files: refused before any work when they would destroy an input, or the model data."""

import os
from pathlib import Path

import pytest

from vibe_blender.core.errors import VibeError
from vibe_blender.core.output_paths import check_output_path


def test_an_output_that_is_an_input_is_refused(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"frames")
    os.link(video, tmp_path / "hard-link.mp4")
    for same in (video, tmp_path / "." / "clip.mp4", tmp_path / "hard-link.mp4"):
        with pytest.raises(VibeError, match=r"The official pkl '.*' is the same file as the video '.*clip.mp4'"):
            check_output_path(same, "the official pkl", {"the video": video})
    assert video.read_bytes() == b"frames"
    assert check_output_path(tmp_path / "out.pkl", "the official pkl", {"the video": video, "none": None})


def test_an_output_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(VibeError, match=r"The result file '.*' is a folder; give the name of a file in it"):
        check_output_path(tmp_path, "the result file")


def test_an_output_inside_a_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("a file")
    for path in (tmp_path / "notes.txt" / "r.npz", tmp_path / "notes.txt" / "more" / "r.npz"):
        with pytest.raises(VibeError, match=r"The result file '.*' cannot be made: '.*notes.txt' is a file"):
            check_output_path(path, "the result file")
    assert check_output_path(tmp_path / "new" / "deeper" / "r.npz", "the result file")  # made when written


# -- every command checks its outputs before its work, and says so in one line ----------------------


@pytest.fixture
def files(tmp_path):
    """An input video, a boxes file, a database file, a plain file and a folder."""
    for name in ("clip.mp4", "boxes.csv", "3dpw_test_db.pt", "notes.txt"):
        (tmp_path / name).write_bytes(b"kept as it is")
    (tmp_path / "folder.npz").mkdir()
    return tmp_path


COMMANDS = {  # argv (from the fixture's folder) -> the words of its one error line
    "infer: -o is a folder": (["infer", "clip.mp4", "-o", "folder.npz"], "The result file 'folder.npz' is a folder"),
    "infer: --pkl is the video": (
        ["infer", "clip.mp4", "-o", "r.npz", "--pkl", "clip.mp4"],
        "The official pkl 'clip.mp4' is the same file as the video",
    ),
    "infer: --body-model is the result": (
        ["infer", "clip.mp4", "-o", "r.npz", "--body-model", "r.npz"],
        "The body-model file 'r.npz' is the same file as the result file",
    ),
    "infer: -o inside a file": (["infer", "clip.mp4", "-o", "notes.txt/r.npz"], "'notes.txt' is a file, not a folder"),
    "live: --record is a folder": (
        ["live", "clip.mp4", "--record", "folder.npz"],
        "The recording 'folder.npz' is a folder",
    ),
    "evaluate: --json is the database": (
        ["evaluate", "3dpw_test_db.pt", "--json", "3dpw_test_db.pt"],
        "The JSON report '3dpw_test_db.pt' is the same file as the database",
    ),
    "extract-features: --out is the video": (
        ["extract-features", "clip.mp4", "--bboxes", "boxes.csv", "--out", "clip.mp4"],
        "The feature file 'clip.mp4' is the same file as the video",
    ),
    "batch: -o is a file": (["batch", "clip.mp4", "-o", "notes.txt"], "The output folder 'notes.txt' cannot be made"),
    "data install: --data-dir is a file": (
        ["data", "install", "clip.mp4", "--data-dir", "notes.txt"],
        "The model-data folder 'notes.txt' cannot be made",
    ),
    "serve: --jobs-dir is a file": (
        ["serve", "--jobs-dir", "notes.txt", "--token", "t" * 22],
        "The jobs folder 'notes.txt' cannot be made",
    ),
}


@pytest.mark.parametrize("case", list(COMMANDS))
def test_outputs_are_checked_before_the_work(files, monkeypatch, capsys, case):
    from vibe_server.cli import main

    argv, words = COMMANDS[case]
    monkeypatch.chdir(files)
    monkeypatch.setenv("VIBE_DATA_DIR", str(files / "no_data"))
    before = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()} == before  # nothing written or lost


def test_a_failed_write_is_one_line_and_leaves_no_part_file(tmp_path, monkeypatch, capsys):
    """An OSError (here: the disk full) is one message from the command line, never a traceback."""
    from vibe_blender.core import atomic_file
    from vibe_server.cli import main

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "report.json"))

    monkeypatch.setattr(atomic_file.os, "fsync", disk_full)
    (tmp_path / "3dpw_test_db.pt").write_bytes(b"x")
    with pytest.raises(OSError):
        atomic_file.atomic_write(tmp_path / "report.json", lambda f: f.write(b"{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3dpw_test_db.pt"]
    monkeypatch.setattr("vibe_server.commands.evaluate.check_setting", disk_full)  # the first thing evaluate does
    assert main(["evaluate", str(tmp_path / "3dpw_test_db.pt")]) == 2
    err = capsys.readouterr().err
    path = tmp_path / "report.json"
    assert err == f"error: No space left on device ({path}). Check the path, its permissions and the free disk space.\n"


needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")


@needs_proc
def test_a_folder_that_takes_no_files_is_refused_before_the_work(tmp_path):
    # /proc takes no new files, even for root
    with pytest.raises(VibeError, match=r"The result file '/proc/r.npz' cannot be written: the folder '/proc' takes"):
        check_output_path("/proc/r.npz", "the result file")
    assert check_output_path(tmp_path / "r.npz", "the result file")
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


@needs_proc
@pytest.mark.parametrize(
    "argv",
    [
        ["infer", "clip.mp4", "-o", "/proc/r.npz"],
        ["evaluate", "3dpw_test_db.pt", "--json", "/proc/r.json"],
        ["extract-features", "clip.mp4", "--bboxes", "boxes.csv", "--out", "/proc/r.pt"],
    ],
)
def test_every_command_probes_its_output_folder_first(files, monkeypatch, capsys, argv):
    from vibe_server.cli import main

    monkeypatch.chdir(files)
    monkeypatch.setenv("VIBE_DATA_DIR", str(files / "no_data"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The ") and f"'{argv[-1]}' cannot be written: the folder '/proc'" in err, err
    assert err.count("\n") == 1 and ".part" not in err


# -- the commands never write over the model data they read -------------------------------------------

EVALUATE = ["evaluate", "3dpw_test_db.pt", "--json"]
EXTRACT = ["extract-features", "clip.mp4", "--bboxes", "boxes.csv", "--out"]
INSIDE = "is inside the model-data folder"
MODEL_DATA_CASES = {  # argv (from the fixture's folder; 'data' is the model-data folder) -> words of the error
    "evaluate: --json is the default checkpoint": (
        [*EVALUATE, "data/vibe_model_wo_3dpw.pth.tar", "--data-dir", "data"],
        INSIDE,
    ),
    "evaluate: --json is the H36M regressor": ([*EVALUATE, "data/J_regressor_h36m.npy", "--data-dir", "data"], INSIDE),
    "evaluate: --json is a new file in the folder": ([*EVALUATE, "data/r.json", "--data-dir", "data"], INSIDE),
    "evaluate: the folder from $VIBE_DATA_DIR": ([*EVALUATE, "data/r.json"], INSIDE),
    "evaluate: through a link to the folder": ([*EVALUATE, "linked/r.json", "--data-dir", "data"], INSIDE),
    "evaluate: a hard link to the checkpoint": (
        [*EVALUATE, "hard-link.pth.tar", "--data-dir", "data"],
        "is the same file as the checkpoint",
    ),
    "evaluate: a hard link to a model file": (
        [*EVALUATE, "hard-link.npy", "--data-dir", "data"],
        "is the same file as the model file J_regressor_h36m.npy",
    ),
    "evaluate: --json is the given checkpoint": (
        [*EVALUATE, "mine.pth.tar", "--checkpoint", "mine.pth.tar", "--data-dir", "data"],
        "is the same file as the checkpoint",
    ),
    "extract-features: --out is the SPIN checkpoint": (
        [*EXTRACT, "data/spin_model_checkpoint.pth.tar", "--data-dir", "data"],
        INSIDE,
    ),
    "extract-features: --out is a new file in the folder": ([*EXTRACT, "data/clip.pt", "--data-dir", "data"], INSIDE),
    "infer: --pkl is the SMPL body model": (
        ["infer", "clip.mp4", "-o", "r.npz", "--pkl", "data/SMPL_NEUTRAL.pkl", "--data-dir", "data"],
        INSIDE,
    ),
    "infer: -o in the folder from $VIBE_DATA_DIR": (["infer", "clip.mp4", "-o", "data/r.npz"], INSIDE),
    "infer: --body-model in the folder": (
        ["infer", "clip.mp4", "-o", "r.npz", "--body-model", "data/body.npz", "--data-dir", "data"],
        INSIDE,
    ),
    "live: --record in the folder": (["live", "clip.mp4", "--record", "data/take.npz", "--data-dir", "data"], INSIDE),
    "batch: -o is the folder": (["batch", "clip.mp4", "-o", "data", "--data-dir", "data"], INSIDE),
    "batch: -o inside the folder from $VIBE_DATA_DIR": (["batch", "clip.mp4", "-o", "linked/results"], INSIDE),
}


@pytest.mark.parametrize("case", list(MODEL_DATA_CASES))
def test_outputs_never_replace_the_model_data(files, monkeypatch, capsys, case):
    from vibe_server.cli import main
    from vibe_server.data.loading import REQUIRED_FILES

    argv, words = MODEL_DATA_CASES[case]
    data = files / "data"
    data.mkdir()
    for name in REQUIRED_FILES:
        (data / name).write_bytes(b"installed model data " + name.encode())
    (files / "mine.pth.tar").write_bytes(b"a trained checkpoint")
    os.symlink(data, files / "linked")
    os.link(data / "vibe_model_wo_3dpw.pth.tar", files / "hard-link.pth.tar")
    os.link(data / "J_regressor_h36m.npy", files / "hard-link.npy")
    monkeypatch.chdir(files)
    monkeypatch.setenv("VIBE_DATA_DIR", str(data))
    before = {p: p.read_bytes() for p in [*files.iterdir(), *data.iterdir()] if p.is_file()}
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1, err
    after = {p: p.read_bytes() for p in [*files.iterdir(), *data.iterdir()] if p.is_file()}
    assert after == before  # nothing written or lost

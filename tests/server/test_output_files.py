"""Output files: refused before any work when they would destroy an input, written atomically."""

import errno
import os
from pathlib import Path

import pytest

from vibe_blender.core.errors import VibeError
from vibe_blender.core.output_paths import check_output_path
from vibe_server import output_files
from vibe_server.output_files import atomic_save, atomic_write, remove_leftover_parts


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    def fail_halfway(f):
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "r.npz", fail_halfway)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_the_file_only_once_written(tmp_path):
    (tmp_path / "r.npz").write_bytes(b"old")
    atomic_write(tmp_path / "sub" / "r.npz", lambda f: f.write(b"new"))
    assert (tmp_path / "sub" / "r.npz").read_bytes() == b"new" and (tmp_path / "r.npz").read_bytes() == b"old"


def test_a_write_that_may_not_make_its_folder_leaves_a_missing_one_missing(tmp_path):
    """(A job folder deleted while its .pkl is built must not come back.)"""
    with pytest.raises(FileNotFoundError) as err:
        atomic_write(tmp_path / "gone" / "r.pkl", lambda f: f.write(b"new"), make_folder=False)
    assert err.value.filename == str(tmp_path / "gone" / "r.pkl") and list(tmp_path.iterdir()) == []


def test_an_output_whose_name_is_as_long_as_the_file_system_takes_is_written(tmp_path):
    """Before: its temporary name, 15 bytes longer, was refused (ENAMETOOLONG, naming the temporary file)."""
    path = tmp_path / ("a" * 251 + ".npz")  # 255 bytes: the longest name most file systems take
    atomic_write(path, lambda f: f.write(b"result"))
    assert path.read_bytes() == b"result" and list(tmp_path.iterdir()) == [path]


def test_the_leftovers_of_killed_writes_are_found_for_their_own_output_only(tmp_path):
    path, other = tmp_path / ("a" * 251 + ".npz"), tmp_path / "other.npz"
    for leftover in (output_files._part_path(path), output_files._part_path(other)):
        leftover.write_bytes(b"half")  # as a write killed outright leaves it
    (tmp_path / f".{path.name[-20:]}.0123abcd.part").write_bytes(b"half")  # an earlier version's, of another name
    (tmp_path / ".checkpoint.pth.tar.0123abcd.part").write_bytes(b"half")  # an earlier version's
    assert remove_leftover_parts(path) == 1 and remove_leftover_parts(tmp_path / "checkpoint.pth.tar") == 1
    assert len(list(tmp_path.iterdir())) == 2


def test_a_failed_write_tells_its_own_error_when_its_temporary_file_cannot_be_deleted(tmp_path, monkeypatch):
    def refuse(self, missing_ok=False):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    def disk_full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "unlink", refuse)
    with pytest.raises(OSError) as err:
        atomic_write(tmp_path / "r.npz", disk_full)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "r.npz")


def test_the_file_is_flushed_through_the_descriptor_held_since_it_was_made(tmp_path, monkeypatch):
    """Not through one opened by its name again once written: another open, which can fail or find
    another file there."""
    opened_after_the_save, saved, synced = [], [], []
    real_open, real_fsync = open, os.fsync

    def spy_open(file, mode="r", *args, **kwargs):
        if saved:
            opened_after_the_save.append(file)
        return real_open(file, mode, *args, **kwargs)

    def spy_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(output_files, "open", spy_open, raising=False)  # the builtin, as the module finds it
    monkeypatch.setattr(output_files.os, "fsync", spy_fsync)

    def save(tmp: Path) -> None:  # as a checkpoint saver writes: by the path
        tmp.write_bytes(b"checkpoint")
        saved.append(tmp.stat().st_ino)

    atomic_save(tmp_path / "c.pth.tar", save)
    assert opened_after_the_save == [] and synced == saved
    assert (tmp_path / "c.pth.tar").read_bytes() == b"checkpoint"


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
    from vibe_server import output_files
    from vibe_server.cli import main

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "report.json"))

    monkeypatch.setattr(output_files.os, "fsync", disk_full)
    (tmp_path / "3dpw_test_db.pt").write_bytes(b"x")
    with pytest.raises(OSError):
        output_files.atomic_write(tmp_path / "report.json", lambda f: f.write(b"{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3dpw_test_db.pt"]
    monkeypatch.setattr("vibe_server.commands.evaluate.check_setting", disk_full)  # the first thing evaluate does
    assert main(["evaluate", str(tmp_path / "3dpw_test_db.pt")]) == 2
    err = capsys.readouterr().err
    path = tmp_path / "report.json"
    assert err == f"error: No space left on device ({path}). Check the path, its permissions and the free disk space.\n"


def test_a_failed_write_names_the_output_not_its_temporary_name(tmp_path):
    def disk_full(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")  # as a write() raises it: no file name

    with pytest.raises(OSError) as err:
        atomic_write(tmp_path / "r.npz", disk_full)
    assert err.value.filename == str(tmp_path / "r.npz") and list(tmp_path.iterdir()) == []


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

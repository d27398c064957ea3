"""``vibe-mocap batch`` on local worker processes: inputs, manifest, atomic writes, a corrupt file,
a killed run resumed, a dead worker retried. The workers load the tiny model on real decoded clips
(``batch_fakes.tiny_engine``)."""

from __future__ import annotations

import errno
import json
import os
import queue
import re
import signal
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path

import cv2
import numpy as np
import pytest
from testdata import REAL_CLIPS

from tests.server.batch_fakes import CRASH_PREFIX, FakeRay
from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import MocapResult, VideoInfo, load_result
from vibe_server.batch import local_pool, ray_runner, runner
from vibe_server.batch.engine_adapter import FAST, EngineSpec, make_options, result_bytes, worker_precision
from vibe_server.batch.inputs import discover
from vibe_server.batch.manifest import MANIFEST_NAME, SUMMARY_NAME, Manifest, make_record, remove_stale_parts
from vibe_server.batch.progress import BatchProgress
from vibe_server.cli import main
from vibe_server.pipeline.cpu_features import default_precision

ROOT = Path(__file__).resolve().parents[2]
ENGINE = "tests.server.batch_fakes:tiny_engine"
CLIPS_DIR = REAL_CLIPS
CLIP_FRAMES = 12
# (source clip, first frame): short cuts of the real clips, downscaled so that a batch takes seconds
CLIP_SOURCES = {
    "walk.mp4": ("one-by-one-person-detection.mp4", 262),
    "sign.mp4": ("asl-walk.mkv", 0),
    "street.mp4": ("face-demographics-walking.gif", 0),
}


def cut_clip(
    source: str, first_frame: int, destination: Path, *, frames: int = CLIP_FRAMES, size: tuple[int, int] = (192, 112)
) -> Path:
    """A short mp4 (small by default) from one of the real clips."""
    if not (CLIPS_DIR / source).is_file():
        pytest.fail(f"The real clip {CLIPS_DIR / source} is missing from the repository.")
    cap = cv2.VideoCapture(str(CLIPS_DIR / source))
    cap.set(cv2.CAP_PROP_POS_FRAMES, first_frame)
    destination.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(destination), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, size)
    for _ in range(frames):
        ok, frame = cap.read()
        assert ok, f"{source} has fewer frames than the test needs"
        writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    writer.release()
    cap.release()
    return destination


def cut_clips(folder: Path) -> dict[str, Path]:
    """{clip name: path} for every clip of CLIP_SOURCES, cut into ``folder``."""
    return {name: cut_clip(source, first, folder / name) for name, (source, first) in CLIP_SOURCES.items()}


@pytest.fixture(scope="module")
def clip_bank(tmp_path_factory) -> dict[str, Path]:
    return cut_clips(tmp_path_factory.mktemp("clips"))


def place(clip_bank, root: Path, layout: dict[str, str]) -> Path:
    """layout {relative path: clip name} -> the input folder with those videos (copies)."""
    for relative, clip in layout.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(clip_bank[clip].read_bytes())
    return root


def batch_args(*inputs, out: Path, extra=()) -> list[str]:
    return [
        "batch",
        *map(str, inputs),
        "-o",
        str(out),
        "--engine",
        ENGINE,
        "--min-track-frames",
        "5",
        "--no-progress",
        *extra,
    ]


def manifest_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _as_from_a_terminal() -> None:
    """In the child before it runs: Ctrl-C, SIGTERM and SIGHUP as a shell leaves them (neither ignored
    nor blocked), whatever a library loaded earlier in the test process (or nohup) did to its own
    signals (both are inherited)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def start_batch_until_first_record(inputs: Path, out: Path) -> subprocess.Popen:
    """``vibe-mocap batch --jobs 1`` in a process group of its own, once its first record is written
    (so that a signal sent then lands while the next video is being processed)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'server'}", "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(
        [sys.executable, "-m", "vibe_server", *batch_args(inputs, out=out, extra=["--jobs", "1"])],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=_as_from_a_terminal,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        if (out / MANIFEST_NAME).is_file() and manifest_lines(out):
            break
        time.sleep(0.05)
    assert run.poll() is None, run.stderr.read().decode()
    return run


# -- inputs -------------------------------------------------------------------------------------


def test_discover_keeps_the_folder_layout_and_reads_path_lists(tmp_path):
    for name in (
        "shoot/day1/take1.mp4",
        "shoot/day1/take2.MOV",
        "shoot/notes.txt",
        "shoot/.hidden/x.mp4",
        "loose/one.mkv",
        "other/two.avi",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    paths = tmp_path / "list.txt"
    paths.write_text(f"# takes\n{tmp_path / 'loose/one.mkv'}\n\nother/two.avi\n")
    items = discover([str(tmp_path / "shoot"), str(paths)], tmp_path / "out")
    assert [i.key for i in items] == ["day1/take1.mp4", "day1/take2.MOV", "loose/one.mkv", "other/two.avi"]
    assert items[1].output_path == str(tmp_path / "out" / "day1" / "take2.npz")
    assert items[3].input_path == str(tmp_path / "other" / "two.avi")


def test_discover_follows_linked_folders_once_and_names_the_links_it_passes_over(tmp_path, capsys):
    """Before: a linked subfolder's videos were left out without a word."""
    shoot, elsewhere = tmp_path / "shoot", tmp_path / "elsewhere"
    for name in (shoot / "day1" / "a.mp4", elsewhere / "day2" / "b.mp4"):
        name.parent.mkdir(parents=True)
        name.write_bytes(b"x")
    (shoot / "linked").symlink_to(elsewhere)
    (shoot / "day1" / "loop").symlink_to(shoot)  # loops: back into the input folder, and in the linked one
    (elsewhere / "day2" / "back").symlink_to(elsewhere)
    items = discover([str(shoot)], tmp_path / "out")
    assert [i.key for i in items] == ["day1/a.mp4", "linked/day2/b.mp4"]
    assert items[1].input_path == str(shoot / "linked" / "day2" / "b.mp4")
    err = capsys.readouterr().err
    assert f"Note: '{shoot / 'day1' / 'loop'}' links to '{shoot}' in the same input folder" in err
    assert f"Note: '{shoot / 'linked' / 'day2' / 'back'}' leads to '{shoot / 'linked'}', a folder already" in err


def test_a_video_reached_twice_is_processed_once_under_its_first_key(tmp_path, capsys):
    """A folder and a file in it, or a link to a video beside it. Before: it ran twice, under two keys,
    for twice the work and two results."""
    (tmp_path / "v" / "sub").mkdir(parents=True)
    for name in ("a.mp4", "sub/c.mp4"):
        (tmp_path / "v" / name).write_bytes(b"x")
    (tmp_path / "v" / "alias.mp4").symlink_to(tmp_path / "v" / "a.mp4")
    items = discover([str(tmp_path / "v"), str(tmp_path / "v" / "sub" / "c.mp4")], tmp_path / "out")
    assert [item.key for item in items] == ["a.mp4", "sub/c.mp4"]
    err = capsys.readouterr().err
    assert f"Note: '{tmp_path / 'v' / 'alias.mp4'}' is the video 'a.mp4' again: it is processed once" in err
    assert f"Note: '{tmp_path / 'v' / 'sub' / 'c.mp4'}' is the video 'sub/c.mp4' again" in err


def test_a_link_to_a_folder_that_holds_the_input_folder_is_not_searched(tmp_path, capsys):
    """A downloaded dataset's link to '..' (tar keeps links) made the batch run the user's other videos."""
    dataset, private = tmp_path / "dataset", tmp_path / "private"
    for name in (dataset / "clips" / "a.mp4", private / "secret.mp4"):
        name.parent.mkdir(parents=True, exist_ok=True)
        name.write_bytes(b"x")
    (dataset / "up").symlink_to("..")
    (dataset / "root").symlink_to("/")
    assert [i.key for i in discover([str(dataset)], tmp_path / "out")] == ["clips/a.mp4"]
    err = capsys.readouterr().err
    assert f"Note: '{dataset / 'up'}' links to '{tmp_path}', which holds the input folder: it is not searched." in err
    assert f"Note: '{dataset / 'root'}' links to '/', which holds the input folder" in err


def test_a_listed_link_keeps_its_own_name_as_in_a_folder_input(tmp_path):
    """Before: the list took the key from the link's target (its whole path, outside the list's folder)."""
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "DSC_0001.avi").write_bytes(b"x")
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "take1.avi").symlink_to(tmp_path / "raw" / "DSC_0001.avi")
    (clips / "list.txt").write_text("take1.avi\n")
    [listed] = discover([str(clips / "list.txt")], tmp_path / "out")
    [in_folder] = discover([str(clips)], tmp_path / "out")
    assert listed.key == in_folder.key == "take1.avi" and listed.output_path == str(tmp_path / "out" / "take1.npz")
    assert listed.input_path == str(tmp_path / "raw" / "DSC_0001.avi")  # read through its real path
    # '..' after a linked folder is the link target's parent, for the key as for the file read
    (tmp_path / "raw" / "day1").mkdir()
    (clips / "day").symlink_to(tmp_path / "raw" / "day1")
    (clips / "list.txt").write_text("day/../DSC_0001.avi\n")
    [through] = discover([str(clips / "list.txt")], tmp_path / "out")
    assert through.input_path == listed.input_path and through.key.endswith("raw/DSC_0001.avi")


def test_a_subfolder_that_cannot_be_read_is_named_in_a_note(tmp_path, monkeypatch, capsys):
    """Before: its videos were left out without a word."""
    for name in ("a.mp4", "locked/b.mp4"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"x")
    scandir = os.scandir

    def refusing(path="."):  # as for a folder without read permission (the tests may run as root)
        if Path(path).name == "locked":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    assert [item.key for item in discover([str(tmp_path / "in")], tmp_path / "out")] == ["a.mp4"]
    err = capsys.readouterr().err
    assert f"Note: cannot read the folder '{tmp_path / 'in' / 'locked'}' (Permission denied)" in err
    assert "give this user read permission" in err


@pytest.mark.parametrize(
    "make_inputs, message",
    [
        (lambda d: [str(d / "missing.mp4")], "no file or folder"),
        (lambda d: [str(d / "a.mp4"), str(d / "clips.csv")], r"'.*clips.csv' is a text file, not a video; a list of"),
        (lambda d: [str(d / "empty")], "holds no video"),
        (lambda d: [str(d / "a.mp4"), str(d / "b/a.mp4")], "would both write 'a.npz'"),
    ],
)
def test_discover_bad_inputs_give_one_clear_error(tmp_path, make_inputs, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b" / "a.mp4").write_bytes(b"x")
    (tmp_path / "clips.csv").write_text("a.mp4\n")
    with pytest.raises(VibeError, match=message):
        discover(make_inputs(tmp_path), tmp_path / "out")


@pytest.mark.parametrize("folder", ["manifest.jsonl", "Summary.TXT", ".batch.lock"])
def test_an_input_folder_named_as_a_file_the_batch_keeps_in_outdir_is_refused(tmp_path, folder):
    """Before: 'manifest.jsonl/a.mp4' made a folder where the manifest goes (or the summary, or the lock):
    a confusing failure, and a lost summary."""
    (tmp_path / "in" / folder).mkdir(parents=True)
    (tmp_path / "in" / folder / "a.mp4").write_bytes(b"x")
    (tmp_path / "in" / "clips.txt").write_text(f"{folder}/a.mp4\n")
    given = [tmp_path / "in" / "clips.txt"] + ([] if folder.startswith(".") else [tmp_path / "in"])  # (hidden: skipped)
    for input_path in given:
        with pytest.raises(VibeError, match=f"in a folder named as the batch's own file '{re.escape(folder.lower())}'"):
            discover([str(input_path)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_video_of_an_extension_a_folder_does_not_collect_is_still_taken_as_an_input(tmp_path):
    """Only a text file is refused by its content (a list named .csv); a real video of a rarer extension
    (.mxf, none at all) goes to the decoder, which says whether it reads it."""
    (tmp_path / "take.mxf").write_bytes(b"\x06\x0e\x2b\x34\x02\x05\x01\x01\x0d\x01\x02\x01\x01\x02\x04\x00")
    (tmp_path / "other").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    items = discover([str(tmp_path / "take.mxf"), str(tmp_path / "other")], tmp_path / "out")
    assert [item.key for item in items] == ["take.mxf", "other"]


# -- manifest and atomic writes ---------------------------------------------------------------


def test_manifest_skips_a_line_cut_short_and_keeps_the_newest_record(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    [item] = discover([str(tmp_path / "a.mp4")], tmp_path)
    manifest = Manifest(tmp_path)
    manifest.append(make_record(item, "failed", error="first try"))
    manifest.append(make_record(item, "done", tracks=2, frames=10, seconds=2.0))
    with open(manifest.path, "a") as f:
        f.write('{"input": "b.mp4", "status": "do')  # a kill in the middle of a line
    again = Manifest(tmp_path)
    assert again.damaged_lines == 1 and again.records["a.mp4"]["status"] == "done"
    assert again.records["a.mp4"]["fps"] == 5.0
    again.append(make_record(item, "done", frames=10, seconds=1.0))  # starts on a fresh line
    again.compact(["a.mp4"])
    assert [r["input"] for r in manifest_lines(tmp_path)] == ["a.mp4"]


def test_a_batch_deletes_only_the_temporary_files_of_its_own_writes(tmp_path):
    """Before: every hidden '*.part' file anywhere under OUTDIR went at the start, another program's
    download or notes in a shared folder included."""
    from vibe_blender.core.atomic_file import part_path

    out = tmp_path / "out"
    (out / "day1").mkdir(parents=True)
    (out / "other_tool").mkdir()
    ours = [
        part_path(out / "day1" / "take1.npz"),
        part_path(out / MANIFEST_NAME),
        out / "day1" / ".take2.npz.0badf00d.part",  # as earlier versions named them
        out / ".summary.txt.12345678.part",
    ]
    theirs = [
        out / ".my notes.part",
        out / "other_tool" / ".dataset.tar.part",
        out / ".deadbeef.part",
        out / ".notes.txt.12345678.part",
    ]
    for path in ours + theirs:
        path.write_bytes(b"x")
    assert remove_stale_parts(out) == len(ours)
    assert [path for path in ours + theirs if path.exists()] == theirs


# -- local runs --------------------------------------------------------------------------------


def test_a_corrupt_video_is_recorded_and_the_others_are_done(clip_bank, tmp_path, capsys):
    inputs = place(
        clip_bank,
        tmp_path / "in",
        {"walk.mp4": "walk.mp4", "day2/sign.mp4": "sign.mp4", "day2/street.mp4": "street.mp4"},
    )
    (inputs / "day2" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    out = tmp_path / "out"
    assert main(batch_args(inputs, out=out, extra=["--jobs", "2"])) == 1  # 1: some video failed
    records = {r["input"]: r for r in manifest_lines(out)}
    assert sorted(records) == ["day2/broken.mp4", "day2/sign.mp4", "day2/street.mp4", "walk.mp4"]
    broken = records.pop("day2/broken.mp4")
    assert broken["status"] == "failed" and "is not a video file" in broken["error"] and broken["output"] is None
    for key, record in records.items():
        assert record["status"] == "done" and record["tracks"] == 1 and record["frames"] == CLIP_FRAMES
        assert record["fps"] > 0 and record["error"] is None
        result = load_result(out / record["output"])
        assert result.tracks[0].num_frames == CLIP_FRAMES and result.video.name == Path(key).name
    assert len({r["worker"] for r in records.values()}) >= 1
    printed = capsys.readouterr().out
    assert "3 done, 1 failed" in printed and "is not a video file" in (out / "summary.txt").read_text()
    assert not list(out.rglob("*.part"))

    # run again: the finished videos are skipped, the failed one too unless asked
    stamp = (out / "walk.npz").stat().st_mtime_ns
    assert main(batch_args(inputs, out=out)) == 1
    assert (out / "walk.npz").stat().st_mtime_ns == stamp and len(manifest_lines(out)) == 4
    assert main(batch_args(inputs, out=out, extra=["--retry-failed"])) == 1
    assert len(manifest_lines(out)) == 4 and (out / "walk.npz").stat().st_mtime_ns == stamp


def test_a_video_that_fails_when_run_again_keeps_no_result_of_the_earlier_run(clip_bank, tmp_path):
    """Before: the earlier result stayed beside the failed record, a whole result of another video for
    anything reading OUTDIR/**/*.npz."""
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4", "b.mp4": "sign.mp4"})
    out = tmp_path / "out"
    assert main(batch_args(inputs, out=out, extra=["--jobs", "1"])) == 0
    (inputs / "a.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))  # saved over, broken
    assert main(batch_args(inputs, out=out, extra=["--jobs", "1"])) == 1
    assert {r["input"]: r["status"] for r in manifest_lines(out)} == {"a.mp4": "failed", "b.mp4": "done"}
    assert sorted(p.name for p in out.glob("*.npz")) == ["b.npz"]


def fake_ray(outcome=lambda item: "done", ran=None):
    """A stand-in for ``run_ray``: each video ends as ``outcome(item)`` says, 'done' with its result file
    written (it holds the video's path) or 'failed'; ``ran`` (a list) gets the key of each video run."""

    def run(items, spec, options, *, on_record, **kwargs):
        for item in items:
            if ran is not None:
                ran.append(item.key)
            if outcome(item) == "done":
                Path(item.output_path).parent.mkdir(parents=True, exist_ok=True)
                Path(item.output_path).write_text(item.input_path)
                on_record(make_record(item, "done", tracks=1, frames=12, seconds=1.0, worker="ray node:1 (cpu)"))
            else:
                on_record(make_record(item, "failed", error="It broke.", worker="ray node:1 (cpu)"))

    return run


def ray_batch(*inputs: Path, out: Path) -> list[dict]:
    return runner.run_batch(list(map(str, inputs)), out, EngineSpec(factory=ENGINE), make_options(), use_ray=True)


def test_a_failed_video_on_ray_keeps_no_result_of_an_earlier_run(tmp_path, monkeypatch):
    """The same for the records of Ray actors: the driver deletes it, for either pool, as it records."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"x")
    monkeypatch.setattr(runner, "run_ray", fake_ray())
    ray_batch(tmp_path / "in", out=tmp_path / "out")
    (tmp_path / "in" / "a.mp4").write_bytes(b"saved over")
    monkeypatch.setattr(runner, "run_ray", fake_ray(lambda item: "failed"))
    [record] = ray_batch(tmp_path / "in", out=tmp_path / "out")
    assert record["status"] == "failed" and record["error"] == "It broke."
    assert not (tmp_path / "out" / "a.npz").exists()


def test_a_listed_video_no_longer_there_keeps_its_earlier_result(tmp_path, monkeypatch, capsys):
    """Before: a video on a drive since unmounted counted as changed, ran again, failed ('Video file not
    found') and its good result of the earlier run was deleted."""
    (tmp_path / "usb").mkdir()
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / "usb" / name).write_bytes(name.encode())
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'usb' / 'a.mp4'}\n{tmp_path / 'usb' / 'b.mp4'}\n")
    monkeypatch.setattr(runner, "run_ray", fake_ray())
    ray_batch(tmp_path / "list.txt", out=tmp_path / "out")
    (tmp_path / "usb" / "a.mp4").unlink()
    (tmp_path / "usb" / "b.mp4").write_bytes(b"b, edited")
    ran = []
    monkeypatch.setattr(
        runner, "run_ray", fake_ray(lambda item: "done" if Path(item.input_path).exists() else "failed", ran)
    )
    capsys.readouterr()
    records = ray_batch(tmp_path / "list.txt", out=tmp_path / "out")
    assert ran == ["usb/b.mp4"]  # the edited one runs again, the one gone does not
    assert {r["input"]: r["status"] for r in records} == {"usb/a.mp4": "done", "usb/b.mp4": "done"}
    assert (tmp_path / "out" / "usb" / "a.npz").read_text() == str(tmp_path / "usb" / "a.mp4")
    assert "1 video(s) finished before are no longer there" in capsys.readouterr().err


def test_an_output_folder_without_file_locks_runs_unguarded_with_a_warning(tmp_path, monkeypatch, capsys):
    """A Ray cluster's shared OUTDIR (NFS without its lock service, a FUSE bucket) has no file locks:
    before, the batch refused it ('choose a folder on a local disk'), which a shared batch cannot."""
    import fcntl  # (POSIX only)

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"x")
    (tmp_path / "out").mkdir()
    part = tmp_path / "out" / ".a.npz.0badf00d.part"  # perhaps another batch's, writing now
    part.write_bytes(b"x")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    monkeypatch.setattr(runner, "run_ray", fake_ray())
    [record] = ray_batch(tmp_path / "in", out=tmp_path / "out")
    assert record["status"] == "done" and (tmp_path / "out" / "a.npz").is_file()
    assert part.read_bytes() == b"x"
    assert "(No locks available): its file system has no file locks, so nothing keeps another batch out" in (
        capsys.readouterr().err
    )
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "fcntl", None)  # as on Windows: no such lock, documented, no warning
    monkeypatch.setattr(runner, "run_ray", fake_ray())
    ray_batch(tmp_path / "in", out=tmp_path / "out")
    assert not part.exists()  # a leftover there is deleted as before


def test_a_file_in_the_output_folder_the_batch_did_not_write_is_refused_before_the_run_and_kept(tmp_path, monkeypatch):
    """Before: a first batch into a folder that held the user's own take1.npz replaced it, or deleted it
    when v/take1.mp4 failed, without a word."""
    (tmp_path / "v").mkdir()
    for name in ("take1.mp4", "take2.mp4"):
        (tmp_path / "v" / name).write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "take1.npz").write_bytes(b"the user's own result")
    ran: list[str] = []
    monkeypatch.setattr(runner, "run_ray", fake_ray(lambda item: "failed", ran))
    with pytest.raises(VibeError) as error:
        ray_batch(tmp_path / "v", out=out)
    assert str(error.value) == (
        f"'{out / 'take1.npz'}' is already in the output folder, and it is neither a file a record of "
        f"{out / MANIFEST_NAME} says a batch wrote nor a VIBE Mocap result of that video: the result of "
        f"'{tmp_path / 'v' / 'take1.mp4'}' would replace it. The batch replaces and deletes only files it "
        "wrote; move that file elsewhere, or choose another output folder."
    )
    assert ran == [] and (out / "take1.npz").read_bytes() == b"the user's own result"
    assert not (out / MANIFEST_NAME).exists()


@pytest.mark.parametrize("outcome", ["done", "failed"])
def test_a_result_saved_by_a_run_killed_before_its_record_does_not_stop_the_next_run(tmp_path, monkeypatch, outcome):
    """Before: a kill after a worker renamed take1.npz into place and before its manifest line (or a
    damaged done line dropped at the start of a run) left a file no record names, and every next run
    refused to start. Now the result of that same video counts as the batch's: it runs again, and its
    new result replaces the file, or its failure deletes it."""
    (tmp_path / "v").mkdir()
    for name in ("take1.mp4", "take2.mp4"):
        (tmp_path / "v" / name).write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "take1.npz").write_bytes(result_bytes(MocapResult(VideoInfo("take1.mp4", 30.0, 64, 48, 12), [], "m", 500.0)))
    ran: list[str] = []
    monkeypatch.setattr(runner, "run_ray", fake_ray(lambda item: outcome, ran))
    records = ray_batch(tmp_path / "v", out=out)
    assert ran == ["take1.mp4", "take2.mp4"] and [r["status"] for r in records] == [outcome, outcome]
    if outcome == "done":
        assert (out / "take1.npz").read_text() == str(tmp_path / "v" / "take1.mp4")
    else:
        assert not (out / "take1.npz").exists()


def test_a_result_of_another_video_no_record_names_is_still_refused_and_kept(tmp_path, monkeypatch):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "take1.mp4").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    own = result_bytes(MocapResult(VideoInfo("other.mp4", 30.0, 64, 48, 12), [], "m", 500.0))
    (out / "take1.npz").write_bytes(own)
    ran: list[str] = []
    monkeypatch.setattr(runner, "run_ray", fake_ray(ran=ran))
    with pytest.raises(VibeError, match="is already in the output folder"):
        ray_batch(tmp_path / "v", out=out)
    assert ran == [] and (out / "take1.npz").read_bytes() == own


@pytest.mark.parametrize("second", ["done", "failed"])
def test_a_video_whose_result_has_another_videos_name_keeps_the_manifest_true_to_the_file(
    tmp_path, monkeypatch, second
):
    """'a/clip.mp4', then 'b/clip.mov' into the same OUTDIR. Before: when 'b/clip.mov' failed, the batch
    deleted the result of 'a/clip.mp4'; when it was done, a third run skipped 'a/clip.mp4' as finished,
    though clip.npz held the other video's result."""
    first, other = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mov"
    for video in (first, other):
        video.parent.mkdir()
        video.write_bytes(b"x")
    out = tmp_path / "out"
    monkeypatch.setattr(runner, "run_ray", fake_ray())
    ray_batch(first, out=out)
    monkeypatch.setattr(runner, "run_ray", fake_ray(lambda item: second))
    ray_batch(other, out=out)
    assert (out / "clip.npz").read_text() == str(first if second == "failed" else other)
    ran: list[str] = []
    monkeypatch.setattr(runner, "run_ray", fake_ray(ran=ran))
    ray_batch(first, out=out)
    assert ran == ([] if second == "failed" else ["clip.mp4"]) and (out / "clip.npz").read_text() == str(first)


def test_a_rerun_with_options_that_change_the_results_runs_the_videos_again(clip_bank, tmp_path, capsys):
    """Finished videos are skipped only for the settings they were made with, and the run says what it
    skips and what it runs again (before: any rerun kept the old results without a word)."""
    inputs = place(clip_bank, tmp_path / "in", {"walk.mp4": "walk.mp4"})
    out = tmp_path / "out"
    assert main(batch_args(inputs, out=out)) == 0
    first = manifest_lines(out)[0]
    capsys.readouterr()

    assert main(batch_args(inputs, out=out)) == 0
    assert manifest_lines(out) == [first]
    assert "Skipping 1 video(s) finished before with these settings" in capsys.readouterr().err

    assert main(batch_args(inputs, out=out, extra=["--smoothing", "0.5"])) == 0
    again = manifest_lines(out)
    assert len(again) == 1 and again[0]["settings"] != first["settings"] and again[0]["finished"] >= first["finished"]
    err = capsys.readouterr().err
    assert "1 video(s) finished before with other options or model data run again." in err
    assert "Skipping" not in err

    # the backbone's batch changes only the speed: nothing runs
    assert main(batch_args(inputs, out=out, extra=["--smoothing", "0.5", "--batch-size", "4"])) == 0
    assert manifest_lines(out) == again
    assert "Skipping 1 video(s)" in capsys.readouterr().err


def test_the_results_fingerprint_follows_the_options_and_the_model_data(tmp_path):
    from vibe_server.batch.settings import results_fingerprint

    data = tmp_path / "data"
    data.mkdir()
    spec = EngineSpec(data_dir=str(data))
    base = results_fingerprint(spec, make_options())
    assert results_fingerprint(spec, make_options(batch_size=8, temporal_chunk_frames=64)) == base
    assert results_fingerprint(spec, make_options(official=True)) != base
    assert results_fingerprint(spec, make_options(detection_stride=2)) != base
    assert results_fingerprint(EngineSpec(data_dir=str(data), precision=FAST), make_options()) != base
    assert results_fingerprint(EngineSpec(data_dir=str(data), device="cuda"), make_options()) != base  # fp16 there
    (data / "vibe_model_w_3dpw.pth.tar").write_bytes(b"x")  # optional, and not what inference reads
    assert results_fingerprint(spec, make_options()) == base
    (data / "yolov3.weights").write_bytes(b"weights")  # model data installed since
    installed = results_fingerprint(spec, make_options())
    assert installed != base
    (data / "yolov3.weights").write_bytes(b"other weights")  # and replaced
    assert results_fingerprint(spec, make_options()) != installed


def test_a_full_output_disk_stops_the_batch_with_one_error_and_the_videos_run_on_resume(clip_bank, tmp_path, capsys):
    """Before: each video was decoded and run, then recorded as an "internal error" that "does not
    affect the other videos", and the batch went on through every one of them."""
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4", "b.mp4": "sign.mp4", "c.mp4": "street.mp4"})
    out = tmp_path / "out"
    args = batch_args(inputs, out=out, extra=["--jobs", "1"])
    args[args.index(ENGINE)] = "tests.server.batch_fakes:full_disk_engine"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "error: The batch stopped: Cannot write" in err
    assert "No space left on device" in err and "run the same command again to resume" in err
    assert not (out / MANIFEST_NAME).exists() or manifest_lines(out) == []  # no video counts as failed
    assert main(batch_args(inputs, out=out, extra=["--jobs", "1"])) == 0  # space freed: all three run
    assert sorted(r["input"] for r in manifest_lines(out) if r["status"] == "done") == ["a.mp4", "b.mp4", "c.mp4"]


def test_a_manifest_that_no_longer_fits_on_the_disk_stops_the_batch_the_same_way(
    clip_bank, tmp_path, capsys, monkeypatch
):
    from vibe_server.batch.manifest import Manifest

    def no_space(self, record):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    monkeypatch.setattr(Manifest, "append", no_space)
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4"})
    assert main(batch_args(inputs, out=tmp_path / "out", extra=["--jobs", "1"])) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and f"The batch stopped: Cannot write {tmp_path / 'out' / MANIFEST_NAME}" in err


def test_a_disk_full_once_every_video_is_done_still_shows_the_summary(tmp_path, capsys, monkeypatch):
    """Before: the manifest's compaction or the summary's write ended the finished batch in a generic
    error, the table never printed (and an earlier run's summary.txt stayed, no longer true)."""

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"x")
    out = tmp_path / "out"
    monkeypatch.setattr(runner, "run_ray", fake_ray())
    assert main(batch_args(tmp_path / "in", out=out, extra=["--ray"])) == 0
    (tmp_path / "in" / "b.mp4").write_bytes(b"y")
    compact = Manifest.compact
    calls = []

    def compact_before_the_run_only(self, keys=None):
        calls.append(keys)
        return compact(self, keys) if len(calls) == 1 else no_space()

    monkeypatch.setattr(runner, "atomic_write_bytes", no_space)
    monkeypatch.setattr(Manifest, "compact", compact_before_the_run_only)
    capsys.readouterr()
    assert main(batch_args(tmp_path / "in", out=out, extra=["--ray"])) == 0
    shown = capsys.readouterr()
    assert "b.mp4" in shown.out and "Summary:" not in shown.out and "error:" not in shown.err
    assert f"Warning: {out / SUMMARY_NAME} could not be written (No space left on device)" in shown.err
    assert f"Warning: {out / MANIFEST_NAME} could not be written" in shown.err
    assert not (out / SUMMARY_NAME).exists()
    assert {r["input"]: r["status"] for r in manifest_lines(out)} == {"a.mp4": "done", "b.mp4": "done"}


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), runner.OutputDiskFull("Cannot write: disk full")])
def test_a_stopped_batch_leaves_a_summary_of_its_records_not_the_earlier_runs(tmp_path, monkeypatch, stop):
    """Before: after Ctrl-C, a signal or a full disk, the summary.txt of the run before stayed, and
    contradicted the manifest."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"x")
    out = tmp_path / "out"
    monkeypatch.setattr(runner, "run_ray", fake_ray())
    ray_batch(tmp_path / "in", out=out)
    assert "b.mp4" not in (out / SUMMARY_NAME).read_text()
    (tmp_path / "in" / "b.mp4").write_bytes(b"y")

    def stopped_after_its_videos(*args, **kwargs):
        fake_ray(lambda item: "failed")(*args, **kwargs)
        raise stop

    monkeypatch.setattr(runner, "run_ray", stopped_after_its_videos)
    with pytest.raises((KeyboardInterrupt, VibeError)):
        ray_batch(tmp_path / "in", out=out)
    summary = (out / SUMMARY_NAME).read_text()
    assert re.search(r"b\.mp4 +failed", summary) and "1 done, 1 failed" in summary


def test_ray_actors_and_the_driver_stop_the_batch_on_a_full_output_disk(clip_bank, tmp_path, monkeypatch):
    from vibe_server.batch import engine_adapter
    from vibe_server.batch.engine_adapter import OutputDiskFull

    def no_space(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(engine_adapter, "atomic_write_bytes", no_space)
    [item] = discover([str(place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4"}))], tmp_path / "out")
    # an actor on the shared path writes the result itself: it answers with the stop, not a record
    actor = ray_runner.VideoActor(EngineSpec(factory=ENGINE), make_options(min_track_frames=5))
    reply = actor.process(item, None)
    assert "No space left on device" in reply[0]["stop_error"]
    for transfer, answer in (
        ("shared", reply),
        ("object-store", actor.process(item, bytearray(Path(item.input_path).read_bytes()))),
    ):
        fake_ray = FakeRay(lambda item, data, answer=answer: answer)
        records = []
        with pytest.raises(OutputDiskFull, match="No space left on device"):  # the driver writes in object-store mode
            ray_runner._drive(
                fake_ray,
                fake_ray.actors(1),
                [item],
                transfer,
                records.append,
                BatchProgress(1, enabled=False),
                output_dir=tmp_path / "out",
            )
        assert records == []


def test_a_result_the_system_refuses_to_write_fails_that_video_with_what_to_check(clip_bank, tmp_path, monkeypatch):
    from vibe_server.batch import engine_adapter

    def too_long(path, data):
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path))

    monkeypatch.setattr(engine_adapter, "atomic_write_bytes", too_long)
    [item] = discover([str(place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4"}))], tmp_path / "out")
    engine = engine_adapter.load_worker_engine(EngineSpec(factory=ENGINE))
    record, _ = engine_adapter.process_video(engine, item, make_options(min_track_frames=5), worker="w")
    assert record["status"] == "failed" and "Internal error" not in record["error"]
    assert (
        record["error"].startswith(f"File name too long ({item.output_path})") and "--retry-failed" in record["error"]
    )


def test_a_killed_run_resumes_without_duplicates_or_half_written_files(clip_bank, tmp_path):
    # 'slow' videos take ~3 s each, so the kill lands while one is being processed
    inputs = place(clip_bank, tmp_path / "in", {f"slow{i}.mp4": name for i, name in enumerate(sorted(CLIP_SOURCES))})
    out = tmp_path / "out"
    run = start_batch_until_first_record(inputs, out)
    os.killpg(run.pid, signal.SIGKILL)  # the driver and its worker, mid-video
    run.wait()
    first = manifest_lines(out)
    assert [r["status"] for r in first] == ["done"]
    for result in out.glob("*.npz"):  # whatever looks finished is whole
        load_result(result)
    assert len(list(out.glob("*.npz"))) == 1

    assert main(batch_args(inputs, out=out, extra=["--jobs", "1"])) == 0
    records = manifest_lines(out)
    assert sorted(r["input"] for r in records) == ["slow0.mp4", "slow1.mp4", "slow2.mp4"]
    assert {r["input"]: r for r in records}[first[0]["input"]] == first[0]  # not run twice
    assert all(r["status"] == "done" for r in records) and not list(out.rglob("*.part"))


def test_a_worker_that_dies_midway_is_replaced_and_its_video_retried(clip_bank, tmp_path):
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4", f"{CRASH_PREFIX}.mp4": "sign.mp4"})
    out = tmp_path / "out"
    assert main(batch_args(inputs, out=out, extra=["--jobs", "1"])) == 0
    assert (inputs / f"{CRASH_PREFIX}.mp4.crashed").is_file()  # the worker did die once
    records = manifest_lines(out)
    assert sorted(r["input"] for r in records) == ["a.mp4", f"{CRASH_PREFIX}.mp4"]
    assert all(r["status"] == "done" for r in records)


def test_a_replaced_pools_workers_take_the_progress_lines_of_the_old_ones(clip_bank, tmp_path):
    inputs = place(clip_bank, tmp_path / "in", {f"{CRASH_PREFIX}.mp4": "sign.mp4"})
    items = discover([str(inputs)], tmp_path / "out")
    progress, records = BatchProgress(1, enabled=False), []
    options = make_options(min_track_frames=5)
    local_pool.run_local(
        items, EngineSpec(factory=ENGINE), options, jobs=1, on_record=records.append, progress=progress
    )
    assert [r["status"] for r in records] == ["done"] and (inputs / f"{CRASH_PREFIX}.mp4.crashed").is_file()
    assert list(progress._lines) == [records[0]["worker"]]  # the second pool's worker only, not one line per pool


def test_a_worker_that_cannot_load_its_engine_stops_the_batch_with_one_error(clip_bank, tmp_path, capsys):
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4"})
    argv = batch_args(inputs, out=tmp_path / "out")
    argv[argv.index(ENGINE)] = "tests.server.batch_fakes:no_such_factory"
    assert main(argv) == 2
    assert "could not load the model" in capsys.readouterr().err
    assert manifest_lines(tmp_path / "out") == []


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--device", "tpu"], "Unknown device"),
        (["--device", "cuda:x"], "Unknown device"),
        (["--smoothing", "2"], "between 0 and 1"),
        (["--min-track-frames", "100001"], "--min-track-frames must be between 1 and 100000; got 100001."),
        (["--ray", "{input}"], "put --ray after the inputs"),
        (["--transfer", "object-store"], "it needs --ray"),
    ],
)
def test_batch_bad_arguments_give_one_clear_error(tmp_path, capsys, extra, message):
    (tmp_path / "a.mp4").write_bytes(b"x")
    extra = [e.replace("{input}", str(tmp_path / "a.mp4")) for e in extra]
    assert main(batch_args(tmp_path / "a.mp4", out=tmp_path / "out", extra=extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_mistyped_input_leaves_nothing_in_the_output_folder(tmp_path, capsys):
    """Before: OUTDIR was made, locked (a .batch.lock left) and walked for leftovers first."""
    (tmp_path / "a.mp4").write_bytes(b"x")
    assert main(batch_args(tmp_path / "a.mp4", tmp_path / "typo.mp4", out=tmp_path / "new" / "out")) == 2
    assert "There is no file or folder at" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_ray_before_the_only_input_or_no_input_gives_one_clear_error(tmp_path, capsys):
    """'batch -o OUT --ray shoot/' took the folder as the address and argparse said no INPUT was given."""
    (tmp_path / "shoot").mkdir()
    assert main(["batch", "-o", str(tmp_path / "out"), "--ray", str(tmp_path / "shoot")]) == 2
    assert "put --ray after the inputs" in capsys.readouterr().err
    assert main(["batch", "-o", str(tmp_path / "out")]) == 2
    assert "error: Give at least one INPUT" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ray_not_installed_gives_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    (tmp_path / "a.mp4").write_bytes(b"x")
    assert main(batch_args(tmp_path / "a.mp4", out=tmp_path / "out", extra=["--ray"])) == 2
    assert "pip install -e '.[ray]'" in capsys.readouterr().err


def test_result_arrays_do_not_depend_on_the_number_of_workers(clip_bank, tmp_path):
    inputs = place(clip_bank, tmp_path / "in", {name: name for name in CLIP_SOURCES})
    assert main(batch_args(inputs, out=tmp_path / "one", extra=["--jobs", "1"])) == 0
    assert main(batch_args(inputs, out=tmp_path / "two", extra=["--jobs", "2"])) == 0
    for name in CLIP_SOURCES:
        one = np.load(tmp_path / "one" / Path(name).with_suffix(".npz"))
        two = np.load(tmp_path / "two" / Path(name).with_suffix(".npz"))
        for key in one.files:
            if key not in ("meta_keys", "meta_values"):
                np.testing.assert_array_equal(one[key], two[key], err_msg=f"{name}: {key}")


@pytest.mark.slow
def test_the_real_pipeline_in_a_batch_worker(synthetic_bundle, tmp_path):
    """The default engine factory (the real pipeline: OpenCV decode, HOG, SORT, crops, ResNet-50, GRU)
    with the random-weight model data, in a worker process, on a full-size cut of a real clip."""
    clip = cut_clip("one-by-one-person-detection.mp4", 262, tmp_path / "in" / "walk.mp4", frames=40, size=(768, 432))
    out = tmp_path / "out"
    argv = [
        "batch",
        str(clip.parent),
        "-o",
        str(out),
        "--data-dir",
        str(synthetic_bundle),
        "--detector",
        "hog",
        "--detection-stride",
        "2",
        "--min-track-frames",
        "15",
        "--device",
        "cpu",
        "--jobs",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    [record] = manifest_lines(out)
    assert record["status"] == "done" and record["tracks"] >= 1 and record["frames"] == 40
    assert record["warnings"] == []  # HOG asked for: nothing to warn of
    result = load_result(out / "walk.npz")
    assert result.tracks and np.isfinite(result.tracks[0].pose).all()


def test_a_batch_warns_of_what_its_results_warn_of(synthetic_bundle, clip_bank, tmp_path, capsys):
    """'auto' without yolov3.weights beside the official model data falls back to HOG: each result's
    meta said so, the batch's output and manifest did not."""
    clip = cut_clip("one-by-one-person-detection.mp4", 262, tmp_path / "in" / "walk.mp4", frames=40, size=(768, 432))
    argv = ["batch", str(clip.parent), "-o", str(tmp_path / "out"), "--data-dir", str(synthetic_bundle)]
    assert main([*argv, "--device", "cpu", "--jobs", "1", "--no-progress", "--detection-stride", "2"]) == 0
    [record] = manifest_lines(tmp_path / "out")
    assert record["warnings"][0].startswith("yolov3.weights is not in the model data")
    assert "WARNING (1 of the results: walk.mp4): yolov3.weights is not in the model data" in capsys.readouterr().err


def test_a_batch_without_model_data_says_before_it_starts_that_it_runs_the_placeholder(tmp_path, monkeypatch):
    """It said so only after the whole batch, in one closing line."""
    from vibe_server.commands import batch as batch_command
    from vibe_server.data import loading

    said = []
    monkeypatch.setattr(batch_command, "run_batch", lambda *args, **kwargs: said.append(kwargs["before_the_run"]) or [])
    monkeypatch.delenv(loading.ENV_VAR, raising=False)
    monkeypatch.setattr(loading, "default_data_dir", lambda: tmp_path / "no_data")  # nothing installed
    (tmp_path / "in").mkdir()
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    [note] = said
    assert "SYNTHETIC PLACEHOLDER model with random weights" in note and "vibe-mocap data install PATH_OR_URL" in note


def test_a_finished_batch_whose_first_result_is_damaged_since_ends_as_finished(tmp_path, monkeypatch, capsys):
    """The placeholder's closing note reads the first done result. Before: a damaged one made a finished
    batch exit 2 with "Cannot read ..."."""
    from vibe_server.commands import batch as batch_command
    from vibe_server.data import loading

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"x")
    [item] = discover([str(tmp_path / "in")], tmp_path / "out")
    (tmp_path / "out").mkdir()
    Path(item.output_path).write_bytes(b"damaged")
    done = make_record(item, "done", tracks=1, frames=12, seconds=1.0)
    monkeypatch.setattr(batch_command, "run_batch", lambda *args, **kwargs: [done])
    monkeypatch.delenv(loading.ENV_VAR, raising=False)
    monkeypatch.setattr(loading, "default_data_dir", lambda: tmp_path / "no_data")
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "error" not in capsys.readouterr().err


def test_the_note_before_the_run_comes_once_the_inputs_are_found_and_a_video_is_to_run(clip_bank, tmp_path, capsys):
    """(An input's error comes alone: test_cli_infer.py's inputs that are no regular file.)"""
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4"})
    for run in ("first", "finished before"):
        records = runner.run_batch(
            [str(inputs)],
            tmp_path / "out",
            EngineSpec(factory=ENGINE),
            make_options(min_track_frames=5),
            jobs=1,
            show_progress=False,
            before_the_run="NOTE",
        )
        assert [r["status"] for r in records] == ["done"]
        assert ("NOTE\n" in capsys.readouterr().err) == (run == "first"), run  # nothing runs the second time


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--precision", "fp16"], "fp16 needs a CUDA device"),
        (["--detector", "yolo"], "Detector weights yolov3.weights not found"),
    ],
)
def test_settings_no_video_can_run_with_stop_the_batch_before_any_video(
    synthetic_bundle, clip_bank, tmp_path, capsys, extra, message
):
    """As infer refuses them: before, every video was run into the same failure and recorded failed."""
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4", "b.mp4": "sign.mp4"})
    argv = ["batch", str(inputs), "-o", str(tmp_path / "out"), "--data-dir", str(synthetic_bundle)]
    assert main([*argv, "--device", "cpu", "--jobs", "1", "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1
    assert manifest_lines(tmp_path / "out") == []


def test_fast_means_bf16_on_cpu_workers_and_fp16_on_gpu_workers(clip_bank, tmp_path):
    assert worker_precision(EngineSpec(device="cuda:3", precision=FAST)) == "fp16"
    assert worker_precision(EngineSpec(device="cpu", precision="fp32")) == "fp32"
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4"})
    assert main(batch_args(inputs, out=tmp_path / "out", extra=["--fast", "--jobs", "1"])) == 0
    assert load_result(tmp_path / "out" / "a.npz").meta["precision"] == "bf16"


def test_by_default_each_worker_takes_the_precision_infer_would_take_on_its_device(clip_bank, tmp_path):
    """No flag: fp16 on a GPU worker, bf16 on a CPU worker with bf16 hardware, else fp32, as infer."""
    assert worker_precision(EngineSpec(device="cuda:1")) == "fp16"
    assert worker_precision(EngineSpec(device="cpu")) == default_precision("cpu")
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4"})
    assert main(batch_args(inputs, out=tmp_path / "out", extra=["--jobs", "1"])) == 0
    assert load_result(tmp_path / "out" / "a.npz").meta["precision"] == default_precision("cpu")


# -- bounded memory for large batches (the pools' bookkeeping, with stand-ins for the workers) ---


def many_items(tmp_path, count: int = 10_000, *, made: bool = False) -> list:
    """``count`` listed videos; ``made``: files of one byte (else they need not exist)."""
    listing = tmp_path / "videos.txt"
    listing.write_text("".join(f"clips/v{i:05d}.mp4\n" for i in range(count)))
    if made:
        (tmp_path / "clips").mkdir()
        for i in range(count):
            (tmp_path / "clips" / f"v{i:05d}.mp4").write_bytes(b"x")
    return discover([str(listing)], tmp_path / "out")


def test_cpu_workers_share_out_the_cores_this_process_may_use(tmp_path, monkeypatch):
    """Torch threads per CPU worker: the cores of the process's affinity (as the default number of
    workers counts them), not all the machine's."""
    from vibe_server.batch.inputs import BatchItem

    class Started(Exception):
        pass

    specs = []

    def pool(*, initargs, **kw):
        specs.append(initargs[0])
        raise Started  # (no worker process is started)

    monkeypatch.setattr(local_pool, "usable_cores", lambda: 6)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(local_pool, "ProcessPoolExecutor", pool)
    item = BatchItem("a.mp4", str(tmp_path / "a.mp4"), str(tmp_path / "a.npz"))
    for spec in (EngineSpec(factory=ENGINE), EngineSpec(factory=ENGINE, threads=5)):
        with pytest.raises(Started):
            local_pool.run_local(
                [item], spec, make_options(), jobs=2, on_record=[].append, progress=BatchProgress(1, enabled=False)
            )
    assert [spec.threads for spec in specs] == [3, 5]  # 6 usable cores for 2 workers; as the spec says


def test_the_local_pool_keeps_two_videos_per_worker_in_flight_for_10000_inputs(tmp_path):
    items = many_items(tmp_path)
    in_flight: dict = {}
    most = []

    class InstantPool:  # ProcessPoolExecutor's submit, the video done at once
        def submit(self, fn, item, position):
            most.append(len(in_flight) + 1)
            future = Future()
            future.set_result(make_record(item, "done", frames=1, seconds=0.1))
            return future

    records = []
    local_pool._drive(
        InstantPool(),
        local_pool.LocalQueue(items, deque(items)),
        in_flight,
        3,
        queue.Queue(),
        records.append,
        BatchProgress(len(items), enabled=False),
    )
    assert len(records) == 10_000 and len({r["input"] for r in records}) == 10_000
    assert max(most) == local_pool.IN_FLIGHT_PER_WORKER * 3


def test_ray_submits_a_video_only_when_an_actor_is_free_for_10000_inputs(tmp_path):
    items = many_items(tmp_path, made=True)  # (the driver fails a missing one without submitting it)
    fake_ray = FakeRay(lambda item, data: (make_record(item, "failed", seconds=0.1, error="bad"), None))
    records = []
    ray_runner._drive(
        fake_ray,
        fake_ray.actors(4),
        items,
        "shared",
        records.append,
        BatchProgress(len(items), enabled=False),
        output_dir=tmp_path / "out",
    )
    assert len(records) == 10_000 and len({r["input"] for r in records}) == 10_000
    assert fake_ray.most == 4


def test_the_progress_shows_the_batch_and_each_worker(tmp_path, capsys):
    (tmp_path / "a.mp4").write_bytes(b"x")
    [item] = discover([str(tmp_path / "a.mp4")], tmp_path / "out")
    progress = BatchProgress(2, skipped=1, enabled=True)
    progress.worker_status("worker 7 (cpu)", "a.mp4  backbone  40%")
    progress.advance(make_record(item, "failed", error="bad"))
    progress.close()
    shown = capsys.readouterr().err
    assert "worker 7 (cpu): a.mp4  backbone  40%" in shown and "2/3" in shown and "1 failed" in shown


def test_the_progress_is_a_line_per_video_where_stderr_is_no_terminal(tmp_path, capsys):
    """Under nohup, a scheduler or CI the bars are off: before, nothing was shown until the summary."""
    (tmp_path / "a.mp4").write_bytes(b"x")
    [item] = discover([str(tmp_path / "a.mp4")], tmp_path / "out")
    progress = BatchProgress(2, skipped=3)  # (pytest's captured stderr is no terminal)
    progress.worker_status("worker 7 (cpu)", "a.mp4  backbone  40%")
    progress.advance(make_record(item, "done", tracks=2, frames=120, seconds=4.25))
    progress.advance(make_record(item, "failed", error="Cannot open it.\x1b[2J\nTraceback ..."))
    progress.close()
    assert capsys.readouterr().err.splitlines() == [
        "[4/5] done a.mp4: 2 track(s), 120 frames, 4.2 s",
        "[5/5] failed a.mp4: Cannot open it.\\x1b[2J",
    ]
    quiet = BatchProgress(1, enabled=False)  # --no-progress
    quiet.advance(make_record(item, "done"))
    assert capsys.readouterr().err == ""


def test_manifest_counts_a_deeply_nested_line_as_damaged_and_keeps_the_others(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    [item] = discover([str(tmp_path / "a.mp4")], tmp_path)
    Manifest(tmp_path).append(make_record(item, "done", tracks=1, frames=10, seconds=2.0))
    with open(tmp_path / MANIFEST_NAME, "a") as f:
        f.write("[" * 200_000 + "]" * 200_000 + "\n")  # json.loads alone recurses out on this line
    again = Manifest(tmp_path)
    assert again.damaged_lines == 1 and again.records["a.mp4"]["status"] == "done"


@pytest.mark.parametrize("warnings", ["HOG", [1, 2], [["x"]], {"a": 1}], ids=["text", "numbers", "nested", "object"])
def test_a_manifest_line_whose_warnings_are_not_texts_is_damaged(tmp_path, warnings):
    """The manifest is read back on every rerun: its warnings must be a list of texts to be printed."""
    import json

    (tmp_path / "a.mp4").write_bytes(b"x")
    [item] = discover([str(tmp_path / "a.mp4")], tmp_path)
    good = make_record(item, "done", tracks=1, frames=10, seconds=2.0, warnings=["HOG was used"])
    Manifest(tmp_path).append(good)
    with open(tmp_path / MANIFEST_NAME, "a") as f:
        f.write(json.dumps({**good, "warnings": warnings, "tracks": 5}) + "\n")
    again = Manifest(tmp_path)
    assert again.damaged_lines == 1 and again.records["a.mp4"]["tracks"] == 1
    assert again.records["a.mp4"]["warnings"] == ["HOG was used"]


def test_the_documented_video_extensions_are_the_ones_collected():
    """docs/batch.md lists the extensions a folder's videos are collected by (an .ogv was listed and
    collected, but the video reader opens no Ogg container, so each one failed)."""
    from vibe_server.batch.inputs import VIDEO_EXTENSIONS

    docs = (Path(__file__).resolve().parents[2] / "docs" / "batch.md").read_text()
    listed = re.search(r"Video extensions: ([^(]*)\(", docs.replace("\n", " ")).group(1)
    assert {"." + name for name in re.findall(r"[a-z0-9]+", listed) if name != "and"} == VIDEO_EXTENSIONS
    assert ".ogv" not in VIDEO_EXTENSIONS


def test_the_run_check_asks_for_yolos_weights_only_where_the_default_front_end_reads_them(
    scripted, fp32_engine, tmp_path
):
    """A batch checks the run's settings against each worker's engine first: a custom front end finds
    its own detector (or needs no file), so only the default one is held to yolov3.weights."""
    from tests.server.conftest import TinyVIBE
    from vibe_server.pipeline.engine import Engine
    from vibe_server.pipeline.options import RunOptions

    yolo = RunOptions(detector="yolo")
    custom = Engine(TinyVIBE(), model_name="tiny", data_dir=tmp_path, frontend=scripted.as_frontend())
    custom.check_options(yolo)  # its front end makes the detector: no file asked for
    with pytest.raises(VibeError, match="Detector weights yolov3.weights not found"):
        fp32_engine.check_options(yolo)  # the real front end, a data folder without the weights
    fp32_engine.check_options(RunOptions(detector="hog"))

"""``vibe-mocap batch`` when things go wrong around the videos: a model that cannot be loaded, a resume
into an output folder another batch used, a video replaced at its path, a hand-edited manifest,
replies from Ray actors that cannot be trusted, symbolic links in the output folder, Ctrl-C, a wrong
cluster address, a growing list file, and a good video running beside one that kills its worker."""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.server.batch_fakes import (
    CRASH_ALWAYS_PREFIX,
    CRASH_AT_START_PREFIX,
    LOAD_ERROR,
    NO_MOUNT,
    FakeRay,
    report_then_die,
)
from tests.server.test_batch import (
    CLIP_SOURCES,
    ENGINE,
    ROOT,
    batch_args,
    cut_clip,
    cut_clips,
    manifest_lines,
    place,
    start_batch_until_first_record,
)
from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import MocapResult, VideoInfo, load_result
from vibe_server.batch import local_pool, ray_runner, runner
from vibe_server.batch import manifest as manifest_module
from vibe_server.batch.engine_adapter import (
    EngineSpec,
    WorkerSetupError,
    load_worker_engine,
    make_options,
    result_bytes,
)
from vibe_server.batch.inputs import BatchItem, discover, folded_name
from vibe_server.batch.manifest import MANIFEST_NAME, SUMMARY_NAME, Manifest, make_record, summary_table
from vibe_server.batch.progress import BatchProgress
from vibe_server.cli import main
from vibe_server.command_signals import Stopped, signals_stop_the_command

FAILING_ENGINE = "tests.server.batch_fakes:failing_engine"
DYING_ENGINE = "tests.server.batch_fakes:dying_engine"


@pytest.fixture(scope="module")
def clip_bank(tmp_path_factory) -> dict[str, Path]:
    return cut_clips(tmp_path_factory.mktemp("clips"))


def with_engine(argv: list[str], engine: str) -> list[str]:
    argv[argv.index(ENGINE)] = engine
    return argv


# -- a model that cannot be loaded -----------------------------------------------------------------


def test_any_error_while_loading_the_engine_is_a_setup_error_with_its_message():
    with pytest.raises(WorkerSetupError, match=f"RuntimeError: {LOAD_ERROR}"):
        load_worker_engine(EngineSpec(factory=FAILING_ENGINE))


def test_a_model_that_cannot_be_loaded_stops_the_local_batch_with_one_error(clip_bank, tmp_path, capsys):
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4", "b.mp4": "sign.mp4", "c.mp4": "street.mp4"})
    started = time.perf_counter()
    assert main(with_engine(batch_args(inputs, out=tmp_path / "out", extra=["--jobs", "2"]), FAILING_ENGINE)) == 2
    err = capsys.readouterr().err
    assert "could not load the model" in err and LOAD_ERROR in err and err.count("error:") == 1
    assert manifest_lines(tmp_path / "out") == []  # nothing is marked failed: fix the cause and run again
    assert time.perf_counter() - started < 60


def test_a_ray_actor_that_cannot_load_its_engine_reports_why_instead_of_dying(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    [item] = discover([str(tmp_path / "a.mp4")], tmp_path / "out")
    actor = ray_runner.VideoActor(EngineSpec(factory=FAILING_ENGINE), make_options())
    record, data = actor.process(item, None)
    assert LOAD_ERROR in record["setup_error"] and data is None


def test_the_ray_driver_stops_with_one_error_when_no_actor_is_left(tmp_path):
    items = ray_items(tmp_path, ("a.mp4", "b.mp4", "c.mp4"))
    why = (
        "The actor died because of an error raised in its creation task, ray::VideoActor.__init__()\n  Traceback ...\n"
    )
    fake_ray = FakeRay(
        lambda item, data: FakeRay.RayActorError(
            True, why + "ModuleNotFoundError: No module named 'vibe_server'\x1b[2J"
        )
    )
    records = []
    with pytest.raises(
        VibeError,
        match=r"remaining 3 video.*died too often \(the first to fail to start: ModuleNotFoundError: No module named "
        r"'vibe_server'\\x1b\[2J\); check",
    ):
        ray_runner._drive(
            fake_ray,
            fake_ray.actors(2),
            items,
            "shared",
            records.append,
            BatchProgress(3, enabled=False),
            output_dir=tmp_path / "out",
        )
    assert records == []


def test_a_cluster_ray_cannot_join_is_one_clear_error(tmp_path, monkeypatch):
    """Ray raises more than ConnectionError from init (a version unlike the cluster's: RuntimeError);
    it reached the user as a traceback."""

    def init(**kwargs):
        raise RuntimeError("Version mismatch: The cluster was started with:\n    Ray: 2.40.0\n    Python: 3.10.4")

    fake_ray = SimpleNamespace(is_initialized=lambda: False, init=init)
    monkeypatch.setattr(ray_runner, "_import_ray", lambda: fake_ray)
    monkeypatch.setattr(ray_runner, "init_address", lambda address: "10.0.0.5:6379")
    items = ray_items(tmp_path, ("a.mp4",))
    assert ray_runner._init_failed(None, OSError("No space left on device")).startswith(
        "Cannot start a local Ray cluster (No space left on device); Ray's logs are in its session folder"
    )
    with pytest.raises(
        VibeError,
        match=r"Cannot join the Ray cluster at '10.0.0.5:6379' \(Version mismatch: The cluster was started "
        r"with:\)\. The driver and every node need the same versions",
    ):
        ray_runner.run_ray(
            items,
            EngineSpec(),
            make_options(),
            address=None,
            transfer="shared",
            on_record=lambda record: None,
            progress=BatchProgress(1, enabled=False),
            output_dir=tmp_path / "out",
        )


def drive_on(fake_ray: FakeRay, actors: list, items: list, tmp_path: Path) -> list[dict]:
    records = []
    ray_runner._drive(
        fake_ray,
        actors,
        items,
        "shared",
        records.append,
        BatchProgress(len(items), enabled=False),
        output_dir=tmp_path / "out",
    )
    return records


def test_ray_actors_that_all_die_while_loading_the_model_stop_the_batch_as_local_workers_do(tmp_path):
    items = ray_items(tmp_path, ("a.mp4", "b.mp4", "c.mp4"))
    fake_ray = FakeRay(lambda item, data: (make_record(item, "failed", seconds=0.1, error="bad"), None))
    with pytest.raises(VibeError) as error:
        drive_on(fake_ray, fake_ray.actors(2, dying_while_loading=2), items, tmp_path)
    assert str(error.value) == ray_runner.DIED_LOADING
    assert str(error.value).startswith(local_pool.DIED_LOADING.partition(" Run fewer")[0])  # the same, but --jobs


@pytest.mark.parametrize(
    "dying_while_loading, gone_after_loading", [(2, set()), (0, {"a.mp4"})], ids=["while loading", "after loading"]
)
def test_the_videos_of_ray_actors_gone_for_good_run_on_the_others_and_none_is_blamed(
    tmp_path, dying_while_loading, gone_after_loading
):
    """An actor whose restarts are used up takes no more videos; the one it ran is not failed for it."""
    items = ray_items(tmp_path, ("a.mp4", "b.mp4", "c.mp4", "d.mp4"))
    runs = []

    def reply(item, data):
        runs.append(item.key)
        if item.key in gone_after_loading and runs.count(item.key) == 1:
            return FakeRay.ActorDiedError()
        return make_record(item, "failed", seconds=0.1, error="bad"), None

    fake_ray = FakeRay(reply)
    records = drive_on(fake_ray, fake_ray.actors(3, dying_while_loading=dying_while_loading), items, tmp_path)
    assert sorted(r["input"] for r in records) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    assert all(r["error"] == "bad" for r in records)  # as the engine answered: none was blamed for a death


def test_a_video_that_kills_ray_actors_for_good_fails_before_it_uses_them_all_up(tmp_path):
    """Before: it went back to the front of the queue each time, until no actor was left and the batch
    stopped with "No Ray actor is left" instead of a failed record."""
    items = ray_items(tmp_path, ("a.mp4", "b.mp4", "c.mp4"))

    def reply(item, data):
        if item.key == "a.mp4":
            return FakeRay.ActorDiedError()
        return make_record(item, "failed", seconds=0.1, error="bad"), None

    fake_ray = FakeRay(reply)
    records = {r["input"]: r for r in drive_on(fake_ray, fake_ray.actors(3), items, tmp_path)}
    assert sorted(records) == ["a.mp4", "b.mp4", "c.mp4"]
    assert records["a.mp4"]["error"].startswith("2 Ray actors died for good while running this video")
    assert fake_ray.submitted.count("a.mp4") == ray_runner.MAX_ACTORS_LOST_PER_VIDEO


# -- a file name that is not valid UTF-8 ---------------------------------------------------------------

NOT_UTF8_NAME = os.fsdecode(b"caf\xe9.mp4")  # as os.walk gives it: 'caf\udce9.mp4'


def test_a_video_whose_name_is_not_utf8_is_one_failed_record_and_the_batch_resumes(clip_bank, tmp_path, capsys):
    inputs = place(clip_bank, tmp_path / "in", {"good.mp4": "walk.mp4", NOT_UTF8_NAME: "sign.mp4"})
    out = tmp_path / "out"
    for _ in range(2):  # the second run resumes over the first one's manifest
        assert main(batch_args(inputs, out=out, extra=["--jobs", "1"])) == 1
        printed = capsys.readouterr()
        assert "Traceback" not in printed.err and "caf\\udce9.mp4" in printed.out
    records = {r["input"]: r for r in manifest_lines(out)}
    assert records["good.mp4"]["status"] == "done"
    bad = records[NOT_UTF8_NAME]  # read back as the very same name
    assert bad["status"] == "failed" and "is not valid UTF-8" in bad["error"] and "rename" in bad["error"]
    assert bad["worker"] == ""  # no worker ran it
    assert (out / MANIFEST_NAME).read_bytes().isascii()
    assert "caf\\udce9.mp4" in (out / SUMMARY_NAME).read_text(encoding="utf-8")


def test_control_characters_in_a_file_name_are_shown_escaped(capsys):
    """An escape sequence or a new line in a video's name reached the terminal as it is: it could clear
    or recolour the screen, and split the summary's row in two."""
    from vibe_server.commands.batch import print_warnings

    name = "take\x1b[2J\nfake row\x9b.mp4"
    item = BatchItem(name, f"/in/{name}", "/out/take.npz")
    table = summary_table([make_record(item, "failed", error="bad\x07")])
    assert len(table.splitlines()) == 4  # the header, one row, a blank line and the totals
    assert "take\\x1b[2J\\nfake row\\x9b.mp4" in table and "bad\\x07" in table
    progress = BatchProgress(1, enabled=True)
    progress.worker_status("worker 7 (cpu)", f"{name}  starting")
    progress.close()
    print_warnings([{**make_record(item, "done"), "warnings": ["HOG was used\x1b[31m"]}])
    shown = capsys.readouterr().err
    assert "worker 7 (cpu): take\\x1b[2J\\nfake row\\x9b.mp4  starting" in shown
    assert "take\\x1b[2J\\nfake row\\x9b.mp4): HOG was used\\x1b[31m" in shown
    assert name not in shown and "\x9b" not in shown and "\x07" not in table


def test_the_video_reader_refuses_a_name_that_is_not_utf8_before_opening_it(clip_bank, tmp_path):
    bad = tmp_path / NOT_UTF8_NAME
    bad.write_bytes(clip_bank["walk.mp4"].read_bytes())
    code = (  # in a process of its own: OpenCV given such a path crashes the process
        "import sys\n"
        "from vibe_blender.core.errors import VibeError\n"
        "from vibe_server.pipeline.video import open_video\n"
        "try:\n    open_video(sys.argv[1])\n"
        "except VibeError as err:\n    print(ascii(str(err)))\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'server'}"}
    run = subprocess.run([sys.executable, "-c", code, str(bad)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "is not valid UTF-8" in run.stdout and "rename the file" in run.stdout


# -- resume matches the input file, not only its name ------------------------------------------------


def test_a_video_of_the_same_name_from_another_folder_runs_again(clip_bank, tmp_path):
    first = place(clip_bank, tmp_path / "first", {"take.mp4": "walk.mp4"})
    second = place(clip_bank, tmp_path / "second", {"take.mp4": "sign.mp4"})
    out = tmp_path / "out"
    assert main(batch_args(first, out=out, extra=["--jobs", "1"])) == 0
    assert main(batch_args(second, out=out, extra=["--jobs", "1"])) == 0
    [record] = manifest_lines(out)
    assert record["input_path"] == str((second / "take.mp4").resolve())
    stamp = (out / "take.npz").stat().st_mtime_ns
    assert main(batch_args(second, out=out, extra=["--jobs", "1"])) == 0  # now it is finished: skipped
    assert manifest_lines(out) == [record] and (out / "take.npz").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("second", ["b/clip.mov", "b/Clip.MOV"])
def test_a_video_whose_result_file_another_video_wrote_over_runs_again(tmp_path, second):
    """Before: after 'a/clip.mp4' then 'b/clip.mov' into one OUTDIR, both records were done and a third
    run skipped 'a/clip.mp4' as finished, though clip.npz held the result of 'b/clip.mov'."""
    for name in ("a/clip.mp4", second):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    out = tmp_path / "out"
    [first] = discover([str(tmp_path / "a/clip.mp4")], out)
    [other] = discover([str(tmp_path / second)], out)
    manifest = Manifest(out)
    manifest.append(make_record(first, "done", tracks=1, frames=12, seconds=1.0))
    (out / "clip.npz").write_bytes(b"x")
    assert manifest.is_finished(first, retry_failed=False)
    Path(other.output_path).write_bytes(b"y")  # over clip.npz (one file where case is not told apart)
    manifest.append(make_record(other, "done", tracks=1, frames=12, seconds=1.0))
    for read in (manifest, Manifest(out)):  # as recorded, and as read back before the manifest is compacted
        assert not read.is_finished(first, retry_failed=False) and read.is_finished(other, retry_failed=False)
        assert list(read.records) == [other.key]


def _record(key: str, status: str) -> dict:
    item = BatchItem(key=key, input_path=f"/videos/{key}", output_path=f"/out/{Path(key).with_suffix('.npz')}")
    return make_record(item, status, error=None if status == "done" else "It broke.")


def test_each_done_record_drops_the_other_done_records_of_its_result_file_as_before():
    """The records kept after any order of done and failed lines (also of one video done again, failed
    after being done, and names that differ only in case) are those of comparing every pair of records."""
    keys = ["clip.mp4", "clip.mov", "Clip.MP4", "x.mp4", "b/clip.mp4", "X.mov", "b/CLIP.avi"]
    sequence = [(keys[(i * 5 + i // 3) % len(keys)], "failed" if i % 4 == 3 else "done") for i in range(40)] + [
        ("clip.mp4", "done"),
        ("clip.mp4", "failed"),
        ("clip.mov", "done"),
        ("clip.mov", "done"),
    ]
    expected: dict[str, dict] = {}  # the earlier algorithm: a done record drops every other done one of its file
    manifest = Manifest("/nonexistent-output-folder")
    for key, status in sequence:
        record = _record(key, status)
        if status == "done":
            folded = folded_name(record["output"])
            for other in [k for k, r in expected.items() if k != key and r["status"] == "done"]:
                if folded_name(expected[other]["output"]) == folded:
                    del expected[other]
        expected[key] = record
        manifest._keep(record)
        assert manifest.records == expected and list(manifest.records) == list(expected)


def test_reading_and_appending_a_manifest_takes_time_in_proportion_to_its_records(tmp_path, monkeypatch):
    """Before: each done record compared its result name with every other record's (folding both), so a
    manifest of 20,000 finished videos took some 2e8 foldings before the first video ran."""
    calls = 0

    def counting(name: str) -> str:
        nonlocal calls
        calls += 1
        return folded_name(name)

    monkeypatch.setattr(manifest_module, "folded_name", counting)

    def foldings(n: int) -> int:
        nonlocal calls
        out = tmp_path / f"out{n}"
        out.mkdir()
        lines = [_record(f"v{i}.mp4", "done" if i % 7 else "failed") for i in range(n)]
        (out / MANIFEST_NAME).write_text("".join(json.dumps(r) + "\n" for r in lines))
        calls = 0
        manifest = Manifest(out)
        manifest.append(_record("v0.mp4", "done"))
        assert len(manifest.records) == n
        return calls

    small, large = foldings(300), foldings(600)
    assert small > 0 and large <= 2 * small + 10, (small, large)


def test_a_video_replaced_at_the_same_path_runs_again(clip_bank, tmp_path):
    inputs = place(clip_bank, tmp_path / "in", {"take.mp4": "walk.mp4"})
    out = tmp_path / "out"
    assert main(batch_args(inputs, out=out, extra=["--jobs", "1"])) == 0
    [first] = manifest_lines(out)
    assert first["input_size"] == (inputs / "take.mp4").stat().st_size
    result_written = (out / "take.npz").stat().st_mtime_ns
    place(clip_bank, inputs, {"take.mp4": "sign.mp4"})  # another take saved over the first
    assert main(batch_args(inputs, out=out, extra=["--jobs", "1"])) == 0
    [second] = manifest_lines(out)
    assert second["input_size"] == (inputs / "take.mp4").stat().st_size != first["input_size"]
    assert (out / "take.npz").stat().st_mtime_ns > result_written


def test_a_touched_video_runs_again_and_a_record_without_a_stamp_still_resumes(tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    (tmp_path / "a.npz").write_bytes(b"x")
    [item] = discover([str(video)], tmp_path)
    record = make_record(item, "done", tracks=1, frames=12, seconds=1.0)
    Manifest(tmp_path).append(record)
    assert Manifest(tmp_path).is_finished(item, retry_failed=False)
    os.utime(video, ns=(0, record["input_mtime_ns"] + 1))  # same size, saved again
    [touched] = discover([str(video)], tmp_path)
    assert not Manifest(tmp_path).is_finished(touched, retry_failed=False)
    older = {k: v for k, v in record.items() if k not in ("input_size", "input_mtime_ns")}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(older) + "\n")  # written before stamps existed
    assert Manifest(tmp_path).is_finished(touched, retry_failed=False)


def test_a_video_dated_before_1970_resumes(tmp_path):
    video = tmp_path / "old.mp4"
    video.write_bytes(b"x")
    (tmp_path / "old.npz").write_bytes(b"x")
    os.utime(video, ns=(0, -(10**18)))  # 1938: a negative modification time
    [item] = discover([str(video)], tmp_path)
    Manifest(tmp_path).append(make_record(item, "done", tracks=1, frames=12, seconds=1.0))
    again = Manifest(tmp_path)
    assert again.damaged_lines == 0 and again.is_finished(item, retry_failed=False)


# -- the manifest is read, not trusted ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.pop("tracks"),
        lambda r: r.update(frames="12"),
        lambda r: r.update(seconds=True),
        lambda r: r.update(error=3),
        lambda r: r.update(output="/etc/passwd"),
        lambda r: r.update(output="other.npz"),
        lambda r: r.update(input_size=-1),
        lambda r: r.update(input_mtime_ns=1.5),
        lambda r: r.pop("input_mtime_ns"),
        # keys that make no result name, and numbers too large for float arithmetic (the checks and the summary
        # crashed on them)
        lambda r: r.update(input="/"),
        lambda r: r.update(input="."),
        lambda r: r.update(seconds=10**400),
        lambda r: r.update(fps=10**400),
        lambda r: r.update(frames=10**400),
        lambda r: r.update(tracks=2**53),
        lambda r: r.update(seconds=float("nan")),
        lambda r: r.update(input_size=10**400),
        lambda r: r.update(input_mtime_ns=2**64),
    ],
)
def test_a_record_with_a_missing_or_wrong_field_counts_as_damaged(tmp_path, change):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "a.npz").write_bytes(b"x")
    [item] = discover([str(tmp_path / "a.mp4")], tmp_path)
    record = make_record(item, "done", tracks=1, frames=12, seconds=1.0)
    change(record)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(record) + "\n")
    manifest = Manifest(tmp_path)
    assert manifest.damaged_lines == 1 and manifest.records == {}
    assert not manifest.is_finished(item, retry_failed=False)
    summary_table(list(manifest.records.values()))


def test_a_hand_edited_manifest_is_noted_and_its_videos_run_again(clip_bank, tmp_path, capsys):
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4"})
    out = tmp_path / "out"
    assert main(batch_args(inputs, out=out, extra=["--jobs", "1"])) == 0
    [record] = manifest_lines(out)
    (out / MANIFEST_NAME).write_text(json.dumps({**record, "output": "/etc/passwd", "tracks": "many"}) + "\n")
    capsys.readouterr()
    assert main(batch_args(inputs, out=out, extra=["--jobs", "1"])) == 0
    assert "1 line(s)" in capsys.readouterr().err
    [again] = manifest_lines(out)
    assert again["output"] == "a.npz" and again["tracks"] == 1 and again["finished"] >= record["finished"]


# -- replies from Ray actors are checked -------------------------------------------------------------


def ray_items(tmp_path: Path, names=("a.mp4", "b.mp4")) -> list:
    for name in names:
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"x")
    return discover([str(tmp_path / "in")], tmp_path / "out")


def drive(tmp_path: Path, reply, transfer: str = "object-store", items=None) -> list[dict]:
    items = items if items is not None else ray_items(tmp_path)
    fake_ray, records = FakeRay(reply), []
    ray_runner._drive(
        fake_ray,
        fake_ray.actors(1),
        items,
        transfer,
        records.append,
        BatchProgress(len(items), enabled=False),
        output_dir=tmp_path / "out",
    )
    return records


def test_a_ray_reply_names_no_video_and_its_bytes_must_be_a_result_file(tmp_path):
    items = ray_items(tmp_path)
    good = result_bytes(MocapResult(VideoInfo("a.mp4", 30.0, 64, 48, 12), [], "test model", 500.0))

    def reply(item, data):  # a's task answers for b with good bytes; b's answers for a key of no batch
        if item.key == "a.mp4":
            return make_record(items[1], "done", tracks=1, frames=12, seconds=1.0), good
        return {**make_record(items[0], "done", frames=1, seconds=1.0), "input": "zzz.mp4", "output": "zzz.npz"}, b"x"

    records = {r["input"]: r for r in drive(tmp_path, reply, items=items)}
    assert records["a.mp4"]["status"] == "done" and records["a.mp4"]["output"] == "a.npz"
    assert records["a.mp4"]["tracks"] == 0 and records["a.mp4"]["frames"] == 12  # tracks: the file's own
    assert load_result(tmp_path / "out" / "a.npz").video.name == "a.mp4"  # written for the video submitted
    assert records["b.mp4"]["status"] == "failed" and "result file is unusable" in records["b.mp4"]["error"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npz"]


def test_a_ray_reply_keeps_the_warnings_of_its_result(tmp_path):
    """Before: the driver's record of a Ray actor's result dropped them (a local run kept them)."""
    good = result_bytes(MocapResult(VideoInfo("a.mp4", 30.0, 64, 48, 12), [], "test model", 500.0))
    warned = ["yolov3.weights is not in the model data: people were found with HOG"]
    records = drive(
        tmp_path, lambda item, data: (make_record(item, "done", frames=12, seconds=1.0, warnings=warned), good)
    )
    assert [(r["status"], r["warnings"]) for r in records] == [("done", warned), ("done", warned)]


@pytest.mark.parametrize(
    "error, why",
    [
        (
            FakeRay.RayTaskError(OSError(errno.ENOSPC, "No space left on device")),
            "OSError: [Errno 28] No space left on device",
        ),
        (
            FakeRay.RayError("Failed to retrieve object 00ff.\nIts node died."),
            "RayError: Failed to retrieve object 00ff.",
        ),
    ],
    ids=["the task raised", "its result lost"],
)
def test_a_ray_task_that_fails_otherwise_than_by_its_actors_death_is_a_failed_record(tmp_path, error, why):
    """Before: any such error ended the whole batch (exit status 2, or a traceback)."""

    def reply(item, data):
        return error if item.key == "a.mp4" else (make_record(item, "failed", seconds=0.1, error="bad"), None)

    records = {r["input"]: r for r in drive(tmp_path, reply, "shared")}
    assert records["b.mp4"]["error"] == "bad"  # the batch went on
    assert records["a.mp4"]["status"] == "failed" and records["a.mp4"]["error"] == (
        f"The Ray task for this video failed ({why}); check the cluster's logs ('ray logs'), then run the batch "
        "again with --retry-failed."
    )


def test_a_ray_actor_that_cannot_copy_a_video_into_its_temporary_folder_fails_that_video(
    clip_bank, tmp_path, monkeypatch
):
    """A full /tmp on one node: before, the error ended the whole batch."""
    [item] = discover([str(place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4"}))], tmp_path / "out")
    data = bytearray(Path(item.input_path).read_bytes())
    actor = ray_runner.VideoActor(EngineSpec(factory=ENGINE), make_options(min_track_frames=5))

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    record, result = actor.process(item, data)
    assert record["status"] == "failed" and result is None
    assert record["error"].startswith("Cannot copy the video into this node's temporary folder ")
    assert "(No space left on device); free space there" in record["error"]


def test_a_ray_reply_with_a_malformed_record_is_a_failed_record(tmp_path):
    records = drive(tmp_path, lambda item, data: ({"status": "done", "frames": "many"}, b"x"))
    assert [r["status"] for r in records] == ["failed", "failed"]
    assert all("record is unusable" in r["error"] for r in records)
    assert not (tmp_path / "out").exists()


def test_a_shared_path_result_the_driver_cannot_see_is_a_failed_record(tmp_path):
    records = drive(
        tmp_path, lambda item, data: (make_record(item, "done", tracks=1, frames=3, seconds=1.0), None), "shared"
    )
    assert [r["status"] for r in records] == ["failed", "failed"]
    assert "sees OUTDIR at the same path" in records[0]["error"]


@pytest.mark.parametrize("transfer", ["shared", "object-store"])
def test_a_missing_video_or_a_pipe_fails_on_the_ray_driver_as_in_the_local_pool(tmp_path, transfer):
    """Before, with --transfer shared: a node was blamed ("Node ... cannot read the input video")."""
    items = ray_items(tmp_path, ("a.mp4", "b.mp4", "c.mp4"))
    Path(items[0].input_path).unlink()
    Path(items[1].input_path).unlink()
    os.mkfifo(items[1].input_path)
    records = {
        r["input"]: r
        for r in drive(tmp_path, lambda item, data: (make_record(item, "failed", error="ran"), None), transfer, items)
    }
    assert records["a.mp4"]["error"] == f"Video file not found: {items[0].input_path}. Check the path."
    assert "is not a regular video file (a folder, a device or a pipe)" in records["b.mp4"]["error"]
    assert records["c.mp4"]["error"] == "ran"


# -- the shared path must be seen by every node ------------------------------------------------------


def node_disk_reply(item, data):
    """A node without the mount: it writes the result on its own disk and answers done."""
    return make_record(item, "done", tracks=1, frames=3, seconds=1.0), None


def probes_in(folder: Path) -> list[str]:
    """The names of the shared-path probe files in ``folder``."""
    return [path.name for path in folder.iterdir() if "probe" in path.name] if folder.exists() else []


def test_no_video_runs_when_no_ray_actor_sees_the_shared_output_folder(tmp_path):
    """Before: every video was computed in full on the nodes, then failed as an unusable answer."""
    items = ray_items(tmp_path)
    fake_ray = FakeRay(node_disk_reply)
    with pytest.raises(VibeError) as error:
        drive_on(fake_ray, fake_ray.actors(2, without_mount=2), items, tmp_path)
    message = str(error.value)
    assert message.startswith("No Ray actor can work on the shared paths: node node-without-mount0 does not see the")
    assert "output folder" in message and "(left out too: node-without-mount1)" in message
    assert "same path on every node" in message and "--transfer object-store" in message
    assert fake_ray.submitted == []  # no video was run
    assert probes_in(tmp_path / "out") == [] and not NO_MOUNT.exists()  # the probe deleted, nothing made on a node


def test_ray_actors_on_a_node_without_the_shared_paths_are_left_out_with_one_note(tmp_path, capsys):
    items = ray_items(tmp_path, ("a.mp4", "b.mp4", "c.mp4"))
    fake_ray = FakeRay(lambda item, data: (make_record(item, "failed", seconds=0.1, error="bad"), None))
    actors = fake_ray.actors(2, without_mount=1)
    records = drive_on(fake_ray, actors, items, tmp_path)
    assert sorted(r["input"] for r in records) == ["a.mp4", "b.mp4", "c.mp4"]
    assert fake_ray.ran_on == [actors[0]] * 3  # all on the actor that sees them
    err = capsys.readouterr().err
    assert err.count("Note:") == 1 and "1 Ray actor(s) are left out" in err and "node-without-mount1" in err
    assert probes_in(tmp_path / "out") == []


def test_a_first_video_deleted_since_the_batch_started_does_not_leave_every_ray_actor_out(tmp_path):
    """The nodes are checked against a video the driver sees: that one fails alone, the others run."""
    items = ray_items(tmp_path, ("a.mp4", "b.mp4"))
    Path(items[0].input_path).unlink()
    assert ray_runner.video_the_driver_sees(items) == items[1].input_path
    fake_ray = FakeRay(lambda item, data: (make_record(item, "failed", seconds=0.1, error="bad"), None))
    assert sorted(r["input"] for r in drive_on(fake_ray, fake_ray.actors(2), items, tmp_path)) == ["a.mp4", "b.mp4"]


def test_the_shared_probe_is_there_while_the_batch_runs_and_deleted_on_ctrl_c(tmp_path):
    items = ray_items(tmp_path)
    seen_while_running = []

    def interrupted(item, data):
        seen_while_running.extend(probes_in(tmp_path / "out"))
        return KeyboardInterrupt()

    fake_ray = FakeRay(interrupted)
    with pytest.raises(KeyboardInterrupt):
        drive_on(fake_ray, fake_ray.actors(1), items, tmp_path)
    [probe] = seen_while_running
    assert manifest_module.BATCH_PARTS.fullmatch(probe)  # a killed run's is deleted by the next one
    assert probes_in(tmp_path / "out") == []


def test_a_shared_probe_a_killed_run_left_is_deleted_with_the_other_leftovers(tmp_path):
    probe = manifest_module.shared_probe_path(tmp_path)
    probe.write_bytes(b"0123")
    assert manifest_module.remove_stale_parts(tmp_path) == 1 and not probe.exists()


def test_the_leftovers_of_another_batch_whose_outdir_is_a_subfolder_are_left_to_it(tmp_path):
    """Before: a batch deleted the temporary files of another batch running into OUTDIR/inner."""
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / runner.LOCK_NAME).touch()
    theirs, ours = manifest_module.shared_probe_path(inner), manifest_module.shared_probe_path(tmp_path)
    theirs.write_bytes(b"0123")
    ours.write_bytes(b"0123")
    assert manifest_module.remove_stale_parts(tmp_path) == 1 and theirs.exists() and not ours.exists()


@pytest.mark.parametrize(
    "case, problem",
    [
        ("seen", None),
        ("no folder", "does not see the output folder '{out}' (No such file or directory)"),
        ("another folder", "does not see the output folder '{out}' (another folder is at that path there)"),
        (
            "no video",
            "cannot use the input video at the driver's path: Video file not found: '{video}'. Check the path",
        ),
        (
            "a folder as video",
            "cannot use the input video at the driver's path: '{video}' is not a regular video file (a folder, a "
            "device or a pipe). Pass the path of a video file",
        ),
        (
            "an empty video",  # another file than the driver's, which is not empty
            "cannot use the input video at the driver's path: Video file '{video}' is empty (0 bytes). Copy or "
            "export it again",
        ),
    ],
)
def test_a_node_checks_it_sees_the_drivers_output_folder_and_first_video_without_making_either(tmp_path, case, problem):
    out, video = tmp_path / "out", tmp_path / "in" / "a.mp4"
    video.parent.mkdir()
    if case == "a folder as video":
        video.mkdir()
    elif case != "no video":
        video.write_bytes(b"" if case == "an empty video" else b"x")
    if case != "no folder":
        out.mkdir()
        (out / "probe").write_bytes(b"other run" if case == "another folder" else b"driver's")
    found = ray_runner.shared_paths_problem(str(out / "probe"), b"driver's", str(video))
    assert found == (problem and problem.format(out=out, video=video))
    assert out.exists() == (case != "no folder")  # a folder missing on a node is never made there


def test_an_actor_checks_the_shared_paths_again_before_each_video(clip_bank, tmp_path):
    """Ray may restart an actor on another node after its first check: each video's task carries the
    probe, and an actor that no longer sees it fails the video at once instead of computing it in full
    and leaving its result on its own disk."""
    [item] = discover([str(place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4"}))], tmp_path / "out")
    (tmp_path / "out").mkdir()
    probe = tmp_path / "out" / ".probe"
    probe.write_bytes(b"driver's")
    actor = ray_runner.VideoActor(EngineSpec(factory=ENGINE), make_options(min_track_frames=5))
    record, _ = actor.process(item, None, (str(probe), b"another run's"))
    assert record["status"] == "failed" and "does not see the output folder" in record["error"]
    assert not Path(item.output_path).exists()
    record, _ = actor.process(item, None, (str(probe), b"driver's"))
    assert record["status"] == "done" and Path(item.output_path).is_file()
    fake_ray = FakeRay(lambda item, data: (make_record(item, "done"), None))
    actors = fake_ray.actors(1)
    drive_on(fake_ray, actors, ray_items(tmp_path / "driven", ("b.mp4",)), tmp_path / "driven")
    assert actors[0].probes and all(p is not None and p[0].endswith(".part") for p in actors[0].probes)


# -- videos sent through the object store ------------------------------------------------------------


def test_a_pipe_named_like_a_video_is_a_failed_record_instead_of_blocking_the_driver(tmp_path):
    (tmp_path / "in").mkdir()
    os.mkfifo(tmp_path / "in" / "x.mp4")
    [item] = discover([str(tmp_path / "in")], tmp_path / "out")
    answer = []
    reading = threading.Thread(target=lambda: answer.append(ray_runner._payload(item, "object-store")), daemon=True)
    reading.start()
    reading.join(timeout=10)
    try:
        assert not reading.is_alive(), "the driver blocks on the pipe"
        [(data, error)] = answer
        assert data is None and "is not a regular video file" in error and "pipe" in error
    finally:
        if reading.is_alive():  # let it go: a writer opens the pipe
            os.close(os.open(tmp_path / "in" / "x.mp4", os.O_WRONLY | os.O_NONBLOCK))


def test_a_link_to_a_device_that_never_ends_is_refused_before_it_is_read(tmp_path):
    (tmp_path / "clip.mp4").symlink_to("/dev/zero")
    with pytest.raises(VibeError, match="is not a regular video file"):
        ray_runner.read_video_bytes(str(tmp_path / "clip.mp4"), 1000)


def test_a_video_is_read_up_to_the_object_store_limit_and_no_further(tmp_path, monkeypatch):
    video = tmp_path / "clip.mp4"
    video.write_bytes(os.urandom(3000))
    assert ray_runner.read_video_bytes(str(video), 3000) == video.read_bytes()
    with pytest.raises(VibeError, match="more than the object store takes per clip"):
        ray_runner.read_video_bytes(str(video), 2999)
    real_fstat = os.fstat

    def stale_fstat(fd):  # the size when opened: the file grows while it is read
        status = list(real_fstat(fd))
        status[6] = 10  # st_size
        return os.stat_result(status)

    monkeypatch.setattr(ray_runner.os, "fstat", stale_fstat)
    held = []  # the bytes read so far, after each read into the buffer
    real_read_into = ray_runner._read_into
    monkeypatch.setattr(ray_runner, "_read_into", lambda *args: held.append(real_read_into(*args)) or held[-1])
    with pytest.raises(VibeError, match="more than the object store takes per clip"):
        ray_runner.read_video_bytes(str(video), 1000)
    assert held and max(held) <= 1001  # never more than the limit and one byte
    assert ray_runner.read_video_bytes(str(video), 5000) == video.read_bytes()  # grown, but within the limit


def test_a_video_sent_through_the_object_store_is_held_in_memory_once(tmp_path):
    video = tmp_path / "clip.mp4"
    size = 32 << 20
    with open(video, "wb") as file:
        for _ in range(size >> 20):
            file.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        data = ray_runner.read_video_bytes(str(video), ray_runner.OBJECT_STORE_MAX_BYTES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.1 * size, f"peak {peak / size:.2f} x the file"
    assert data == video.read_bytes()


# -- a Ray cluster with nothing to run actors on (yet) -----------------------------------------------


def ray_cluster(*nodes: dict, dead: tuple[dict, ...] = ()) -> SimpleNamespace:
    """A cluster with live nodes of the resources ``nodes`` (and dead ones), as ``ray.nodes()`` lists them."""
    table = [{"Alive": True, "Resources": resources} for resources in nodes]
    table += [{"Alive": False, "Resources": resources} for resources in dead]
    total = {name: sum(node.get(name, 0.0) for node in nodes) for name in ("CPU", "GPU")}
    return SimpleNamespace(nodes=lambda: table, cluster_resources=lambda: {k: v for k, v in total.items() if v})


@pytest.mark.parametrize(
    "nodes, device, message",
    [
        ((), "auto", "has no CPU or GPU to run the batch on yet"),  # an autoscaler that starts from no worker
        (({},), "auto", "has no CPU or GPU to run the batch on yet"),  # a head started with --num-cpus 0
        (({"CPU": 0.5},), "auto", "has no CPU or GPU to run the batch on yet"),
        (({"CPU": 0.5}, {"CPU": 0.5}), "auto", "CPU 1, GPU 0, and no node with a whole CPU"),
        (({"GPU": 2.0},), "cpu", "has no CPU to run the batch on yet"),
    ],
)
def test_a_ray_cluster_without_a_cpu_or_gpu_is_one_clear_error(nodes, device, message):
    with pytest.raises(VibeError, match=message) as error:
        ray_runner._actor_layout(ray_cluster(*nodes, dead=({"CPU": 8.0, "GPU": 1.0},)), device)
    assert "--num-cpus" in str(error.value) and "run the same command again" in str(error.value)


def test_the_actor_layout_of_a_cluster_with_cpus_or_gpus():
    assert ray_runner._actor_layout(ray_cluster({"CPU": 5.0}), "auto") == ({"num_cpus": 2}, 2, "cpu")
    cluster = ray_cluster({"CPU": 1.0, "GPU": 2.0}, {"GPU": 1.0})
    assert ray_runner._actor_layout(cluster, "auto") == ({"num_gpus": 1}, 3, "cuda:0")
    assert ray_runner._actor_layout(cluster, "cpu") == ({"num_cpus": 1}, 1, "cpu")


def test_cpu_actors_ask_for_no_more_cpus_than_one_node_has_and_only_as_many_as_fit():
    # nodes of 1 CPU: an actor of 2 CPUs would fit on none and wait forever
    assert ray_runner._actor_layout(ray_cluster(*[{"CPU": 1.0}] * 4), "auto") == ({"num_cpus": 1}, 4, "cpu")
    # 3 + 1 CPUs: one actor of 2 fits (on the 3-CPU node), not two
    assert ray_runner._actor_layout(ray_cluster({"CPU": 3.0}, {"CPU": 1.0}), "auto") == ({"num_cpus": 2}, 1, "cpu")
    # a dead node's CPUs count for nothing
    cluster = ray_cluster({"CPU": 1.0}, dead=({"CPU": 16.0},))
    assert ray_runner._actor_layout(cluster, "cpu") == ({"num_cpus": 1}, 1, "cpu")


@pytest.mark.parametrize(
    "unscheduled, note, status",
    [
        # Ray does not say why: no cause is named
        (None, "none of the 2 Ray actor(s) has started and loaded the model", "to start and load the model"),
        # the cluster has given them no process: they wait for resources
        (2, "2 of the 2 Ray actor(s) still wait for 2 CPUs free on the cluster", "waiting for 2 CPUs free"),
        (0, None, "2 actor(s) loading the model"),  # both run __init__: a slow model load is no cluster problem
    ],
)
def test_actors_that_have_not_started_are_reported_once_with_what_they_wait_for(
    tmp_path, monkeypatch, capsys, unscheduled, note, status
):
    monkeypatch.setattr(ray_runner, "PENDING_NOTE_S", 0.0)
    items = ray_items(tmp_path)
    fake_ray = FakeRay(lambda item, data: (make_record(item, "failed", seconds=0.1, error="bad"), None), not_started=5)
    statuses, records = [], []
    progress = BatchProgress(2, enabled=False)
    monkeypatch.setattr(progress, "worker_status", lambda name, text: statuses.append(text))
    ray_runner._drive(
        fake_ray,
        fake_ray.actors(2),
        items,
        "shared",
        records.append,
        progress,
        output_dir=tmp_path / "out",
        needs="2 CPUs",
        unscheduled=lambda: unscheduled,
    )
    assert sorted(r["input"] for r in records) == ["a.mp4", "b.mp4"]
    err = capsys.readouterr().err
    if note is None:
        assert "Note:" not in err
    else:
        assert err.count("Note:") == 1 and note in err and "ray status" in err
    assert (unscheduled == 2) == ("still wait for" in err)  # a cause is named only when it is known
    assert any(status in text for text in statuses), statuses


# -- symbolic links in the output folder -------------------------------------------------------------


def test_a_lock_file_that_is_a_symbolic_link_is_refused_and_its_target_kept(clip_bank, tmp_path, capsys):
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4"})
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".batch.lock").symlink_to(precious)
    assert main(batch_args(inputs, out=tmp_path / "out", extra=["--jobs", "1"])) == 2
    assert "is a symbolic link" in capsys.readouterr().err and precious.read_text() == "keep me\n"


def test_an_output_subfolder_linked_elsewhere_is_refused_before_any_work(clip_bank, tmp_path, capsys):
    inputs = place(clip_bank, tmp_path / "in", {"day1/a.mp4": "walk.mp4"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "day1").symlink_to(elsewhere, target_is_directory=True)
    assert main(batch_args(inputs, out=tmp_path / "out", extra=["--jobs", "1"])) == 2
    assert "outside the output folder" in capsys.readouterr().err and list(elsewhere.iterdir()) == []


# -- Ctrl-C ------------------------------------------------------------------------------------------


def test_ctrl_c_stops_the_workers_before_the_batch_ends(clip_bank, tmp_path):
    inputs = place(clip_bank, tmp_path / "in", {f"slow{i}.mp4": "walk.mp4" for i in range(4)})
    out = tmp_path / "out"
    run = start_batch_until_first_record(inputs, out)
    os.killpg(run.pid, signal.SIGINT)  # as a terminal sends it: to the driver and its workers
    assert run.wait(timeout=30) == 130, run.stderr.read().decode()[-2000:]
    time.sleep(3)  # a worker left running would still run (3 s a video)
    with pytest.raises(ProcessLookupError):
        os.killpg(run.pid, 0)  # no process of the batch is left
    recorded = {r["output"] for r in manifest_lines(out) if r["status"] == "done"}
    assert 1 <= len(recorded) < 4
    assert {p.name for p in out.glob("*.npz")} == recorded  # every result on disk has its record


needs_linux = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux (/proc, prctl)")


def live_processes(group: int) -> list[int]:
    """The processes of the process group ``group`` that have not ended (a zombie has ended: whether
    its new parent reaps it is not the batch's doing)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, process_group = stat.read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):  # ended meanwhile
            continue
        if int(process_group) == group and state not in ("Z", "X"):
            live.append(int(stat.parent.name))
    return live


@needs_linux
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_or_sighup_to_the_driver_stops_its_workers_as_ctrl_c_does(clip_bank, tmp_path, stop):
    """Before: the signal ended the driver alone; its workers ran on, writing results no record names,
    after OUTDIR's lock was gone."""
    inputs = place(clip_bank, tmp_path / "in", {f"slow{i}.mp4": "walk.mp4" for i in range(4)})
    out = tmp_path / "out"
    run = start_batch_until_first_record(inputs, out)
    try:
        os.kill(run.pid, stop)  # to the driver alone, as `kill PID` sends it
        status = run.wait(timeout=30)
        time.sleep(3)  # a worker left running would still run (3 s a video)
        assert live_processes(run.pid) == []  # first: a worker left running holds stderr open
        assert status == 128 + stop and run.stderr.read().decode().endswith("interrupted\n")
        recorded = {r["output"] for r in manifest_lines(out) if r["status"] == "done"}
        assert 1 <= len(recorded) < 4 and {p.name for p in out.glob("*.npz")} == recorded
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)


def test_sigterm_stops_a_ray_batch_as_a_local_one_although_ray_init_takes_the_signal(tmp_path, monkeypatch):
    """``ray.init`` puts in a SIGTERM handler of its own (an exit with status 1), and ``ray.wait`` turns what
    a handler raises into a plain KeyboardInterrupt. Before: `kill` during a --ray batch exited with 1,
    read as a failed video (and, past that, with 130, as for Ctrl-C), instead of 143."""

    class RayThatTakesSigterm:
        def is_initialized(self) -> bool:
            return False

        def init(self, **kwargs) -> None:
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))  # as Ray's own handler does

        def shutdown(self) -> None:
            pass

    def sigterm_while_running(ray, device):
        try:
            signal.raise_signal(signal.SIGTERM)  # `kill PID` while the driver waits for the actors
        except KeyboardInterrupt:  # as Ray's wait hands on what a signal handler raised
            raise KeyboardInterrupt from None

    monkeypatch.setattr(ray_runner, "_import_ray", RayThatTakesSigterm)
    monkeypatch.setattr(ray_runner, "init_address", lambda address: None)
    monkeypatch.setattr(ray_runner, "_actor_layout", sigterm_while_running)
    items = ray_items(tmp_path)
    with pytest.raises(KeyboardInterrupt) as stopped, signals_stop_the_command():
        ray_runner.run_ray(
            items,
            EngineSpec(factory=ENGINE),
            make_options(),
            address=None,
            transfer="shared",
            on_record=lambda record: None,
            progress=BatchProgress(len(items), enabled=False),
            output_dir=tmp_path / "out",
        )
    assert isinstance(stopped.value, Stopped) and stopped.value.exit_status == 128 + signal.SIGTERM


@needs_linux
def test_the_workers_die_with_a_driver_killed_outright(clip_bank, tmp_path):
    """SIGKILL (the out-of-memory killer) gives the driver no chance to stop them: the kernel ends them."""
    inputs = place(clip_bank, tmp_path / "in", {f"slow{i}.mp4": "walk.mp4" for i in range(4)})
    out = tmp_path / "out"
    run = start_batch_until_first_record(inputs, out)
    try:
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        deadline = time.monotonic() + 10
        while live_processes(run.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert live_processes(run.pid) == []
        time.sleep(3)  # a worker left running would have finished its video meanwhile
        recorded = {r["output"] for r in manifest_lines(out) if r["status"] == "done"}
        assert {p.name for p in out.glob("*.npz")} == recorded
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)


def test_the_workers_are_stopped_when_recording_a_result_fails(clip_bank, tmp_path, monkeypatch):
    inputs = place(clip_bank, tmp_path / "in", {f"v{i}.mp4": "walk.mp4" for i in range(4)})
    out = tmp_path / "out"
    items = discover([str(inputs)], out)
    calls, driver = [], {}
    earlier_children = set(multiprocessing.active_children())  # (not this test's to judge)
    real_drive = local_pool._drive

    def drive(pool, state, videos_in_flight, *args):  # the driver's futures: {future: video}
        driver["in_flight"], driver["workers"] = videos_in_flight, pool._processes  # the pool's own table
        return real_drive(pool, state, videos_in_flight, *args)

    monkeypatch.setattr(local_pool, "_drive", drive)

    def on_record(record: dict) -> None:  # a full disk: the manifest cannot be appended to
        calls.append(record["input"])
        deadline = time.monotonic() + 60
        while len(calls) == 1 and not all(future.done() for future in driver["in_flight"]):
            assert time.monotonic() < deadline, "the other videos never finished"
            time.sleep(0.05)  # the other videos finish meanwhile: their answers wait to be recorded too
        raise OSError(errno.ENOSPC, "No space left on device")

    spec = EngineSpec(factory=ENGINE)
    with pytest.raises(OSError, match="No space left"):
        local_pool.run_local(
            items,
            spec,
            make_options(min_track_frames=5),
            jobs=2,
            on_record=on_record,
            progress=BatchProgress(4, enabled=False),
        )
    assert len(calls) == 2, calls  # the first result, then the finished ones on the way out
    workers = list(driver["workers"].values())
    assert workers and not still_running(workers), workers  # every worker has ended
    statuses = [w.exitcode for w in workers if w.exitcode is not None]
    assert statuses and set(statuses) == {-signal.SIGTERM}, workers  # ended, not let finish
    assert not still_running(set(multiprocessing.active_children()) - earlier_children)  # nothing else runs


def still_running(processes) -> list:
    """The processes that have not ended, told by their sentinel: with process ids reused (a busy
    machine), another waiter may have reaped one, whose exit status is then unknown here (None)."""
    return [p for p in processes if not multiprocessing.connection.wait([p.sentinel], timeout=0)]


# -- the Ray cluster's address -----------------------------------------------------------------------


@pytest.fixture
def not_a_ray_head():
    """A port that accepts connections and answers like a web server, not like a Ray head."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    server.close()


def test_an_open_port_that_is_not_a_ray_head_is_one_clear_error_at_once(not_a_ray_head):
    started = time.perf_counter()
    with pytest.raises(VibeError, match="is not a Ray cluster's head"):
        ray_runner.check_reachable(not_a_ray_head, timeout_s=2)
    assert time.perf_counter() - started < 5


def test_a_silent_port_is_one_clear_error_within_the_timeout():
    server = socket.create_server(("127.0.0.1", 0))  # accepts (the backlog) but never answers
    try:
        started = time.perf_counter()
        with pytest.raises(VibeError, match="Cannot reach the Ray cluster"):
            ray_runner.check_reachable(f"127.0.0.1:{server.getsockname()[1]}", timeout_s=1)
        assert time.perf_counter() - started < 5
    finally:
        server.close()


def test_the_ray_address_from_the_environment_is_checked_too(not_a_ray_head, tmp_path, capsys, monkeypatch):
    import ray  # noqa: F401  (the test extra has it)

    monkeypatch.setenv("RAY_ADDRESS", not_a_ray_head)
    (tmp_path / "a.mp4").write_bytes(b"x")
    started = time.perf_counter()
    assert main(batch_args(tmp_path / "a.mp4", out=tmp_path / "out", extra=["--ray"])) == 2
    assert "is not a Ray cluster's head" in capsys.readouterr().err and time.perf_counter() - started < 30


# -- list files ---------------------------------------------------------------------------------------


def test_adding_an_entry_to_a_list_file_renames_no_other_video(tmp_path):
    for name in ("shoot/day1/a.mp4", "shoot/day1/b.mp4", "shoot/day2/c.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    listing = tmp_path / "shoot" / "clips.txt"
    listing.write_text("day1/a.mp4\nday1/b.mp4\n")
    before = {i.input_path: i.key for i in discover([str(listing)], tmp_path / "out")}
    listing.write_text("day1/a.mp4\nday1/b.mp4\nday2/c.mp4\n")
    after = {i.input_path: i.key for i in discover([str(listing)], tmp_path / "out")}
    assert before == {p: k for p, k in after.items() if p in before} and before
    assert sorted(after.values()) == ["day1/a.mp4", "day1/b.mp4", "day2/c.mp4"]


def test_a_name_starting_with_a_tilde_of_no_user_is_taken_as_it_is(tmp_path, monkeypatch):
    """Before: '~take.mp4' on the command line or in a list was a traceback (no home folder of a user
    'take.mp4')."""
    name = "~vibe-no-such-user-take.mp4"
    (tmp_path / name).write_bytes(b"x")
    (tmp_path / "clips.txt").write_text(f"{name}\n")
    monkeypatch.chdir(tmp_path)
    assert [item.key for item in discover([name], tmp_path / "out")] == [name]
    [item] = discover(["clips.txt"], tmp_path / "out")
    assert item.key == name and item.input_path == str(tmp_path / name)


def test_a_list_file_saved_with_a_byte_order_mark_reads_its_first_path_without_it(tmp_path):
    """Notepad and PowerShell 5 start a UTF-8 file with one. Before: it stayed on the first path, an
    invisible character in its key that made that video a missing file."""
    for name in ("take1.mp4", "take2.mp4"):
        (tmp_path / "v" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "v" / name).write_bytes(b"x")
    listing = tmp_path / "clips.txt"
    listing.write_bytes("v/take1.mp4\r\nv/take2.mp4\r\n".encode("utf-8-sig"))
    items = discover([str(listing)], tmp_path / "out")
    assert [item.key for item in items] == ["v/take1.mp4", "v/take2.mp4"]
    assert items[0].input_path == str(tmp_path / "v" / "take1.mp4") and items[0].input_stamp is not None


@pytest.mark.parametrize(
    "first, second",
    [("Take1.mp4", "take1.MOV"), ("day1/A.mp4", "DAY1/a.mkv"), ("caf\u00e9.mp4", "cafe\u0301.mov")],
)
def test_results_whose_names_differ_only_in_case_or_accent_encoding_are_refused(tmp_path, first, second):
    for name in (first, second):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"x")
    with pytest.raises(VibeError, match="one file where case and accents are not told apart") as error:
        discover([str(tmp_path / "in")], tmp_path / "out")
    assert str(tmp_path / "in" / first) in str(error.value) and str(tmp_path / "in" / second) in str(error.value)


@pytest.mark.parametrize(
    "file, in_folder", [("a.mp4", "a.npz/b.mp4"), ("a.mov", "A.npz/day1/b.mp4"), ("z.npz/b.mp4", "z.mkv")]
)
def test_a_result_file_named_as_another_results_folder_is_refused(tmp_path, file, in_folder):
    """Before: both ran, and whichever finished second failed after all its work with 'File exists',
    which --retry-failed could never fix."""
    for name in (file, in_folder):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"x")
    listing = tmp_path / "in" / "clips.txt"  # in this order
    listing.write_text(f"{file}\n{in_folder}\n")
    with pytest.raises(VibeError, match="a result file and a folder of the same name; rename one of them") as error:
        discover([str(listing)], tmp_path / "out")
    assert str(tmp_path / "in" / file) in str(error.value) and str(tmp_path / "in" / in_folder) in str(error.value)


@pytest.mark.parametrize("first, second", [("Stra\u00dfe.mp4", "strasse.mp4"), ("\ufb01le.mp4", "file.mp4")])
def test_results_whose_names_differ_by_a_letter_that_only_case_folding_expands_are_two_files(tmp_path, first, second):
    """Case-insensitive file systems map case letter by letter: 'ß' is not 'ss' there, nor 'ﬁ' 'fi'."""
    for name in (first, second):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"x")
    items = discover([str(tmp_path / "in")], tmp_path / "out")
    assert sorted(item.key for item in items) == sorted([first, second])


@pytest.mark.parametrize("entry", [".", "/", "../shoot", "day1", "day1/.."])
def test_a_list_line_that_names_a_folder_is_one_error_naming_the_line(tmp_path, entry):
    (tmp_path / "shoot" / "day1").mkdir(parents=True)
    (tmp_path / "shoot" / "day1" / "a.mp4").write_bytes(b"x")
    listing = tmp_path / "shoot" / "clips.txt"
    listing.write_text(f"day1/a.mp4\n{entry}\n")
    with pytest.raises(VibeError, match=f"Line 2 of the list of videos .*\\('{re.escape(entry)}'\\) names a folder"):
        discover([str(listing)], tmp_path / "out")


def test_list_lines_the_file_system_cannot_follow_are_failed_records_and_the_batch_goes_on(clip_bank, tmp_path):
    """A name too long for the file system, and one through a symbolic-link loop, fail as videos."""
    inputs = place(clip_bank, tmp_path / "shoot", {"good.mp4": "walk.mp4"})
    (inputs / "loop").symlink_to(inputs / "loop")
    listing = inputs / "clips.txt"
    listing.write_text(f"good.mp4\n{'a' * 300}.mp4\nloop/x.mp4\n")
    out = tmp_path / "out"
    assert main(batch_args(listing, out=out, extra=["--jobs", "1"])) == 1
    records = {r["input"]: r["status"] for r in manifest_lines(out)}
    assert records == {"good.mp4": "done", f"{'a' * 300}.mp4": "failed", "loop/x.mp4": "failed"}
    assert main(batch_args(listing, out=out, extra=["--jobs", "1"])) == 1  # resumes: nothing runs again
    assert len(manifest_lines(out)) == 3


def test_a_video_whose_result_name_is_too_long_for_the_output_folder_is_one_failed_record(tmp_path):
    """Its worker failed writing the result, and the message named a temporary file."""
    name = "a" * 252 + ".ts"  # 255 bytes, the longest name: its result, 'a...a.npz', is one byte longer
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(b"x")
    (tmp_path / "in" / "b.mp4").write_bytes(b"x")
    long, short = discover([str(tmp_path / "in")], tmp_path / "out")
    assert long.problem == (
        f"The result's name '{'a' * 252}.npz' is 256 bytes long, more than the output folder's file system "
        "takes (255); rename the video (or its folder) to a shorter name."
    )
    assert short.problem is None


def test_a_name_is_measured_as_its_file_system_counts_it(monkeypatch):
    """Windows counts UTF-16 units: 90 CJK characters (270 bytes in UTF-8) fit in its 255."""
    from vibe_server.batch import inputs

    name = "影" * 90 + ".npz"
    assert inputs.name_length(name) == (len(name.encode()), "bytes")
    monkeypatch.setattr(inputs.os, "name", "nt")
    assert inputs.name_length(name) == (94, "UTF-16 units")
    assert inputs.result_name_problem(name, 255) is None


def test_a_list_line_with_a_nul_character_is_one_error_naming_the_line(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    listing = tmp_path / "clips.txt"
    listing.write_text("a.mp4\nb\0c.mp4\n")
    with pytest.raises(VibeError, match=r"Line 2 of the list of videos .*\('b\\0c\.mp4'\) is not a path a file can"):
        discover([str(listing)], tmp_path / "out")


# -- a good video beside one that kills its worker ----------------------------------------------------


# A crash halfway through the video, and one right after the worker said which video it starts (a
# report that a queue with a feeder thread would lose with the process).
@pytest.mark.parametrize("crash", [CRASH_ALWAYS_PREFIX, CRASH_AT_START_PREFIX])
def test_a_good_video_beside_one_that_kills_its_worker_is_done(clip_bank, tmp_path, crash):
    inputs = place(clip_bank, tmp_path / "in", {f"z/{crash}.mp4": "sign.mp4"})  # after slow.mp4: it starts first
    source, first = CLIP_SOURCES["walk.mp4"]
    cut_clip(source, first, inputs / "slow.mp4", frames=20)  # 5 s: still running when the other's worker dies
    out = tmp_path / "out"
    assert main(batch_args(inputs, out=out, extra=["--jobs", "2"])) == 1
    records = {r["input"]: r for r in manifest_lines(out)}
    assert records["slow.mp4"]["status"] == "done"
    assert records[f"z/{crash}.mp4"]["status"] == "failed"
    assert "died 3 times" in records[f"z/{crash}.mp4"]["error"]


def test_a_workers_report_reaches_the_driver_even_when_the_worker_dies_right_after_it():
    context = multiprocessing.get_context("fork")  # milliseconds; the pool's workers are spawned
    channel = local_pool.status_channel(context)
    worker = context.Process(target=report_then_die, args=(channel,))
    worker.start()
    worker.join(timeout=30)
    assert worker.exitcode == 17
    assert not channel.empty() and channel.get() == (local_pool.START, worker.pid, 0, "")


def pool_state(running: dict[int, str], ready=(1, 2), keys=("bad", "good")) -> tuple[dict, local_pool.LocalQueue]:
    """Videos ``keys`` in flight on workers 1 and 2 ({pid: video} said started), as the pool breaks."""
    items = [BatchItem(key, f"/in/{key}", f"/out/{key}.npz") for key in keys]
    state = local_pool.LocalQueue(items, deque())
    state.ready.update({pid: f"worker {pid}" for pid in ready})
    state.running.update(running)
    return {Future(): item for item in items}, state


def test_only_the_dead_workers_video_counts_an_attempt():
    in_flight, state = pool_state({1: "bad", 2: "good"})
    local_pool._retry_or_fail(in_flight, state, [].append, dead=[1])
    assert state.attempts == {"bad": 1} and not state.suspects
    assert [item.key for item in state.pending] == ["bad", "good"]  # both run again


def test_a_death_not_told_apart_makes_every_video_in_flight_a_suspect():
    in_flight, state = pool_state({2: "good"})
    local_pool._retry_or_fail(in_flight, state, [].append, dead=[])  # no worker told apart
    assert not state.attempts and state.suspects == {"bad", "good"}


def test_a_worker_that_died_idle_blames_no_video_a_surviving_worker_runs():
    in_flight, state = pool_state({2: "good"}, keys=("good",))  # worker 1 said it ran nothing
    local_pool._retry_or_fail(in_flight, state, [].append, dead=[1])
    assert not state.attempts and not state.suspects
    assert [item.key for item in state.pending] == ["good"]


@pytest.mark.parametrize(
    "keys, attempts, suspects",
    [(("bad", "good"), {"bad": 1}, set()), (("bad", "good", "next"), {}, {"bad", "next"})],
)
def test_a_dead_worker_that_said_nothing_is_blamed_only_for_videos_no_surviving_worker_runs(keys, attempts, suspects):
    in_flight, state = pool_state({2: "good"}, keys=keys)  # worker 1 died without saying what it took
    local_pool._retry_or_fail(in_flight, state, [].append, dead=[1])
    assert state.attempts == attempts and state.suspects == suspects
    assert [item.key for item in state.pending] == list(keys)  # all run again


@pytest.mark.parametrize("ready", [(), (2,)])
def test_a_worker_that_dies_before_it_has_loaded_the_model_stops_the_batch(ready):
    in_flight, state = pool_state({}, ready=ready)
    with pytest.raises(VibeError, match="died while loading the model"):
        local_pool._retry_or_fail(in_flight, state, [].append, dead=[1])


def test_workers_that_die_while_loading_the_model_stop_the_batch_with_one_error(clip_bank, tmp_path, capsys):
    inputs = place(clip_bank, tmp_path / "in", {"a.mp4": "walk.mp4", "b.mp4": "sign.mp4", "c.mp4": "street.mp4"})
    started = time.perf_counter()
    assert main(with_engine(batch_args(inputs, out=tmp_path / "out", extra=["--jobs", "2"]), DYING_ENGINE)) == 2
    err = capsys.readouterr().err
    assert "died while loading the model (out of memory" in err and "--jobs" in err and err.count("error:") == 1
    assert manifest_lines(tmp_path / "out") == []  # no video is blamed: fix the cause and run again
    assert time.perf_counter() - started < 60

"""``vibe-mocap infer`` and ``serve`` argument handling, with the tiny engine and (slow) on a real
clip with the synthetic placeholder model."""

import contextlib
import os
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
from hostile_files import NOT_REGULAR_KINDS, call_with_deadline, make_not_regular
from testdata import REAL_CLIPS as REAL

from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import load_result
from vibe_blender.core.smpl_model import load_body_model, load_smpl_pkl
from vibe_server.api.http_protocol import HeadersDeadlineProtocol
from vibe_server.cli import main
from vibe_server.pipeline import engine as engine_module
from vibe_server.pipeline import options as options_module
from vibe_server.pipeline import video as video_module


@pytest.fixture
def no_model_data(monkeypatch, tmp_path):
    """The default model-data folder (no --data-dir, no $VIBE_DATA_DIR) is an empty one of the test's."""
    from vibe_server.data import loading

    monkeypatch.delenv("VIBE_DATA_DIR", raising=False)
    monkeypatch.setattr(loading, "default_data_dir", lambda: tmp_path / "no_data")
    return tmp_path / "no_data"


@pytest.fixture
def tiny_infer(monkeypatch, make_engine, tmp_path, no_model_data):
    """infer with the tiny engine; the default model data folder is empty (so the placeholder notice shows)."""
    engine = make_engine()
    calls = {}

    def fake_load_engine(data_dir, **kwargs):
        calls.update(kwargs, data_dir=data_dir)
        engine.default_precision = kwargs["precision"]
        return engine

    monkeypatch.setattr(engine_module, "load_engine", fake_load_engine)
    # infer's look at the video before the model loads: the scripted front end's (the videos here are fakes)
    monkeypatch.setattr(
        video_module, "open_video", lambda path, **kwargs: contextlib.nullcontext(engine.open_video(path))
    )
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"fake")
    return video, calls


def test_infer_writes_the_result_and_prints_a_summary(tiny_infer, tmp_path, capsys):
    import joblib  # the test extra has it

    video, calls = tiny_infer
    out = tmp_path / "out" / "clip.npz"
    assert (
        main(
            [
                "infer",
                str(video),
                "-o",
                str(out),
                "--pkl",
                "--smoothing",
                "0.5",
                "--tracks-max",
                "1",
                "--fast",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    result = load_result(out)
    assert [t.track_id for t in result.tracks] == [1] and result.meta["smoothing"] == "0.5"
    assert calls["precision"] == "bf16" and calls["allow_synthetic"] is True
    official = joblib.load(tmp_path / "out" / "clip_vibe_output.pkl")
    assert list(official) == [1]
    captured = capsys.readouterr()
    assert "SYNTHETIC PLACEHOLDER" in captured.err and "vibe-mocap data install" in captured.err
    assert "HOG detector, which also finds people who are not there" in captured.err
    assert "decode/detect/track/crop/backbone" in captured.err  # the stage bars
    for word in ("track", "frames", "backbone", "temporal", "total", str(out)):
        assert word in captured.out
    assert not list(out.parent.glob("*.part"))


def test_infer_defaults_are_fast_and_official_restores_the_official_configuration(tiny_infer, tmp_path, monkeypatch):
    from vibe_server.pipeline import cpu_features

    video, calls = tiny_infer
    monkeypatch.setattr(cpu_features, "cpu_has_fast_bf16", lambda text=None: True)
    out = tmp_path / "fast.npz"
    assert main(["infer", str(video), "-o", str(out), "--device", "cpu"]) == 0
    meta = load_result(out).meta
    assert calls["precision"] == "bf16" and calls.get("compile_backbone", "auto") == "auto"
    assert (
        meta["detection_stride"] == str(options_module.DEFAULT_DETECTION_STRIDE)
        and meta["adaptive_detection"] == "True"
    )
    assert meta["chunking"] == "carry" and meta["precision"] == "bf16"

    assert main(["infer", str(video), "-o", str(out), "--device", "cpu", "--official"]) == 0
    meta = load_result(out).meta
    # the run itself is official (fp32, nothing compiled), whatever the engine's default precision
    assert meta["compile_backbone"] == "off" and meta["backbone_compiled"] == "False"
    assert (meta["detection_stride"], meta["adaptive_detection"], meta["chunking"], meta["precision"]) == (
        "1",
        "False",
        "official",
        "fp32",
    )
    assert meta["uncrop"] == "official 1.0x box"

    monkeypatch.setattr(cpu_features, "cpu_has_fast_bf16", lambda text=None: False)
    assert main(["infer", str(video), "-o", str(out), "--device", "cpu"]) == 0
    assert calls["precision"] == "fp32"  # no bf16 hardware: bf16 would be slower
    assert main(["infer", str(video), "-o", str(out), "--device", "cpu", "--fast"]) == 0
    assert calls["precision"] == "bf16"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["infer", "/no/such/video.mp4"], "Video file not found: '/no/such/video.mp4'. Check the path."),
        (["infer", "/"], "'/' is a folder; infer takes one video. For every video in it: vibe-mocap batch"),
        (["infer", "{video}", "-o", "out.txt"], "must end in .npz"),
        (["infer", "{video}", "--detection-stride", "0"], "between 1 and 1000"),
        (["infer", "{video}", "--smoothing", "3"], "between 0 and 1"),
        (["infer", "{video}", "--min-track-frames", "100001"], "--min-track-frames must be between 1 and 100000"),
        (["infer", "{video}", "--batch-size", "100000"], "--batch-size must be between 1 and 4096; got 100000."),
        (["infer", "{video}", "--focal-px", "0.5"], "--focal-px must be between 1 and 1000000; got 0.5."),
        (["infer", "{video}", "--device", "tpu"], "Unknown device"),
        (["infer", "{video}", "--devices", "cpu,gpu"], "Unknown device 'gpu'"),
        (["infer", "{video}", "--devices", "cpu", "--device", "cuda"], "Give --devices (cpu) or --device (cuda), not"),
    ],
)
def test_infer_bad_arguments_give_one_clear_error(tiny_infer, capsys, argv, message):
    video, _ = tiny_infer
    assert main([a.replace("{video}", str(video)) for a in argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flag, suffix", [("--pkl", ".pkl"), ("--body-model", ".npz")])
def test_a_shell_glob_after_pkl_or_body_model_never_overwrites_a_video(tiny_infer, tmp_path, capsys, flag, suffix):
    """`infer --pkl *.mp4` reaches infer as `--pkl a.mp4 b.mp4`: the optional value took the first video,
    which the run replaced with a pickle."""
    _, calls = tiny_infer
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    first.write_bytes(b"first video")
    second.write_bytes(b"second video")
    assert main(["infer", flag, str(first), str(second), "-o", str(tmp_path / "b.npz")]) == 2
    err = capsys.readouterr().err
    assert f"must end in {suffix}; got '{first}' ({flag} takes the argument after it as its path" in err
    assert err.count("error:") == 1 and not calls  # said before the model loads
    assert first.read_bytes() == b"first video" and not (tmp_path / "b.npz").exists()


@pytest.mark.parametrize(
    "flag, name, what",
    [
        ("-o", "take.npz", "The result file"),
        ("--pkl", "take.pkl", "The official pkl"),
        ("--body-model", "b.npz", "The body-model file"),
    ],
)
def test_an_output_path_holding_a_file_of_another_kind_is_refused(tiny_infer, tmp_path, capsys, flag, name, what):
    """A video or notes saved under an output's name are not replaced; a file of that kind is."""
    video, calls = tiny_infer
    taken = tmp_path / name
    taken.write_bytes(b"my notes")
    argv = ["infer", str(video), "--device", "cpu", flag, str(taken)]
    if flag != "-o":
        argv += ["-o", str(tmp_path / "r.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {what} '{taken}' already exists and is not a {taken.suffix} file" in err and not calls
    assert taken.read_bytes() == b"my notes"
    if flag == "--body-model":  # (the tiny engine has no SMPL file to write one from)
        return
    taken.write_bytes(b"")  # empty: nothing to lose
    assert main(argv) == 0 and taken.stat().st_size > 0
    assert main(argv) == 0  # and its own kind, written by the last run, is replaced


def test_a_default_name_never_replaces_a_file(tiny_infer, tmp_path, monkeypatch, capsys):
    """`infer a/take.mp4`, then `infer b/take.mp4` from the same folder: the second replaced the first's
    ./take_vibe.npz without a word. A name the user gives is theirs to replace."""
    _, calls = tiny_infer
    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "take.mp4").write_bytes(b"fake")
    assert main(["infer", "a/take.mp4", "--pkl", "--device", "cpu"]) == 0
    result, pkl = tmp_path / "take_vibe.npz", tmp_path / "take_vibe_output.pkl"  # (not take_vibe_vibe_output.pkl)
    first = {path: path.read_bytes() for path in (result, pkl)}
    capsys.readouterr()
    calls.clear()
    assert main(["infer", "b/take.mp4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: The result file '{result}' (the default name) already exists, and infer replaces a file only when "
        f"you name it. To keep that file, name this output (-o PATH) or move the file away; to replace it, give "
        f"-o '{result}'.\n"
    )
    assert main(["infer", "b/take.mp4", "-o", "b.npz", "--pkl", "--device", "cpu"]) == 2  # the .pkl too
    assert f"error: The official pkl '{pkl.name}' (the default name) already exists" in capsys.readouterr().err
    assert not calls and {path: path.read_bytes() for path in first} == first and not Path("b.npz").exists()
    assert main(["infer", "b/take.mp4", "-o", str(result), "--pkl", str(pkl), "--device", "cpu"]) == 0  # named


def test_a_full_disk_while_the_pkl_is_written_is_said_as_such_with_the_result_kept(
    tiny_infer, tmp_path, capsys, monkeypatch
):
    """It read 'Cannot write X: [Errno 28] ...: X. Choose a writable output folder.': the path twice,
    advice about the folder, and not a word of the result file already written."""
    import errno

    import joblib

    def full_disk(value, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(joblib, "dump", full_disk)
    video, _ = tiny_infer
    out, pkl = tmp_path / "clip.npz", tmp_path / "clip.pkl"
    assert main(["infer", str(video), "-o", str(out), "--pkl", str(pkl), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (
        f"error: No space left on device ({pkl}). Check the path, its permissions and the free disk space. "
        f"The result file {out} was written."
    )
    assert load_result(out).tracks and not pkl.exists() and not list(tmp_path.glob("*.part"))


NOT_A_VIDEO_FILE = "is not a regular video file (a folder, a device or a pipe). Pass the path of a video file."
COMMANDS_ON_A_SPECIAL_FILE = {  # argv (PATH: a FIFO or a link to /dev/zero) -> the error after the path
    "infer": (["infer", "PATH"], f"'PATH' {NOT_A_VIDEO_FILE}"),
    "extract-features": (
        ["extract-features", "PATH", "--bboxes", "boxes.csv", "--out", "f.pt"],
        f"'PATH' {NOT_A_VIDEO_FILE}",
    ),
    "batch": (
        ["batch", "PATH", "-o", "out"],
        "'PATH' is not a regular file (a device, FIFO or socket); give a video file, a folder of videos or a "
        "text file listing them.",
    ),
    "evaluate": (
        ["evaluate", "PATH"],
        "Database file PATH is not a regular file (a device, FIFO or socket); give the path of a file such as "
        "3dpw_test_db.pt.",
    ),
}


@pytest.mark.parametrize("kind", NOT_REGULAR_KINDS)
@pytest.mark.parametrize("command", list(COMMANDS_ON_A_SPECIAL_FILE))
def test_an_input_that_is_no_regular_file_is_named_as_such(tmp_path, monkeypatch, capsys, command, kind):
    """Not 'there is no video': the path exists, it is a pipe or a device (and nothing waits on it)."""
    monkeypatch.chdir(tmp_path)
    path = make_not_regular(tmp_path / "clip.mp4", kind)
    argv, message = COMMANDS_ON_A_SPECIAL_FILE[command]
    ran, code = call_with_deadline(lambda: main([a.replace("PATH", str(path)) for a in argv]), fifo=path)
    assert ran and code == 2, code
    assert capsys.readouterr().err == f"error: {message.replace('PATH', str(path))}\n"


def test_a_file_that_is_no_video_is_said_before_the_model_loads(tmp_path, monkeypatch, capsys, no_model_data):
    """The model loaded first (and on a first run the placeholder's 256 MB were written) before the
    video was opened at all."""
    monkeypatch.setattr(engine_module, "load_engine", lambda *a, **k: pytest.fail("the model was loaded"))
    video = tmp_path / "notes.mp4"
    video.write_text("notes, not a video\n")
    assert main(["infer", str(video), "-o", str(tmp_path / "r.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot open '{video}' as a video: it is not a video file") and err.count("\n") == 1
    assert "SYNTHETIC" not in err and not (tmp_path / "r.npz").exists()


def test_infer_reports_nobody_found(tiny_infer, capsys):
    video, _ = tiny_infer
    video.write_bytes(b"nobody")
    assert main(["infer", str(video)]) == 2
    err = capsys.readouterr().err
    assert "Nobody was found" in err and "--min-track-frames N of vibe-mocap infer or batch" in err


COLOURED = "a\x1b[31mRED\x1b[0m"  # a file name holding escape sequences: the terminal would turn red
COLOURED_SHOWN = "a\\x1b[31mRED\\x1b[0m"


def test_a_control_character_in_a_file_name_is_shown_escaped_in_an_error(tmp_path, capsys, no_model_data):
    assert main(["infer", str(tmp_path / f"{COLOURED}.mp4")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and f"{COLOURED_SHOWN}.mp4" in err and err.count("\n") == 1, err


def test_a_control_character_in_a_file_name_is_shown_escaped_in_the_summary(tiny_infer, tmp_path, monkeypatch, capsys):
    video, _ = tiny_infer
    video = video.rename(video.with_name(f"{COLOURED}.mp4"))
    monkeypatch.chdir(tmp_path)
    assert main(["infer", str(video)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and f"Result: {tmp_path / COLOURED_SHOWN}_vibe.npz" in out, out
    assert (tmp_path / f"{COLOURED}_vibe.npz").exists()


@pytest.mark.parametrize("how", ["--data-dir", "VIBE_DATA_DIR"])
@pytest.mark.parametrize("state", ["missing", "empty", "a file"])
@pytest.mark.parametrize("command", ["infer", "batch", "live"])
def test_a_named_model_data_folder_without_the_data_is_refused_not_replaced(
    tiny_infer, tmp_path, monkeypatch, capsys, how, state, command
):
    """Only the default folder falls back to the placeholder: a folder the user named must hold the data."""
    video, calls = tiny_infer
    folder = tmp_path / "my_data"
    if state == "empty":
        folder.mkdir()
    elif state == "a file":
        folder.write_bytes(b"x")
    argv = {
        "infer": ["infer", str(video), "-o", str(tmp_path / "r.npz")],
        "batch": ["batch", str(video), "-o", str(tmp_path / "r.npz")],  # an output folder of that name
        "live": ["live", str(video), "--record", str(tmp_path / "r.npz")],
    }[command] + ["--device", "cpu"]
    if how == "--data-dir":
        argv += ["--data-dir", str(folder)]
    else:
        monkeypatch.setenv("VIBE_DATA_DIR", str(folder))
    assert main(argv) == 2
    err = capsys.readouterr().err
    words = {"missing": "does not exist", "empty": "holds none of the model files", "a file": "is a file"}[state]
    source = "--data-dir" if how == "--data-dir" else "$VIBE_DATA_DIR"
    assert err.startswith(f"error: The model-data folder '{folder}' (from {source}) {words}")
    assert "vibe-mocap data install" in err and "SYNTHETIC" not in err and err.count("\n") == 1
    assert not calls and not (tmp_path / "r.npz").exists()  # no engine loaded, nothing written


def test_each_stage_bar_counts_its_own_stage(monkeypatch):
    from vibe_server.commands import infer as infer_command
    from vibe_server.pipeline.progress import phase_fraction

    assert phase_fraction("temporal", 0.9) == 0.0 and phase_fraction("temporal", 0.96) == 1.0
    assert phase_fraction("decode", 0.45) == pytest.approx(0.5) and phase_fraction("write", 1.0) == 1.0
    bars = infer_command._StageBars()
    shown = []

    def close():  # what each bar showed when it was closed
        if bars.bar is not None:
            shown.append((bars.label, bars.bar.n))
        infer_command._StageBars.close(bars)

    monkeypatch.setattr(bars, "close", close)
    for stage, fraction in [("decode", 0.0), ("backbone", 0.9), ("temporal", 0.9), ("temporal", 0.93)]:
        bars(stage, fraction, None)
    assert shown == [(infer_command._StageBars.STREAM_LABEL, 100.0)]
    assert (bars.label, bars.bar.n) == ("temporal", 50.0)  # half of its own work, not 93 % of the run's
    bars.close()


def test_a_closed_stdout_ends_quietly(tmp_path):
    """`vibe-mocap data check | head -1`: the reader goes away; no traceback, no message."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), str(repo / "server")])}
    (tmp_path / "empty").mkdir()  # the table of files missing there: output to write
    command = [sys.executable, "-m", "vibe_server", "data", "check", "--data-dir", str(tmp_path / "empty")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdout.close()  # long before the command prints (Python takes a while to start)
    err = process.stderr.read()
    assert process.wait(timeout=60) == 141 and err == b"", err


def test_infer_on_a_truncated_video_keeps_the_frames_and_warns(
    monkeypatch, make_engine, tmp_path, capsys, no_model_data
):
    """The real video reader on a clip cut short: a result from the frames that decode, a warning
    printed and recorded in the result file."""
    engine = make_engine(real_video=True, tracks={1: (0, 40)})
    monkeypatch.setattr(engine_module, "load_engine", lambda data_dir, **kwargs: engine)
    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter.fourcc(*"MJPG"), 25, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(120):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    video = tmp_path / "phone.avi"
    video.write_bytes(whole.read_bytes()[: whole.stat().st_size * 3 // 5])
    out = tmp_path / "phone.npz"
    assert main(["infer", str(video), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "WARNING: The video is truncated" in err and "of the 120" in err
    result = load_result(out)
    assert "of the 120" in result.meta["warnings"] and result.tracks[0].frame_ids.max() == 40


@pytest.fixture
def token_home(monkeypatch, tmp_path):
    """An empty config folder of its own (never the real user's), no token in the environment."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("VIBE_MOCAP_TOKEN", raising=False)
    return tmp_path / "config" / "vibe-mocap" / "token"


def test_serve_token_from_the_option_the_environment_or_the_token_file(token_home, monkeypatch):
    from vibe_server.commands.serve import resolve_token

    token, source = resolve_token(None)  # made on first use, 0600
    assert len(token) >= 32 and token_home.read_text().strip() == token and str(token_home) in source
    assert token_home.stat().st_mode & 0o777 == 0o600
    assert resolve_token(None)[0] == token  # and kept
    monkeypatch.setenv("VIBE_MOCAP_TOKEN", "from-env-" + "e" * 13)
    assert resolve_token(None) == ("from-env-" + "e" * 13, "$VIBE_MOCAP_TOKEN")
    token, source = resolve_token("from-cli-" + "c" * 13)
    assert token == "from-cli-" + "c" * 13 and "ps" in source


def test_serve_refuses_a_token_short_enough_to_guess_from_the_proof_of_health(
    token_home, monkeypatch, tmp_path, capsys
):
    """/health answers anyone with an HMAC under the token: 'hunter2' was found offline from one answer."""
    import uvicorn

    from vibe_server.commands.serve import MAKE_TOKEN_COMMAND, resolve_token

    monkeypatch.setattr(uvicorn.Server, "run", lambda self: pytest.fail("the server started"))
    assert main(["serve", "--token", "hunter2", "--jobs-dir", str(tmp_path / "jobs"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The token from --token is 7 characters long; a server token needs at least 22 ")
    assert MAKE_TOKEN_COMMAND in err and "leave --token out" in err and err.count("\n") == 1
    monkeypatch.setenv("VIBE_MOCAP_TOKEN", "x" * 21)
    with pytest.raises(VibeError, match=r"^The token from \$VIBE_MOCAP_TOKEN is 21 characters long.*unset it"):
        resolve_token(None)
    monkeypatch.delenv("VIBE_MOCAP_TOKEN")
    token_home.parent.mkdir(parents=True)
    token_home.write_text("short-typed-token\n")
    with pytest.raises(VibeError, match=r"^The token from the token file .* is 17 characters long.*Delete the file"):
        resolve_token(None)
    token_home.write_text("y" * 22 + "\n")  # 22: 128 random bits in URL-safe base64
    assert resolve_token(None)[0] == "y" * 22


def test_serve_says_where_the_token_is_binds_any_host_and_limits_the_time_for_headers(
    token_home, monkeypatch, tmp_path, capsys
):
    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: served.update(vars(self.config)))
    assert main(["serve", "--host", "0.0.0.0", "--jobs-dir", str(tmp_path / "jobs"), "--device", "cpu"]) == 0
    token = token_home.read_text().strip()
    assert served["app"].state.settings.token == token and served["host"] == "0.0.0.0"
    assert served["http"] is HeadersDeadlineProtocol  # tests/server/test_http_protocol.py
    out = capsys.readouterr().out
    assert str(token_home) in out and token not in out


@pytest.mark.skipif(os.name == "nt", reason="Windows has no soft limit on open files")
def test_serve_raises_its_limit_on_open_files_to_the_hard_one(token_home, monkeypatch, tmp_path):
    """At the usual soft limit (1024 on Linux, 256 on macOS) a few hundred idle connections took every
    socket the server could open."""
    import resource

    import uvicorn

    from vibe_server.commands.serve import OPEN_FILES_WITHOUT_HARD_LIMIT

    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        assert main(["serve", "--jobs-dir", str(tmp_path / "jobs"), "--device", "cpu"]) == 0
        raised = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert raised == (OPEN_FILES_WITHOUT_HARD_LIMIT if hard == resource.RLIM_INFINITY else hard)


def test_a_second_server_on_the_same_jobs_folder_is_refused_before_it_reads_it(
    token_home, monkeypatch, tmp_path, capsys
):
    """Each server marks the jobs it finds running as failed at start: two on one folder would fail each
    other's jobs. The folder is locked before the app reads it, and released when the server ends."""
    import uvicorn

    from vibe_server.commands.serve import SERVER_LOCK_NAME
    from vibe_server.folder_lock import folder_lock

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: served.append(self.config.app))
    jobs = tmp_path / "jobs"
    argv = ["serve", "--jobs-dir", str(jobs), "--device", "cpu"]
    with folder_lock(jobs, SERVER_LOCK_NAME, "held by the first server"):  # a server running on the folder
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"Another VIBE Mocap server uses the jobs folder {jobs}" in err and "--jobs-dir" in err
    assert err.count("error:") == 1 and not served
    assert main(argv) == 0 and len(served) == 1  # the first one has ended: the folder is free again
    assert main(argv) == 0 and len(served) == 2  # and a server that ended released it too


@pytest.mark.slow
@pytest.mark.parametrize("devices", [None, "cpu,cpu"], ids=["one device", "divided among two"])
def test_infer_on_a_real_clip_with_the_synthetic_placeholder(
    synthetic_bundle, tmp_path, monkeypatch, capsys, devices, no_model_data
):
    """No model data installed: the placeholder (already in the cache folder here) is used, labelled.
    With --devices the video is divided among the devices (two CPU engines stand in for two GPUs)."""
    cache = tmp_path / "cache"
    (cache / "vibe-mocap").mkdir(parents=True)
    (cache / "vibe-mocap" / "synthetic-placeholder").symlink_to(synthetic_bundle)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    cap = cv2.VideoCapture(str(REAL / "one-by-one-person-detection.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 262)
    clip = tmp_path / "walk.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (768, 432))
    for _ in range(40):
        writer.write(cap.read()[1])
    writer.release()
    out = tmp_path / "walk.npz"
    assert (
        main(
            [
                "infer",
                str(clip),
                "-o",
                str(out),
                "--detector",
                "hog",
                "--detection-stride",
                "2",
                "--min-track-frames",
                "15",
                "--body-model",
                *(["--devices", devices] if devices else []),
            ]
        )
        == 0
    )
    result = load_result(out)
    assert result.model_name == "synthetic placeholder" and result.tracks
    assert np.isfinite(result.tracks[0].pose).all()
    printed = capsys.readouterr().out
    assert "synthetic placeholder" in printed and "walk_body_model.npz" in printed
    assert ("devices cpu, cpu" in printed) == (devices is not None)
    body = load_body_model(tmp_path / "walk_body_model.npz")  # the placeholder's own SMPL
    np.testing.assert_allclose(
        body.v_template, load_smpl_pkl(synthetic_bundle / "SMPL_NEUTRAL.pkl").v_template, atol=1e-6
    )


@pytest.mark.parametrize(
    "option, value",
    [
        ("--max-queued-jobs", "0"),
        ("--max-queued-upload-mb", "0"),
        ("--max-upload-mb", "0"),
        ("--max-upload-mb", "-5"),
        ("--probe-timeout-s", "0"),
        ("--probe-timeout-s", "inf"),  # no limit: one submission could hold a worker for good
        ("--probe-timeout-s", "nan"),
        ("--keep-finished-days", "inf"),
    ],
)
def test_serve_refuses_limits_that_are_not_positive_finite_numbers(token_home, tmp_path, capsys, option, value):
    """Named as typed (not as the server's setting in bytes), before the jobs folder is made."""
    assert main(["serve", option, value, "--jobs-dir", str(tmp_path / "jobs"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"error: {option} must be a positive finite number; got {float(value):g}." in err
    assert not (tmp_path / "jobs").exists()


def test_serve_refuses_an_upload_limit_over_the_space_for_waiting_uploads(token_home, tmp_path, capsys):
    """Every upload between the two limits was refused with 507 as if waiting jobs filled the space."""
    limits = ["--max-upload-mb", "4096", "--max-queued-upload-mb", "1024"]
    # (a server this let start stops at once: pytest's standard input is no usable input)
    elsewhere = ["--jobs-dir", str(tmp_path / "jobs"), "--port", str(_free_port()), "--stop-on-stdin-close"]
    assert main(["serve", *limits, *elsewhere, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "error: --max-upload-mb (4096) is larger than --max-queued-upload-mb (1024)" in err
    assert "raise --max-queued-upload-mb to at least 4096, or lower --max-upload-mb" in err
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize("port", ["70000", "0", "-1"])
def test_serve_refuses_a_port_that_is_no_tcp_port_before_it_makes_anything(token_home, tmp_path, capsys, port):
    """The jobs folder, its lock and the token file were made before the port was checked."""
    assert main(["serve", "--port", port, "--jobs-dir", str(tmp_path / "jobs"), "--device", "cpu"]) == 2
    assert f"error: Port {port} is not a valid TCP port; use 1-65535" in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists() and not token_home.exists()


def test_serve_says_a_taken_port_before_it_loads_the_model(token_home, monkeypatch, tmp_path, capsys):
    """Another program listening on the port: one error naming it and --port, before anything is
    loaded or printed as served (uvicorn would say it after the model has loaded, in a traceback-like
    log), and an exit status of its own, on which the add-on's start retries another port (it read
    the system's words, which Windows writes in the user's language)."""
    import uvicorn

    from vibe_blender.core.serve_exit import PORT_TAKEN_EXIT_STATUS

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: served.append(self))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        argv = ["serve", "--port", port, "--jobs-dir", str(tmp_path / "jobs"), "--device", "cpu"]
        assert main(argv) == PORT_TAKEN_EXIT_STATUS
    captured = capsys.readouterr()
    assert f"error: The server cannot listen on http://127.0.0.1:{port}/api/v1" in captured.err
    assert "--port" in captured.err and "another server or program uses that port" in captured.err
    assert not served and "VIBE Mocap server on" not in captured.out
    assert main(argv) == 0
    assert len(served) == 1  # once the port is free


def test_serve_holds_its_port_while_the_model_loads(token_home, monkeypatch, tmp_path):
    """The port was checked, let go, and bound again by uvicorn only once the model had loaded: a
    program taking it meanwhile (the add-on's picked port, during a first start writing the
    placeholder) made the server fail after the load, in the system's words only."""
    import uvicorn

    held = []

    def serve_checking_the_port(self):
        with socket.socket() as other:  # another program, trying to take the port while the model loads
            with pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
        held.append(self.config.port)

    monkeypatch.setattr(uvicorn.Server, "run", serve_checking_the_port)
    port = _free_port()
    assert main(["serve", "--port", str(port), "--jobs-dir", str(tmp_path / "jobs"), "--device", "cpu"]) == 0
    assert held == [port]
    with socket.create_server(("127.0.0.1", port)):  # let go once the server stopped
        pass


def test_serve_says_an_address_this_machine_lacks_and_skips_a_family_it_lacks(
    token_home, monkeypatch, tmp_path, capsys
):
    import uvicorn

    from vibe_server.commands import serve

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: served.append(self))
    argv = ["serve", "--jobs-dir", str(tmp_path / "jobs"), "--device", "cpu", "--host"]
    assert main([*argv, "192.0.2.1"]) == 2  # TEST-NET-1: no machine's own address
    err = capsys.readouterr().err
    assert "the --host address is not one of this machine's" in err and "uses that port" not in err
    real_socket = socket.socket

    def no_ipv6(family=socket.AF_INET, *args, **kwargs):
        if family == socket.AF_INET6:
            raise OSError(97, "Address family not supported by protocol")
        return real_socket(family, *args, **kwargs)

    port = _free_port()
    both = [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
    ]
    monkeypatch.setattr(serve.socket, "getaddrinfo", lambda *a, **k: both)  # 'localhost' as ::1 and 127.0.0.1
    monkeypatch.setattr(serve.socket, "socket", no_ipv6)  # on a machine without IPv6
    assert main([*argv, "localhost", "--port", str(port)]) == 0 and len(served) == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_says_an_unknown_host_and_shows_ipv6_addresses_in_brackets(token_home, monkeypatch, tmp_path, capsys):
    import uvicorn

    from vibe_server.commands.serve import server_url

    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)
    argv = ["serve", "--jobs-dir", str(tmp_path / "jobs"), "--device", "cpu", "--host"]
    assert main([*argv, "no-such-host.invalid"]) == 2
    assert "error: --host no-such-host.invalid is not an address of this machine" in capsys.readouterr().err
    assert server_url("::1", 8765) == "http://[::1]:8765/api/v1"
    assert server_url("127.0.0.1", 8765) == "http://127.0.0.1:8765/api/v1"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--focal-px", "inf"], "--focal-px must be a finite number between 1 and 1000000; got inf."),
        (["--smoothing", "nan"], "--smoothing must be a finite number between 0 and 1; got nan."),
    ],
)
@pytest.mark.parametrize("command", ["infer", "batch"])
def test_infer_and_batch_refuse_non_finite_numbers(tiny_infer, tmp_path, capsys, command, flags, message):
    """Before the fix the run went through and wrote trans_cam_m = inf, which load_result calls damaged."""
    video, _ = tiny_infer
    out = ["-o", str(tmp_path / "out.npz")] if command == "infer" else ["-o", str(tmp_path / "batch_out")]
    assert main([command, str(video), *out, *flags, "--device", "cpu"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.npz").exists() and not (tmp_path / "batch_out").exists()


def test_serve_refuses_fp16_on_a_cpu_before_listening(token_home, monkeypatch, tmp_path, capsys):
    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: served.update(app=self.config.app))
    argv = ["serve", "--precision", "fp16", "--device", "cpu", "--jobs-dir", str(tmp_path / "jobs")]
    assert main(argv) == 2
    assert "fp16 needs a CUDA device; on CPU use bf16 or fp32." in capsys.readouterr().err
    assert not served


def test_official_overrides_fast_and_the_detection_stride(tiny_infer, tmp_path):
    """--official is the official configuration whatever else is given (docs/server.md: it overrides
    those options): the run is fp32 with detection on every frame even with --fast and a stride."""
    video, calls = tiny_infer
    out = tmp_path / "official.npz"
    argv = ["infer", str(video), "-o", str(out), "--device", "cpu", "--official", "--fast", "--detection-stride", "4"]
    assert main(argv) == 0
    meta = load_result(out).meta
    assert calls["precision"] == "bf16"  # the engine's default; the official run itself is fp32
    assert (meta["precision"], meta["detection_stride"], meta["chunking"]) == ("fp32", "1", "official")


@pytest.mark.parametrize(
    "argv, named",
    [
        (["evaluate", "db.pt", "--checkpoint", ""], "the value of --checkpoint"),  # was: the installed model
        (["infer", "walk.mp4", "-o", ""], "the value of -o"),  # was: ./walk_vibe.npz
        (["serve", "--jobs-dir", ""], "the value of --jobs-dir"),  # was: the current folder
        (["data", "install", ""], "an argument"),  # was: a walk of the whole current folder
    ],
)
def test_an_empty_value_is_refused_before_anything_runs(argv, named, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == 2
    assert f"{named} is empty (a shell variable that is not set?)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing made in the current folder


def test_train_takes_an_empty_setting_where_it_means_none_and_refuses_an_empty_folder(capsys, tmp_path, monkeypatch):
    """'--datasets_2d=' is documented as none; '--out_dir=' trained into the current folder."""
    from vibe_server.train.config import TrainConfig, parse_overrides

    assert parse_overrides(TrainConfig, ["--datasets_2d="]).datasets_2d == ""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "vibe", "--db_dir=db", "--out_dir="]) == 2
    assert "--out_dir= is empty (a shell variable that is not set?)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

"""The training loop on tiny synthetic database files: the loss falls, checkpoints load into the
inference model, resuming continues, two gloo processes under torchrun work, evaluation prints."""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from vibe_blender.core.errors import VibeError
from vibe_server.train.config import TrainConfig, parse_overrides

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, synthetic_bundle):
    from vibe_server.train.synthetic_db import write_synthetic_db

    root = tmp_path_factory.mktemp("train")
    return {"data": synthetic_bundle, "db": write_synthetic_db(root / "db"), "root": root}


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def tiny(dirs, out: str, *extra) -> TrainConfig:
    """A config that runs in seconds on a CPU: small batches and discriminator, no workers."""
    return parse_overrides(
        TrainConfig,
        [
            f"--db_dir={dirs['db']}",
            f"--model_data_dir={dirs['data']}",
            f"--out_dir={dirs['root'] / out}",
            "--batch_size=4",
            "--motion_batch_size=4",
            "--val_batch_size=8",
            "--disc_hidden=32",
            "--disc_attention_size=32",
            "--num_workers=0",
            "--device=cpu",
            "--abort_pa_mpjpe_mm=0",
            "--log_interval=1",
            *extra,
        ],
    )


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_config_overrides_are_typed_and_checked():
    config = parse_overrides(
        TrainConfig, ["--batch_size=8", "--gen_lr=1e-4", "--resume=false", "--datasets_2d=insta,pennaction"]
    )
    assert (config.batch_size, config.gen_lr, config.resume) == (8, 1e-4, False)
    default = TrainConfig()  # the official values
    assert (default.kp_2d_w, default.kp_3d_w, default.pose_w, default.shape_w, default.d_motion_w) == (
        300.0,
        300.0,
        60.0,
        0.06,
        0.5,
    )
    assert (default.gen_lr, default.disc_lr, default.disc_wd, default.seqlen, default.batch_size) == (
        5e-5,
        1e-4,
        1e-4,
        16,
        32,
    )
    with pytest.raises(VibeError, match="Did you mean --batch_size"):
        parse_overrides(TrainConfig, ["--batchsize=8"])
    with pytest.raises(VibeError, match="takes a int"):
        parse_overrides(TrainConfig, ["--batch_size=eight"])
    with pytest.raises(VibeError, match="takes true or false"):
        parse_overrides(TrainConfig, ["--resume=maybe"])
    with pytest.raises(VibeError, match="--key=value"):
        parse_overrides(TrainConfig, ["--batch_size", "8"])


def test_train_command_reports_bad_settings(capsys):
    from vibe_server.cli import main

    assert main(["train", "vibe", "--gen_lr=fast"]) == 2
    assert "--gen_lr takes a float" in capsys.readouterr().err
    assert main(["train", "mposer", "--latent=16"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean --latent_size? 'vibe-mocap train mposer --help' lists every setting" in err
    assert "dataclass" not in err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "'vibe-mocap train vibe --help'" in help_text and "-m vibe_server train vibe" in help_text
    assert main(["train", "vibe", "--help"]) == 0
    listing = capsys.readouterr().out
    assert "--gen_lr=5e-05" in listing and "--fix_pennaction_joints=True" in listing
    assert main(["train"]) == 2  # argparse named its own arguments: "required: what, settings"
    assert capsys.readouterr().err.startswith("error: Name what to train: 'vibe-mocap train vibe --key=value")
    assert main(["train", "--gen_lr=1"]) == 2  # a setting but no model: our message, not argparse's
    assert capsys.readouterr().err.startswith("error: Name what to train: 'vibe-mocap train vibe --key=value")
    with pytest.raises(SystemExit):  # other commands still refuse what they do not know
        main(["data", "check", "--gen_lr=1"])
    assert "unrecognized arguments: --gen_lr=1" in capsys.readouterr().err


def test_generator_loss_falls_when_overfitting(dirs):
    from vibe_server.train.train import train

    config = tiny(
        dirs,
        "overfit",
        "--datasets_2d=",
        "--datasets_3d=3dpw",
        "--dataset_val=none",
        "--motion_prior=none",
        "--batch_size=3",
        "--epochs=1",
        "--iters_per_epoch=15",
        "--gen_lr=2e-4",
    )
    train(config)
    rows = read_csv(dirs["root"] / "overfit" / "train_log.csv")
    first = sum(float(r["gen_loss"]) for r in rows[:3]) / 3
    last = sum(float(r["gen_loss"]) for r in rows[-3:]) / 3
    print(f"overfit gen_loss {first:.3f} -> {last:.3f}")
    # the synthetic targets are random per frame (no body fits them exactly), so the floor is high
    assert last < 0.75 * first, (first, last)
    assert {"loss_kp_2d", "loss_kp_3d", "loss_pose", "loss_shape"} <= {k for k, v in rows[0].items() if v}


class FakeTensorBoard:
    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        pass


def test_the_discriminator_updates_every_nth_step_of_the_run_not_of_the_epoch(dirs, monkeypatch):
    """As the original counts (train_global_step): with 4 steps an epoch and an update every 3rd, two
    epochs update at steps 0, 3 and 6; counting per epoch updated at 0 and 3 of each."""
    from vibe_server.train import train as train_module

    updates = []

    def counted(*args):
        updates.append(args)
        return discriminator_loss(*args)

    discriminator_loss = train_module.discriminator_loss
    monkeypatch.setattr(train_module, "discriminator_loss", counted)
    train_module.train(
        tiny(dirs, "disc_steps", "--dataset_val=none", "--epochs=2", "--iters_per_epoch=4", "--disc_update_steps=3")
    )
    assert len(updates) == 3


@pytest.mark.parametrize(
    "term, returns, match",
    [
        (  # the discriminator's own loss: it stepped on it, saved NaN weights and blamed --gen_lr next step
            "discriminator_loss",
            lambda real, fake: (torch.tensor(float("nan")), torch.tensor(0.0), torch.tensor(float("nan"))),
            r"The motion discriminator loss became nan at epoch 0, iteration 0 \(its term d_m_disc_real is nan\); "
            r"lower --disc_lr",
        ),
        (
            "generator_adversarial_loss",
            lambda scores: torch.tensor(float("inf")),
            r"The generator loss became inf at epoch 0, iteration 0 \(its term e_m_disc_loss is inf\); lower --disc_lr",
        ),
    ],
    ids=["discriminator", "adversarial-term"],
)
def test_a_loss_that_is_not_finite_stops_the_run_naming_its_term_and_rate(dirs, monkeypatch, term, returns, match):
    from vibe_server.train import train as train_module

    monkeypatch.setattr(train_module, term, returns)
    with pytest.raises(VibeError, match=match):
        train_module.train(tiny(dirs, f"nan_{term}", "--datasets_2d=", "--dataset_val=none", "--iters_per_epoch=2"))
    assert not (dirs["root"] / f"nan_{term}" / "checkpoint.pth.tar").exists()


def test_checkpoint_resumes_and_loads_into_the_inference_model(dirs, monkeypatch):
    import vibe_server
    from vibe_server import checkpoints
    from vibe_server.train import train as train_module
    from vibe_server.train.generator import FeatureGenerator
    from vibe_server.train.train import train

    board = FakeTensorBoard()
    monkeypatch.setattr(train_module, "open_tensorboard", lambda out_dir: board)

    config = tiny(
        dirs, "resume", "--datasets_2d=insta", "--datasets_3d=mpii3d,3dpw", "--epochs=1", "--iters_per_epoch=2"
    )
    assert train(config)["epochs_run"] == 1
    config.epochs = 2
    summary = train(config)  # same command, more epochs: resumes
    assert summary["epochs_run"] == 1
    out = dirs["root"] / "resume"
    assert [r["epoch"] for r in read_csv(out / "val_log.csv")] == ["0", "1"]
    assert {r["epoch"] for r in read_csv(out / "train_log.csv")} == {"0", "1"}
    tags = {tag for tag, _, _ in board.scalars}
    assert {"train_loss/gen_loss", "train_loss/d_m_disc_loss", "error/pa_mpjpe", "lr/gen_lr", "lr/dis_lr"} <= tags

    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["config"]["iters_per_epoch"] == 2
    assert set(checkpoints.VIBE_TOP_LEVEL) <= set(ckpt)
    checkpoints.check_generator_keys(ckpt["gen_state_dict"], "trained checkpoint")
    assert ckpt["gen_optimizer"]["state"][0]["step"] == 4  # Adam continued: 2 epochs x 2 steps
    assert set(ckpt["disc_motion_state_dict"]) >= {"gru.weight_ih_l0", "attention.attention.6.weight", "fc.bias"}
    assert (out / "model_best.pth.tar").exists()

    model = vibe_server.load_model(dirs["data"], vibe_checkpoint=out / "checkpoint.pth.tar")
    for key, value in ckpt["gen_state_dict"].items():
        if key not in checkpoints.SMPL_BATCH_PARAMS:
            assert torch.equal(model.state_dict()[key], value), key
    features = torch.rand(1, 16, 2048)
    with torch.no_grad():
        ours = FeatureGenerator(model).eval()(features)["theta"]
        torch.testing.assert_close(model.forward_features(features)["theta"], ours)


def test_bad_settings_get_clear_messages(dirs):
    from vibe_server.train.train import train

    with pytest.raises(VibeError, match="motion_prior"):
        train(tiny(dirs, "bad", "--motion_prior=gan"))
    with pytest.raises(VibeError, match="at least one 3D dataset"):
        train(tiny(dirs, "bad", "--datasets_3d="))
    with pytest.raises(VibeError, match="not a 3D dataset"):
        train(tiny(dirs, "bad", "--datasets_3d=insta"))
    with pytest.raises(VibeError, match="MPoser checkpoint"):
        train(tiny(dirs, "bad", "--motion_prior=mposer", "--mposer_checkpoint=missing.pth.tar"))
    with pytest.raises(VibeError, match="not found"):
        train(tiny(dirs, "bad", f"--db_dir={dirs['root'] / 'nowhere'}"))
    with pytest.raises(VibeError, match="amass_db.pt is a file, not a folder; pass the folder of the db files"):
        train(tiny(dirs, "bad", f"--db_dir={dirs['db'] / 'amass_db.pt'}"))


def torchrun(args: list[str], tmp: Path, *, timeout: float = 300, cwd: Path | None = None):
    """``torchrun --standalone --nproc_per_node=2 ARGS`` with this checkout importable, one thread each;
    torchrun's own log folders stay in ``tmp`` with the test's files."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "server")]), "OMP_NUM_THREADS": "1"}
    env["TMPDIR"] = str(tmp)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


def test_torchrun_two_cpu_processes_checkpoint_and_resume(dirs):
    out = dirs["root"] / "ddp"
    command = ["-m", "vibe_server", "train", "vibe", *_args(dirs, out)]
    first = torchrun(command + ["--epochs=1"], out.parent)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert "2 process(es) on cpu" in first.stdout
    second = torchrun(command + ["--epochs=2"], out.parent)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "resumed from" in second.stdout and "continuing at epoch 1" in second.stdout
    assert second.stdout.count("validation:") == 1  # rank 0 alone validates and logs
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["epoch"] == 1
    assert not any(k.startswith("module.") for k in ckpt["gen_state_dict"])
    assert not any(k.startswith("module.") for k in ckpt["disc_motion_state_dict"])


@pytest.mark.parametrize(
    "setting, said",
    [
        ("--gen_lr=fast", "error: --gen_lr takes a float; got 'fast'."),
        ("--db_dir=no_such_folder", "error: The database folder --db_dir=no_such_folder was not found"),
    ],
)
def test_torchrun_says_a_bad_setting_once(dirs, setting, said):
    """Every process parses the same command line and checks the files it names; the first alone
    reports what is wrong."""
    run = torchrun(["-m", "vibe_server", "train", "vibe", "--device=cpu", setting], dirs["root"])
    assert run.returncode != 0
    assert run.stderr.count(said) == 1, run.stderr[-3000:]


LATE_FIRST = """
import os
import sys
import time

from vibe_server.train.stop_signals import SameInEveryProcess, exit_status


def run():
    if os.environ["LOCAL_RANK"] == "0":
        time.sleep(1.0)  # the first process meets the error last (it had more to do before)
    raise SameInEveryProcess("met by every process")


try:
    sys.exit(exit_status(run))
except SameInEveryProcess as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
"""


def test_the_first_process_says_the_error_even_when_it_meets_it_last(tmp_path):
    """The others ended at once, silently, and torchrun then ended the first before it said a word."""
    script = tmp_path / "late_first.py"
    script.write_text(LATE_FIRST)
    run = torchrun([str(script)], tmp_path)
    assert run.returncode != 0
    assert run.stderr.count("error: met by every process") == 1, run.stderr[-3000:]


SAME_START = """
import os
from pathlib import Path

import torch
from torch.distributed import destroy_process_group, init_process_group

from vibe_blender.core.errors import VibeError
from vibe_server.train.train import require_same_start

init_process_group("gloo")
rank = int(os.environ["RANK"])
require_same_start(3, torch.device("cpu"), Path("shared"))  # every process found epoch 2 done: nothing to say
try:
    require_same_start(rank, torch.device("cpu"), Path("per_node"))  # each node its own out_dir
except VibeError as err:
    Path(f"rank{rank}.txt").write_text(str(err))
destroy_process_group()
"""


def test_processes_that_find_different_checkpoints_all_stop(tmp_path):
    script = tmp_path / "same_start.py"
    script.write_text(SAME_START)
    done = torchrun([str(script)], tmp_path, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    message = (
        "The training processes found different checkpoints in --out_dir=per_node (one would start at epoch 0, "
        "another at epoch 1): with several nodes, --out_dir must be a folder that every node shares."
    )
    assert [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)] == [message, message]


@pytest.mark.parametrize(
    "module, pointer",
    [
        (
            "vibe_server.train.train",
            "'vibe-mocap train vibe --key=value ...' (under torchrun: 'torchrun ... -m vibe_server train vibe "
            "--key=value ...')",
        ),
        ("vibe_server.train.mposer", "'vibe-mocap train mposer --key=value ...'"),  # one process: no torchrun
    ],
)
def test_the_training_modules_point_to_the_command_line(module, pointer, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "server")])}
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: training runs through the command line: {pointer}.\n"


def test_a_missing_tensorboard_is_said_not_silently_skipped(tmp_path, monkeypatch, caplog):
    import logging

    from vibe_server.train.train import open_tensorboard

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as when tensorboard is not installed
    with caplog.at_level(logging.INFO, logger="vibe_server.train"):
        assert open_tensorboard(tmp_path) is None
    assert caplog.messages == [
        "TensorBoard is not installed, so only the CSV logs are written: pip install tensorboard "
        "(--tensorboard=false leaves it off without this line)"
    ]


def _args(dirs, out):
    return [
        f"--db_dir={dirs['db']}",
        f"--model_data_dir={dirs['data']}",
        f"--out_dir={out}",
        "--batch_size=4",
        "--motion_batch_size=4",
        "--disc_hidden=32",
        "--disc_attention_size=32",
        "--num_workers=0",
        "--device=cpu",
        "--abort_pa_mpjpe_mm=0",
        "--iters_per_epoch=2",
        "--datasets_2d=insta",
        "--datasets_3d=mpii3d",
    ]


def test_evaluate_command_prints_the_five_metrics(dirs, capsys, tmp_path):
    import json

    from vibe_server.cli import main

    checkpoint = dirs["data"] / "vibe_model_wo_3dpw.pth.tar"
    rc = main(
        [
            "evaluate",
            str(dirs["db"] / "3dpw_test_db.pt"),
            "--checkpoint",
            str(checkpoint),
            "--data-dir",
            str(dirs["data"]),
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    captured = capsys.readouterr()
    text = captured.out
    print(text)
    assert rc == 0
    assert "evaluate: 100%" in captured.err  # the progress bar, on stderr
    for name in ("MPJPE", "PA_MPJPE", "PVE", "ACCEL", "ACCEL_ERR", "courtyard_test_0", "courtyard_test_1", "ALL"):
        assert name in text
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["overall"]["frames"] == 48 and set(result["per_sequence"]) == {"courtyard_test_0", "courtyard_test_1"}
    assert 0 < result["overall"]["pa_mpjpe"] < result["overall"]["mpjpe"]
    assert result["overall"]["pve"] > 0

    rc = main(
        [
            "evaluate",
            str(dirs["db"] / "mpii3d_val_db.pt"),
            "--checkpoint",
            str(checkpoint),
            "--data-dir",
            str(dirs["data"]),
            "--json",
            str(tmp_path / "m.json"),
        ]
    )

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    result = json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse)
    assert rc == 0 and result["overall"]["pve"] is None  # no SMPL ground truth: null, not NaN
    assert result["overall"]["mpjpe"] > 0 and result["per_sequence"]
    assert all(values["pve"] is None for values in result["per_sequence"].values())
    assert main(["evaluate", str(dirs["db"] / "amass_db.pt"), "--data-dir", str(dirs["data"])]) == 2
    assert "Cannot tell the layout" in capsys.readouterr().err


def test_the_json_report_writes_every_number_that_is_not_finite_as_null():
    import json

    from vibe_server.commands.evaluate import finite_or_null

    report = {"overall": {"pve": float("nan"), "accel": float("inf"), "frames": 3}, "runs": [float("-inf"), 1.5, "a"]}
    text = json.dumps(finite_or_null(report), allow_nan=False)
    assert json.loads(text) == {"overall": {"pve": None, "accel": None, "frames": 3}, "runs": [None, 1.5, "a"]}


def test_evaluate_command_refuses_bad_inputs_in_one_line(dirs, capsys):
    from vibe_server.cli import main

    test_db = str(dirs["db"] / "3dpw_test_db.pt")
    cases = [
        ([test_db, "--seqlen", "0"], "--seqlen=0 is out of range: it must be a whole number, at least 1"),
        ([test_db, "--seqlen", "-5"], "--seqlen=-5 is out of range"),
        ([test_db, "--batch-size", "0"], "--batch-size=0 is out of range"),
        ([test_db, "--batch-size", "100000000"], "--batch-size=100000000 is out of range: .* between 1 and 4096"),
        ([test_db, "--device", "tpu"], r"Unknown device 'tpu'; use auto, cpu or cuda\[:N\]"),
        ([test_db, "--device", "gpu"], "Unknown device 'gpu'"),
        ([str(dirs["root"] / "missing_db.pt")], "missing_db.pt not found"),
        ([str(dirs["root"] / "missing_db.pt"), "--dataset", "3dpw"], "missing_db.pt not found"),
        ([str(dirs["db"])], "is a folder, not a database file"),
        (
            [test_db, "--dataset", "h36m"],
            r"3dpw_test_db.pt is not in the h36m layout: its joints2D has shape \(73, 14, 3\), h36m files have "
            r"\(N, 49, 3\). It looks like 3dpw data. Pass --dataset",
        ),
        ([str(dirs["db"] / "h36m_train_db.pt"), "--dataset", "3dpw"], "It looks like mpii3d or h36m data"),
    ]
    for args, message in cases:
        assert main(["evaluate", *args, "--data-dir", str(dirs["data"])]) == 2, args
        err = capsys.readouterr().err
        assert re.match(f"error: .*{message}", err) and err.count("\n") == 1, (args, err)
        assert "--db_dir" not in err and "nothing to train on" not in err


def test_evaluate_names_every_missing_model_file_at_once(dirs, capsys, tmp_path):
    """Before: three runs, three messages (the SMPL files, then the checkpoint, then the H36M regressor)."""
    from vibe_server.cli import main

    empty = tmp_path / "empty"
    assert main(["evaluate", str(dirs["db"] / "3dpw_test_db.pt"), "--data-dir", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Model data missing: ") and err.count("\n") == 1
    for name in ("SMPL_NEUTRAL.pkl", "J_regressor_extra.npy", "smpl_mean_params.npz", "J_regressor_h36m.npy"):
        assert str(empty / name) in err
    assert str(empty / "vibe_model_wo_3dpw.pth.tar") in err


def test_evaluate_names_a_wrong_checkpoint_path_as_the_checkpoint(dirs, capsys, tmp_path):
    """Before: a mistyped --checkpoint (often one's own training run) or a folder was "Model data
    missing", with advice to install the official model data or change --data-dir."""
    from vibe_server.cli import main

    test_db = str(dirs["db"] / "3dpw_test_db.pt")
    cases = [
        (tmp_path / "my_run" / "model_best.pth.tar", "not found"),
        (tmp_path, "is a folder, not a checkpoint file"),
    ]
    for checkpoint, what in cases:
        assert main(["evaluate", test_db, "--checkpoint", str(checkpoint), "--data-dir", str(dirs["data"])]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"error: Checkpoint {checkpoint} (from --checkpoint) {what}; check the path (e.g. a training run's "
            "model_best.pth.tar), or leave --checkpoint out for the installed VIBE model.\n"
        )


def test_evaluate_refuses_a_gpu_that_is_not_there(dirs, capsys, monkeypatch):
    from vibe_server.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["evaluate", str(dirs["db"] / "3dpw_test_db.pt"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: Device 'cuda' was asked for but this PyTorch build sees no CUDA GPU; use the CPU: --device cpu "
        "(device='cpu' from Python).\n"
    )


def test_evaluate_help_gives_the_defaults(capsys):
    from vibe_server.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("default 16)", "windows per forward pass (default 32)", "cpu, cuda or cuda:N (default cpu)"):
        assert words in text, words


def test_training_refuses_a_file_of_another_dataset(dirs, tmp_path):
    from vibe_server.train.train import train

    shutil.copyfile(dirs["db"] / "3dpw_train_db.pt", tmp_path / "h36m_train_db.pt")  # 14 joints, not 49
    config = tiny(
        dirs, "wrong_file", f"--db_dir={tmp_path}", "--datasets_2d=", "--datasets_3d=h36m", "--dataset_val=none"
    )
    with pytest.raises(VibeError, match="not in the h36m layout.*looks like 3dpw data. Put the original's h36m_train"):
        train(config)


def test_training_on_a_file_that_lacks_keys_names_trains_own_fix(dirs, tmp_path):
    """Before: the message pointed to "--dataset", a flag of evaluate that train does not have."""
    from vibe_server.train.train import train

    for name in ("3dpw_train_db.pt", "amass_db.pt"):
        shutil.copyfile(dirs["db"] / name, tmp_path / name)
    joblib.dump({"features": np.zeros((20, 2048)), "vid_name": np.array(["a"] * 20)}, tmp_path / "3dpw_val_db.pt")
    config = tiny(
        dirs, "lacks_keys", f"--db_dir={tmp_path}", "--datasets_2d=", "--datasets_3d=3dpw", "--dataset_val=3dpw"
    )
    with pytest.raises(VibeError) as refused:
        train(config)
    assert "3dpw_val_db.pt lacks joints2D, joints3D, bbox" in str(refused.value)
    assert str(refused.value).endswith("Put the original's 3dpw_val_db.pt in --db_dir.")
    assert "--dataset " not in str(refused.value) and "--dataset)" not in str(refused.value)


def test_a_nan_smpl_ground_truth_in_a_validation_file_is_scored_as_the_original_scores_it(dirs, tmp_path, capsys):
    """A NaN pose or shape in a val/test file makes only PVE NaN in the original (null in the JSON);
    the other metrics, and training on PA-MPJPE, go on. (In a training file it is refused: a NaN loss.)"""
    import json

    import joblib

    from vibe_server.cli import main
    from vibe_server.train.train import train

    db = tmp_path / "db"
    shutil.copytree(dirs["db"], db)
    for split, key, index in (("val", "pose", (20, 10)), ("test", "shape", (3, 9))):
        data = joblib.load(db / f"3dpw_{split}_db.pt")
        data[key][index] = float("nan")
        joblib.dump(data, db / f"3dpw_{split}_db.pt")

    one_epoch = ["--datasets_2d=", "--datasets_3d=3dpw", "--epochs=1", "--iters_per_epoch=2", "--tensorboard=false"]
    result = train(tiny(dirs, "x", f"--db_dir={db}", f"--out_dir={tmp_path / 'run'}", "--dataset_val=3dpw", *one_epoch))
    (row,) = read_csv(tmp_path / "run" / "val_log.csv")
    assert row["pve"] == "nan" and float(row["pa_mpjpe"]) == pytest.approx(result["best_performance"])
    assert 0 < result["best_performance"] < float("inf")

    checkpoint = str(dirs["data"] / "vibe_model_wo_3dpw.pth.tar")
    report = tmp_path / "r.json"
    argv = ["evaluate", str(db / "3dpw_test_db.pt"), "--checkpoint", checkpoint, "--data-dir", str(dirs["data"])]
    assert main([*argv, "--json", str(report)]) == 0
    capsys.readouterr()
    scores = json.loads(report.read_text())
    assert scores["overall"]["pve"] is None and scores["overall"]["pa_mpjpe"] > 0 and scores["overall"]["mpjpe"] > 0
    assert scores["per_sequence"]["courtyard_test_0"]["pve"] is None  # the track with the NaN
    assert scores["per_sequence"]["courtyard_test_1"]["pve"] > 0

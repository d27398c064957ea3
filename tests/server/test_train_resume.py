"""A training run's out_dir is never lost to a bad input: the device, dataset names and model data are
checked before anything is written, a checkpoint that does not fit the settings is refused with one
message, an interrupted or killed save keeps the last checkpoint and the best one, one run at a time
writes there, a diverged run stops for good until asked, and starting over keeps the old logs."""

import csv
import errno
import gc
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vibe_blender.core.errors import VibeError
from vibe_server.train.config import MPoserConfig, TrainConfig, parse_overrides

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, synthetic_bundle):
    from vibe_server.train.synthetic_db import write_synthetic_db

    root = tmp_path_factory.mktemp("resume")
    return {"data": synthetic_bundle, "db": write_synthetic_db(root / "db"), "root": root}


def settings(dirs, out: str, *extra) -> list[str]:
    """One-epoch runs of two steps on 3DPW, no validation: seconds on a CPU."""
    return [
        f"--db_dir={dirs['db']}",
        f"--model_data_dir={dirs['data']}",
        f"--out_dir={dirs['root'] / out}",
        "--datasets_2d=",
        "--datasets_3d=3dpw",
        "--dataset_val=none",
        "--batch_size=2",
        "--motion_batch_size=2",
        "--disc_hidden=32",
        "--disc_attention_size=32",
        "--num_workers=0",
        "--device=cpu",
        "--epochs=1",
        "--iters_per_epoch=2",
        "--log_interval=1",
        "--tensorboard=false",
        "--abort_pa_mpjpe_mm=0",  # the random model's validation error is far above the default 80 mm
        *extra,
    ]


def tiny(dirs, out: str, *extra) -> TrainConfig:
    return parse_overrides(TrainConfig, settings(dirs, out, *extra))


def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", "CPU"])
def test_an_unknown_device_is_one_message_before_any_work(dirs, capsys, device):
    from vibe_server.cli import main

    for what in ("vibe", "mposer"):
        argv = ["train", what, f"--device={device}", f"--out_dir={dirs['root'] / 'never'}"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert (
            err
            == f"error: Unknown device '{device}' (--device); use auto, cpu, cuda or cuda:N (default --device=auto).\n"
        )
    assert not (dirs["root"] / "never").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_gpu_that_is_not_there_is_refused_not_replaced_by_the_cpu(dirs, monkeypatch, device):
    from vibe_server.train.mposer import train_mposer
    from vibe_server.train.train import train

    no_gpu(monkeypatch)
    with pytest.raises(VibeError, match=f"Device '{device}' was asked for but this PyTorch build sees no CUDA GPU"):
        train(tiny(dirs, "no_gpu", f"--device={device}"))
    mposer = [f"--db_dir={dirs['db']}", f"--out_dir={dirs['root'] / 'no_gpu'}", f"--device={device}"]
    with pytest.raises(VibeError, match="sees no CUDA GPU"):
        train_mposer(parse_overrides(MPoserConfig, mposer))
    assert not (dirs["root"] / "no_gpu").exists()


def test_a_gpu_index_past_the_visible_ones_is_refused(monkeypatch):
    from vibe_server.data.loading import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(VibeError, match=r"'cuda:1' .* only 1 CUDA GPU\(s\) are visible \(cuda:0 to cuda:0\)"):
        resolve_device("cuda:1")


def test_torchrun_takes_the_gpu_of_the_rank_not_an_index(monkeypatch):
    from vibe_server.train.train import train_device

    config = TrainConfig(device="cuda:1")
    with pytest.raises(VibeError, match="under torchrun each process uses the GPU of its local rank"):
        train_device(config, ddp=True, local_rank=0)
    assert train_device(TrainConfig(device="cpu"), ddp=True, local_rank=1) == torch.device("cpu")


@pytest.mark.parametrize(
    "setting, message",
    [
        ("--datasets_2d=foo", "Unknown dataset 'foo' in --datasets_2d; choose from insta, pennaction, posetrack."),
        ("--datasets_3d=mpii3d,bar", "Unknown dataset 'bar' in --datasets_3d; choose from mpii3d, 3dpw, h36m."),
        ("--dataset_val=foo", "Unknown dataset 'foo' in --dataset_val; choose from mpii3d, 3dpw, h36m, none."),
        ("--dataset_val=insta", "Unknown dataset 'insta' in --dataset_val"),
        ("--datasets_3d=mpii3d,3dpw,mpii3d", "Dataset 'mpii3d' is named more than once in --datasets_3d; name it"),
        ("--datasets_2d=insta, insta", "Dataset 'insta' is named more than once in --datasets_2d; name it once."),
    ],
)
def test_dataset_names_are_checked_before_the_out_dir_is_made(dirs, capsys, setting, message):
    from vibe_server.cli import main

    out = dirs["root"] / "names"
    assert main(["train", "vibe", f"--out_dir={out}", f"--db_dir={dirs['db']}", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_named_input_files_are_checked_before_the_out_dir_is_made(dirs):
    from vibe_server.train.train import train

    missing = dirs["root"] / "missing.pth.tar"
    with pytest.raises(VibeError, match="--pretrained=.*missing.pth.tar was not found"):
        train(tiny(dirs, "inputs", f"--pretrained={missing}"))
    with pytest.raises(VibeError, match="MPoser checkpoint .* not found"):
        train(tiny(dirs, "inputs", "--motion_prior=mposer", f"--mposer_checkpoint={missing}"))
    with pytest.raises(VibeError, match="--db_dir=.*nowhere was not found"):
        train(tiny(dirs, "inputs", f"--db_dir={dirs['root'] / 'nowhere'}"))
    assert not (dirs["root"] / "inputs").exists()


@pytest.fixture(scope="module")
def one_epoch(dirs):
    """A run of one finished epoch (discriminator with 32 hidden units), copied by each test."""
    from vibe_server.train.train import train

    train(tiny(dirs, "one_epoch"))
    return dirs["root"] / "one_epoch"


def copy_run(one_epoch, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(one_epoch, out)
    return out


def test_resuming_with_another_discriminator_names_the_setting(dirs, one_epoch, tmp_path):
    from vibe_server.train.train import train

    out = copy_run(one_epoch, tmp_path)
    before = (out / "checkpoint.pth.tar").read_bytes()
    config = tiny(dirs, "x", f"--out_dir={out}", "--epochs=2", "--disc_hidden=16", "--disc_attention_size=16")
    expected = (
        f"This out_dir ({out}) was trained with --disc_hidden=32, --disc_attention_size=32, not "
        "--disc_hidden=16, --disc_attention_size=16; use the same settings, a new --out_dir or --resume=false"
    )
    with pytest.raises(VibeError, match=re.escape(expected)):
        train(config)
    with pytest.raises(VibeError, match="was trained with --motion_prior=discriminator, not --motion_prior=none"):
        train(tiny(dirs, "x", f"--out_dir={out}", "--epochs=2", "--motion_prior=none"))
    assert (out / "checkpoint.pth.tar").read_bytes() == before


def test_saved_settings_of_another_type_are_named_not_compared(dirs, one_epoch, tmp_path):
    from vibe_server.train.train import train

    out = copy_run(one_epoch, tmp_path)
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    ckpt["config"]["disc_hidden"] = torch.tensor([32, 32])  # an altered file: never equal to a number
    torch.save(ckpt, out / "checkpoint.pth.tar")
    with pytest.raises(VibeError, match=r"was trained with --disc_hidden=tensor\(\[32, 32\]\), not --disc_hidden=32"):
        train(tiny(dirs, "x", f"--out_dir={out}", "--epochs=2"))


def test_a_checkpoint_without_its_settings_is_compared_by_shapes(dirs, one_epoch, tmp_path):
    from vibe_server.train.train import train

    out = copy_run(one_epoch, tmp_path)
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    del ckpt["config"]
    torch.save(ckpt, out / "checkpoint.pth.tar")
    config = tiny(dirs, "x", f"--out_dir={out}", "--epochs=2", "--disc_hidden=16", "--disc_attention_size=16")
    with pytest.raises(
        VibeError,
        match=r"discriminator in '.*' has another architecture: \d+ with the wrong shape \(e\.g\. gru.weight_ih_l0 "
        r"\(96, 69\) != \(48, 69\).*\) keys; use the same settings",
    ):
        train(config)


def test_a_damaged_checkpoint_is_one_message(dirs, one_epoch, tmp_path, capsys):
    from vibe_server.cli import main

    out = copy_run(one_epoch, tmp_path)
    data = (out / "checkpoint.pth.tar").read_bytes()
    (out / "checkpoint.pth.tar").write_bytes(data[: len(data) // 2])  # cut short
    assert main(["train", "vibe", *settings(dirs, "x", f"--out_dir={out}", "--epochs=2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot resume from '{out / 'checkpoint.pth.tar'}': it is damaged, cut short")
    assert "--resume=false" in err and err.count("\n") == 1


def test_an_official_model_copied_in_as_the_checkpoint_is_one_message(dirs, tmp_path, capsys):
    from vibe_server.cli import main

    out = tmp_path / "run"
    out.mkdir()
    shutil.copyfile(dirs["data"] / "vibe_model_wo_3dpw.pth.tar", out / "checkpoint.pth.tar")
    assert main(["train", "vibe", *settings(dirs, "x", f"--out_dir={out}", "--epochs=2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot resume from '{out / 'checkpoint.pth.tar'}': it is not a checkpoint of")
    assert "--pretrained" in err and "--resume=false" in err and err.count("\n") == 1


def test_a_resumed_run_takes_the_rates_changed_since_and_keeps_the_others_as_they_were(
    dirs, one_epoch, tmp_path, caplog
):
    """Before: the checkpoint's optimiser and scheduler states overruled --gen_lr and the rest, without
    a word, and the new checkpoint recorded settings its run had not used."""
    from vibe_server.train.train import train

    out = copy_run(one_epoch, tmp_path)
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    saved = ckpt["config"]
    ckpt["disc_motion_optimizer"]["param_groups"][0]["lr"] = saved["disc_lr"] / 10  # lowered by its scheduler
    torch.save(ckpt, out / "checkpoint.pth.tar")
    changed = ["--gen_lr=0.01", "--gen_wd=0.001", "--lr_factor=0.5", "--lr_patience=3"]
    with caplog.at_level(logging.INFO, logger="vibe_server.train"):
        train(tiny(dirs, "x", f"--out_dir={out}", "--epochs=2", *changed))
    assert f"--gen_lr=0.01 (the checkpoint's run had {saved['gen_lr']}): used from this epoch on" in caplog.text
    assert "--disc_lr" not in caplog.text and caplog.text.count("--lr_factor=0.5 (the checkpoint's run had") == 1
    after = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    gen_group = after["gen_optimizer"]["param_groups"][0]
    assert (gen_group["lr"], gen_group["weight_decay"]) == (0.01, 0.001)
    for scheduler in ("gen_scheduler", "disc_scheduler"):  # --lr_factor and --lr_patience are both schedulers'
        assert (after[scheduler]["factor"], after[scheduler]["patience"]) == (0.5, 3)
    assert after["disc_motion_optimizer"]["param_groups"][0]["lr"] == saved["disc_lr"] / 10  # unchanged setting
    assert after["config"]["gen_lr"] == 0.01


def test_a_resumed_run_logs_the_epoch_it_runs_again_once(dirs, one_epoch, tmp_path, caplog):
    """A run stopped part-way through epoch 1 had logged some of its steps; the resumed run runs the
    epoch again from its start. Before, those steps stood twice in train_log.csv."""
    from vibe_server.train.run_log import append_csv
    from vibe_server.train.train import train

    out = copy_run(one_epoch, tmp_path)
    log_file = out / "train_log.csv"
    columns = tuple(next(csv.reader(open(log_file))))
    append_csv(log_file, columns, {"epoch": 1, "iteration": 0, "step": 2})  # the stopped run's first step
    with caplog.at_level(logging.INFO, logger="vibe_server.train"):
        train(tiny(dirs, "x", f"--out_dir={out}", "--epochs=2"))
    rows = list(csv.DictReader(open(log_file)))
    assert [(r["epoch"], r["iteration"]) for r in rows] == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert "train_log.csv: 1 row(s) of epoch 1, stopped part-way, removed: it runs again" in caplog.text


def test_only_the_rows_of_the_epochs_run_again_are_removed(tmp_path):
    from vibe_server.train.run_log import drop_rows_from_epoch

    log_file = tmp_path / "log.csv"
    log_file.write_text("epoch,loss\n0,1.5\n1,1.2\nnote,x\n2,1.1\n")
    assert drop_rows_from_epoch(log_file, 1) == 2
    assert log_file.read_text().splitlines() == ["epoch,loss", "0,1.5", "note,x"]
    assert drop_rows_from_epoch(log_file, 1) == 0 and drop_rows_from_epoch(tmp_path / "none.csv", 0) == 0
    log_file.write_text("epoch,loss\n0,1.5,extra\n1,1.2\n")  # a row longer than the header: no traceback
    assert drop_rows_from_epoch(log_file, 1) == 1
    assert log_file.read_text().splitlines() == ["epoch,loss", "0,1.5"]


def test_a_log_that_is_not_csv_text_is_kept_aside_and_started_anew(tmp_path):
    """One byte that is not UTF-8 (a disk error, an editor) made every resume fail with a traceback."""
    from vibe_server.train.run_log import forget_logged_steps

    damaged = b"epoch,loss\n0,1.5\n1,\xff1.2\n"
    (tmp_path / "train_log.csv").write_bytes(damaged)
    (tmp_path / "train_log.damaged.csv").write_bytes(b"an earlier one")
    said = []
    forget_logged_steps(tmp_path, ("train_log.csv",), 1, said.append)
    assert (tmp_path / "train_log.damaged2.csv").read_bytes() == damaged  # nothing lost or overwritten
    assert not (tmp_path / "train_log.csv").exists()  # the next row starts a new one, with its header
    assert len(said) == 1 and said[0].startswith("train_log.csv is damaged (")
    assert said[0].endswith("): kept as train_log.damaged2.csv; a new train_log.csv is started")


def test_a_finished_run_says_every_epoch_is_done(dirs, one_epoch, tmp_path, caplog):
    from vibe_server.train.train import train

    out = copy_run(one_epoch, tmp_path)
    with caplog.at_level(logging.INFO, logger="vibe_server.train"):
        summary = train(tiny(dirs, "x", f"--out_dir={out}"))
    assert summary["epochs_run"] == 0
    assert f"all 1 epochs are done in {out}" in caplog.text and "raise --epochs" in caplog.text
    assert len(list(csv.DictReader(open(out / "train_log.csv")))) == 2  # nothing appended


def test_an_interrupted_save_keeps_the_last_checkpoint_and_the_best(dirs, one_epoch, tmp_path, monkeypatch):
    """Ctrl-C or a full disk while a checkpoint is written: the previous files stay whole, no temporary file."""
    from vibe_server import checkpoints
    from vibe_server.train.train import train

    out = copy_run(one_epoch, tmp_path)
    before = {name: (out / name).read_bytes() for name in ("checkpoint.pth.tar", "model_best.pth.tar")}
    real_save = checkpoints.save_vibe_checkpoint

    def interrupted(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "save_vibe_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(dirs, "x", f"--out_dir={out}", "--epochs=2"))
    assert {name: (out / name).read_bytes() for name in before} == before
    monkeypatch.setattr(checkpoints, "save_vibe_checkpoint", real_save)

    def disk_full(src, dst, *args, **kwargs):  # the copy of model_best into the checkpoint fails half-way
        with open(dst, "wb") if isinstance(dst, str | type(out)) else dst as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    monkeypatch.setattr(shutil, "copyfile", disk_full)
    with pytest.raises(OSError) as err:
        train(tiny(dirs, "x", f"--out_dir={out}", "--epochs=2"))
    assert err.value.filename == str(out / "checkpoint.pth.tar")  # the file the user knows
    assert (out / "checkpoint.pth.tar").read_bytes() == before["checkpoint.pth.tar"]  # epoch 0: redone on resume
    assert torch.load(out / "model_best.pth.tar", weights_only=False)["epoch"] == 1  # written first, whole
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        ".train.lock",
        "checkpoint.pth.tar",
        "model_best.pth.tar",
        "train_log.csv",
    ]


def test_a_run_that_cannot_open_its_data_leaves_the_old_logs_in_place(dirs, one_epoch, tmp_path):
    from vibe_server.train.train import train

    out = copy_run(one_epoch, tmp_path)
    old = (out / "train_log.csv").read_text()
    (tmp_path / "empty_db").mkdir()  # a folder without the database files: found when they are opened
    config = tiny(dirs, "x", f"--out_dir={out}", "--resume=false", f"--db_dir={tmp_path / 'empty_db'}")
    with pytest.raises(VibeError, match="not found"):
        train(config)
    assert (out / "train_log.csv").read_text() == old and not (out / "train_log.prev.csv").exists()


def test_starting_over_keeps_the_old_logs(dirs, one_epoch, tmp_path, caplog):
    from vibe_server.train.train import train

    out = copy_run(one_epoch, tmp_path)
    old = (out / "train_log.csv").read_text()
    old_checkpoint = (out / "checkpoint.pth.tar").read_bytes()
    (out / "tensorboard").mkdir(exist_ok=True)
    (out / "tensorboard" / "events.out.tfevents.old").write_bytes(b"old events")
    with caplog.at_level(logging.INFO, logger="vibe_server.train"):
        train(tiny(dirs, "x", f"--out_dir={out}", "--resume=false"))
    assert (out / "train_log.prev.csv").read_text() == old
    assert (out / "checkpoint.prev.pth.tar").read_bytes() == old_checkpoint
    assert "the old checkpoint.pth.tar is kept as checkpoint.prev.pth.tar" in caplog.text
    assert (out / "tensorboard.prev" / "events.out.tfevents.old").read_bytes() == b"old events"
    assert not (out / "tensorboard" / "events.out.tfevents.old").exists()  # new events are not appended to it
    assert "the old train_log.csv is kept as train_log.prev.csv" in caplog.text
    new = list(csv.DictReader(open(out / "train_log.csv")))
    assert [r["iteration"] for r in new] == ["0", "1"]  # this run's rows only
    train(tiny(dirs, "x", f"--out_dir={out}", "--resume=false"))
    assert (out / "train_log.prev.csv").read_text() == old and (out / "train_log.prev2.csv").exists()
    assert (out / "checkpoint.prev.pth.tar").read_bytes() == old_checkpoint
    assert (out / "checkpoint.prev2.pth.tar").exists()  # one tag for the whole run set aside


def test_a_new_run_stopped_in_its_first_epoch_is_not_taken_for_the_old_one(dirs, one_epoch, tmp_path, monkeypatch):
    """The old checkpoint stayed until the new run's first epoch ended: run again without --resume=false,
    the old run resumed, its logs set aside and the new run's first steps in the log."""
    from vibe_server.train import train as train_module

    out = copy_run(one_epoch, tmp_path)
    old_checkpoint = (out / "checkpoint.pth.tar").read_bytes()
    stopped = lambda *args: (_ for _ in ()).throw(KeyboardInterrupt)  # Ctrl-C at the first step
    with monkeypatch.context() as patched:
        patched.setattr(train_module, "generator_losses", stopped)
        with pytest.raises(KeyboardInterrupt):
            train_module.train(tiny(dirs, "x", f"--out_dir={out}", "--resume=false"))
    assert not (out / "checkpoint.pth.tar").exists()
    assert (out / "checkpoint.prev.pth.tar").read_bytes() == old_checkpoint
    assert train_module.train(tiny(dirs, "x", f"--out_dir={out}"))["epochs_run"] == 1  # a new run, not a resumed one
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert [(r["epoch"], r["iteration"]) for r in rows] == [("0", "0"), ("0", "1")]


# -- model_best, the validation set and a diverged run ------------------------------------------------


def best_is_recorded_with_its_file(out) -> bool:
    """Whether a checkpoint that records a best validation value has that model_best.pth.tar beside it."""
    if not (out / "checkpoint.pth.tar").exists():
        return True
    best = torch.load(out / "checkpoint.pth.tar", weights_only=False)["best_performance"]
    if best == float("inf"):
        return True
    return (out / "model_best.pth.tar").exists() and torch.load(out / "model_best.pth.tar", weights_only=False)[
        "performance"
    ] == pytest.approx(best)


def test_an_interruption_between_the_two_saves_never_loses_the_best_model(dirs, tmp_path, monkeypatch):
    """model_best.pth.tar is written before the checkpoint that records its value, so stopping between
    the two (Ctrl-C, a kill) and resuming leaves the best model there."""
    from vibe_server.train import train as train_module

    out = tmp_path / "run"

    def stopped(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "copy_file", stopped)  # the second of the two writes
    with pytest.raises(KeyboardInterrupt):
        train_module.train(tiny(dirs, "x", f"--out_dir={out}", "--dataset_val=3dpw"))
    assert best_is_recorded_with_its_file(out)
    monkeypatch.undo()
    train_module.train(tiny(dirs, "x", f"--out_dir={out}", "--dataset_val=3dpw", "--epochs=2"))
    assert torch.load(out / "checkpoint.pth.tar", weights_only=False)["epoch"] == 1
    assert best_is_recorded_with_its_file(out)


def test_resuming_with_another_validation_set_is_refused_and_keeps_the_best(dirs, tmp_path):
    from vibe_server.train.train import train

    out = tmp_path / "run"
    train(tiny(dirs, "x", f"--out_dir={out}", "--dataset_val=3dpw"))
    best = (out / "model_best.pth.tar").read_bytes()
    expected = (
        f"This out_dir ({out}) was trained with --dataset_val=3dpw, not --dataset_val=none; use the same "
        "settings, a new --out_dir or --resume=false (starts over; the old run's files are kept)."
    )
    with pytest.raises(VibeError, match=re.escape(expected)):
        train(tiny(dirs, "x", f"--out_dir={out}", "--epochs=2"))
    assert (out / "model_best.pth.tar").read_bytes() == best
    # a checkpoint without its settings (older versions): an epoch without validation never replaces
    # a model_best that has a validation value
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    del ckpt["config"]
    torch.save(ckpt, out / "checkpoint.pth.tar")
    train(tiny(dirs, "x", f"--out_dir={out}", "--epochs=2"))
    assert torch.load(out / "checkpoint.pth.tar", weights_only=False)["epoch"] == 1
    assert (out / "model_best.pth.tar").read_bytes() == best


def test_a_resumed_run_keeps_the_better_best_it_saved_just_before_it_stopped(dirs, tmp_path, monkeypatch):
    """Stopped between the two saves of an epoch, a run has a better model_best.pth.tar than its
    checkpoint records: resumed, it keeps that one as its best, and no worse epoch replaces it."""
    from vibe_server.train import train as train_module

    out = tmp_path / "run"
    errors = iter([50.0, 40.0, 45.0, 47.0])  # validation PA-MPJPE of the epochs run, in order

    def evaluate(*args, **kwargs):
        error = next(errors)
        return SimpleNamespace(overall={"mpjpe": error, "pa_mpjpe": error, "pve": error, "accel": 0, "accel_err": 0})

    def stopped(*args):
        raise KeyboardInterrupt

    def run(epochs: int) -> dict:
        return train_module.train(tiny(dirs, "x", f"--out_dir={out}", "--dataset_val=3dpw", f"--epochs={epochs}"))

    def saved(name: str) -> dict:
        return torch.load(out / name, weights_only=False)

    monkeypatch.setattr(train_module, "evaluate_generator", evaluate)
    run(1)  # epoch 0: 50 mm
    with monkeypatch.context() as stop:
        stop.setattr(train_module, "copy_file", stopped)  # epoch 1: 40 mm, stopped before its checkpoint
        with pytest.raises(KeyboardInterrupt):
            run(3)
    assert saved("model_best.pth.tar")["performance"] == 40.0
    assert saved("checkpoint.pth.tar")["epoch"] == 0 and saved("checkpoint.pth.tar")["best_performance"] == 50.0
    result = run(3)  # epoch 1 again: 45 mm, epoch 2: 47 mm
    best = saved("model_best.pth.tar")
    assert best["performance"] == 40.0 and best["epoch"] == 1 and result["best_performance"] == 40.0
    assert saved("checkpoint.pth.tar")["epoch"] == 2 and saved("checkpoint.pth.tar")["best_performance"] == 40.0


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_or_missing_best_model_is_written_again_by_the_next_validated_epoch(
    dirs, tmp_path, monkeypatch, damage
):
    """It was kept as it was (a worse epoch never replaced it), while the run said it held the best."""
    from vibe_server.train import train as train_module

    out = tmp_path / "run"
    errors = iter([50.0, 60.0])

    def evaluate(*args, **kwargs):
        error = next(errors)
        return SimpleNamespace(overall={"mpjpe": error, "pa_mpjpe": error, "pve": error, "accel": 0, "accel_err": 0})

    monkeypatch.setattr(train_module, "evaluate_generator", evaluate)
    train_module.train(tiny(dirs, "x", f"--out_dir={out}", "--dataset_val=3dpw"))
    best_path = out / "model_best.pth.tar"
    if damage == "truncated":
        best_path.write_bytes(best_path.read_bytes()[:100_000])
    else:
        best_path.unlink()
    result = train_module.train(tiny(dirs, "x", f"--out_dir={out}", "--dataset_val=3dpw", "--epochs=2"))
    best = torch.load(best_path, weights_only=False)
    assert best["epoch"] == 1 and best["performance"] == 60.0 and result["best_performance"] == 60.0
    assert best_is_recorded_with_its_file(out)
    best_path.unlink()  # a finished run: no epoch is left to write it, and the recorded best stands
    finished = train_module.train(tiny(dirs, "x", f"--out_dir={out}", "--dataset_val=3dpw", "--epochs=2"))
    assert finished["epochs_run"] == 0 and finished["best_performance"] == 60.0


def test_no_validation_set_is_one_setting_however_it_is_typed(dirs, tmp_path):
    from vibe_server.train.train import train

    out = tmp_path / "run"
    train(tiny(dirs, "x", f"--out_dir={out}", "--dataset_val=None"))
    assert torch.load(out / "checkpoint.pth.tar", weights_only=False)["config"]["dataset_val"] == "none"
    train(tiny(dirs, "x", f"--out_dir={out}", "--dataset_val=NONE", "--epochs=2"))  # resumes
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["epoch"] == 1
    ckpt["config"]["dataset_val"] = "None"  # as earlier versions saved it
    torch.save(ckpt, out / "checkpoint.pth.tar")
    train(tiny(dirs, "x", f"--out_dir={out}", "--epochs=3"))
    assert torch.load(out / "checkpoint.pth.tar", weights_only=False)["epoch"] == 2


def error_line(stderr: str) -> str:
    """The CLI's error message, after the progress bars (each redrawn with a carriage return)."""
    return stderr[stderr.index("error: ") :]


def test_a_diverged_run_fails_and_goes_on_only_when_asked(dirs, tmp_path, capsys):
    from vibe_server.cli import main

    out = tmp_path / "run"
    argv = ["train", "vibe", *settings(dirs, "x", f"--out_dir={out}", "--dataset_val=3dpw", "--epochs=3")]
    assert main([*argv, "--abort_pa_mpjpe_mm=0.001"]) == 2  # any real error is above 0.001 mm
    err = error_line(capsys.readouterr().err)
    assert err.startswith("error: Stopped after epoch 0: validation PA-MPJPE ") and err.count("\n") == 1, err
    assert "more than --abort_pa_mpjpe_mm=0.001, so the run has diverged" in err and "--resume=false" in err
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["diverged"] is True
    log = (out / "train_log.csv").read_text()

    assert main([*argv, "--abort_pa_mpjpe_mm=0.001"]) == 2  # the same command again: no more epochs
    err = capsys.readouterr().err
    assert err.startswith("error: This run stopped after epoch 0 because it diverged (validation PA-MPJPE ")
    assert "higher --abort_pa_mpjpe_mm (0 = never stop)" in err and err.count("\n") == 1
    assert (out / "train_log.csv").read_text() == log

    assert main([*argv, "--abort_pa_mpjpe_mm=0"]) == 0  # on purpose
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["diverged"] is False


# -- one run per out_dir, and what a killed run leaves ------------------------------------------------


def test_two_runs_never_share_an_out_dir(dirs, tmp_path, capsys):
    from vibe_server.cli import main
    from vibe_server.train.out_dir import own_out_dir

    out = tmp_path / "run"
    mposer = [f"--db_dir={dirs['db']}", f"--out_dir={out}", "--num_workers=0", "--device=cpu"]
    with own_out_dir(out, (), print):  # another run is writing there
        for argv in (["train", "vibe", *settings(dirs, "x", f"--out_dir={out}")], ["train", "mposer", *mposer]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err == (
                f"error: Another run is using {out}; wait for it to end or pass another --out_dir. If that run "
                "is known to be dead (e.g. its node crashed and a network file system keeps its lock), delete "
                f"{out / '.train.lock'} to free the folder.\n"
            )
    assert [p.name for p in out.iterdir()] == [".train.lock"]  # nothing else written


def test_a_file_system_without_locks_trains_unguarded_and_says_so(dirs, one_epoch, tmp_path, monkeypatch, caplog):
    """Lustre without -o flock, NFS without its lock service, some FUSE file systems: the run goes on
    (several nodes need a shared out_dir), warns once, and leaves the .part files alone (another run
    may be writing them)."""
    import fcntl  # (POSIX only; documented)

    from vibe_server.train.train import train

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    out = copy_run(one_epoch, tmp_path)
    part = out / ".checkpoint.pth.tar.0a1b2c3d.part"
    part.write_bytes(b"x")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level(logging.INFO, logger="vibe_server.train"):
        train(tiny(dirs, "x", f"--out_dir={out}", "--epochs=2"))
    assert torch.load(out / "checkpoint.pth.tar", weights_only=False)["epoch"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"Cannot lock '{out / '.train.lock'}' (No locks available): its file system has no file locks, so nothing "
        f"keeps another run out of {out}: start no other run there until this one ends. (Unfinished checkpoint "
        "files that a killed run left there, .*.part, are not deleted.)"
    ]
    assert part.read_bytes() == b"x"


def test_where_nothing_guards_the_out_dir_the_part_files_are_left_alone(tmp_path, monkeypatch):
    """On Windows (no fcntl) another run may be writing in the folder: its .part files are not deleted."""
    from vibe_server.train.out_dir import own_out_dir

    part = tmp_path / ".checkpoint.pth.tar.0a1b2c3d.part"
    part.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "fcntl", None)  # as on Windows: the import fails
    said = []
    with own_out_dir(tmp_path, ["checkpoint.pth.tar"], said.append):
        pass
    assert part.read_bytes() == b"x" and said == []


def test_an_out_dir_that_cannot_be_a_folder_is_one_message(dirs, tmp_path, capsys):
    from vibe_server.cli import main

    (tmp_path / "afile").write_text("a file")
    out = tmp_path / "afile" / "run"
    assert main(["train", "vibe", *settings(dirs, "x", f"--out_dir={out}")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot make the run folder --out_dir={out} (") and err.count("\n") == 1, err
    assert "pass a folder path you can write to" in err and (tmp_path / "afile").read_text() == "a file"


def test_sigterm_while_saving_stops_the_run_without_a_part_file(dirs, one_epoch, tmp_path, monkeypatch, capsys):
    import os
    import signal

    from vibe_server import checkpoints
    from vibe_server.cli import main

    out = copy_run(one_epoch, tmp_path)
    before = (out / "checkpoint.pth.tar").read_bytes()
    real_save = checkpoints.save_vibe_checkpoint

    def terminated(path, *args, **kwargs):  # e.g. a job scheduler's stop, half-way through the write
        real_save(path, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    def ignored(signum, frame):  # stands in for the default (death), should the run not handle it
        pass

    monkeypatch.setattr(checkpoints, "save_vibe_checkpoint", terminated)
    previous = signal.signal(signal.SIGTERM, ignored)
    try:
        rc = main(["train", "vibe", *settings(dirs, "x", f"--out_dir={out}", "--epochs=2")])
        assert signal.getsignal(signal.SIGTERM) is ignored  # the run put the handler back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert rc == 143 and capsys.readouterr().err.splitlines()[-1] == "interrupted"  # after the bars
    assert (out / "checkpoint.pth.tar").read_bytes() == before
    assert not [p.name for p in out.iterdir() if p.name.endswith(".part")]


def test_a_failure_after_sigterm_is_the_stop_not_a_traceback(capsys):
    """SIGTERM to the whole process group also ends the DataLoader workers, which torch reports as
    a RuntimeError: once SIGTERM has come, any failure is the stop (exit status 143)."""
    from vibe_server.train.stop_signals import exit_status, sigterm_interrupts

    def run():
        with sigterm_interrupts():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except KeyboardInterrupt:
                pass  # caught on its way (torch's C++ code): the stop comes back as another failure
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")

    assert exit_status(run) == 143 and capsys.readouterr().err == "interrupted\n"

    def fails():
        with sigterm_interrupts():
            raise RuntimeError("not a stop")

    with pytest.raises(RuntimeError, match="not a stop"):  # without SIGTERM a failure is what it is
        exit_status(fails)


def test_under_torchrun_only_the_first_process_speaks(monkeypatch, capsys):
    """A stop reaches every torchrun process and a bad setting is met by each: the machine's first
    process says so, the others end with the same status, silently. An error of one process is said there."""
    from vibe_server.train import stop_signals
    from vibe_server.train.stop_signals import SameInEveryProcess, exit_status

    monkeypatch.setattr(stop_signals, "QUIET_EXIT_WAIT_S", 0.0)  # (torchrun ends the process meanwhile)

    def interrupted():
        raise KeyboardInterrupt

    def same_everywhere():
        raise SameInEveryProcess("diverged")

    def this_process_only():
        raise VibeError("no GPU for local rank 3")

    monkeypatch.setenv("LOCAL_RANK", "1")
    assert exit_status(interrupted) == 130 and exit_status(same_everywhere) == 2
    assert capsys.readouterr().err == ""
    with pytest.raises(VibeError, match="local rank 3"):
        exit_status(this_process_only)
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(SameInEveryProcess, match="diverged"):
        exit_status(same_everywhere)
    with pytest.raises(KeyboardInterrupt):  # the command line prints "interrupted" once
        exit_status(interrupted)


@pytest.fixture
def python_ctrl_c():
    """Ctrl-C as the command line has it (Python's handler, not blocked), whatever a library loaded
    earlier in the test process did to SIGINT; put back afterwards."""
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_that_lands_in_a_finaliser_still_stops_the_run_without_a_traceback(capsys, python_ctrl_c, signum):
    """A signal's handler runs wherever the main thread is. In a finaliser or a fork hook (DataLoader
    workers starting) Python only printed the Terminated (or Ctrl-C's KeyboardInterrupt) it raised,
    "Exception ignored in ...", and the run went on training."""
    from vibe_server.train.stop_signals import exit_status, sigterm_interrupts

    class SendsTheSignalWhenCollected:
        def __del__(self):
            os.kill(os.getpid(), signum)  # the handler runs here, inside the finaliser

    printed, went_on = [], []  # what Python would print as "Exception ignored in ..."; a run not stopped

    def run():
        with sigterm_interrupts():
            SendsTheSignalWhenCollected()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.01)  # the run goes on: the stop must come back here
            went_on.append(True)

    hook, sys.unraisablehook = sys.unraisablehook, printed.append
    try:
        if signum == signal.SIGTERM:
            assert exit_status(run) == 143
            assert capsys.readouterr().err == "interrupted\n"
        else:
            with pytest.raises(KeyboardInterrupt):  # on to the command line, which exits with 130
                exit_status(run)
    finally:
        put_back, sys.unraisablehook = sys.unraisablehook, hook
    assert not printed and not went_on
    assert put_back == printed.append  # the run's own hook is gone


@pytest.mark.skipif(not hasattr(os, "fork"), reason="DataLoader workers are forked on POSIX")
@pytest.mark.parametrize("handler", ["sigterm_interrupts", "stops_held"])
def test_sigterm_in_a_worker_forked_before_its_own_handler_ends_it_quietly(handler):
    """A DataLoader worker inherits the run's handler (or, forked while the stops are held, the
    hold's) until its worker_init_fn runs: a SIGTERM to the whole group in that moment raised
    Terminated in multiprocessing's start-up, which printed "Process ...: Traceback". The worker now
    ends at once with status 0, as its own handler does, and a held stop is not kept for later."""
    from vibe_server.train import stop_signals

    read_end, write_end = os.pipe()
    with getattr(stop_signals, handler)():
        pid = os.fork()
        if pid == 0:  # the worker, with the inherited handler
            os.dup2(write_end, 2)
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:
                os._exit(7)  # reached only when the signal did not end it
        os.close(write_end)
        _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end) as printed:
        assert os.waitstatus_to_exitcode(status) == 0 and printed.read() == ""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="DataLoader workers are forked on POSIX")
@pytest.mark.parametrize(("start_method", "held"), [("fork", True), ("spawn", False)])
def test_stops_are_held_only_while_workers_are_forked(start_method, held):
    """Spawning a worker takes seconds, and the parent may wait on a pipe to a worker that the same
    signal ended: holding the stop there could hang the run for good."""
    import multiprocessing

    from vibe_server.train.stop_signals import StopSafeLoader

    seen, base = [], multiprocessing.get_context(start_method)

    class Recorder(type(base).Process):
        def start(self):
            seen.append(signal.getsignal(signal.SIGTERM))
            raise RuntimeError("no worker is started here")

    class Context(type(base)):
        Process = Recorder

    before, printed = signal.getsignal(signal.SIGTERM), []
    hook, sys.unraisablehook = sys.unraisablehook, printed.append  # the half-built iterator's own failure
    try:
        with pytest.raises(RuntimeError, match="no worker"):
            iter(StopSafeLoader(range(4), num_workers=1, multiprocessing_context=Context()))
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert (seen[0] is not before) == held and signal.getsignal(signal.SIGTERM) is before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="DataLoader workers are forked on POSIX")
def test_sigterm_while_the_workers_start_stops_the_run_without_a_traceback(capsys):
    """A SIGTERM that landed while a pass's DataLoader workers were starting left torch's iterator
    half-built; when collected it failed again and Python printed "Exception ignored in ...
    AttributeError" after "interrupted". The stop now lands once the workers have started."""
    import multiprocessing

    from vibe_server.train.stop_signals import StopSafeLoader, exit_status, sigterm_interrupts

    started = []

    class SigtermsTheRunFirst(multiprocessing.context.ForkProcess):
        def start(self):
            if started:  # the second worker: the run's handler runs here, one worker started
                os.kill(os.getpid(), signal.SIGTERM)
            super().start()
            started.append(self)

    class StartsWorkersAmidASigterm(multiprocessing.context.ForkContext):
        Process = SigtermsTheRunFirst

    printed, batches = [], []
    other_thread = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
    other_thread.start()  # a run has more threads than the main one (pin memory, progress bar)

    def run():
        with sigterm_interrupts():
            loader = StopSafeLoader(range(8), num_workers=2, multiprocessing_context=StartsWorkersAmidASigterm())
            batches.extend(loader)

    hook, sys.unraisablehook = sys.unraisablehook, printed.append
    try:
        assert exit_status(run) == 143
        gc.collect()  # the pass's iterator, collected
    finally:
        sys.unraisablehook = hook
    assert capsys.readouterr().err == "interrupted\n" and not printed and not batches
    assert len(started) == 2 and not any(worker.is_alive() for worker in started)  # both stopped


def test_a_stop_that_comes_while_held_lands_as_the_block_ends(capsys):
    from vibe_server.train.stop_signals import exit_status, sigterm_interrupts, stops_held

    reached = []
    other_thread = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
    other_thread.start()  # the kernel may hand the signal to it: the hold is no signal mask

    def run():
        with sigterm_interrupts():
            with stops_held():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                reached.append("held")
            reached.append("after")  # not reached: the stop lands as the block ends

    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
    assert exit_status(run) == 143 and capsys.readouterr().err == "interrupted\n"
    assert reached == ["held"]
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == handlers  # put back


@pytest.mark.parametrize("stop", [True, False])
def test_a_finaliser_that_fails_once_sigterm_has_come_is_the_stop_not_a_message(capsys, stop):
    """torch shutting a pass's workers down in a finaliser reported a worker that the same SIGTERM
    ended ("DataLoader worker ... is killed by signal: Terminated"), and Python printed it before
    "interrupted". Without a stop, such a failure is printed as before."""
    from vibe_server.train.stop_signals import exit_status, sigterm_interrupts

    class FailsWhenCollected:
        def __del__(self):
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")

    def run():
        with sigterm_interrupts():
            try:
                if stop:
                    os.kill(os.getpid(), signal.SIGTERM)
            finally:
                FailsWhenCollected()  # collected at once, while the stop unwinds

    printed = []
    hook, sys.unraisablehook = sys.unraisablehook, printed.append
    try:
        assert exit_status(run) == (143 if stop else 0)
    finally:
        sys.unraisablehook = hook
    assert capsys.readouterr().err == ("interrupted\n" if stop else "")
    assert len(printed) == (0 if stop else 1)


def test_what_a_stop_left_half_built_is_freed_before_interrupted_without_a_word(capsys):
    """A stop raised inside torch's worker iterator __init__ left it half-built, held by the frames
    of the stop's traceback; freed after "interrupted", its __del__ failed and Python printed that."""
    from vibe_server.train.stop_signals import exit_status, sigterm_interrupts

    freed = []

    class HalfBuilt:
        def __init__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the stop lands here, before ready is set
            self.ready = True

        def __del__(self):
            freed.append(capsys.readouterr().err)
            assert self.ready  # AttributeError: half-built

    def run():
        with sigterm_interrupts():
            HalfBuilt()

    printed = []
    hook, sys.unraisablehook = sys.unraisablehook, printed.append
    try:
        assert exit_status(run) == 143
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert freed == [""] and not printed  # freed before "interrupted", its failure not printed
    assert capsys.readouterr().err == "interrupted\n"


def test_sigterm_to_the_whole_process_group_stops_the_run_cleanly(dirs, one_epoch, tmp_path):
    """Slurm's scancel, timeout and a container's stop send SIGTERM to every process: the run and its
    DataLoader workers. It ends as Ctrl-C ends it: one word, exit status 143, no .part file."""
    out = copy_run(one_epoch, tmp_path)
    log = tmp_path / "stdout.txt"
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), str(repo / "server")]), "OMP_NUM_THREADS": "1"}
    argv = settings(dirs, "x", f"--out_dir={out}", "--num_workers=2", "--epochs=50", "--iters_per_epoch=4")
    with open(log, "w") as stdout:
        run = subprocess.Popen(
            [sys.executable, "-m", "vibe_server", "train", "vibe", *argv],
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "epoch 1 iter 1:" not in log.read_text() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run.poll() is None, run.stderr.read().decode()[-2000:]
        assert "epoch 1 iter 1:" in log.read_text()  # training, its workers running: not still starting up
        os.killpg(run.pid, signal.SIGTERM)  # the run and its workers, mid-epoch
        rc = run.wait(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    err = run.stderr.read().decode()
    assert rc == 143 and err.splitlines()[-1] == "interrupted", err[-2000:]
    assert "Traceback" not in err and "Error" not in err, err[-2000:]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".part")]
    assert torch.load(out / "checkpoint.pth.tar", weights_only=False)["epoch"] >= 0  # whole


def test_part_files_of_a_killed_save_are_deleted_when_the_next_run_starts(dirs, one_epoch, tmp_path, caplog):
    from vibe_server.train.train import train

    out = copy_run(one_epoch, tmp_path)
    leftovers = [".checkpoint.pth.tar.0a1b2c3d.part", ".model_best.pth.tar.deadbeef.part"]
    not_ours = [
        ".notes.txt.0a1b2c3d.part",
        "checkpoint.pth.tar.0a1b2c3d.part",
        ".checkpoint.pth.tar.XYZ.part",
        ".checkpoint.pth.tar.0a1b2c3d.part.bak",
    ]
    for name in leftovers + not_ours:
        (out / name).write_bytes(b"x" * 1000)
    with caplog.at_level(logging.INFO, logger="vibe_server.train"):
        train(tiny(dirs, "x", f"--out_dir={out}"))  # every epoch is done: it starts and stops
    assert not any((out / name).exists() for name in leftovers)
    assert all((out / name).read_bytes() == b"x" * 1000 for name in not_ours)
    assert f"deleted 2 unfinished checkpoint file(s) that a killed run left in {out}" in caplog.text


def test_a_damaged_h5_window_read_by_a_worker_is_one_message(dirs, tmp_path, capsys):
    """InstaVariety's .h5 is checked window by window, in the DataLoader workers: its error is the one
    message it is when read in this process, not torch's report of the worker and its traceback."""
    import h5py  # (the .h5 reader's package)

    from vibe_server.cli import main

    db = tmp_path / "db"
    shutil.copytree(dirs["db"], db)
    with h5py.File(db / "insta_train_db.h5", "r+") as file:
        file["features"][20, 5] = float("nan")
    argv = settings(dirs, "x", f"--db_dir={db}", f"--out_dir={tmp_path / 'run'}", "--datasets_2d=insta")
    argv += ["--num_workers=2", "--batch_size=4", "--iters_per_epoch=20"]
    try:
        assert main(["train", "vibe", *argv]) == 2
    finally:
        gc.collect()  # (torch's loaders are freed by the collector: their workers end now, not in a later test)
    assert error_line(capsys.readouterr().err) == (
        f"error: {db / 'insta_train_db.h5'}: 'features' holds a NaN, an infinite value or one beyond float32's "
        "range (3.4e38) at row 20 (track 'insta.tfrecord_0'), which training reads (the original would end in "
        "a NaN loss). The file is damaged: make it again or get it again.\n"
    )


# -- the model data, checked before anything is read or written ----------------------------------------


def test_missing_model_data_names_the_trainers_own_flag_before_any_work(dirs, tmp_path, capsys):
    from vibe_server.cli import main

    out = tmp_path / "run"
    nope = tmp_path / "nope"
    assert main(["train", "vibe", *settings(dirs, "x", f"--out_dir={out}", f"--model_data_dir={nope}")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Model data missing: {nope / 'SMPL_NEUTRAL.pkl'}, ") and err.count("\n") == 1
    assert "change it with --model_data_dir or $VIBE_DATA_DIR" in err
    # --data-dir is named only as the install command's own flag, with the trainer's folder
    assert err.count("--data-dir") == err.count(f"data install PATH_OR_URL --data-dir {nope}") == 1
    assert str(nope / "spin_model_checkpoint.pth.tar") in err  # every missing file at once, SPIN's too

    no_spin = tmp_path / "no_spin"
    no_spin.mkdir()
    for file in dirs["data"].iterdir():
        if file.name != "spin_model_checkpoint.pth.tar":
            (no_spin / file.name).symlink_to(file)
    argv = ["train", "vibe", *settings(dirs, "x", f"--out_dir={out}", f"--model_data_dir={no_spin}")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Model data missing: {no_spin / 'spin_model_checkpoint.pth.tar'}. ")
    assert "change it with --model_data_dir" in err
    assert err.rstrip().endswith("to start from the mean pose alone instead: --init_from_spin=false.)")
    assert not out.exists()  # nothing was read or written before
    assert main([*argv, "--init_from_spin=false"]) == 0


# -- a resumed run goes on with the data and random numbers where the stopped one was ------------------


def windows_drawn(monkeypatch) -> list:
    """The (dataset, window) pairs that training loads, in order (validation's are not counted)."""
    from vibe_server.train import datasets

    drawn, load = [], datasets.SequenceDataset.__getitem__

    def recorded(self, index):
        if self.is_train:
            drawn.append((self.spec.name, index))
        return load(self, index)

    monkeypatch.setattr(datasets.SequenceDataset, "__getitem__", recorded)
    return drawn


def test_a_resumed_run_goes_on_as_if_it_had_not_stopped(dirs, tmp_path, monkeypatch):
    """Before, every start drew the data from the first shuffled pass again and re-seeded the random
    numbers: a job stopped and resumed every epoch trained on the same first windows over and over
    (mpii3d's 3 windows, 2 a epoch: [2, 0, 2, 0] instead of [2, 0, 1, 1]) and never matched the run
    that went straight through. Passes that end mid-epoch (3 windows, 2 steps) and the discriminator's
    dropout are both covered."""
    from vibe_server.train.train import train

    drawn = windows_drawn(monkeypatch)
    argv = ["--datasets_3d=mpii3d", "--batch_size=1", "--motion_batch_size=3", "--disc_attention_dropout=0.5"]
    train(tiny(dirs, "x", f"--out_dir={tmp_path / 'straight'}", "--epochs=2", *argv))
    straight = list(drawn)
    drawn.clear()
    train(tiny(dirs, "x", f"--out_dir={tmp_path / 'resumed'}", "--epochs=1", *argv))
    train(tiny(dirs, "x", f"--out_dir={tmp_path / 'resumed'}", "--epochs=2", *argv))
    assert drawn == straight
    assert sorted([i for name, i in straight if name == "mpii3d"][:3]) == [0, 1, 2]  # a whole pass, then more
    a, b = (torch.load(tmp_path / d / "checkpoint.pth.tar", weights_only=False) for d in ("straight", "resumed"))
    for key in ("gen_state_dict", "disc_motion_state_dict"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key


def test_a_checkpoint_without_the_data_order_resumes_on_a_new_pass_and_says_so(
    dirs, one_epoch, tmp_path, monkeypatch, caplog
):
    """An older run's checkpoint does not record where its loaders were: the resumed run starts a new
    shuffled pass (as the straight run would have by then), not the first one again, and says once
    that the order is not the stopped run's."""
    from vibe_server.train.datasets import SequenceDataset
    from vibe_server.train.train import train

    out = copy_run(one_epoch, tmp_path)
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    ckpt.pop("data_order", None)  # (none in an older run's)
    torch.save(ckpt, out / "checkpoint.pth.tar")
    config = tiny(dirs, "x", f"--out_dir={out}", "--epochs=2")
    drawn = windows_drawn(monkeypatch)
    with caplog.at_level(logging.INFO, logger="vibe_server.train"):
        train(config)
    assert caplog.text.count("the data order cannot be restored exactly") == 1
    windows = len(SequenceDataset(config.db_dir, "3dpw", "train", seqlen=config.seqlen))
    new_pass = torch.randperm(windows, generator=torch.Generator().manual_seed(config.seed + 2)).tolist()
    assert [i for name, i in drawn if name == "3dpw"] == new_pass[:4]  # pass 2 = epoch 1 x 2 steps


def test_a_resumed_mposer_run_goes_on_as_if_it_had_not_stopped(dirs, tmp_path, monkeypatch):
    """MPoser re-seeded every start and shuffled with the run's random state, so a resumed epoch drew
    the first epoch's order and noise again (epoch 1: 0.41033 instead of 0.42139). The order now comes
    from (seed, epoch) and the checkpoint keeps the random states: 1 epoch + 1 resumed = 2 straight."""
    from vibe_server.train.mposer import train_mposer

    drawn = windows_drawn(monkeypatch)

    def run(out: str, epochs: int) -> None:
        argv = [f"--db_dir={dirs['db']}", f"--out_dir={tmp_path / out}", "--num_workers=0", "--device=cpu"]
        argv += ["--batch_size=4", "--hidden_size=16", "--latent_size=4", "--num_layers=1", f"--epochs={epochs}"]
        train_mposer(parse_overrides(MPoserConfig, argv))

    run("straight", 2)
    straight = list(drawn)
    drawn.clear()
    run("resumed", 1)
    run("resumed", 2)
    assert drawn == straight
    a, b = (torch.load(tmp_path / d / "mposer.pth.tar", weights_only=False)["model"] for d in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_damaged_random_states_in_a_checkpoint_are_refused_whole(monkeypatch):
    """A checkpoint's random states of the wrong size, kind or range set nothing and raise nothing (each
    library would raise after the ones before it were already set; numpy would read past its words);
    the run then says the order cannot be restored. So do CUDA states of another number of devices."""
    import random

    from vibe_server.train.resume_state import random_states, restore_random_states

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    saved = random_states()
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())

    def python_words(index, value):
        words = saved["python"]["state"].clone()
        words[index] = value
        return {**saved, "python": {**saved["python"], "state": words}}

    def numpy_keys(value):
        keys = saved["numpy"]["keys"].clone()
        keys[7] = value
        return {**saved, "numpy": {**saved["numpy"], "keys": keys}}

    cuda_state = torch.zeros(16, dtype=torch.uint8)
    for damaged in (
        {**saved, "torch": torch.zeros(3, dtype=torch.uint8)},
        {**saved, "torch": torch.zeros_like(saved["torch"])},  # right size, not a state torch takes
        {**saved, "numpy": {**saved["numpy"], "keys": torch.zeros(3, dtype=torch.int64)}},
        {**saved, "numpy": {**saved["numpy"], "pos": 625}},  # numpy would read past its 624 words
        {**saved, "numpy": {**saved["numpy"], "pos": -1}},
        numpy_keys(1 << 32),
        numpy_keys(-1),
        {**saved, "python": {**saved["python"], "state": torch.zeros(3, dtype=torch.int64)}},
        {**saved, "python": {**saved["python"], "gauss": "0.5"}},
        python_words(5, 1 << 32),
        python_words(5, -1),
        python_words(-1, 625),  # the index into the words
        {**saved, "cuda": [cuda_state]},  # saved with a GPU, resumed without one
        {"torch": saved["torch"]},
        "not a dict",
    ):
        assert restore_random_states(damaged) is False
    assert torch.equal(torch.get_rng_state(), before[0]) and (np.random.get_state()[1] == before[1]).all()
    assert random.getstate() == before[2]
    assert restore_random_states(saved) is True

    # one CUDA device (as torch.cuda reports it, here without a GPU)
    set_cuda = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=0: cuda_state.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_cuda.append)
    odd_offset = cuda_state.clone()
    odd_offset[8] = 1  # torch sets the seed, then refuses an offset that is not a multiple of 4
    for cuda in ([], [cuda_state, cuda_state], [cuda_state.float()], [cuda_state[:8]], [odd_offset]):
        assert restore_random_states({**saved, "cuda": cuda}) is False
    assert set_cuda == [] and torch.equal(torch.get_rng_state(), before[0])
    assert restore_random_states({**saved, "cuda": [cuda_state]}) is True and len(set_cuda) == 1


def _with_text_patience(state):
    return {**state, "patience": "3"}


def _with_nan_best(state):
    return {**state, "best": float("nan")}


def _with_wrong_exp_avg(state):
    first = next(iter(state["state"].values()))
    first["exp_avg"] = torch.zeros(3)
    return state


def _with_nan_exp_avg_sq(state):
    first = next(iter(state["state"].values()))
    first["exp_avg_sq"].view(-1)[0] = float("nan")
    return state


@pytest.mark.parametrize(
    "key, damage, words",
    [
        ("gen_scheduler", _with_text_patience, "generator scheduler state is damaged (patience is '3', unlike a"),
        ("disc_scheduler", _with_nan_best, "discriminator scheduler state is damaged (best is nan"),
        ("gen_optimizer", _with_wrong_exp_avg, "generator optimiser state is damaged (exp_avg of shape (3,) for"),
        ("disc_motion_optimizer", _with_nan_exp_avg_sq, "optimizer state is damaged (exp_avg_sq holds NaN"),
        ("best_performance", lambda best: float("nan"), "its best_performance (nan) is no PA-MPJPE"),
        ("best_performance", lambda best: -1.0, "its best_performance (-1.0) is no PA-MPJPE"),
    ],
)
def test_damaged_resume_states_are_one_message_before_any_step(dirs, one_epoch, tmp_path, capsys, key, damage, words):
    """These went through unchecked: a scheduler's extra key or a wrong-shaped optimiser moment failed
    only at a step, with a raw error (after a whole epoch); a NaN or negative best was never beaten."""
    from vibe_server.cli import main

    out = copy_run(one_epoch, tmp_path)
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    ckpt[key] = damage(ckpt[key])
    torch.save(ckpt, out / "checkpoint.pth.tar")
    assert main(["train", "vibe", *settings(dirs, "x", f"--out_dir={out}", "--epochs=2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot resume from '{out / 'checkpoint.pth.tar'}': ") and words in err, err
    assert err.rstrip().endswith(
        "Start over with --resume=false (the old file is then set aside as *.prev.pth.tar) or use a new --out_dir."
    )
    assert err.count("\n") == 1


def test_a_scheduler_state_takes_only_the_numbers_it_counts_with_from_the_file(dirs, one_epoch, tmp_path):
    """ReduceLROnPlateau.load_state_dict takes any key into its attributes: an 'optimizer' key there
    broke the first step after a whole epoch. Keys a fresh scheduler lacks (another torch version's)
    and its modes stay this code's; its counters come from the file."""
    from vibe_server.train.train import train

    out = copy_run(one_epoch, tmp_path)
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    ckpt["gen_scheduler"] = {**ckpt["gen_scheduler"], "optimizer": None, "mode": "max", "num_bad_epochs": 1}
    torch.save(ckpt, out / "checkpoint.pth.tar")
    train(tiny(dirs, "x", f"--out_dir={out}", "--epochs=2"))
    after = torch.load(out / "checkpoint.pth.tar", weights_only=False)["gen_scheduler"]
    assert "optimizer" not in after and after["mode"] == "min"


def test_a_data_order_pass_past_any_run_is_not_restored(dirs, one_epoch, tmp_path, caplog):
    """A pass of 2**63 went into the loader's seed, and torch refused it with a raw ValueError."""
    from vibe_server.train.train import train

    out = copy_run(one_epoch, tmp_path)
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    ckpt["data_order"]["loaders"]["3d"]["pass"] = 2**63
    torch.save(ckpt, out / "checkpoint.pth.tar")
    with caplog.at_level(logging.INFO, logger="vibe_server.train"):
        train(tiny(dirs, "x", f"--out_dir={out}", "--epochs=2"))
    assert caplog.text.count("the data order cannot be restored exactly") == 1


def test_a_run_says_how_many_3dpw_frames_have_a_padded_box(dirs, tmp_path, caplog):
    """The original's 3DPW files pad a track's first frames with boxes [0, 0, inf, inf]: training reads
    them with no keypoints there, and says how many, once."""
    import joblib

    from vibe_server.train.train import train

    db = tmp_path / "db"
    db.mkdir()
    for file in dirs["db"].iterdir():
        (db / file.name).symlink_to(file)
    (db / "3dpw_train_db.pt").unlink()
    threedpw = joblib.load(dirs["db"] / "3dpw_train_db.pt")
    threedpw["bbox"][:3] = [0.0, 0.0, np.inf, np.inf]
    joblib.dump(threedpw, db / "3dpw_train_db.pt")
    with caplog.at_level(logging.INFO, logger="vibe_server.train"):
        train(tiny(dirs, "x", f"--out_dir={tmp_path / 'run'}", f"--db_dir={db}"))
    line = f"{db / '3dpw_train_db.pt'}: 3 frame(s) have a padded box without a size"
    assert caplog.text.count(line) == 1

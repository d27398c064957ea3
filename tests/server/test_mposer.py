"""MPoser: the sequential VAE learns AMASS-like motion, round-trips through its checkpoint, and its
prior loss drives the generator's motion and nothing else."""

import pytest
import torch

from vibe_blender.core.errors import VibeError
from vibe_server.model.mposer import MPoser, mposer_prior_loss, mposer_vae_loss
from vibe_server.train.config import MPoserConfig, parse_overrides
from vibe_server.train.mposer import load_mposer, train_mposer
from vibe_server.train.synthetic_db import write_synthetic_db

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def test_shapes_one_latent_per_frame():
    assert MPoser().latent_size == 32  # the paper's z_t in R^32
    model = MPoser(hidden_size=16, latent_size=8)
    reconstruction, mu, logvar = model(torch.randn(3, 16, 69))
    assert reconstruction.shape == (3, 16, 69) and mu.shape == logvar.shape == (3, 16, 8)
    assert model.sample(2, 16).shape == (2, 16, 69)
    losses = mposer_vae_loss(reconstruction, torch.randn(3, 16, 69), mu, logvar)
    assert set(losses) == {"loss_recon", "loss_kl", "loss"} and losses["loss_kl"] >= 0


def test_reconstruction_error_falls_and_checkpoint_round_trips(tmp_path):
    db = write_synthetic_db(tmp_path / "db")
    config = parse_overrides(
        MPoserConfig,
        [
            f"--db_dir={db}",
            f"--out_dir={tmp_path / 'mposer'}",
            "--hidden_size=32",
            "--latent_size=8",
            "--batch_size=2",
            "--epochs=15",
            "--lr=1e-2",
            "--num_workers=0",
            "--device=cpu",
            "--val_fraction=0.34",
        ],
    )
    history = train_mposer(config)["history"]
    first, last = history[0]["train_recon"], history[-1]["train_recon"]
    print(
        f"mposer train reconstruction {first:.4f} -> {last:.4f}; val {history[0]['val_recon']:.4f} -> "
        f"{history[-1]['val_recon']:.4f}"
    )
    assert last < 0.7 * first

    model = load_mposer(tmp_path / "mposer" / "mposer.pth.tar")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.latent_size == 8

    config.epochs = 16  # resumes: only one more epoch runs
    assert len(train_mposer(config)["history"]) == 1


def test_prior_loss_gives_gradient_to_the_motion_only():
    prior = MPoser(hidden_size=16, latent_size=8).eval().requires_grad_(False)
    motion = torch.randn(2, 16, 69, requires_grad=True)
    loss = mposer_prior_loss(prior, motion)
    loss.backward()
    assert loss > 0 and motion.grad is not None and motion.grad.abs().sum() > 0
    assert all(p.grad is None for p in prior.parameters())


def test_training_vibe_with_the_mposer_prior(tmp_path, synthetic_bundle):
    """motion_prior=mposer: the loss has loss_mposer, no discriminator is built or saved."""
    import csv

    from vibe_server.train.config import TrainConfig
    from vibe_server.train.train import train

    train_mposer(mposer_config(tmp_path))  # writes the database to tmp_path / "db"
    db = tmp_path / "db"
    data = synthetic_bundle
    config = parse_overrides(
        TrainConfig,
        [
            f"--db_dir={db}",
            f"--model_data_dir={data}",
            f"--out_dir={tmp_path / 'vibe'}",
            "--motion_prior=mposer",
            f"--mposer_checkpoint={tmp_path / 'mp' / 'mposer.pth.tar'}",
            "--datasets_2d=",
            "--datasets_3d=mpii3d",
            "--dataset_val=none",
            "--batch_size=2",
            "--epochs=1",
            "--iters_per_epoch=2",
            "--num_workers=0",
            "--device=cpu",
            "--log_interval=1",
        ],
    )
    summary = train(config)
    assert "loss_mposer" in summary["last_losses"] and "d_m_disc_loss" not in summary["last_losses"]
    with open(tmp_path / "vibe" / "train_log.csv") as f:
        assert all(float(r["loss_mposer"]) > 0 for r in csv.DictReader(f))
    ckpt = torch.load(tmp_path / "vibe" / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["disc_motion_state_dict"] is None


def test_missing_or_wrong_checkpoint_is_explained(tmp_path):
    with pytest.raises(VibeError, match="not found"):
        load_mposer(tmp_path / "none.pth.tar")
    torch.save({"weights": 1}, tmp_path / "other.pth.tar")
    with pytest.raises(VibeError, match="not an MPoser checkpoint"):
        load_mposer(tmp_path / "other.pth.tar")


def mposer_config(tmp_path, *extra) -> MPoserConfig:
    db = tmp_path / "db"
    if not db.exists():
        write_synthetic_db(db)
    return parse_overrides(
        MPoserConfig,
        [
            f"--db_dir={db}",
            f"--out_dir={tmp_path / 'mp'}",
            "--hidden_size=16",
            "--latent_size=8",
            "--epochs=1",
            "--num_workers=0",
            "--device=cpu",
            *extra,
        ],
    )


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "2", "RANK": "0"}, {"WORLD_SIZE": "2", "RANK": "1"}])
def test_mposer_refuses_to_run_as_one_of_several_processes(tmp_path, monkeypatch, capsys, env):
    """MPoser has no code to share its work: under torchrun every process would train alone and try to
    hold the same out_dir."""
    from vibe_server.cli import main

    config = mposer_config(tmp_path)
    for name, value in {**env, "LOCAL_RANK": env["RANK"]}.items():
        monkeypatch.setenv(name, value)
    assert main(["train", "mposer", f"--db_dir={config.db_dir}", f"--out_dir={config.out_dir}", "--device=cpu"]) == 2
    assert capsys.readouterr().err == (
        "error: MPoser trains in one process, and this is one of several (torchrun: WORLD_SIZE=2, "
        f"RANK={env['RANK']}). Run 'vibe-mocap train mposer --key=value ...' without torchrun.\n"
    )
    assert not (tmp_path / "mp").exists()  # nothing made or written
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process is one process
    monkeypatch.setenv("RANK", "0")
    assert train_mposer(config)["history"]


def test_a_run_that_fails_before_writing_removes_the_out_dir_it_made(tmp_path, capsys):
    """A mistyped --db_dir: the one message, and no run folder left holding only a lock file; a folder
    that was there before the run stays."""
    from vibe_server.cli import main

    missing_db = tmp_path / "no-such-db"
    for out, existed in ((tmp_path / "new" / "mp", False), (tmp_path / "old", True)):
        if existed:
            out.mkdir()
        argv = [f"--db_dir={missing_db}", f"--out_dir={out}", "--num_workers=0", "--device=cpu"]
        assert main(["train", "mposer", *argv]) == 2
        assert str(missing_db) in capsys.readouterr().err
        assert out.is_dir() == existed
    assert (tmp_path / "new").is_dir()  # only the run's own folder is removed, not its parents


def test_resuming_needs_the_same_model_settings_and_a_whole_checkpoint(tmp_path, capsys):
    from vibe_server.cli import main

    train_mposer(mposer_config(tmp_path))
    checkpoint = tmp_path / "mp" / "mposer.pth.tar"
    assert "mposer: 100%" in capsys.readouterr().err  # the epochs' progress bar
    with pytest.raises(
        VibeError, match=r"was trained with --latent_size=8, not --latent_size=4; use the same settings"
    ):
        train_mposer(mposer_config(tmp_path, "--latent_size=4", "--epochs=2"))
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    argv = [f"--db_dir={tmp_path / 'db'}", f"--out_dir={tmp_path / 'mp'}", "--hidden_size=16", "--latent_size=8"]
    assert main(["train", "mposer", *argv, "--epochs=2", "--num_workers=0", "--device=cpu"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: Cannot resume from '{checkpoint}': it is damaged, cut short")
        and "--resume=false" in err
    )
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "epoch, best, words",
    [
        ("3", 1.0, "it is not a checkpoint of 'vibe-mocap train mposer'"),
        (-1, 1.0, "it is not a checkpoint of 'vibe-mocap train mposer'"),
        (2, None, "it is not a checkpoint of 'vibe-mocap train mposer'"),
        (2, float("nan"), r"its best_val_loss \(nan\) is no loss .* so it is damaged"),
        (2, -1.0, r"its best_val_loss \(-1.0\) is no loss .* so it is damaged"),
    ],
)
def test_a_checkpoint_whose_epoch_or_best_loss_is_no_number_is_refused(tmp_path, epoch, best, words):
    """An epoch of '3' was taken as 3, and a best loss of None ended in a TypeError's traceback; one of
    NaN or below 0 was taken as it was (the log's best figure wrong from then on)."""
    train_mposer(mposer_config(tmp_path))
    checkpoint = tmp_path / "mp" / "mposer.pth.tar"
    ckpt = torch.load(checkpoint, weights_only=False)
    torch.save({**ckpt, "epoch": epoch, "best_val_loss": best}, checkpoint)
    with pytest.raises(VibeError, match=rf"{words}.*--resume=false"):
        train_mposer(mposer_config(tmp_path, "--epochs=5"))


def test_a_resumed_mposer_run_takes_a_changed_learning_rate(tmp_path):
    train_mposer(mposer_config(tmp_path))
    train_mposer(mposer_config(tmp_path, "--epochs=2", "--lr=0.003", "--lr_patience=7"))
    after = torch.load(tmp_path / "mp" / "mposer.pth.tar", weights_only=False)
    assert after["optimizer"]["param_groups"][0]["lr"] == 0.003 and after["scheduler"]["patience"] == 7


def test_a_finished_run_says_so_and_starting_over_keeps_the_old_log(tmp_path, caplog):
    import logging

    train_mposer(mposer_config(tmp_path))
    log_file = tmp_path / "mp" / "mposer_log.csv"
    old, old_checkpoint = log_file.read_text(), (tmp_path / "mp" / "mposer.pth.tar").read_bytes()
    with caplog.at_level(logging.INFO, logger="vibe_server.train"):
        assert train_mposer(mposer_config(tmp_path))["history"] == []
        assert "all 1 epochs are done" in caplog.text
        train_mposer(mposer_config(tmp_path, "--resume=false"))
    assert (tmp_path / "mp" / "mposer_log.prev.csv").read_text() == old
    assert (tmp_path / "mp" / "mposer.prev.pth.tar").read_bytes() == old_checkpoint
    assert len(log_file.read_text().splitlines()) == 2  # header + this run's epoch


def test_load_mposer_refuses_a_vibe_checkpoint_and_a_damaged_file(tmp_path, synthetic_bundle):
    with pytest.raises(VibeError, match="is not an MPoser checkpoint. It looks like a VIBE checkpoint"):
        load_mposer(synthetic_bundle / "vibe_model_wo_3dpw.pth.tar")
    train_mposer(mposer_config(tmp_path))
    data = (tmp_path / "mp" / "mposer.pth.tar").read_bytes()
    (tmp_path / "cut.pth.tar").write_bytes(data[:-200])
    with pytest.raises(VibeError, match="is not a readable MPoser checkpoint .*train mposer"):
        load_mposer(tmp_path / "cut.pth.tar")


def test_val_fraction_zero_holds_out_no_sequence():
    from vibe_server.train.mposer import split_by_sequence

    class Windows:
        names = ["a", "a", "b", "c", "c", "d"]

        def __len__(self):
            return len(self.names)

        def window_track(self, i):
            return self.names[i]

    train_set, val_set = split_by_sequence(Windows(), 0.0, seed=0)
    assert len(train_set) == 6 and len(val_set) == 0
    train_set, val_set = split_by_sequence(Windows(), 0.01, seed=0)
    assert len(val_set) >= 1  # any fraction more than 0 holds out at least one sequence


def test_a_loss_that_is_not_finite_stops_the_run(tmp_path, monkeypatch):
    from vibe_server.train import mposer as mposer_module

    def nan_loss(*args, **kwargs):
        nan = torch.tensor(float("nan"), requires_grad=True)
        return {"loss": nan, "loss_recon": nan, "loss_kl": nan}

    monkeypatch.setattr(mposer_module, "mposer_vae_loss", nan_loss)
    with pytest.raises(VibeError, match="The MPoser loss became nan at epoch 0; lower --lr or check the data"):
        train_mposer(mposer_config(tmp_path))
    assert not (tmp_path / "mp" / "mposer.pth.tar").exists()


HOSTILE_SETTINGS = {  # what a saved 'config' may hold instead of the settings the trainer writes
    "a list": ["hidden_size", 512],
    "a huge size": {"hidden_size": 16384},  # ~19 GB of GRU weights, were it built from this
    "a size as text": {"hidden_size": "512"},
    "a device that is not there": {"device": "tpu", "latent_size": 4},
}


@pytest.mark.parametrize("settings", list(HOSTILE_SETTINGS))
def test_the_prior_is_built_from_its_weights_never_from_its_saved_settings(tmp_path, settings):
    path = tmp_path / "mposer.pth.tar"
    weights = MPoser(hidden_size=16, latent_size=8, num_layers=1).state_dict()
    torch.save({"model": weights, "config": HOSTILE_SETTINGS[settings]}, path)
    prior = load_mposer(path)
    assert (prior.encoder_gru.hidden_size, prior.latent_size, prior.decoder_gru.num_layers) == (16, 8, 1)
    assert all(torch.equal(prior.state_dict()[k], v) for k, v in weights.items())

    torch.save({"model": {}, "config": HOSTILE_SETTINGS[settings]}, path)
    with pytest.raises(VibeError, match=r"is not an MPoser checkpoint: it holds no MPoser weights \('model'\)\. Pass"):
        load_mposer(path)


def test_weights_that_claim_more_than_the_file_holds_are_refused(tmp_path):
    path = tmp_path / "mposer.pth.tar"
    weights = MPoser(hidden_size=16, latent_size=8).state_dict()
    weights["encoder_gru.weight_ih_l0"] = torch.zeros(1).expand(3 * 100_000, 69)  # one number, a huge shape
    torch.save({"model": weights, "config": {"hidden_size": 16, "latent_size": 8}}, path)
    with pytest.raises(
        VibeError, match=r"its 'model' holds tensors of \d+ bytes in all, more than the file's \d+ \(an altered file\)"
    ):
        load_mposer(path)
    weights["encoder_gru.weight_ih_l0"] = torch.zeros(48, 70)  # one input too many
    torch.save({"model": weights}, path)
    wrong = r"its weights do not fit together: 1 with the wrong shape \(e\.g\. encoder_gru\.weight_ih_l0 \(48, 70\)"
    with pytest.raises(VibeError, match=wrong):
        load_mposer(path)
    weights["encoder_gru.weight_ih_l0"] = torch.full((48, 69), float("nan"))
    torch.save({"model": weights}, path)
    with pytest.raises(VibeError, match="some of its weights are not finite numbers"):
        load_mposer(path)


def test_weights_without_values_are_refused_in_words(tmp_path):
    """A meta tensor (a shape, no values) of the right shape: checking its values raised torch's
    'Tensor.item() cannot be called on meta tensors'."""
    path = tmp_path / "mposer.pth.tar"
    weights = MPoser(hidden_size=16, latent_size=8).state_dict()
    weights["encoder_gru.weight_ih_l0"] = torch.empty(48, 69, device="meta")
    torch.save({"model": weights}, path)
    with pytest.raises(VibeError, match=r"its 'model' holds a tensor on the 'meta' device \(shapes without values\)"):
        load_mposer(path)


def test_training_vibe_with_a_hostile_prior_is_one_message(tmp_path, synthetic_bundle, capsys):
    from vibe_server.cli import main

    db = write_synthetic_db(tmp_path / "db")
    prior = tmp_path / "prior.pth.tar"
    torch.save({"model": {}, "config": HOSTILE_SETTINGS["a list"]}, prior)
    argv = [f"--db_dir={db}", f"--model_data_dir={synthetic_bundle}", f"--out_dir={tmp_path / 'vibe'}"]
    argv += ["--motion_prior=mposer", f"--mposer_checkpoint={prior}", "--num_workers=0", "--device=cpu"]
    assert main(["train", "vibe", *argv]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {prior} is not an MPoser checkpoint: it holds no MPoser weights ('model'). Pass the "
        "mposer.pth.tar that 'vibe-mocap train mposer' writes as --mposer_checkpoint.\n"
    )


def test_with_no_sequence_held_out_no_validation_loss_is_logged(tmp_path, caplog):
    """The training loss was logged as the validation loss (val_* columns equal to train_*)."""
    import csv
    import logging
    import math

    with caplog.at_level(logging.INFO, logger="vibe_server"):
        history = train_mposer(mposer_config(tmp_path, "--val_fraction=0", "--epochs=2"))["history"]
    assert all(math.isnan(row["val_loss"]) and math.isfinite(row["train_loss"]) for row in history)
    with open(tmp_path / "mp" / "mposer_log.csv") as f:
        assert [row["val_loss"] for row in csv.DictReader(f)] == ["nan", "nan"]
    assert "val n/a" in caplog.text


@pytest.mark.parametrize("names, held_out", [(["a", "b"], 1), (["a", "b", "b", "c"], 2), (["a", "a"], 0)])
def test_a_large_val_fraction_keeps_one_sequence_to_train_on(names, held_out, caplog):
    """--val_fraction=0.9 of 2 or 3 sequences held out every one: the run trained on nothing, logged a
    loss of 0 and saved an untrained prior."""
    from vibe_server.train.mposer import split_by_sequence

    class Windows:
        def __len__(self):
            return len(names)

        def window_track(self, i):
            return names[i]

    train_set, val_set = split_by_sequence(Windows(), 0.9, seed=0)
    assert len({names[i] for i in val_set.indices}) == held_out and len(train_set) >= 1
    assert ("none can be held out for validation" in caplog.text) == (held_out == 0)

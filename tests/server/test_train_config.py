"""Training settings are range-checked where the config is made, so the command line and code both get
one clear message instead of a traceback deep in torch."""

import dataclasses

import pytest

from vibe_blender.core.errors import VibeError
from vibe_server.train.config import RANGES, MPoserConfig, TrainConfig, parse_overrides


@pytest.mark.parametrize(
    "setting",
    [
        "--batch_size=0",
        "--batch_size=-4",
        "--seqlen=0",
        "--data_2d_ratio=2",
        "--data_2d_ratio=-0.1",
        "--gen_lr=nan",
        "--gen_lr=inf",
        "--disc_lr=-1e-4",
        "--gen_wd=-1",
        "--kp_2d_w=-300",
        "--d_motion_w=nan",
        "--lr_factor=1",
        "--lr_factor=0",
        "--disc_attention_dropout=1",
        "--log_interval=0",
        "--disc_update_steps=0",
        "--iters_per_epoch=0",
        "--epochs=0",
        "--motion_batch_size=0",
        "--val_batch_size=0",
        "--num_workers=-1",
        "--lr_patience=-1",
        "--seed=-1",
        "--disc_layers=0",
        "--abort_pa_mpjpe_mm=nan",
    ],
)
def test_out_of_range_training_settings_are_refused(setting):
    flag = setting.split("=")[0]
    with pytest.raises(VibeError, match=f"^{flag}=.* is out of range: it must be .*default {flag}="):
        parse_overrides(TrainConfig, [setting])


@pytest.mark.parametrize(
    "setting", ["--val_fraction=1", "--latent_size=0", "--hidden_size=0", "--kl_w=nan", "--lr=-1", "--batch_size=0"]
)
def test_out_of_range_mposer_settings_are_refused(setting):
    with pytest.raises(VibeError, match="is out of range"):
        parse_overrides(MPoserConfig, [setting])


def test_edges_of_the_ranges_are_accepted():
    config = parse_overrides(
        TrainConfig, ["--datasets_2d=", "--batch_size=1", "--gen_lr=0", "--data_2d_ratio=1", "--lr_patience=0"]
    )
    assert config.batch_split() == (0, 1)  # no 2D sets: the whole batch is 3D
    assert parse_overrides(MPoserConfig, ["--val_fraction=0", "--num_workers=0"]).val_fraction == 0


def test_every_numeric_setting_has_a_range():
    for config_class in (TrainConfig, MPoserConfig):
        for f in dataclasses.fields(config_class):
            if type(f.default) in (int, float):
                assert f.name in RANGES, f"{config_class.__name__}.{f.name} has no range"
                assert f.default in RANGES[f.name], f.name  # the defaults themselves are valid


def test_batch_split_needs_one_sequence_of_each_kind():
    assert TrainConfig().batch_split() == (19, 13)  # the original's 32 x 0.6
    for setting in (["--batch_size=1"], ["--data_2d_ratio=1"], ["--data_2d_ratio=0"]):
        with pytest.raises(VibeError, match=r"sequences per step; each needs at least one.*--datasets_2d="):
            parse_overrides(TrainConfig, setting)


def test_choices_and_discriminator_sizes_are_checked():
    with pytest.raises(VibeError, match="--motion_prior must be one of discriminator, mposer, none; got 'gan'"):
        parse_overrides(TrainConfig, ["--motion_prior=gan"])
    with pytest.raises(VibeError, match="--disc_feature_pool must be one of attention, concat, last"):
        parse_overrides(TrainConfig, ["--disc_feature_pool=max"])
    with pytest.raises(VibeError, match="--disc_attention_size=1024 must equal --disc_hidden=64"):
        parse_overrides(TrainConfig, ["--disc_hidden=64"])
    parse_overrides(TrainConfig, ["--disc_hidden=64", "--disc_feature_pool=concat"])
    parse_overrides(TrainConfig, ["--disc_hidden=64", "--motion_prior=none"])  # no discriminator is built


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "vibe", "--batch_size=0"], "--batch_size=0 is out of range"),
        (["train", "vibe", "--gen_lr=nan"], "--gen_lr=nan is out of range"),
        (["train", "vibe", "--data_2d_ratio=2"], "--data_2d_ratio=2.0 is out of range"),
        (["train", "mposer", "--seqlen=0"], "--seqlen=0 is out of range"),
    ],
)
def test_train_command_prints_one_line_for_a_bad_number(argv, message, capsys):
    from vibe_server.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and "Traceback" not in err and err.count("\n") == 1


def test_a_tilde_in_a_path_setting_is_the_home_folder(monkeypatch, tmp_path):
    """Settings are written --key=value, after which a shell does not expand '~': before, --out_dir=~/runs
    made a folder named '~' in the working folder."""
    from vibe_server.train.config import PATH_SETTINGS, MPoserConfig, TrainConfig, parse_overrides

    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse_overrides(TrainConfig, ["--out_dir=~/runs/a", "--db_dir=~/db", "--pretrained=~/vibe.pth.tar"])
    assert (config.out_dir, config.db_dir) == (str(tmp_path / "runs/a"), str(tmp_path / "db"))
    assert config.pretrained == str(tmp_path / "vibe.pth.tar")
    assert parse_overrides(MPoserConfig, ["--out_dir=~/m"]).out_dir == str(tmp_path / "m")
    assert parse_overrides(TrainConfig, ["--out_dir=runs/~a"]).out_dir == "runs/~a"  # only a leading '~'
    paths = {
        f.name
        for config_class in (TrainConfig, MPoserConfig)
        for f in dataclasses.fields(config_class)
        if f.name.endswith(("_dir", "checkpoint")) or f.name == "pretrained"
    }
    assert paths == set(PATH_SETTINGS)

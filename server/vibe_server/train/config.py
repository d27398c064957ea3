"""Training settings: one dataclass per trainer, official VIBE values as defaults (`configs/config.yaml`),
overridden from the command line with `--key=value` and saved into every checkpoint.

    config = parse_overrides(TrainConfig, ["--batch_size=16", "--motion_prior=mposer"])
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from vibe_blender.core.errors import VibeError

from ..data.loading import DEVICE_NAME
from ..value_range import ValueRange
from .dataset_specs import DATASETS


@dataclass
class RunConfig:
    """The settings every training run has (one definition; each trainer may change a default)."""

    COMMAND: ClassVar[str] = "train"  # how the user runs this trainer (for messages)
    db_dir: str = "data/vibe_db"  # the preprocessed database files (`data/vibe_db` in the original)
    seqlen: int = 16  # T, frames per window
    batch_size: int = 32  # sequences per step, per process (torchrun rank)
    num_workers: int = 8  # DataLoader worker processes
    lr_patience: int = 5  # ReduceLROnPlateau on the validation value
    epochs: int = 30
    out_dir: str = "runs/vibe"  # checkpoints and CSV logs
    resume: bool = True  # continue from the checkpoint in out_dir when it exists
    device: str = "auto"  # auto = cuda when available (one GPU per rank), else cpu; or cpu, cuda, cuda:N
    seed: int = 0
    log_interval: int = 10  # log every this many steps (VIBE) or epochs (MPoser)

    def __post_init__(self) -> None:
        # every config (command line or code) is checked once here, before any work starts
        for f in dataclasses.fields(self):
            check_setting(f.name, getattr(self, f.name), default=f.default)
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Settings that are valid alone but not together (a trainer adds its own)."""


@dataclass
class TrainConfig(RunConfig):
    """The VIBE generator + motion discriminator run. Batch sizes are per process (torchrun rank).
    Also the fields of :class:`RunConfig` (db_dir: insta_train_db.h5, mpii3d_train_db.pt, amass_db.pt, ...;
    batch_size: 2D part int(batch * ratio), 3D the rest; out_dir: checkpoint.pth.tar,
    model_best.pth.tar, train_log.csv)."""

    COMMAND: ClassVar[str] = "train vibe"
    # --- data ---
    datasets_2d: str = "insta"  # comma list of: insta, pennaction, posetrack ('' = none)
    datasets_3d: str = "mpii3d"  # comma list of: mpii3d, 3dpw, h36m
    dataset_val: str = "3dpw"  # per-epoch validation set (its 'val' file), or 'none'
    data_2d_ratio: float = 0.6  # 19 + 13 with the defaults
    motion_batch_size: int = 32  # AMASS sequences per step (real motion for D_M)
    val_batch_size: int = 32
    # Fixes for the original's data bugs (set false to reproduce the original exactly):
    fix_pennaction_joints: bool = True  # PennAction db is in common-14 order; the original read it as 'pennaction'
    match_keypoint_crop: bool = True  # normalise 2D keypoints with the crop scale the features were made
    # with (MPI-INF-3DHP/PennAction/PoseTrack: 1.3) instead of a fixed 1.2
    # --- model ---
    model_data_dir: str = ""  # SMPL + SPIN bundle ('' = $VIBE_DATA_DIR or the platform default)
    init_from_spin: bool = True  # regressor starts from the SPIN checkpoint's head (as released)
    pretrained: str = ""  # a VIBE checkpoint to start the generator from (gen_state_dict)
    # --- motion prior: 'discriminator' (VIBE), 'mposer' (ablation; D_M off) or 'none' ---
    motion_prior: str = "discriminator"
    disc_hidden: int = 1024
    disc_layers: int = 2
    disc_feature_pool: str = "attention"  # 'attention' (release) or 'concat' (paper: avg + max pooling)
    disc_attention_size: int = 1024
    disc_attention_layers: int = 3
    disc_attention_dropout: float = 0.2
    disc_update_steps: int = 1  # D steps every this many G steps
    mposer_checkpoint: str = ""  # written by `train mposer` (needed when motion_prior=mposer)
    # --- loss weights ---
    kp_2d_w: float = 300.0
    kp_3d_w: float = 300.0
    pose_w: float = 60.0
    shape_w: float = 0.06
    d_motion_w: float = 0.5
    mposer_w: float = 0.5
    # --- optimisation ---
    gen_lr: float = 5e-5
    gen_wd: float = 0.0
    disc_lr: float = 1e-4
    disc_wd: float = 1e-4
    lr_factor: float = 0.1
    iters_per_epoch: int = 500
    abort_pa_mpjpe_mm: float = 80.0  # stop when validation PA-MPJPE exceeds this (0 = never)
    # --- system ---
    tensorboard: bool = True  # also write TensorBoard events when it is installed

    def batch_split(self) -> tuple[int, int]:
        """-> (2D, 3D) sequences per step: int(batch_size * data_2d_ratio) 2D (0 without 2D sets), the rest 3D."""
        batch_2d = int(self.batch_size * self.data_2d_ratio) if split_list(self.datasets_2d) else 0
        return batch_2d, self.batch_size - batch_2d

    def _check_combinations(self) -> None:
        self._check_dataset_names()
        batch_2d, batch_3d = self.batch_split()
        if min(batch_2d, batch_3d) < 1 and split_list(self.datasets_2d):
            raise VibeError(
                f"--batch_size={self.batch_size} with --data_2d_ratio={self.data_2d_ratio} gives {batch_2d} 2D and "
                f"{batch_3d} 3D sequences per step; each needs at least one. Raise --batch_size, change "
                "--data_2d_ratio, or train without 2D data (--datasets_2d=)."
            )
        if (
            self.motion_prior == "discriminator"
            and self.disc_feature_pool == "attention"
            and self.disc_attention_size != self.disc_hidden
        ):  # attention pools the GRU's hidden states
            raise VibeError(
                f"--disc_attention_size={self.disc_attention_size} must equal --disc_hidden={self.disc_hidden} "
                "with --disc_feature_pool=attention; set both to the same value."
            )

    def _check_dataset_names(self) -> None:
        """Every dataset name is known and of its list's kind; the validation set has a 'val' file."""

        def unknown(name: str, flag: str, names: list[str]) -> VibeError:
            return VibeError(f"Unknown dataset {name!r} in {flag}; choose from {', '.join(names)}.")

        names_3d = split_list(self.datasets_3d)
        if not names_3d:
            raise VibeError("Training needs at least one 3D dataset (--datasets_3d), as the original does.")
        for kind, names in (("2d", split_list(self.datasets_2d)), ("3d", names_3d)):
            allowed = [n for n, spec in DATASETS.items() if spec.kind == kind]
            for name in names:
                if name not in DATASETS:
                    raise unknown(name, f"--datasets_{kind}", allowed)
                if DATASETS[name].kind != kind:
                    raise VibeError(
                        f"Dataset {name!r} is not a {kind.upper()} dataset; move it to "
                        f"--datasets_{DATASETS[name].kind}."
                    )
                if names.count(name) > 1:  # its windows would be loaded, and drawn, twice as often
                    raise VibeError(f"Dataset {name!r} is named more than once in --datasets_{kind}; name it once.")
        self.dataset_val = dataset_val_name(self.dataset_val)  # saved, and compared when resuming, as one spelling
        if self.dataset_val != "none":
            with_val = [n for n, spec in DATASETS.items() if "val" in spec.files]
            if self.dataset_val not in with_val:
                raise unknown(self.dataset_val, "--dataset_val", with_val + ["none"])


def dataset_val_name(text: str) -> str:
    """--dataset_val as it is kept: 'none' however it was typed (None, NONE, ...), a dataset as given."""
    return "none" if text.lower() == "none" else text


@dataclass
class MPoserConfig(RunConfig):
    """The MPoser VAE on AMASS windows (VPoser V02_05 values where VIBE gives none); db_dir holds
    amass_db.pt. Also the fields of :class:`RunConfig`, some with their own defaults here."""

    COMMAND: ClassVar[str] = "train mposer"
    batch_size: int = 256
    num_workers: int = 4
    epochs: int = 100
    out_dir: str = "runs/mposer"
    log_interval: int = 50
    val_fraction: float = 0.05  # AMASS sequences held out for validation (by vid_name); 0 = none
    hidden_size: int = 512
    latent_size: int = 32
    num_layers: int = 2
    reconstruction_w: float = 4.0
    kl_w: float = 0.005
    lr: float = 1e-3
    weight_decay: float = 1e-5


ConfigT = TypeVar("ConfigT", bound=RunConfig)


_COUNT, _POSITIVE, _NON_NEGATIVE = ValueRange(ge=0), ValueRange(ge=1), ValueRange(ge=0.0)
# Every int and float setting of the trainers (a name means the same in each), from its meaning:
RANGES = {
    **dict.fromkeys(("seqlen", "batch_size", "epochs", "log_interval", "iters_per_epoch"), _POSITIVE),
    **dict.fromkeys(("motion_batch_size", "val_batch_size", "disc_update_steps"), _POSITIVE),
    **dict.fromkeys(("disc_hidden", "disc_layers", "disc_attention_size", "disc_attention_layers"), _POSITIVE),
    **dict.fromkeys(("hidden_size", "latent_size", "num_layers"), _POSITIVE),
    **dict.fromkeys(("num_workers", "lr_patience"), _COUNT),
    "seed": ValueRange(ge=0, le=2**32 - 1),  # numpy refuses negative seeds; 32 bits suit every generator
    "data_2d_ratio": ValueRange(ge=0.0, le=1.0),  # with 2D sets, batch_split also needs one sequence of each kind
    "disc_attention_dropout": ValueRange(ge=0.0, lt=1.0),  # 1 would drop every attention input
    "val_fraction": ValueRange(ge=0.0, lt=1.0),  # 1 would leave nothing to train on
    **dict.fromkeys(("kp_2d_w", "kp_3d_w", "pose_w", "shape_w", "d_motion_w", "mposer_w"), _NON_NEGATIVE),
    **dict.fromkeys(("reconstruction_w", "kl_w"), _NON_NEGATIVE),
    **dict.fromkeys(("gen_lr", "gen_wd", "disc_lr", "disc_wd", "lr", "weight_decay"), _NON_NEGATIVE),
    "lr_factor": ValueRange(gt=0.0, lt=1.0),  # the learning rate shrinks, never to 0
    "abort_pa_mpjpe_mm": _NON_NEGATIVE,  # 0 = never
}
CHOICES = {
    "motion_prior": ("discriminator", "mposer", "none"),
    "disc_feature_pool": ("attention", "concat", "last"),
}


def check_setting(
    name: str, value: object, flag: str | None = None, default: object = None, value_range: ValueRange | None = None
) -> None:
    """Raises VibeError when `value` is outside what setting `name` (a RANGES or CHOICES key) may take.
    flag: how the user gave it (default --name); default: a value to suggest; value_range: the range of
    a command's own option, instead of the setting's."""
    value_range = value_range or RANGES.get(name)
    flag = flag or f"--{name}"
    example = f" (default {flag}={default})" if default is not None else ""
    if name in CHOICES and value not in CHOICES[name]:
        raise VibeError(f"{flag} must be one of {', '.join(CHOICES[name])}; got {value!r}{example}.")
    if name == "device" and not DEVICE_NAME.fullmatch(str(value)):  # by name: resolve_device checks the GPU
        raise VibeError(f"Unknown device {value!r} ({flag}); use auto, cpu, cuda or cuda:N{example}.")
    if value_range is not None and value not in value_range:
        number = "a whole number" if isinstance(value, int) else "a finite number"
        raise VibeError(f"{flag}={value} is out of range: it must be {number}, {value_range.words()}{example}.")


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
PATH_SETTINGS = ("db_dir", "out_dir", "model_data_dir", "pretrained", "mposer_checkpoint")
FOLDERS_NEEDED = ("db_dir", "out_dir")  # '' would be the current folder (the others take '' as none, or the default)


def _convert(name: str, kind: type, text: str):
    if kind is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise VibeError(f"--{name} takes true or false; got {text!r}.")
    try:
        return kind(text)
    except ValueError:
        raise VibeError(f"--{name} takes a {kind.__name__}; got {text!r}.") from None


def parse_overrides(config_class: type[ConfigT], argv: list[str]) -> ConfigT:
    """['--key=value', ...] -> config_class instance with those fields replaced (types checked)."""
    kinds = {f.name: type(f.default) for f in dataclasses.fields(config_class)}
    values = {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise VibeError(f"Settings are given as --key=value; got {arg!r}.")
        key, text = arg[2:].split("=", 1)
        if key not in kinds:
            close = difflib.get_close_matches(key, kinds, n=3)
            hint = f" Did you mean {', '.join('--' + c for c in close)}?" if close else ""
            raise VibeError(
                f"Unknown setting --{key}.{hint} 'vibe-mocap {config_class.COMMAND} --help' lists every "
                "setting and its default."
            )
        if key in PATH_SETTINGS:  # a shell leaves '~' after '=' as it is
            text = os.path.expanduser(text)
        if not text and key in FOLDERS_NEEDED:
            raise VibeError(
                f"--{key}= is empty (a shell variable that is not set?); give a folder, or leave it out for "
                f"the default ({getattr(config_class, key)})."
            )
        values[key] = _convert(key, kinds[key], text)
    return config_class(**values)


def split_list(text: str) -> list[str]:
    """'insta, mpii3d' -> ['insta', 'mpii3d']; '' or 'none' -> []."""
    return [] if text.strip().lower() in ("", "none") else [s.strip() for s in text.split(",") if s.strip()]

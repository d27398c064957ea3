"""``vibe-mocap train {vibe,mposer} [--key=value ...]``: train the VIBE generator (with the motion
discriminator or the MPoser prior) or the MPoser VAE. Settings are the fields of
``vibe_server.train.config.TrainConfig`` / ``MPoserConfig``; see docs/training.md."""

from __future__ import annotations

import argparse
import dataclasses

from vibe_blender.core.errors import VibeError

from ..train.config import MPoserConfig, TrainConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train VIBE (or the MPoser prior) on the preprocessed database files",
        description="Settings are given as --key=value (e.g. --db_dir=data/vibe_db --batch_size=32); "
        "'vibe-mocap train vibe --help' and 'vibe-mocap train mposer --help' list every setting with its "
        "default. For several GPUs run: torchrun --standalone --nproc_per_node=N "
        "-m vibe_server train vibe --key=value ...",
    )
    p.add_argument(  # optional to argparse, so that its absence is said in our words (run())
        "what", nargs="?", choices=("vibe", "mposer"), help="vibe: the generator; mposer: the motion VAE"
    )
    p.add_argument(
        "settings", nargs=argparse.REMAINDER, help="--key=value settings ('vibe-mocap train vibe --help' lists them)"
    )
    p.set_defaults(run=run, unknown_args_into="settings")  # `train --lr=1` (no model named) reaches run()


def run(args: argparse.Namespace) -> int:
    if args.what is None:
        raise VibeError(
            "Name what to train: 'vibe-mocap train vibe --key=value ...' (the generator) or 'vibe-mocap train "
            "mposer --key=value ...' (the motion prior); 'vibe-mocap train vibe --help' lists the settings."
        )
    if any(a in ("-h", "--help") for a in args.settings):
        config_class = TrainConfig if args.what == "vibe" else MPoserConfig
        print(f"vibe-mocap train {args.what} [--key=value ...]; settings and defaults ({config_class.__name__}):")
        for f in dataclasses.fields(config_class):
            print(f"  --{f.name}={f.default}")
        return 0
    if args.what == "vibe":
        from ..train.train import main  # start-up: torch loads only when a run really starts
    else:
        from ..train.mposer import main  # start-up: torch loads only when a run really starts
    return main(args.settings)

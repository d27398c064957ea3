"""Arguments several commands take, declared once so that each reads the same in every ``--help``."""

from __future__ import annotations

import argparse

from ..data.loading import ENV_VAR

DATA_DIR_DEFAULT = f"${ENV_VAR}, then the user data folder"


def add_data_dir_argument(p: argparse.ArgumentParser, holding: str = "", default: str = DATA_DIR_DEFAULT) -> None:
    """``--data-dir``: the model-data folder (``holding``: what the command reads there)."""
    what = f"model-data folder: {holding}" if holding else "model-data folder"
    p.add_argument("--data-dir", help=f"{what} (default: {default})")


def add_device_argument(p: argparse.ArgumentParser, default: str = "auto", help: str = "") -> None:
    """``--device``: auto (a GPU where there is one, else the CPU), cpu, cuda or cuda:N."""
    choices = "auto, cpu, cuda or cuda:N" if default == "auto" else "cpu, cuda or cuda:N"
    p.add_argument("--device", default=default, help=help or f"{choices} (default {default})")

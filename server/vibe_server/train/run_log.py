"""What a training run reports: the CSV logs in its out_dir and the console log (``logging`` + tqdm)."""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path
from typing import NoReturn

log = logging.getLogger("vibe_server.train")


def append_csv(path: Path, columns: tuple, row: dict) -> None:
    """Append ``row`` (missing columns empty, extra keys ignored) to the CSV at ``path``; header when new."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in columns})


def show_progress_on_console() -> None:
    """Training messages on stdout (tqdm's bars are on stderr), one line each, unless logging is already
    configured (the CLI and torchrun entry points call this)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(message)s", stream=sys.stdout)
    log.setLevel(logging.INFO)


def refuse_to_run_as_a_script(what: str, *, torchrun: bool = True) -> NoReturn:
    """For ``python -m vibe_server.train.<module>``: training runs through the command line (which
    reports every error in one line), the one entry point; the modules below it may not import it.
    ``torchrun``: whether the trainer runs under torchrun too (then its command there is shown)."""
    under_torchrun = (
        f" (under torchrun: 'torchrun ... -m vibe_server train {what} --key=value ...')" if torchrun else ""
    )
    print(
        f"error: training runs through the command line: 'vibe-mocap train {what} --key=value ...'{under_torchrun}.",
        file=sys.stderr,
    )
    sys.exit(2)

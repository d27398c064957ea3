"""What a training run reports: the CSV logs in its out_dir and the console log (``logging`` + tqdm)."""

from __future__ import annotations

import csv
import io
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from vibe_blender.core.atomic_file import atomic_write

log = logging.getLogger("vibe_server.train")


def append_csv(path: Path, columns: tuple, row: dict) -> None:
    """Append ``row`` (missing columns empty, extra keys ignored) to the CSV at ``path``; header when new."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in columns})


def drop_rows_from_epoch(path: Path, epoch: int) -> int:
    """Remove the rows of the CSV log at ``path`` whose ``epoch`` is ``epoch`` or later (a resumed run
    runs again an epoch that was stopped part-way, and would log its steps twice); returns how many.
    The file is rewritten only when it holds such rows, atomically."""
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    kept = [row for row in rows if not _epoch_at_least(row.get("epoch"), epoch)]
    if columns is None or len(kept) == len(rows):
        return 0

    def write(out) -> None:
        text = io.TextIOWrapper(out, newline="")
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")  # a row longer than the header
        writer.writeheader()
        writer.writerows(kept)
        text.flush()
        text.detach()

    atomic_write(path, write)
    return len(rows) - len(kept)


def forget_logged_steps(out_dir: Path, names: tuple[str, ...], start_epoch: int, say: Callable[[str], None]) -> None:
    """A resumed run's logs without the rows of the epoch it runs again (and any later), said when any.
    A log that cannot be read as CSV text is set aside whole (nothing lost) and a new one started."""
    for name in names:
        try:
            dropped = drop_rows_from_epoch(out_dir / name, start_epoch)
        except (UnicodeDecodeError, csv.Error) as err:
            kept = unused_name(out_dir / name, "damaged")
            (out_dir / name).rename(kept)
            say(f"{name} is damaged ({err}): kept as {kept.name}; a new {name} is started")
            continue
        if dropped:
            say(f"{name}: {dropped} row(s) of epoch {start_epoch}, stopped part-way, removed: it runs again")


def unused_name(path: Path, tag: str) -> Path:
    """``path`` tagged before its suffix, ``name.tag.csv`` (``name.tag2.csv``, ... when that is taken)."""
    return tagged(path, unused_tag([path], tag))


def unused_tag(paths: list[Path], tag: str) -> str:
    """``tag`` (``tag2``, ... when one of them is taken) that no path of ``paths`` has yet."""
    n = 1
    while any(tagged(path, f"{tag}{n if n > 1 else ''}").exists() for path in paths):
        n += 1
    return f"{tag}{n if n > 1 else ''}"


def tagged(path: Path, tag: str) -> Path:
    """``name.tag.csv``; a checkpoint's ``.pth.tar`` counts as one suffix: ``checkpoint.tag.pth.tar``."""
    suffix = ".pth.tar" if path.name.endswith(".pth.tar") else path.suffix
    return path.with_name(f"{path.name.removesuffix(suffix)}.{tag}{suffix}")


def _epoch_at_least(text: object, epoch: int) -> bool:
    try:
        return int(str(text)) >= epoch
    except ValueError:  # a row this trainer did not write: kept
        return False


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

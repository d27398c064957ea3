"""One overall progress bar for the batch plus one status line per worker (tqdm, on stderr); the
names in them go through ``shown_text.printable``."""

from __future__ import annotations

import sys

from tqdm import tqdm

from vibe_blender.core.shown_text import printable

ERROR_LINE_CHARS = 300  # of a failed video's error in its progress line


def finished_line(record: dict) -> str:
    """A finished video in one line: its key and what came of it (a failure's first line of error)."""
    if record["status"] == "done":
        return (
            f"done {record['input']}: {record['tracks']} track(s), {record['frames']} frames, {record['seconds']:.1f} s"
        )
    why = (record["error"] or "").strip().splitlines() or [""]
    return f"failed {record['input']}: {why[0][:ERROR_LINE_CHARS]}"


class BatchProgress:
    """``advance(record)`` per finished video; ``worker_status(worker, text)`` for what a worker does now;
    ``clear_workers()`` when the workers are replaced."""

    def __init__(self, total: int, *, skipped: int = 0, enabled: bool | None = None):
        self._tqdm = tqdm
        self._disable = not sys.stderr.isatty() if enabled is None else not enabled
        # stderr is a log (nohup, a scheduler, CI), not a terminal: a line per finished video instead of bars
        self._log_lines = enabled is None and self._disable
        self._finished, self._total = skipped, total + skipped
        self.bar = tqdm(
            total=total + skipped,
            initial=skipped,
            desc="batch",
            unit="video",
            file=sys.stderr,
            disable=self._disable,
            dynamic_ncols=True,
        )
        self.failed = 0
        self._lines: dict[str, object] = {}

    def advance(self, record: dict) -> None:
        self.failed += record["status"] != "done"
        self.bar.set_postfix_str(f"{self.failed} failed" if self.failed else "", refresh=False)
        self.bar.update(1)
        self._finished += 1
        if self._log_lines:
            print(printable(f"[{self._finished}/{self._total}] {finished_line(record)}"), file=sys.stderr, flush=True)

    def worker_status(self, worker: str, text: str) -> None:
        line = self._lines.get(worker)
        if line is None:
            line = self._lines[worker] = self._tqdm(
                total=0,
                position=len(self._lines) + 1,
                bar_format="{desc}",
                file=sys.stderr,
                disable=self._disable,
                leave=False,
            )
        line.set_description_str(printable(f"  {worker}: {text}"))  # the text names a video

    def clear_workers(self) -> None:
        """Remove the worker lines: the workers are gone (a replaced pool's new workers take their places)."""
        for line in self._lines.values():
            line.close()
        self._lines.clear()

    def close(self) -> None:
        for line in self._lines.values():
            line.close()
        self.bar.close()

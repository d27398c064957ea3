"""``OUTDIR/manifest.jsonl``: one JSON record per video, the newest one counts.

Every file the batch writes goes through ``vibe_blender.core.atomic_file`` (a temporary name in the
same folder, renamed into place), so a killed run leaves at most a ``.part`` file, never a half-written
file under a finished name; the next run removes them. The manifest is appended one line per
finished video by the one process that drives the batch; a line cut short by a kill is ignored when
reading, and ``compact`` rewrites the file (atomically) with one line per video. A record whose fields
are missing or of the wrong type counts as a damaged line: its video runs again.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from vibe_blender.core import safe_json
from vibe_blender.core.atomic_file import (
    ANY_NAME_HASH,
    PART_ID_LENGTH,
    PART_SUFFIX,
    atomic_write_bytes,
    leftover_part_names,
)
from vibe_blender.core.shown_text import printable

from .inputs import RESULT_SUFFIX, BatchItem, folded_name, output_key
from .names import LOCK_NAME, MANIFEST_NAME, SUMMARY_NAME

STATUSES = ("done", "failed")
STAMP_FIELDS = ("input_size", "input_mtime_ns")  # absent from manifests written before they existed
SETTINGS_FIELD = "settings"  # the fingerprint of what the result depends on (batch/settings.py); absent as above
# the file a Ray batch puts in OUTDIR for its actors to find there (``shared_probe_path``)
SHARED_PROBE_NAME = "vibe-batch-shared-probe"


# the temporary names of the files a batch writes: results, the manifest, the summary and the shared probe
BATCH_PARTS = leftover_part_names(
    ANY_NAME_HASH,
    rf"(?:.+{re.escape(RESULT_SUFFIX)}|{re.escape(MANIFEST_NAME)}|{re.escape(SUMMARY_NAME)}|{SHARED_PROBE_NAME})",
)


def shared_probe_path(output_dir: Path) -> Path:
    """A new name for the probe file in ``output_dir``: a temporary name of the batch's own, so that one a
    killed run left behind is deleted with the other leftovers (``remove_stale_parts``)."""
    return output_dir / f".{SHARED_PROBE_NAME}.{secrets.token_hex(PART_ID_LENGTH // 2)}{PART_SUFFIX}"


def remove_stale_parts(output_dir: Path) -> int:
    """Delete the temporary files a killed run left behind (only names of the batch's own: another
    program's ``.*.part`` file in OUTDIR is kept); returns how many. A subfolder with a lock file of its
    own is another batch's OUTDIR, maybe running now: its temporary files are that batch's, left alone."""
    removed = 0
    for dirpath, dirnames, filenames in os.walk(output_dir, followlinks=False):  # never outside OUTDIR
        dirnames[:] = [name for name in dirnames if not os.path.lexists(Path(dirpath) / name / LOCK_NAME)]
        for name in filenames:
            if BATCH_PARTS.fullmatch(name):
                (Path(dirpath) / name).unlink(missing_ok=True)
                removed += 1
    return removed


def _stamp_values(item: BatchItem) -> tuple[int | None, int | None]:
    return item.input_stamp or (None, None)


def make_record(
    item: BatchItem,
    status: str,
    *,
    tracks: int = 0,
    frames: int = 0,
    seconds: float = 0.0,
    error: str | None = None,
    worker: str = "",
    warnings: Iterable[str] = (),
) -> dict:
    """One manifest line. ``fps`` is video frames processed per second of wall time; ``warnings``:
    what the user should know of a done result (as in its meta), e.g. the detector it fell back to."""
    return {
        "input": item.key,
        "input_path": item.input_path,
        **dict(zip(STAMP_FIELDS, _stamp_values(item), strict=True)),
        "output": item.output_key if status == "done" else None,
        "status": status,
        "tracks": int(tracks),
        "frames": int(frames),
        "seconds": round(float(seconds), 3),
        "fps": round(frames / seconds, 2) if seconds > 0 else 0.0,
        "error": error,
        "warnings": list(warnings),
        "worker": worker,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# bounds of a record's numbers: a hand-edited 10**400 would overflow the float arithmetic of the checks
# and of the summary's totals
MAX_NUMBER = 2**53  # counts and seconds (exact as floats)
MAX_TIME_NS = 2**63  # a modification time in ns (the system's own is a 64-bit integer)


def _count(value: object) -> bool:
    return type(value) is int and 0 <= value < MAX_NUMBER  # bool is an int too, but no count


def _seconds(value: object) -> bool:
    return type(value) in (int, float) and 0 <= value < MAX_NUMBER  # (NaN and infinity fail the comparison)


def _count_or_none(value: object) -> bool:
    return value is None or _count(value)


def _whole_or_none(value: object) -> bool:
    # a modification time before 1970 is negative
    return value is None or (type(value) is int and -MAX_TIME_NS <= value < MAX_TIME_NS)


def _key(value: object) -> bool:
    """A video's key: a path with a file name ('/' or '.' has none, and makes no result name)."""
    return isinstance(value, str) and PurePosixPath(value).name != ""


def _text_or_none(value: object) -> bool:
    return value is None or isinstance(value, str)


RECORD_FIELDS = {  # field -> check of its value
    "input": _key,
    "input_path": lambda v: isinstance(v, str),
    "output": _text_or_none,
    "status": lambda v: v in STATUSES,
    "tracks": _count,
    "frames": _count,
    "seconds": _seconds,
    "fps": _seconds,
    "error": _text_or_none,
    "worker": lambda v: isinstance(v, str),
    "finished": lambda v: isinstance(v, str),
}


def record_problem(record: object) -> str | None:
    """Why ``record`` is not a manifest record (a field missing or of the wrong type, or an ``output``
    other than its own video's result), or None when it is one."""
    if not isinstance(record, dict):
        return "it is not a JSON object"
    for name, valid in RECORD_FIELDS.items():
        if name not in record or not valid(record[name]):
            return f"its '{name}' is missing or of the wrong type"
    if any(name in record for name in STAMP_FIELDS):
        for name, valid in zip(STAMP_FIELDS, (_count_or_none, _whole_or_none), strict=True):
            if name not in record or not valid(record[name]):
                return f"its '{name}' is missing or of the wrong type"
    if not isinstance(record.get(SETTINGS_FIELD, ""), str):
        return f"its '{SETTINGS_FIELD}' is of the wrong type"
    warnings = record.get("warnings", [])  # absent from the records of earlier versions
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        return "its 'warnings' is not a list of texts"
    expected = output_key(record["input"]) if record["status"] == "done" else None
    if record["output"] != expected:
        return f"its 'output' is not {expected!r}"
    return None


class Manifest:
    """The records of ``OUTDIR/manifest.jsonl`` by input key (the newest wins)."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / MANIFEST_NAME
        self.records: dict[str, dict] = {}
        self.written: dict[str, str] = {}  # folded result name -> key of the newest done line naming it
        self._done: dict[str, str] = {}  # folded result name -> key of the done record in ``records`` naming it
        self.damaged_lines = 0
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = safe_json.loads(line)
                except ValueError:  # a line cut short by a kill (or nested too deep to parse safely)
                    self.damaged_lines += 1
                    continue
                if record_problem(record) is None:
                    self._keep(record)
                else:  # hand-edited, or written by another program: its video runs again
                    self.damaged_lines += 1
                    self._note_written(record)  # its result file is still the batch's own

    def _keep(self, record: dict) -> None:
        """``record`` becomes its video's newest. A done one also drops the done record of any other video
        with the same result file (folded as the file systems that ignore case compare names: 'clip.mp4'
        then 'clip.mov', or 'Clip.mp4'): that file now holds this video's result, so the other one is not
        finished. Reading the lines in the order they were written drops the same records again."""
        self._note_written(record)
        key = record["input"]
        earlier = self.records.get(key)
        if (
            earlier is not None
            and earlier["status"] == "done"
            and self._done.get(folded_name(earlier["output"])) == key
        ):
            del self._done[folded_name(earlier["output"])]
        if record["status"] == "done":
            folded = folded_name(record["output"])
            other = self._done.get(folded)  # at most one: each done record drops the others of its file
            if other is not None and other != key:
                del self.records[other]
            self._done[folded] = key
        self.records[key] = record

    def _note_written(self, record: object) -> None:
        """Remember the result file a done line (even a damaged one: its key still names it) says a batch
        wrote."""
        if isinstance(record, dict) and record.get("status") == "done" and isinstance(record.get("input"), str):
            try:
                self.written[folded_name(output_key(record["input"]))] = record["input"]
            except ValueError:  # a key no result file can be made of ('', '/')
                pass

    def writer_of(self, item: BatchItem) -> str | None:
        """The key of the video whose result a batch wrote to ``item``'s result file, as a done line of the
        manifest says; None when no line names that file: a file there is none of the batch's."""
        return self.written.get(folded_name(item.output_key))

    def adopt(self, item: BatchItem) -> None:
        """Count the file at ``item``'s result path as one a batch wrote for it (a result of that video whose
        record a kill cut off): its rerun replaces it, or deletes it when the video fails."""
        self.written[folded_name(item.output_key)] = item.key

    def is_finished(self, item: BatchItem, *, retry_failed: bool, settings: str | None = None) -> bool:
        """Done with its result file present, or failed (unless failures are to be retried), for this very
        input file and, given ``settings`` (batch/settings.py), with those settings: a video of the same
        name from another path, one replaced or changed at the same path (another size or modification
        time), or one finished with other options or model data, runs again."""
        record = self.records.get(item.key)
        if record is None or record["input_path"] != item.input_path:
            return False
        if STAMP_FIELDS[0] in record and tuple(record[name] for name in STAMP_FIELDS) != _stamp_values(item):
            return False
        if settings is not None and record.get(SETTINGS_FIELD, settings) != settings:
            return False
        if record["status"] == "done":
            return Path(item.output_path).is_file()
        return not retry_failed

    def has_kept_result(self, item: BatchItem) -> bool:
        """A video no longer there (a drive unmounted, a file moved) that finished before from this path
        with its result present: the result is kept as it is (running it would fail, and a failed rerun
        deletes the earlier result)."""
        record = self.records.get(item.key)
        return (
            item.input_stamp is None
            and record is not None
            and record["input_path"] == item.input_path
            and record["status"] == "done"
            and Path(item.output_path).is_file()
        )

    def append(self, record: dict) -> None:
        """Add one record: a single write of one line, flushed to disk before the next video counts."""
        self._keep(record)
        line = _json_line(record).encode("ascii")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if self._ends_mid_line(fd):
                os.write(fd, b"\n")  # finish a line a killed run cut short
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _ends_mid_line(self, fd: int) -> bool:
        size = os.fstat(fd).st_size
        if size == 0:
            return False
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            return f.read(1) != b"\n"

    def compact(self, keys: Iterable[str] | None = None) -> None:
        """Rewrite the manifest with one line per video (in ``keys`` order first, then the rest)."""
        order = list(dict.fromkeys(list(keys or []) + list(self.records)))
        lines = "".join(_json_line(self.records[k]) for k in order if k in self.records)
        atomic_write_bytes(self.path, lines.encode("ascii"))
        self.damaged_lines = 0


def _json_line(record: dict) -> str:
    """One manifest line, ASCII only: a file name that is not valid UTF-8 (kept by Python as surrogates)
    is written as a JSON escape and read back as the same name."""
    return json.dumps(record, ensure_ascii=True) + "\n"


def summary_table(records: list[dict]) -> str:
    """Plain text: one row per video, then the totals (printable: see ``printable``)."""
    names = [printable(r["input"]) for r in records]
    width = max([len(name) for name in names] + [5])
    lines = [f"{'video':<{width}}  {'status':<6}  {'tracks':>6}  {'frames':>7}  {'seconds':>8}  {'frames/s':>8}  error"]
    for name, r in zip(names, records, strict=True):
        lines.append(
            f"{name:<{width}}  {r['status']:<6}  {r['tracks']:>6}  {r['frames']:>7}  "
            f"{r['seconds']:>8.2f}  {r['fps']:>8.2f}  {printable(r['error'] or '')}"
        )
    done = [r for r in records if r["status"] == "done"]
    frames = sum(r["frames"] for r in done)
    seconds = sum(r["seconds"] for r in done)
    lines.append("")
    lines.append(
        f"{len(done)} done, {len(records) - len(done)} failed, {frames} frames in {seconds:.1f} s of "
        f"worker time ({frames / seconds if seconds else 0.0:.1f} frames/s per worker)"
    )
    return "\n".join(lines)

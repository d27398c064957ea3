"""A batch from start to end: find the videos, skip the finished ones, run the rest on local
workers or on Ray, append each record to the manifest as it arrives, write the summary."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vibe_blender.core.atomic_file import atomic_write_bytes
from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import load_result

from ..command_signals import signals_stop_the_command
from ..folder_lock import folder_lock
from ..pipeline.devices import default_jobs
from ..pipeline.options import RunOptions
from .engine_adapter import EngineSpec, OutputDiskFull, stopping_on_full_disk
from .inputs import BatchItem, check_inside, discover
from .local_pool import run_local
from .manifest import (
    MANIFEST_NAME,
    SETTINGS_FIELD,
    SUMMARY_NAME,
    Manifest,
    make_record,
    remove_stale_parts,
    summary_table,
)
from .names import LOCK_NAME
from .progress import BatchProgress
from .ray_runner import run_ray
from .settings import results_fingerprint


@dataclass
class BatchPlan:
    items: list[BatchItem]  # every video of the batch, in order
    todo: list[BatchItem]  # those still to run
    manifest: Manifest
    changed: int = 0  # of todo: finished before, but with other settings or model data
    gone: list[BatchItem] = field(default_factory=list)  # not todo: finished before, the video no longer there


def plan(
    items: list[BatchItem], output_dir: Path, *, retry_failed: bool = False, settings: str | None = None
) -> BatchPlan:
    manifest = Manifest(output_dir)
    gone = [item for item in items if manifest.has_kept_result(item)]
    gone_keys = {item.key for item in gone}
    todo = [
        item
        for item in items
        if item.key not in gone_keys and not manifest.is_finished(item, retry_failed=retry_failed, settings=settings)
    ]
    for item in todo:
        check_inside(item.output_path, output_dir)
    check_not_in_the_way(todo, manifest)
    changed = sum(manifest.is_finished(item, retry_failed=retry_failed) for item in todo)
    return BatchPlan(items=items, todo=todo, manifest=manifest, changed=changed, gone=gone)


def is_own_result(item: BatchItem) -> bool:
    """The file at ``item``'s result path reads as a VIBE Mocap result made from that video (the video
    name it records is the video's, or it records none): a batch wrote it and was killed before its
    record (or its record was a damaged line, dropped). A symbolic link, or any other file, is not."""
    path = Path(item.output_path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        video_name = load_result(path).video.name
    except (VibeError, OSError, ValueError):
        return False
    return video_name in ("", Path(item.key).name)


def check_not_in_the_way(todo: list[BatchItem], manifest: Manifest) -> None:
    """VibeError when a file the batch did not write lies where the result of a video that is to run goes
    (no line of the manifest names it, and it is no VIBE Mocap result of that video: the user's own, or
    another program's): the batch would replace it, or delete it when that video fails. A result of that
    video no line names (a run killed before its record) counts as the batch's own."""
    foreign = []
    for item in todo:
        if item.problem is not None or manifest.writer_of(item) is not None or not os.path.lexists(item.output_path):
            continue  # a video that cannot run writes nothing
        if is_own_result(item):
            manifest.adopt(item)
        else:
            foreign.append(item)
    if foreign:
        more = f" ({len(foreign) - 1} other result path(s) of this batch are taken the same way)" if foreign[1:] else ""
        raise VibeError(
            f"'{foreign[0].output_path}' is already in the output folder, and it is neither a file a record of "
            f"{manifest.path} says a batch wrote nor a VIBE Mocap result of that video: the result of "
            f"'{foreign[0].input_path}' would replace it{more}. The batch replaces and deletes only files it "
            "wrote; move that file elsewhere, or choose another output folder."
        )


def say_what_runs(batch: BatchPlan, output_dir: Path) -> None:
    """One line each for the videos skipped as finished and those run again for their settings."""
    if batch.gone:
        print(
            f"{len(batch.gone)} video(s) finished before are no longer there (first: '{batch.gone[0].input_path}'); "
            "their results are kept as they are. Make the videos reachable again to check them for changes.",
            file=sys.stderr,
        )
    not_run = {item.key for item in batch.todo + batch.gone}
    skipped = [batch.manifest.records[item.key] for item in batch.items if item.key not in not_run]
    if skipped:
        failed = sum(record["status"] == "failed" for record in skipped)
        print(
            f"Skipping {len(skipped)} video(s) finished before with these settings ({output_dir / MANIFEST_NAME})"
            + (f"; --retry-failed runs the {failed} that failed again." if failed else "."),
            file=sys.stderr,
        )
    if batch.changed:
        print(
            f"{batch.changed} video(s) finished before with other options or model data run again.",
            file=sys.stderr,
        )


def without_earlier_result(item: BatchItem, failed: dict) -> dict:
    """The failed record of ``item``, once the result an earlier run wrote for it at its path (of another
    version of the video, or other settings) is deleted: anything reading OUTDIR/**/*.npz would take it for
    this video's. Only for a file the manifest says a batch wrote for this video's key (another video's
    result of the same name, or a file of the user's, is kept). Deleted before the record is written, so a
    kill in between leaves a video that runs again. When it cannot be deleted, the record says so (a
    read-only disk stops the batch, as for a result)."""
    path = Path(item.output_path)
    try:
        with stopping_on_full_disk(path):
            if path.is_symlink() or path.is_file():  # (a folder there is no result: the run said why)
                path.unlink()
    except FileNotFoundError:
        pass
    except OSError as err:
        return {
            **failed,
            "error": f"{failed['error'] or ''} The result of an earlier run is still at {path} and could not be "
            f"deleted ({err.strerror or err}); delete it.".lstrip(),
        }
    return failed


def output_lock(output_dir: Path, no_locks: list[str]) -> contextlib.AbstractContextManager[bool]:
    """One batch per output folder at a time. A shared file system without locks (NFS without its lock
    service, some FUSE mounts: where a Ray cluster's shared OUTDIR lies) runs unguarded, with a warning,
    and ``no_locks`` gets the problem; Windows, which has no such lock, runs unguarded as documented."""

    def unguarded(problem: str) -> None:
        no_locks.append(problem)
        print(
            f"Warning: {problem}, so nothing keeps another batch out of {output_dir}: start no other batch "
            "there until this one ends. (Unfinished result files that a killed run left there, .*.part, are not "
            "deleted.)",
            file=sys.stderr,
        )

    return folder_lock(
        output_dir,
        LOCK_NAME,
        f"Another batch is writing to '{output_dir}'; wait for it to end or choose another output folder.",
        unguarded=unguarded,
    )


def run_batch(
    inputs: list[str],
    output_dir: str | Path,
    spec: EngineSpec,
    options: RunOptions,
    *,
    jobs: int | None = None,
    ray_address: str | None = None,
    use_ray: bool = False,
    transfer: str = "shared",
    retry_failed: bool = False,
    show_progress: bool | None = None,
    before_the_run: str | None = None,
) -> list[dict]:
    """Run the batch; returns the records of all its videos (this run's and earlier ones). Stopped
    (a KeyboardInterrupt) when SIGTERM or SIGHUP stops it, as Ctrl-C does. ``before_the_run``: a line
    for stderr once the inputs are found good and some video is to run (e.g. that the placeholder runs)."""
    output_dir = Path(output_dir).resolve()
    settings = results_fingerprint(spec, options)
    items = discover(inputs, output_dir)  # a mistyped input: nothing made in OUTDIR, which is not walked
    no_locks: list[str] = []
    with signals_stop_the_command(), output_lock(output_dir, no_locks):
        if not no_locks:  # (where the file system refuses locks, another batch may be writing those files)
            remove_stale_parts(output_dir)
        batch = plan(items, output_dir, retry_failed=retry_failed, settings=settings)
        if batch.manifest.damaged_lines:
            print(
                f"Note: {batch.manifest.damaged_lines} line(s) of {output_dir / MANIFEST_NAME} were damaged or "
                "invalid and are dropped; their videos run again.",
                file=sys.stderr,
            )
        say_what_runs(batch, output_dir)
        if before_the_run and batch.todo:
            print(before_the_run, file=sys.stderr)
        batch.manifest.compact([item.key for item in batch.items])  # one line per video
        progress = BatchProgress(len(batch.todo), skipped=len(batch.items) - len(batch.todo), enabled=show_progress)
        todo = {item.key: item for item in batch.todo}

        def on_record(record: dict) -> None:
            item = todo[record["input"]]
            if record["status"] == "failed" and batch.manifest.writer_of(item) == item.key:
                record = without_earlier_result(item, record)
            with stopping_on_full_disk(batch.manifest.path):  # the same stop as for a result
                batch.manifest.append({**record, SETTINGS_FIELD: settings})
            progress.advance(record)

        runnable = [item for item in batch.todo if item.problem is None]
        full_disk = None
        try:
            for item in batch.todo:
                if item.problem is not None:  # it cannot run at all: no worker takes it
                    on_record(make_record(item, "failed", error=item.problem))
            if runnable and use_ray:
                run_ray(
                    runnable,
                    spec,
                    options,
                    address=ray_address,
                    transfer=transfer,
                    on_record=on_record,
                    progress=progress,
                    output_dir=output_dir,
                )
            elif runnable:
                workers = min(jobs or default_jobs(spec.device), len(runnable))
                run_local(runnable, spec, options, jobs=workers, on_record=on_record, progress=progress)
        except OutputDiskFull as err:
            full_disk = err
        finally:  # also after Ctrl-C, a signal or a full disk: an earlier run's summary would contradict the manifest
            progress.close()
            try:
                batch.manifest.compact([item.key for item in batch.items])
            except OSError as err:  # the lines appended so far stand for it
                if full_disk is None:
                    _not_written(batch.manifest.path, err, "its lines as appended hold every record")
            records = [batch.manifest.records[item.key] for item in batch.items if item.key in batch.manifest.records]
            write_summary(output_dir, records, warn=full_disk is None)
        if full_disk is not None:
            raise VibeError(f"The batch stopped: {full_disk}")
        return records


def write_summary(output_dir: Path, records: list[dict], *, warn: bool = True) -> None:
    """``OUTDIR/summary.txt`` from ``records``; where it cannot be written, an earlier run's is deleted (no
    longer true) and, with ``warn``, a warning says so (the manifest holds every record)."""
    path = output_dir / SUMMARY_NAME
    try:
        atomic_write_bytes(path, (summary_table(records) + "\n").encode("utf-8"))
    except OSError as err:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        if warn:
            _not_written(path, err, "the manifest holds every record")


def _not_written(path: Path, err: OSError, instead: str) -> None:
    print(f"Warning: {path} could not be written ({err.strerror or err}); {instead}.", file=sys.stderr)

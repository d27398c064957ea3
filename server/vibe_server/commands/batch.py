"""``vibe-mocap batch INPUT... -o OUTDIR``: many videos on local workers or a Ray cluster, resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vibe_blender.core.errors import VibeError
from vibe_blender.core.output_paths import check_output_folder
from vibe_blender.core.shown_text import printable

from ..batch.engine_adapter import AUTO, ENGINE_FACTORY, FAST, EngineSpec, made_by_placeholder
from ..batch.inputs import output_key
from ..batch.manifest import MANIFEST_NAME, SUMMARY_NAME, summary_table
from ..batch.runner import run_batch
from ..command_signals import Stopped
from ..data.loading import DEVICE_NAME, checked_data_dir, placeholder_note
from .infer import add_pipeline_arguments, run_options
from .model_data_outputs import refuse_inside_model_data


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="many videos -> one result file each, with a manifest (resumable)",
        description="Run VIBE on every video of the inputs: files, folders (searched recursively) "
        "or text files with one video path per line. Results keep the inputs' layout "
        "under OUTDIR; OUTDIR/manifest.jsonl records each video. Running the same "
        "command again skips the finished videos.",
    )
    # '*', checked in run(): '--ray INPUT' takes the input as the address, and argparse would only say none is given
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="video files, folders, or lists of video paths (.txt, .lst or .list: one path a line)",
    )
    p.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR", help="where results and the manifest go")
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="local worker processes (default: one per GPU, else as many as cores and memory allow)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on a Ray cluster (pip install -e '.[ray]' in the checkout); without ADDRESS: $RAY_ADDRESS, "
        "the cluster started on this machine, else a new local one",
    )
    p.add_argument(
        "--transfer",
        choices=("shared", "object-store"),
        default="shared",
        help="with --ray: inputs and outputs on a shared path (default), or sent through Ray's "
        "object store (small clips, nodes without a shared file system)",
    )
    p.add_argument("--retry-failed", action="store_true", help="run the videos that failed before again")
    p.add_argument(
        "--engine",
        metavar="MODULE:FUNCTION",
        help="a custom engine factory with load_engine's signature (default: the VIBE pipeline)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    add_pipeline_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise VibeError(f"--jobs must be at least 1; got {args.jobs}.")
    if args.jobs is not None and args.ray is not None:
        raise VibeError(
            "--jobs is for local workers; with --ray the cluster's GPUs (or CPUs) set the number of actors."
        )
    if args.transfer != "shared" and args.ray is None:
        raise VibeError(
            "--transfer chooses how a Ray cluster moves files; it needs --ray (local workers share the disk)."
        )
    if args.ray and Path(args.ray).exists():
        raise VibeError(
            f"--ray took '{args.ray}' as the cluster's address, but it is a file or folder: put --ray "
            "after the inputs (or write --ray=ADDRESS)."
        )
    if not args.inputs:
        raise VibeError("Give at least one INPUT: a video file, a folder of videos or a .txt list of video paths.")
    if not DEVICE_NAME.fullmatch(args.device):
        raise VibeError(f"Unknown device '{args.device}'; use auto, cpu, cuda (all GPUs) or cuda:N.")
    options = run_options(args)
    # a video's result (NAME.npz) could replace a model file there
    refuse_inside_model_data(args.output_dir, "the output folder", args.data_dir)
    check_output_folder(args.output_dir, "the output folder")
    data_dir = checked_data_dir(args.data_dir)  # a folder the user named: no placeholder
    spec = EngineSpec(
        device=args.device,
        precision=FAST if args.fast else AUTO,
        data_dir=str(data_dir),
        allow_synthetic=True,
        factory=args.engine or ENGINE_FACTORY,
    )
    output_dir = Path(args.output_dir)
    try:
        records = run_batch(
            args.inputs,
            output_dir,
            spec,
            options,
            jobs=args.jobs,
            use_ray=args.ray is not None,
            ray_address=args.ray or None,
            transfer=args.transfer,
            retry_failed=args.retry_failed,
            show_progress=False if args.no_progress else None,
            before_the_run=None if args.engine else placeholder_note(data_dir),  # (a custom front end finds its own)
        )
    except Stopped as stop:  # as Ctrl-C (130), with the signal's own status: 143 after SIGTERM
        print("interrupted", file=sys.stderr)
        return stop.exit_status
    print(summary_table(records))
    print_warnings([r for r in records if r["status"] == "done"])
    print(f"\nManifest: {printable(str(output_dir / MANIFEST_NAME))}")
    if (output_dir / SUMMARY_NAME).is_file():  # (not when the disk had no room for it: warned)
        print(f"Summary: {printable(str(output_dir / SUMMARY_NAME))}")
    done = [r for r in records if r["status"] == "done"]
    if done and not args.engine and _placeholder_made(output_dir / output_key(done[0]["input"])):
        print("(Model: synthetic placeholder: install the real model data for real motion.)", file=sys.stderr)
    return 0 if all(r["status"] == "done" for r in records) else 1


def _placeholder_made(result_path: Path) -> bool:
    """Whether the placeholder model made that result; False when it cannot be read (damaged or deleted since
    its record): the batch has finished, and a note is no reason to fail it."""
    try:
        return made_by_placeholder(result_path)
    except (VibeError, OSError):
        return False


def print_warnings(done: list[dict], *, named: int = 5) -> None:
    """Each warning of the results once, with the videos it concerns (up to ``named`` of them)."""
    videos: dict[str, list[str]] = {}
    for record in done:
        for warning in record.get("warnings", []):
            videos.setdefault(warning, []).append(record["input"])
    for warning, inputs in videos.items():
        which = ", ".join(inputs[:named]) + (f" and {len(inputs) - named} more" if len(inputs) > named else "")
        print(printable(f"WARNING ({len(inputs)} of the results: {which}): {warning}"), file=sys.stderr)

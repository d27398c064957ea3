"""Command line: a motion file -> a .blend with the animated character(s), plus an FBX.

Runs with Blender as a Python module (a bpy venv, see scripts/setup_blender.sh), no UI needed::

    python -m vibe_blender.batch RESULT.npz --body-model BODY.npz -o OUT.blend --fbx OUT.fbx
    python -m vibe_blender.batch vibe_output.pkl --model-dir ~/vibe_data -o OUT.blend --fps 25

RESULT may be a VIBE Mocap result (.npz), an official VIBE vibe_output.pkl or AMASS motion (.npz).
An existing .blend or FBX file is replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from .command_line import import_bpy
from .core.errors import VibeError
from .core.motion import MAX_CHARACTERS
from .core.result_file import FPS_RANGE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vibe_blender.batch", description=__doc__.split("\n\n")[0])
    p.add_argument("motion", type=Path, help="result .npz, vibe_output.pkl or AMASS .npz")
    body = p.add_mutually_exclusive_group(required=True)
    body.add_argument("--body-model", type=Path, help="body-model .npz (from the server) or SMPL_NEUTRAL.pkl")
    body.add_argument("--model-dir", type=Path, help="model-data folder holding SMPL_NEUTRAL.pkl")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .blend file to write (ending in .blend)")
    p.add_argument("--fbx", type=Path, help="also export the characters and their motion as FBX")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the .blend and FBX files when they exist (default: an existing one is refused)",
    )
    p.add_argument(
        "--correctives",
        choices=("off", "drivers", "baked"),
        default="off",
        help="SMPL pose-corrective shape keys (default: off)",
    )
    p.add_argument(
        "--root-motion",
        choices=("full", "in_place"),
        default="full",
        help="full: each body moves as the camera saw it; in_place: it stays over the origin (default: full)",
    )
    p.add_argument("--video", default="", help="the source video, shown behind the camera")
    p.add_argument("--no-camera", action="store_true", help="do not add a camera matching the video")
    # 0 (the default) stands for "not given": the file's own frame rate, else 30
    p.add_argument(
        "--fps",
        type=_frame_rate,
        default=0.0,
        help="frame rate (0.01..32767) for files that store none (default: 30, with a warning)",
    )
    p.add_argument(
        "--max-characters",
        type=_at_least_one,
        default=MAX_CHARACTERS,
        metavar="N",
        help=f"a file with more people imports the N seen in the most frames (default {MAX_CHARACTERS})",
    )
    return p


def _frame_rate(text: str) -> float:
    """--fps as a flag: a frame rate Blender plays (as a file's own is bounded), so that a wrong flag is
    said as one, not as a damaged file, and 0 is not taken for "not given"."""
    low, high = FPS_RANGE
    try:
        fps = float(text)
    except ValueError:
        fps = math.nan
    if not low <= fps <= high:  # NaN too
        raise argparse.ArgumentTypeError(f"give the video's frame rate, a number in {low:g}..{high:g}; got '{text}'")
    return fps


def _at_least_one(text: str) -> int:
    """--max-characters as a flag: a whole number from 1, said as a usage error before anything is read."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"give a whole number of characters, 1 or more; got '{text}'")
    return count


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when the files are written, 1 when the inputs or outputs are unusable, 2 for a usage
    error (argparse: a flag missing or out of its range) and when this Python has no bpy or its bpy
    cannot be loaded, 130 when interrupted (Ctrl-C)."""
    args = _parser().parse_args(argv)
    bpy = import_bpy("vibe_blender.batch")  # after argument errors: fast --help
    if bpy is None:
        return 2

    from .core.output_paths import check_output_path
    from .importer import ImportOptions, import_motion_file

    start = time.perf_counter()
    try:
        inputs = {"the motion file": args.motion, "the body model": args.body_model, "the video": args.video or None}
        check_output_path(args.output, "the .blend file", inputs)
        if args.output.suffix != ".blend":  # Blender writes its own file under any name
            raise VibeError(f"The .blend file must end in .blend; got '{args.output}'.")
        if args.fbx:
            check_output_path(args.fbx, "the FBX file", {**inputs, "the .blend file": args.output})
            if args.fbx.suffix.lower() != ".fbx":  # FBX under another name (a .blend of the user's) is a mistake
                raise VibeError(f"The FBX file must end in .fbx; got '{args.fbx}'.")
        if not args.overwrite:
            _refuse_existing(args.output, "The .blend file", "-o")
            _refuse_existing(args.fbx, "The FBX file", "--fbx")
        blend = args.output.resolve()
        for path in (blend, args.fbx):
            if path:  # before the import: a folder that cannot be made fails at once, not after the work
                _make_folder(Path(path).parent)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        options = ImportOptions(
            correctives=args.correctives,
            root_motion=args.root_motion,
            add_camera=not args.no_camera,
            video_path=str(Path(args.video).resolve()) if args.video else "",
            fps=args.fps,
            max_characters=args.max_characters,
        )
        characters = import_motion_file(
            args.motion, args.body_model or args.model_dir, options, report=lambda msg: print(msg)
        )
        fbx = _write(blend, args.fbx)
    except VibeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the .blend and FBX files are each whole or left as they were
        print("interrupted", file=sys.stderr)
        return 130
    scene = bpy.context.scene
    print(
        f"Wrote {blend}: {len(characters)} animated character(s) "
        f"({', '.join(a.name for a, _ in characters)}), frames {scene.frame_start}-{scene.frame_end} "
        f"at {scene.render.fps / scene.render.fps_base:.5g} fps, in {time.perf_counter() - start:.1f} s."
    )
    print(f"  Open it with:  blender {blend}   (press Space to play)")
    if fbx:
        print(
            f"Wrote {fbx}: import it in any DCC or game engine (Blender: File > Import > FBX, with "
            "Animation Offset 0 so that the keys stay on their frames)."
        )
    return 0


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VibeError(
            f"Cannot make the output folder '{folder}' ({err.strerror or err}); choose a folder you can write to."
        ) from err


def _refuse_existing(path: Path | None, what: str, flag: str) -> None:
    """VibeError when a file is at ``path`` (without --overwrite): a second run, or a mistyped name,
    would replace it."""
    if path is not None and os.path.lexists(path):
        raise VibeError(
            f"{what} '{path}' already exists, and batch replaces a file only when given --overwrite. To keep "
            f"that file, give another name ({flag} PATH) or move the file away; to replace it, add --overwrite."
        )


def _write(blend: Path, fbx: Path | None) -> Path | None:
    """Save the scene as ``blend`` and export the FBX, each written under another name beside its file
    and moved into place once whole (no .blend1 copy of a replaced file is left): the .blend is moved in
    last, once the FBX is written, so that a failure writing either leaves neither new file (only that
    last rename could fail on its own, after the FBX was moved into place)."""
    import bpy

    from .export import export_fbx, staged_write

    def save_then_export(staged: Path) -> bool:
        saved = bpy.ops.wm.save_as_mainfile(filepath=str(staged), copy=True)
        if fbx and "FINISHED" in saved:
            export_fbx(fbx)
        return "FINISHED" in saved

    message = f"Cannot write '{blend}'; check that its folder is writable and the disk has free space."
    staged_write(blend, ".blend", save_then_export, message)
    return fbx.resolve() if fbx else None


if __name__ == "__main__":
    sys.exit(main())

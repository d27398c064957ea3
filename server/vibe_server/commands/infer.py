"""``vibe-mocap infer VIDEO -o OUT.npz``: run the whole pipeline on one video, without a server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from vibe_blender.core.atomic_file import atomic_write
from vibe_blender.core.errors import VibeError
from vibe_blender.core.model_data import SMPL_FILE, body_model_beside
from vibe_blender.core.shown_text import printable_lines

from ..pipeline.cpu_features import choose_precision
from ..pipeline.options import RunOptions, add_cli_flags, options_from_cli
from ..pipeline.progress import STAGES, STREAM_STAGES, phase_fraction
from .model_data_outputs import check_output_file
from .shared_arguments import add_data_dir_argument, add_device_argument

if TYPE_CHECKING:
    from ..pipeline.engine import Engine, RunOutput


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "infer",
        help="video -> result file (.npz), optionally the official vibe_output.pkl",
        description="Run VIBE on a video: people are detected and tracked, and each track gets "
        "per-frame SMPL pose, shape, cameras and root translation.",
    )
    p.add_argument("video", help="the video file (mp4, mkv, avi, gif, ...)")
    p.add_argument(
        "-o",
        "--output",
        help="result file (default: <video name>_vibe.npz in the current folder; a default name never replaces a file)",
    )
    p.add_argument(
        "--pkl",
        nargs="?",
        const="",
        metavar="PATH",
        help="also write the official vibe_output.pkl layout (default path: <video name>_vibe_output.pkl beside "
        "the result)",
    )
    p.add_argument(
        "--body-model",
        nargs="?",
        const="",
        metavar="PATH",
        help="also write the body-model arrays the Blender add-on builds the character from "
        "(default path: next to the result)",
    )
    add_pipeline_arguments(p)
    p.add_argument(
        "--devices",
        metavar="LIST",
        help="divide the video among these devices, comma-separated, e.g. cuda:0,cuda:1 (default: "
        "every visible GPU with --device auto or cuda; the result equals a one-device run)",
    )
    p.set_defaults(run=run)


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """The model and pipeline options shared by ``infer`` and ``batch``."""
    add_data_dir_argument(p)
    add_cli_flags(p)  # the job options (pipeline/options.py)
    add_device_argument(p)
    p.add_argument(
        "--fast",
        action="store_true",
        help="bf16 (CPU) or fp16 (CUDA) even where auto would choose fp32 (bf16 is slower "
        "on CPUs without AVX512-BF16/AMX)",
    )


def run_options(args: argparse.Namespace) -> RunOptions:
    """The pipeline's ``RunOptions`` from the parsed arguments of ``add_pipeline_arguments``."""
    options = options_from_cli(args)
    options.validate()
    return options


def precision(fast: bool, device: str) -> str:
    """The engine's precision: "auto" (what the CPU or GPU does best), or with --fast bf16/fp16 forced."""
    return choose_precision("auto", fast=fast, device=device)


class _StageBars:
    """One tqdm bar per phase, each counting its own phase's work; the streaming stages share one bar
    (they run interleaved)."""

    STREAM_LABEL = "decode/detect/track/crop/backbone"

    def __init__(self):
        self.bar, self.label = None, None

    def __call__(self, stage: str, fraction: float, eta_s) -> None:
        label = self.STREAM_LABEL if stage in STREAM_STAGES else stage
        if label != self.label:
            self.close()
            self.bar = tqdm(
                total=100,
                desc=f"{label:<34}",
                unit="%",
                leave=True,
                file=sys.stderr,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
            )
            self.label = label
        self.bar.n = round(100 * phase_fraction(stage, fraction), 1)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args: argparse.Namespace) -> int:
    # start-up: numpy, torch, OpenCV and the model load only when a video is really run (not for --help)
    from vibe_blender.core.result_file import save_result
    from vibe_blender.core.smpl_model import load_smpl_pkl, save_body_model

    from ..data.loading import SYNTHETIC_MODEL_NAME, checked_data_dir, install_hint, placeholder_note, resolve_device
    from ..pipeline import postprocess
    from ..pipeline.devices import server_devices
    from ..pipeline.engine import load_engine
    from ..pipeline.segmented import run_across_devices
    from ..pipeline.video import check_video_path, open_video

    if args.devices and args.device != "auto":  # (else --device would be dropped without a word)
        raise VibeError(
            f"Give --devices ({args.devices}) or --device ({args.device}), not both: --devices names every "
            "device the video is divided among."
        )
    video = Path(args.video)
    if video.is_dir():
        raise VibeError(
            f"'{video}' is a folder; infer takes one video. For every video in it: vibe-mocap batch '{video}' -o OUTDIR"
        )
    check_video_path(video, f"'{video}'")  # missing, empty, a device or a pipe: said before any work
    # every output checked before the run: none may be a folder, the video, another output, a file of
    # another kind, or an existing file under a default name
    output = check_output_file(
        args.output,
        Path.cwd() / f"{video.stem}_vibe.npz",
        "the result file",
        "-o",
        args.data_dir,
        {"the video": video},
        suffix=".npz",
    )
    pkl_path = body_path = None
    if args.pkl is not None:
        pkl_path = check_output_file(
            args.pkl,
            output.with_name(f"{video.stem}_vibe_output.pkl"),
            "the official pkl",
            "--pkl",
            args.data_dir,
            {"the video": video, "the result file": output},
            suffix=".pkl",
            value_optional=True,
        )
    if args.body_model is not None:
        body_path = check_output_file(
            args.body_model,
            body_model_beside(output),
            "the body-model file",
            "--body-model",
            args.data_dir,
            {"the video": video, "the result file": output, "the official pkl": pkl_path},
            suffix=".npz",
            value_optional=True,
        )
    options = run_options(args)

    # one engine per device: every visible GPU for auto/cuda (one video divided among them), else one
    wanted = args.devices.split(",") if args.devices else server_devices(args.device)
    devices = [resolve_device(d.strip()) for d in wanted]
    data_dir = checked_data_dir(args.data_dir)  # a folder the user named: no placeholder
    # the header and the first frame, before the model loads (or the placeholder's 256 MB are written):
    # a file that is no video, or a video without frames, is said at once
    with open_video(video, label=f"'{video}'"):
        pass
    note = placeholder_note(data_dir)
    if note is not None:
        print(note, file=sys.stderr)
    engines = [
        load_engine(
            data_dir,
            device=each,
            precision=precision(args.fast, each),
            allow_synthetic=True,
            log=lambda msg: print(msg, file=sys.stderr),
        )
        for each in devices
    ]
    engine = engines[0]
    bars = _StageBars()
    try:
        out = run_across_devices(engines, video, options, progress=bars)
    finally:
        bars.close()

    atomic_write(output, lambda f: save_result(f, out.result))
    try:
        if pkl_path is not None:
            postprocess.write_official_pkl(pkl_path, postprocess.official_output(out.result, engine.smpl))
        if body_path is not None:
            body_model = load_smpl_pkl(Path(engine.data_dir) / SMPL_FILE, hint=install_hint(engine.data_dir))
            atomic_write(body_path, lambda f: save_body_model(f, body_model))
    except OSError as err:  # (the command line reports it, with this note)
        err.add_note(f"The result file {output} was written.")
        raise

    # the video's name and the outputs' (named after it) as the terminal shows them, not obeys them
    print(printable_lines(summary_table(out, engine, devices=devices)))
    print(
        printable_lines(
            f"\nResult: {output}"
            + (f"\nOfficial pkl: {pkl_path}" if pkl_path else "")
            + (f"\nBody model: {body_path}" if body_path else "")
        )
    )
    if out.result.model_name == SYNTHETIC_MODEL_NAME:
        print(f"(Model: {SYNTHETIC_MODEL_NAME}: install the real model data for real motion.)")
    for warning in out.warnings:  # also in the result file's meta["warnings"]
        print(printable_lines(f"WARNING: {warning}"), file=sys.stderr)
    return 0


def summary_table(out: RunOutput, engine: Engine, *, devices: list[str] | None = None) -> str:
    """The tracks found and the time per stage, as plain text (devices: those the video was divided among)."""
    result = out.result
    fps = result.video.fps or 30.0
    where = f"devices {', '.join(devices)}" if devices and len(devices) > 1 else f"device {engine.device}"
    lines = [
        f"\n{result.video.name}: {result.video.width}x{result.video.height}, {fps:g} fps, "
        f"{out.frames_decoded} frames decoded; model: {result.model_name}; "
        f"{where}, "
        f"{engine.precision}; detection every {result.meta.get('detection_stride', '?')} frames"
        f"{' + adaptive' if result.meta.get('adaptive_detection') == 'True' else ''}"
        f"{'; compiled backbone' if result.meta.get('backbone_compiled') == 'True' else ''}",
        "",
        f"{'track':>5}  {'frames':>6}  {'first':>6}  {'last':>6}  {'seconds':>7}",
    ]
    for t in result.tracks:
        lines.append(
            f"{t.track_id:>5}  {t.num_frames:>6}  {t.frame_ids[0]:>6}  {t.frame_ids[-1]:>6}  {t.num_frames / fps:>7.1f}"
        )
    lines += ["", f"{'stage':<10}  {'seconds':>8}  {'share':>6}"]
    total = sum(out.timings_s.values()) or 1.0
    for stage in STAGES:
        lines.append(f"{stage:<10}  {out.timings_s[stage]:>8.2f}  {100 * out.timings_s[stage] / total:>5.1f}%")
    lines.append(
        f"{'total':<10}  {out.wall_s:>8.2f}  ({out.frames_decoded / max(out.wall_s, 1e-9):.1f} video frames/s, "
        f"{out.crops} person crops)"
    )
    return "\n".join(lines)

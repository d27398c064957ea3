"""``vibe-mocap infer VIDEO -o OUT.npz``: run the whole pipeline on one video, without a server."""
from __future__ import annotations

import sys
from pathlib import Path

from vibe_blender.core.errors import VibeError

from ..pipeline.cpu_features import choose_precision
from ..pipeline.run import DEFAULT_DETECTION_STRIDE


def add_parser(sub) -> None:
    p = sub.add_parser("infer", help="video -> result file (.npz), optionally the official vibe_output.pkl",
                       description="Run VIBE on a video: people are detected and tracked, and each track gets "
                                   "per-frame SMPL pose, shape, cameras and root translation.")
    p.add_argument("video", help="the video file (mp4, mkv, avi, gif, ...)")
    p.add_argument("-o", "--output", help="result file (default: <video name>_vibe.npz in the current folder)")
    p.add_argument("--pkl", nargs="?", const="", metavar="PATH",
                   help="also write the official vibe_output.pkl (default path: next to the result)")
    p.add_argument("--body-model", nargs="?", const="", metavar="PATH",
                   help="also write the body-model arrays the Blender add-on builds the character from "
                        "(default path: next to the result)")
    p.add_argument("--data-dir", help="model-data folder (default: $VIBE_DATA_DIR, then the user data folder)")
    p.add_argument("--detector", choices=("auto", "yolo", "hog"), default="auto",
                   help="person detector (auto: YOLOv3 when its weights are installed, else OpenCV HOG)")
    p.add_argument("--detection-stride", type=int, default=DEFAULT_DETECTION_STRIDE, metavar="N",
                   help="detect people every Nth frame; the tracker carries the boxes in between "
                        f"(default {DEFAULT_DETECTION_STRIDE}; 1 = every frame, as the official demo)")
    p.add_argument("--no-adaptive-detection", dest="adaptive_detection", action="store_false",
                   help="detect only every Nth frame, not also where the tracker's boxes may be wrong "
                        "(people entering, leaving or crossing)")
    p.add_argument("--min-track-frames", type=int, default=25, metavar="N", help="drop shorter tracks (default 25)")
    p.add_argument("--tracks-max", type=int, metavar="N", help="keep only the N longest tracks")
    p.add_argument("--smoothing", type=float, default=0.0, metavar="S", help="0 (off) .. 1 (strongest)")
    p.add_argument("--smoothing-method", choices=("rotation", "one_euro"), default="rotation",
                   help="rotation: quaternion Gaussian (default); one_euro: the official filter")
    p.add_argument("--official-uncrop", action="store_true",
                   help="official 1.0x-box cameras (bodies ~9%% too small) instead of the corrected 1.1x")
    p.add_argument("--chunking", choices=("carry", "official"), default="carry",
                   help="carry the GRU state over the whole track (default) or restart it every 450 frames")
    p.add_argument("--focal-px", type=float, help="focal length for the root translation (default: longer image side)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto (default): fp16 on CUDA, bf16 on a CPU with AVX512-BF16 or AMX, else fp32")
    p.add_argument("--fast", action="store_true",
                   help="bf16 (CPU) or fp16 (CUDA) even where auto would choose fp32 (bf16 is slower "
                        "on CPUs without AVX512-BF16/AMX)")
    p.add_argument("--compile-backbone", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile ResNet-50: auto (default) does it for long videos in bf16 on CPU")
    p.add_argument("--official", action="store_true",
                   help="the official demo's exact configuration: detection on every frame, fp32, no compiling, "
                        "a fresh GRU state every 450 frames, the official un-crop; overrides the flags for these "
                        "(about 15-25x slower on a CPU)")
    p.add_argument("--batch-size", type=int, default=32, help="person crops per backbone call (default 32)")
    p.set_defaults(run=run)


class _StageBars:
    """One tqdm bar per phase; the streaming stages share one bar (they run interleaved)."""

    STREAM_LABEL = "decode/detect/track/crop/backbone"

    def __init__(self):
        self.bar, self.label = None, None

    def __call__(self, stage: str, fraction: float, eta_s) -> None:
        from tqdm import tqdm

        from ..pipeline.run import STREAM_STAGES

        label = self.STREAM_LABEL if stage in STREAM_STAGES else stage
        if label != self.label:
            self.close()
            self.bar = tqdm(total=100, desc=f"{label:<34}", unit="%", leave=True, file=sys.stderr,
                            bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
            self.label = label
        self.bar.n = round(100 * fraction, 1)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args) -> int:
    from vibe_blender.core.result_file import save_result
    from vibe_blender.core.smpl_model import load_smpl_pkl, save_body_model

    from ..pipeline import postprocess
    from ..pipeline.run import (SYNTHETIC_MODEL_NAME, RunOptions, load_engine, model_data_problem, official_options,
                                resolve_device)
    from ..data.bundle import INSTALL_HINT, resolve_data_dir

    video = Path(args.video)
    if not video.is_file():
        raise VibeError(f"There is no video at '{video}'; check the path.")
    output = Path(args.output) if args.output else Path.cwd() / f"{video.stem}_vibe.npz"
    if output.suffix != ".npz":
        raise VibeError(f"The result file must end in .npz; got '{output}'.")
    options = RunOptions(detector=args.detector, detection_stride=args.detection_stride,
                         min_track_frames=args.min_track_frames, smoothing=args.smoothing,
                         smoothing_method=args.smoothing_method, official_uncrop=args.official_uncrop,
                         chunking=args.chunking, tracks_max=args.tracks_max, focal_px=args.focal_px,
                         batch_size=args.batch_size, adaptive_detection=args.adaptive_detection)
    if args.official:
        options = official_options(options)
    options.validate()

    device = resolve_device(args.device)
    data_dir = resolve_data_dir(args.data_dir)
    if model_data_problem(data_dir) is not None:
        print(f"NOTE: the official model data is not installed in {data_dir}, so this run uses a SYNTHETIC "
              f"PLACEHOLDER model with random weights: the motion is meaningless. {INSTALL_HINT}",
              file=sys.stderr)
    precision = options.precision or choose_precision(args.precision, fast=args.fast, device=device)
    engine = load_engine(data_dir, device=device, precision=precision, allow_synthetic=True,
                         compile_backbone=options.compile_backbone or args.compile_backbone,
                         log=lambda msg: print(msg, file=sys.stderr))
    bars = _StageBars()
    try:
        out = engine.run(video, options, progress=bars)
    finally:
        bars.close()

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part")
    with open(tmp, "wb") as f:
        save_result(f, out.result)
    tmp.replace(output)
    pkl_path = None
    if args.pkl is not None:
        pkl_path = Path(args.pkl) if args.pkl else output.with_name(output.stem + "_vibe_output.pkl")
        postprocess.write_official_pkl(pkl_path, postprocess.official_output(out.result, engine.smpl))

    body_path = None
    if args.body_model is not None:
        body_path = Path(args.body_model) if args.body_model else output.with_name(output.stem + "_body_model.npz")
        save_body_model(body_path, load_smpl_pkl(Path(engine.data_dir) / "SMPL_NEUTRAL.pkl"))

    print(summary_table(out, engine))
    print(f"\nResult: {output}" + (f"\nOfficial pkl: {pkl_path}" if pkl_path else "")
          + (f"\nBody model: {body_path}" if body_path else ""))
    if out.result.model_name == SYNTHETIC_MODEL_NAME:
        print(f"(Model: {SYNTHETIC_MODEL_NAME}: install the real model data for real motion.)")
    return 0


def summary_table(out, engine) -> str:
    """The tracks found and the time per stage, as plain text."""
    from ..pipeline.run import STAGES

    result = out.result
    fps = result.video.fps or 30.0
    lines = [f"\n{result.video.name}: {result.video.width}x{result.video.height}, {fps:g} fps, "
             f"{out.frames_decoded} frames decoded; model: {result.model_name}; device {engine.device}, "
             f"{engine.precision}; detection every {result.meta.get('detection_stride', '?')} frames"
             f"{' + adaptive' if result.meta.get('adaptive_detection') == 'True' else ''}"
             f"{'; compiled backbone' if result.meta.get('backbone_compiled') == 'True' else ''}",
             "", f"{'track':>5}  {'frames':>6}  {'first':>6}  {'last':>6}  {'seconds':>7}"]
    for t in result.tracks:
        lines.append(f"{t.track_id:>5}  {t.num_frames:>6}  {t.frame_ids[0]:>6}  {t.frame_ids[-1]:>6}  "
                     f"{t.num_frames / fps:>7.1f}")
    lines += ["", f"{'stage':<10}  {'seconds':>8}  {'share':>6}"]
    total = sum(out.timings_s.values()) or 1.0
    for stage in STAGES:
        lines.append(f"{stage:<10}  {out.timings_s[stage]:>8.2f}  {100 * out.timings_s[stage] / total:>5.1f}%")
    lines.append(f"{'total':<10}  {out.wall_s:>8.2f}  ({out.frames_decoded / max(out.wall_s, 1e-9):.1f} video frames/s, "
                 f"{out.crops} person crops)")
    return "\n".join(lines)

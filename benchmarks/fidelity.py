"""Accuracy cost of each speed setting: every real clip run in the official configuration and with
each candidate setting, then compared with the official run, plus each setting's speed.

    python benchmarks/fidelity.py [--data-dir DIR] [--clips-dir DIR] [--frames N] [--threads 2]

Rows: the official configuration (detection on every frame, fp32 eager, fresh GRU state every 450
frames), then one change each: detection stride 2, 4, 8, 16 (fixed), stride 8/16/32 with adaptive
detection, bf16 YOLO, bf16 backbone, the compiled (bf16) backbone, and last the CLI defaults.

One table per clip, then one pooled over the clips with people: a clip with no person in it
(bottle-detection-negative.mp4, where HOG fires on bottles) is a false-positive check only, its
track-frames (all false) kept out of the pooled recall. Columns, over the official run's
track-frames:
- detect: share of the frames on which detection ran; tracks / track-frames: the setting's;
- extra: the setting's track-frames that overlap no official box of their frame (IoU >= 0.5);
- recall: share of official track-frames that the setting reproduces with box IoU >= 0.9 (tracks
  matched one to one, the pairing that overlaps, IoU >= 0.5, on most frames in all);
- box IoU / crop IoU: median IoU of the tracker boxes and of the 1.1x crop boxes (0 when missing);
- MPJPE / PA-MPJPE (mm) of the 14 evaluation joints of joints3d, pelvis-aligned, and the mean
  joint-rotation difference (degrees), over the frames both runs have;
- frames/s (pooled table only): the pipeline end to end on frames 250-449 of one-by-one-person-detection.mp4 (YOLO's
  cost included), the median of --repeats runs (3) after a warm-up run.

Without --data-dir the models are full-size with random weights: their cost is real, but random
YOLO weights find nobody, so the boxes everywhere come from OpenCV's HOG people detector, run
beforehand on every frame (a real detector; the YOLO network still runs, and is timed, in the speed
runs). Then the box figures are HOG's, bf16 YOLO cannot change them (n/a), and the pose figures are
printed but NOT meaningful (a random-weight model). With real model data, real YOLO is used throughout.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from clips import (
    NO_PEOPLE_CLIPS,
    REAL_CLIPS,
    REAL_CLIPS_DIR,
    SPEED_CLIP,
    SPEED_FRAMES,
    SPEED_START,
    CountingDetector,
    ReplayDetector,
    YoloCostHogBoxes,
    hog_boxes,
    slice_clip,
)
from timing import median_seconds

RECALL_IOU = 0.9
CROP_SCALE = 1.1
EVAL_JOINTS = slice(25, 39)  # the 14 common (LSP-order) joints of the 49, as VIBE's evaluation


@dataclass(frozen=True)
class Setting:
    name: str
    stride: int = 1
    adaptive: bool = False
    yolo_precision: str = "fp32"
    backbone_precision: str = "fp32"
    compile: str = "off"
    defaults: bool = False  # the CLI defaults (options, precision and compiling as `infer` chooses)


SETTINGS = (
    Setting("official"),
    *(Setting(f"stride {n}", stride=n) for n in (2, 4, 8, 16)),
    *(Setting(f"stride {n} + adaptive", stride=n, adaptive=True) for n in (8, 16, 32)),
    Setting("bf16 YOLO", yolo_precision="bf16"),
    Setting("bf16 backbone", backbone_precision="bf16"),
    Setting("compiled bf16 backbone", backbone_precision="bf16", compile="on"),
    Setting("CLI defaults", defaults=True),
)


def run_options(setting: Setting):
    """The RunOptions of a setting: the CLI defaults, or the official ones with one change. The
    ``official`` flag itself is cleared (a run would put every official value back, the change
    included); the official GRU chunking and un-crop stay set, so only the named change differs (on
    a CPU the flag changes nothing else: YOLO's per-frame post-processing is a CPU's default)."""
    from vibe_server.pipeline.cpu_features import default_precision
    from vibe_server.pipeline.options import RunOptions, official_options

    if setting.defaults:
        return replace(RunOptions(detector="yolo"), precision=default_precision("cpu"))
    return replace(
        official_options(RunOptions(detector="yolo")),
        detection_stride=setting.stride,
        adaptive_detection=setting.adaptive,
        precision=setting.backbone_precision,
        compile_backbone=setting.compile,
        official=setting.name == "official",
    )


def yolo_precision(setting: Setting, options) -> str:
    return options.precision if setting.defaults else setting.yolo_precision


# ---------------------------------------------------------------------------------------------
# Comparison with the official run


def iou_cxcywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a, b (N, 4) [cx, cy, w, h] -> (N,) IoU."""
    a_lo, a_hi = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b_lo, b_hi = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = np.prod(np.clip(np.minimum(a_hi, b_hi) - np.maximum(a_lo, b_lo), 0, None), axis=1)
    union = np.prod(a[:, 2:], axis=1) + np.prod(b[:, 2:], axis=1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def joint_angle_deg(pose_a: np.ndarray, pose_b: np.ndarray) -> np.ndarray:
    """pose_a, pose_b (N, 72) axis-angle -> (N,) mean over the 24 joints of the rotation between them."""
    from scipy.spatial.transform import Rotation

    ra = Rotation.from_rotvec(pose_a.reshape(-1, 3))
    rb = Rotation.from_rotvec(pose_b.reshape(-1, 3))
    return np.degrees((ra.inv() * rb).magnitude()).reshape(-1, 24).mean(axis=1)


def track_recall(box_iou) -> float:
    """Share of the official track-frames reproduced with box IoU >= RECALL_IOU (nan: none)."""
    box_iou = np.asarray(box_iou, dtype=np.float64)
    return float((box_iou >= RECALL_IOU).mean()) if len(box_iou) else float("nan")


def compare(official, other) -> dict:
    """Two MocapResults of the same clip -> per official track-frame box and crop IoU (0 where the
    matched setting track has no box), per frame both matched tracks have MPJPE, PA-MPJPE (m) and the
    joint-angle difference (deg); ``extra``: the setting's track-frames that overlap no official box
    of their frame (IoU >= 0.5); ``tracks``: (official, setting) track counts.

    Tracks are matched one to one, the pairing that overlaps (IoU >= 0.5) on most frames in all, so
    one setting track is never credited to two official tracks."""
    from scipy.optimize import linear_sum_assignment

    from vibe_server.evaluate.metrics import compute_errors

    out = {"box_iou": [], "crop_iou": [], "mpjpe": [], "pa_mpjpe": [], "angle": []}
    refs, cands = official.tracks, other.tracks
    overlap = np.zeros((len(refs), len(cands)), dtype=np.int64)
    rows = {}
    for i, ref in enumerate(refs):
        for j, cand in enumerate(cands):
            _, ri, ci = np.intersect1d(ref.frame_ids, cand.frame_ids, return_indices=True)
            overlap[i, j] = int((iou_cxcywh(ref.bboxes[ri], cand.bboxes[ci]) >= 0.5).sum())
            rows[i, j] = (ri, ci)
    matched = dict(zip(*linear_sum_assignment(overlap, maximize=True))) if overlap.size else {}
    scaled = np.array([1, 1, CROP_SCALE, CROP_SCALE])
    for i, ref in enumerate(refs):
        box = np.zeros(len(ref.frame_ids))
        crop = np.zeros(len(ref.frame_ids))
        j = matched.get(i)
        if j is not None and overlap[i, j] > 0:
            best, (ri, ci) = cands[j], rows[i, j]
            box[ri] = iou_cxcywh(ref.bboxes[ri], best.bboxes[ci])
            crop[ri] = iou_cxcywh(ref.bboxes[ri] * scaled, best.bboxes[ci] * scaled)
            if ref.joints3d is not None:
                mpjpe, pa_mpjpe = compute_errors(ref.joints3d[ri][:, EVAL_JOINTS], best.joints3d[ci][:, EVAL_JOINTS])
                out["mpjpe"] += list(mpjpe)
                out["pa_mpjpe"] += list(pa_mpjpe)
                out["angle"] += list(joint_angle_deg(ref.pose[ri], best.pose[ci]))
        out["box_iou"] += list(box)
        out["crop_iou"] += list(crop)
    out["extra"] = sum(int((~official_box_near(refs, cand)).sum()) for cand in cands)
    out["tracks"] = (len(refs), len(cands))
    out["setting_frames"] = sum(len(cand.frame_ids) for cand in cands)
    return out


def official_box_near(refs, cand) -> np.ndarray:
    """(T,) whether each box of the track ``cand`` overlaps some box of ``refs`` on its frame with IoU >= 0.5."""
    near = np.zeros(len(cand.frame_ids), dtype=bool)
    for ref in refs:
        _, ri, ci = np.intersect1d(ref.frame_ids, cand.frame_ids, return_indices=True)
        near[ci] |= iou_cxcywh(ref.bboxes[ri], cand.bboxes[ci]) >= 0.5
    return near


# ---------------------------------------------------------------------------------------------


def _mean(values: np.ndarray, scale: float = 1.0) -> float:
    return scale * float(values.mean()) if len(values) else float("nan")


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def cached_hog_boxes(clip: Path, cache_dir: Path | None, source: str) -> dict[str, np.ndarray]:
    """HOG boxes of every frame of the clip, kept in cache_dir (one .npz per source: file name,
    first frame and frame count) when given."""
    import hashlib

    if cache_dir is None:
        return hog_boxes(clip)
    path = cache_dir / f"hog-{hashlib.blake2b(source.encode(), digest_size=8).hexdigest()}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    boxes = hog_boxes(clip)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, **boxes)
    return boxes


def track_only(clip: Path, detector, options) -> SimpleNamespace:
    """Decode, detect and track only -> a result-like object: tracks with frame_ids, bboxes and
    NaN pose figures (the pose columns then read nan)."""
    from vibe_server.pipeline.people import find_people
    from vibe_server.pipeline.video import open_video

    options = options.effective()  # as a run uses them
    tracklets = find_people(
        open_video(clip),
        detector,
        detection_stride=options.detection_stride,
        adaptive_detection=options.adaptive_detection,
        min_track_frames=options.min_track_frames,
    )
    return SimpleNamespace(
        tracks=[
            SimpleNamespace(frame_ids=t.frames, bboxes=t.bboxes, joints3d=None, pose=None) for t in tracklets.values()
        ]
    )


def make_frontend(base, detector_for):
    """The real front end with ``make_detector`` replaced by ``detector_for(name, **kwargs)``."""
    return replace(base, make_detector=detector_for)


def print_table(title, clip_indices, clip_frames, *, settings, comparisons, detected, real, pose_note, speeds=None):
    """One table: each setting against the official run over the clips ``clip_indices`` (their
    frame counts ``clip_frames``); ``speeds``: frames/s by setting, when this table shows them."""
    official = [comparisons["official"][i] for i in clip_indices]
    print(
        f"\n{title}: {sum(len(c['box_iou']) for c in official)} official track-frames, "
        f"{sum(c['tracks'][0] for c in official)} tracks"
    )
    speed_head = f"{'frames/s':>9}{'x':>6}" if speeds is not None else ""
    print(
        f"{'setting':<24}{speed_head}{'detect':>7}{'tracks':>7}{'track-frames':>13}{'extra':>7}{'recall':>8}"
        f"{'box IoU':>8}{'crop IoU':>9}{'MPJPE':>8}{'PA-MPJPE':>9}{'angle':>7}{pose_note}"
    )
    for setting in settings:
        per_clip = [comparisons[setting.name][i] for i in clip_indices]
        merged = {
            k: np.concatenate([np.asarray(c[k], dtype=np.float64) for c in per_clip])
            for k in ("box_iou", "crop_iou", "mpjpe", "pa_mpjpe", "angle")
        }
        speed_cells = ""
        if speeds is not None:
            fps = speeds.get(setting.name, float("nan"))
            ratio = fps / speeds["official"] if "official" in speeds else float("nan")
            speed_cells = f"{fps:>9.2f}{ratio:>6.1f}"
        box_note = "n/a" if (setting.name == "bf16 YOLO" and not real) else None
        cells = (
            f"{track_recall(merged['box_iou']):>8.3f}{_median(merged['box_iou']):>8.3f}"
            f"{_median(merged['crop_iou']):>9.3f}"
            if box_note is None
            else f"{box_note:>8}{box_note:>8}{box_note:>9}"
        )
        detect = sum(detected[setting.name][i] for i in clip_indices) / sum(clip_frames)
        print(
            f"{setting.name:<24}{speed_cells}{detect:>7.2f}{sum(c['tracks'][1] for c in per_clip):>7}"
            f"{sum(c['setting_frames'] for c in per_clip):>13}{sum(c['extra'] for c in per_clip):>7}"
            f"{cells}{_mean(merged['mpjpe'], 1000):>8.1f}{_mean(merged['pa_mpjpe'], 1000):>9.1f}"
            f"{_mean(merged['angle']):>7.2f}"
        )


def print_report(clip_rows, *, settings, comparisons, detected, real, speeds) -> None:
    """A table per clip, then one pooled over the clips with people (a clip of NO_PEOPLE_CLIPS is a
    false-positive check only). clip_rows: (label, file name, frames) of each clip; comparisons /
    detected: per setting, compare()'s result / the frames detected, clip by clip."""
    pose_note = "" if real else "  (pose: random-weight model, NOT meaningful)"
    table = dict(settings=settings, comparisons=comparisons, detected=detected, real=real, pose_note=pose_note)
    for index, (label, name, n) in enumerate(clip_rows):
        what = " (no person in it: every track-frame is a false positive)" if name in NO_PEOPLE_CLIPS else ""
        print_table(f"{label}, {n} frames{what}", [index], [n], **table)
    people = [i for i, (_, name, _) in enumerate(clip_rows) if name not in NO_PEOPLE_CLIPS]
    if not people:  # only clips without people were given: nothing to pool
        return
    title = "pooled over the clips with people: " + ", ".join(clip_rows[i][0] for i in people)
    print_table(title, people, [clip_rows[i][2] for i in people], speeds=speeds, **table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="real model data (default: full-size random weights, HOG boxes)")
    parser.add_argument("--clips-dir", default=str(REAL_CLIPS_DIR))
    parser.add_argument(
        "--clips",
        nargs="*",
        default=list(REAL_CLIPS),
        help="clip file names, each optionally NAME:START:FRAMES (default: all, whole)",
    )
    parser.add_argument("--frames", type=int, help="at most N frames of each clip (default: all)")
    parser.add_argument(
        "--speed-frames",
        type=int,
        default=SPEED_FRAMES,
        help=f"frames of the speed slice (from frame {SPEED_START} of {SPEED_CLIP})",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="run only these settings (names as printed; official always)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each setting (the median is printed)")
    parser.add_argument("--hog-cache", help="a folder keeping the HOG boxes of each clip between runs")
    parser.add_argument(
        "--boxes-only",
        action="store_true",
        help="only decode, detect and track (box figures in seconds; no pose, no speed)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from vibe_server import load_model
    from vibe_server.pipeline.cpu_features import cpu_has_fast_bf16, default_precision
    from vibe_server.pipeline.engine import Engine
    from vibe_server.pipeline.frontend import FrontEnd

    settings = [s for s in SETTINGS if s.name == "official" or not args.only or s.name in args.only]
    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    clips = []
    for spec in args.clips:
        name, start, frames = (spec.split(":") + ["0", ""])[:3]
        frames = int(frames) if frames else args.frames
        clip = work / (Path(name).stem + ".mp4")
        n = slice_clip(Path(args.clips_dir) / name, clip, int(start), frames)
        clips.append((name if spec == name else f"{name} from frame {start}", clip, n, f"{name}:{start}:{n}"))
    speed_clip = work / "speed.mp4"
    speed_n = slice_clip(Path(args.clips_dir) / SPEED_CLIP, speed_clip, SPEED_START, args.speed_frames)
    warmup_clip = work / "warmup.mp4"
    slice_clip(Path(args.clips_dir) / SPEED_CLIP, warmup_clip, SPEED_START, 40)

    real = bool(args.data_dir)
    base = FrontEnd.default()
    if real and args.boxes_only:
        raise SystemExit("--boxes-only replays HOG boxes; it does not run with --data-dir.")
    if real:
        data_dir = Path(args.data_dir)
        boxes = {}
    else:
        from vibe_server.data.synthetic import write_synthetic_bundle
        from vibe_server.pipeline.detect.darknet_weights import write_random_darknet_weights

        data_dir = work / "vibe_data"
        write_synthetic_bundle(data_dir)
        write_random_darknet_weights(data_dir / "yolov3.weights")
        boxes = {}
        sources = [(c[1], c[3]) for c in clips] + [
            (speed_clip, f"{SPEED_CLIP}:{SPEED_START}:{speed_n}"),
            (warmup_clip, f"{SPEED_CLIP}:{SPEED_START}:40"),
        ]
        for clip, source in sources:
            boxes.update(cached_hog_boxes(clip, Path(args.hog_cache) if args.hog_cache else None, source))
    print(
        f"clips: {', '.join(f'{name} ({n} frames)' for name, _, n, _ in clips)}; {args.threads} CPU threads; "
        f"torch {torch.__version__}; CPU bf16 hardware: {cpu_has_fast_bf16()} "
        f"(default precision {default_precision('cpu')})"
    )
    print(
        "boxes: "
        + (
            "real YOLOv3"
            if real
            else "OpenCV HOG people detector (random-weight YOLO cannot detect; its cost is timed in the speed runs)"
        )
    )
    model = None if args.boxes_only else load_model(data_dir, device="cpu")

    results: dict[str, list] = {}
    speeds: dict[str, float] = {}
    detected: dict[str, list[int]] = {}  # frames on which detection ran, per clip
    for setting in settings:
        options = run_options(setting)
        if args.boxes_only:
            results[setting.name], detected[setting.name] = [], []
            for _, clip, *_ in clips:
                counter = CountingDetector(ReplayDetector(boxes))
                results[setting.name].append(track_only(clip, counter, options))
                detected[setting.name].append(counter.frames)
            continue
        yolo_p = yolo_precision(setting, options)

        counters = []

        def detector_for(name, *, replay: bool, yolo_p=yolo_p, counters=counters, **kwargs):
            kwargs["precision"] = yolo_p
            if not replay:
                return (
                    base.make_detector(name, **kwargs)
                    if real
                    else YoloCostHogBoxes(base.make_detector(name, **kwargs), boxes)
                )
            counters.append(CountingDetector(base.make_detector(name, **kwargs) if real else ReplayDetector(boxes)))
            return counters[-1]

        compile_mode = "auto" if setting.defaults else setting.compile
        engine = Engine(
            copy.deepcopy(model),
            model_name="fidelity",
            data_dir=data_dir,
            device="cpu",
            precision=options.precision,
            compile_backbone=compile_mode,
            frontend=make_frontend(base, lambda n, **kw: detector_for(n, replay=True, **kw)),
            log=lambda msg: print(msg, file=sys.stderr),
        )
        print(f"running {setting.name} ...", flush=True)
        if setting.compile == "on":
            engine.run(warmup_clip, options)  # compiling is not part of the comparison
        results[setting.name], detected[setting.name] = [], []
        for _, clip, *_ in clips:
            before = sum(c.frames for c in counters)
            results[setting.name].append(engine.run(clip, options).result)
            detected[setting.name].append(sum(c.frames for c in counters) - before)
        if not args.skip_speed:
            timed = Engine(
                engine.model,
                model_name="fidelity",
                data_dir=data_dir,
                device="cpu",
                precision=options.precision,
                compile_backbone=compile_mode,
                frontend=make_frontend(base, lambda n, **kw: detector_for(n, replay=False, **kw)),
            )
            timed.backbone_runner = engine.backbone_runner  # compiled once
            timed.run(warmup_clip, options)
            seconds = median_seconds(lambda e=timed, o=options: e.run(speed_clip, o), args.repeats)
            speeds[setting.name] = speed_n / seconds  # every frame of the slice is decoded

    comparisons = {s.name: [compare(o, r) for o, r in zip(results["official"], results[s.name])] for s in settings}
    clip_rows = [(label, source.split(":")[0], n) for label, _, n, source in clips]
    print_report(clip_rows, settings=settings, comparisons=comparisons, detected=detected, real=real, speeds=speeds)
    defaults = run_options(Setting("CLI defaults", defaults=True))
    print(
        f"\nCLI defaults: detection stride {defaults.detection_stride}, adaptive {defaults.adaptive_detection}, "
        f"precision {defaults.precision}, compile auto; speed runs on {speed_n} frames from frame {SPEED_START} "
        f"of {SPEED_CLIP}, the median of {args.repeats} timed runs after a warm-up, {args.threads} threads"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

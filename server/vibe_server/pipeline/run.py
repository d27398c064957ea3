"""Video -> ``MocapResult``: the inference pipeline as named passes.

    decode -> detect -> track -> crop -> backbone     one streaming pass over the video: each frame is
                                                      decoded once, people are cropped as the tracker
                                                      emits them and the crops go through ResNet-50 in
                                                      batches; only 2048-d features are kept per track
    temporal + regressor                              per track, over the whole track, in chunks with
                                                      the GRU state carried (or the official fresh
                                                      state every 450 frames)
    smpl                                              joints recomputed from a smoothed pose
    postprocess -> write                              cameras, root translation, the result file

``Engine`` holds the model and the detectors; ``Engine.run`` runs one video. Progress is reported
through ``progress(stage, fraction, eta_s)`` (fraction of the whole job, 0..1) and a job stops at the
next frame or track once ``should_cancel()`` is true. The front-end functions (video, detector,
tracker, crop) come in through ``FrontEnd`` so that tests can swap them.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import MocapResult, Track, VideoInfo

from . import postprocess
from .compiled_backbone import COMPILE_MODES, BackboneRunner, compile_pays
from .cpu_features import default_precision
from .smooth import smooth_pose

STAGES = ("decode", "detect", "track", "crop", "backbone", "temporal", "smpl", "write")
STREAM_STAGES = STAGES[:5]                 # these run interleaved in the one pass over the video
OFFICIAL_CHUNK_FRAMES = 450                # the official demo's --vibe_batch_size: fresh GRU state per chunk
# Chosen with benchmarks/fidelity.py (README, "The defaults"): with adaptive detection, stride 8 is
# the fastest setting whose boxes stay as close to detecting on every frame as stride 2 does.
DEFAULT_DETECTION_STRIDE = 8
# Share of a job's progress bar taken by each phase (the streaming pass dominates).
_PHASE_SPAN = {"stream": (0.0, 0.9), "temporal": (0.9, 0.96), "smpl": (0.96, 0.98), "write": (0.98, 1.0)}

ProgressFn = Callable[[str, float, "float | None"], None]


class JobCancelled(Exception):
    """Raised inside ``Engine.run`` when ``should_cancel()`` turned true."""


@dataclass
class RunOptions:
    """Per-job settings (the HTTP API's ``params`` plus CLI-only knobs)."""

    detector: str = "auto"                 # "yolo" | "hog" | "auto" (yolo when its weights are installed)
    detection_stride: int = DEFAULT_DETECTION_STRIDE   # detect every Nth frame; the tracker carries the rest
    adaptive_detection: bool = True        # also detect at once when the tracker may be wrong (see people.py)
    min_track_frames: int = 25             # shorter tracks are dropped (official MIN_NUM_FRAMES)
    smoothing: float = 0.0                 # 0 = off, 1 = strongest
    smoothing_method: str = "rotation"     # "rotation" (quaternions) | "one_euro" (official)
    official_uncrop: bool = False          # official 1.0x box un-crop (meshes 1/1.1 too small)
    chunking: str = "carry"                # "carry" (GRU state across chunks) | "official" (fresh every 450)
    tracks_max: int | None = None          # keep only the N longest tracks
    focal_px: float | None = None          # focal length for trans_cam_m; None: the longer image side
    batch_size: int = 32                   # crops per backbone call
    temporal_chunk_frames: int = 256       # frames per GRU call in "carry" mode (result does not depend on it)
    precision: str | None = None           # "fp32" | "bf16" | "fp16"; None: the engine's (auto-detected)
    compile_backbone: str | None = None    # "auto" | "on" | "off"; None: the engine's (see compiled_backbone.py)

    def validate(self) -> None:
        if self.detector not in ("auto", "yolo", "hog"):
            raise VibeError(f"Unknown detector '{self.detector}'; use 'yolo' or 'hog'.")
        for name in ("detection_stride", "min_track_frames", "batch_size", "temporal_chunk_frames"):
            if int(getattr(self, name)) < 1:
                raise VibeError(f"'{name}' must be at least 1; got {getattr(self, name)}.")
        if self.tracks_max is not None and self.tracks_max < 1:
            raise VibeError(f"'tracks_max' must be at least 1 or empty; got {self.tracks_max}.")
        if not 0.0 <= self.smoothing <= 1.0:
            raise VibeError(f"'smoothing' must be between 0 and 1; got {self.smoothing}.")
        if self.smoothing_method not in ("rotation", "one_euro"):
            raise VibeError(f"Unknown smoothing method '{self.smoothing_method}'; use 'rotation' or 'one_euro'.")
        if self.chunking not in ("carry", "official"):
            raise VibeError(f"Unknown chunking '{self.chunking}'; use 'carry' or 'official'.")
        if self.focal_px is not None and self.focal_px <= 0:
            raise VibeError(f"The focal length must be positive; got {self.focal_px} px.")
        if self.precision not in (None, "fp32", "bf16", "fp16"):
            raise VibeError(f"Unknown precision '{self.precision}'; use fp32, bf16 or fp16.")
        if self.compile_backbone not in (None, *COMPILE_MODES):
            raise VibeError(f"Unknown backbone compile mode '{self.compile_backbone}'; use auto, on or off.")


def official_options(options: RunOptions | None = None) -> RunOptions:
    """``options`` (default: the defaults) with everything the official demo does differently put
    back: YOLO-or-HOG on every frame, fp32 eager, a fresh GRU state every 450 frames, the official
    1.0x un-crop. Smoothing, track filters and the focal length are left as given."""
    return replace(options or RunOptions(), detection_stride=1, adaptive_detection=False, chunking="official",
                   official_uncrop=True, precision="fp32", compile_backbone="off")


@dataclass
class FrontEnd:
    """The video/detection/tracking/crop functions the pipeline calls (``default()``: the real ones).

    open_video(path) -> reader (``.info`` with name/fps/width/height/frame_count; iterates
        (frame_index, frame_rgb)); make_detector(name, data_dir=, device=) -> detector;
    stream_people(reader, detector, detection_stride=, adaptive_detection=) -> iterator of
        (frame_index, frame_rgb, [(track_id, bbox_cxcywh), ...]);
    crop_people(frame_rgb, bboxes (K, 4) cxcywh) -> (K, 3, 224, 224) ImageNet-normalised float32.
    """

    open_video: Callable
    make_detector: Callable
    stream_people: Callable
    crop_people: Callable

    @classmethod
    def default(cls) -> "FrontEnd":
        from . import crop, detect, people, video

        return cls(open_video=video.open_video, make_detector=detect.make_detector,
                   stream_people=people.stream_people, crop_people=crop.crop_people)


@dataclass
class RunOutput:
    result: MocapResult
    timings_s: dict[str, float]            # seconds per stage (STAGES)
    frames_decoded: int
    crops: int                             # person crops that went through the backbone
    wall_s: float


# ---------------------------------------------------------------------------------------------
# Progress, timing and cancellation

class _Monitor:
    """Accumulates seconds per stage, reports progress at most every 0.2 s, checks for cancel."""

    def __init__(self, progress: ProgressFn | None, should_cancel: Callable[[], bool] | None):
        self.timings_s = {stage: 0.0 for stage in STAGES}
        self._progress, self._should_cancel = progress, should_cancel
        self._t0 = time.perf_counter()
        self._last_report = -1.0

    @contextlib.contextmanager
    def stage(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[name] += time.perf_counter() - t

    def check_cancel(self) -> None:
        if self._should_cancel is not None and self._should_cancel():
            raise JobCancelled()

    def report(self, stage: str, phase: str, phase_fraction: float, *, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.perf_counter()
        if not force and now - self._last_report < 0.2:
            return
        self._last_report = now
        lo, hi = _PHASE_SPAN[phase]
        fraction = min(1.0, max(0.0, lo + (hi - lo) * phase_fraction))
        elapsed = now - self._t0
        eta_s = elapsed * (1 - fraction) / fraction if fraction > 0.01 else None
        self._progress(stage, fraction, eta_s)

    def busiest_stream_stage(self) -> str:
        return max(STREAM_STAGES, key=lambda s: self.timings_s[s])


class _TimedReader:
    """Wraps a video reader so that the time spent decoding counts as 'decode'."""

    def __init__(self, reader, monitor: _Monitor):
        self._reader, self._monitor = reader, monitor
        self.info = reader.info

    def __iter__(self):
        iterator = iter(self._reader)
        while True:
            with self._monitor.stage("decode"):
                item = next(iterator, None)
            if item is None:
                return
            yield item

    def __getattr__(self, name):
        return getattr(self._reader, name)


class _TimedDetector:
    """Wraps a detector so that its calls count as 'detect'."""

    def __init__(self, detector, monitor: _Monitor):
        self._detector, self._monitor = detector, monitor

    def detect(self, frames):
        with self._monitor.stage("detect"):
            return self._detector.detect(frames)

    def __getattr__(self, name):
        return getattr(self._detector, name)


# ---------------------------------------------------------------------------------------------
# Per-track buffers of the streaming pass

@dataclass
class _TrackBuffer:
    frame_ids: list[int] = field(default_factory=list)
    bboxes: list[np.ndarray] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)    # (B_i, 2048) blocks, in frame order
    pending_crops: list | None = field(default_factory=list)    # held until the track is long enough
    last_seen: int = 0


class Engine:
    """The loaded model plus detectors: runs videos one at a time (not thread-safe; one per device)."""

    def __init__(self, model, *, model_name: str, data_dir: Path | None, device: str = "cpu",
                 precision: str = "fp32", frontend: FrontEnd | None = None, compile_backbone: str = "auto",
                 log: Callable[[str], None] | None = None):
        """precision: the default of runs that do not set one; compile_backbone: "auto" | "on" |
        "off", likewise (see :mod:`.compiled_backbone`); log: where notes such as a compile
        fallback go."""
        self.model, self.model_name, self.data_dir = model, model_name, data_dir
        self.device = device
        self.frontend = frontend
        self._detectors: dict[tuple[str, str], object] = {}
        self._channels_last: bool | None = None            # the backbone's memory format is set below
        self._batch_size = RunOptions.batch_size
        self.precision = self._check_precision(precision)
        self.default_precision = self.precision
        if compile_backbone not in COMPILE_MODES:
            raise VibeError(f"Unknown backbone compile mode '{compile_backbone}'; use auto, on or off.")
        self.compile_backbone = compile_backbone
        self._use_compiled = False
        self.backbone_runner = BackboneRunner(model.backbone, on_fallback=log) if hasattr(model, "backbone") else None
        self._set_precision(self.precision)

    def _check_precision(self, precision: str) -> str:
        if precision not in ("fp32", "bf16", "fp16"):
            raise VibeError(f"Unknown precision '{precision}'; use fp32, bf16 or fp16.")
        if precision == "fp16" and not self.device.startswith("cuda"):
            raise VibeError("fp16 needs a CUDA device; on CPU use bf16 or fp32.")
        return precision

    def _set_precision(self, precision: str) -> None:
        """Autocast dtype, and channels_last for the backbone whenever it is not plain fp32 on CPU."""
        import torch

        self.precision = self._check_precision(precision)
        channels_last = precision != "fp32" or self.device.startswith("cuda")
        if channels_last != self._channels_last and hasattr(self.model, "backbone"):
            self.model.backbone.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        self._channels_last = channels_last

    # -- helpers ------------------------------------------------------------------------------
    def _frontend(self) -> FrontEnd:
        if self.frontend is None:
            self.frontend = FrontEnd.default()
        return self.frontend

    def _autocast(self):
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)

    def open_video(self, path: str | Path):
        """The front end's video reader (VibeError when the file is not a readable video)."""
        return self._frontend().open_video(str(path))

    def resolve_detector_name(self, name: str) -> str:
        if name != "auto":
            return name
        has_yolo = self.data_dir is not None and (Path(self.data_dir) / "yolov3.weights").is_file()
        return "yolo" if has_yolo else "hog"

    def detector(self, name: str):
        name = self.resolve_detector_name(name)
        # YOLO follows the run's precision (bf16/fp16 autocast + channels_last); HOG is OpenCV's
        key = (name, self.precision if name == "yolo" else "")
        if key not in self._detectors:
            options = {"precision": self.precision} if name == "yolo" else {}
            self._detectors[key] = self._frontend().make_detector(name, data_dir=self.data_dir, device=self.device,
                                                                  **options)
        return self._detectors[key]

    def extract_features(self, crops) -> np.ndarray:
        """crops (B, 3, 224, 224) float32 -> features (B, 2048) float32 numpy."""
        import torch

        images = torch.as_tensor(crops)
        if self.device.startswith("cuda"):
            images = images.pin_memory()                     # lets the copy overlap the GPU's work
        images = images.to(self.device, non_blocking=True)
        if self._channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            if self._use_compiled:
                features = self.backbone_runner(images, compiled=True, batch_size=self._batch_size)
            else:
                features = self.model.extract_features(images[None])[0]
        return features.float().cpu().numpy()

    def temporal(self, features: np.ndarray, *, chunking: str, chunk_frames: int) -> dict[str, np.ndarray]:
        """features (T, 2048) -> {'theta' (T, 85), 'kp_3d' (T, 49, 3)} over the whole track.

        "carry": chunks of chunk_frames with the GRU state passed on, so the output equals one call
        over the whole track. "official": fresh state every 450 frames, as the official demo."""
        import torch

        if chunking == "official":
            chunk_frames, carry = OFFICIAL_CHUNK_FRAMES, False
        else:
            carry = True
        feats = torch.as_tensor(features, dtype=torch.float32)
        theta, kp_3d, h = [], [], None
        with torch.inference_mode():
            for start in range(0, len(feats), chunk_frames):
                x = feats[start:start + chunk_frames][None].to(self.device)        # (1, t, 2048)
                out = self.model.forward_features(x, h0=h)
                theta.append(out["theta"][0].float().cpu())
                kp_3d.append(out["kp_3d"][0].float().cpu())
                if carry:
                    h = self._final_gru_state(out, x, h)
        return {"theta": torch.cat(theta).numpy(), "kp_3d": torch.cat(kp_3d).numpy()}

    def _final_gru_state(self, out: dict, x, h0):
        """The GRU state after a chunk: from the model's output when it returns one, else by running
        the encoder's GRU over the chunk again (it costs little next to the backbone)."""
        if out.get("gru_state") is not None:
            return out["gru_state"]
        _, h_n = self.model.encoder.gru(x.permute(1, 0, 2), h0)                 # GRU is time-major
        return h_n

    def smpl(self, pose: np.ndarray, betas: np.ndarray, *, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """pose (T, 72), betas (T, 10) -> verts (T, 6890, 3), joints (T, 49, 3) with the model's SMPL."""
        import torch

        from vibe_server.geometry import batch_rodrigues

        verts, joints = [], []
        with torch.inference_mode():
            for start in range(0, len(pose), batch):
                p = torch.as_tensor(pose[start:start + batch], dtype=torch.float32, device=self.device)
                b = torch.as_tensor(betas[start:start + batch], dtype=torch.float32, device=self.device)
                rotmat = batch_rodrigues(p.reshape(-1, 3)).reshape(len(p), 24, 3, 3)
                v, j = self.model.regressor.smpl.forward_joints(b, rotmat)
                verts.append(v.float().cpu())
                joints.append(j.float().cpu())
        return torch.cat(verts).numpy(), torch.cat(joints).numpy()

    # -- the pipeline ---------------------------------------------------------------------------
    def run(self, video_path: str | Path, options: RunOptions | None = None, *,
            progress: ProgressFn | None = None, should_cancel: Callable[[], bool] | None = None,
            video_name: str | None = None) -> RunOutput:
        """video_name: the name to report (an upload's original file name); default the file's."""
        options = options or RunOptions()
        options.validate()
        monitor = _Monitor(progress, should_cancel)
        t_start = time.perf_counter()
        fe = self._frontend()
        detector_name = self.resolve_detector_name(options.detector)

        reader = self.open_video(video_path)
        info = reader.info
        self._set_precision(options.precision or self.default_precision)
        self._batch_size = options.batch_size
        self._use_compiled = self.backbone_runner is not None and compile_pays(
            options.compile_backbone or self.compile_backbone, device=self.device, precision=self.precision,
            expected_crops=int(info.frame_count or 0), compiled_already=self.backbone_runner.compiled)
        video_name = video_name or info.name
        monitor.report("decode", "stream", 0.0, force=True)
        buffers, frames_decoded, crops = self._stream_pass(reader, fe, options, monitor)
        if frames_decoded == 0:
            raise VibeError(f"No frame of '{video_name}' could be decoded. Check that the file plays, "
                            "or re-encode it (for example to H.264 .mp4).")
        tracks = self._select_tracks(buffers, options, video_name)

        results: list[Track] = []
        focal_px = options.focal_px or postprocess.default_focal_length_px(info.width, info.height)
        for i, (track_id, buf) in enumerate(tracks):
            monitor.check_cancel()
            monitor.report("temporal", "temporal", i / len(tracks), force=True)
            with monitor.stage("temporal"):
                out = self.temporal(np.concatenate(buf.features), chunking=options.chunking,
                                    chunk_frames=options.temporal_chunk_frames)
            theta, joints3d = out["theta"], out["kp_3d"]
            if options.smoothing > 0:
                monitor.report("smpl", "smpl", i / len(tracks), force=True)
                with monitor.stage("smpl"):
                    theta = theta.copy()
                    theta[:, 3:75] = smooth_pose(theta[:, 3:75], options.smoothing, fps=info.fps or 30.0,
                                                 method=options.smoothing_method)
                    _, joints3d = self.smpl(theta[:, 3:75], theta[:, 75:85])
            with monitor.stage("write"):
                results.append(postprocess.build_track(
                    track_id, np.asarray(buf.frame_ids), theta, joints3d, np.stack(buf.bboxes),
                    width=info.width, height=info.height, focal_px=focal_px,
                    official_uncrop=options.official_uncrop))
        monitor.report("write", "write", 1.0, force=True)

        result = MocapResult(
            video=VideoInfo(name=video_name, fps=float(info.fps), width=int(info.width), height=int(info.height),
                            frame_count=max(int(info.frame_count or 0), frames_decoded)),
            tracks=results, model_name=self.model_name, focal_length_px=float(focal_px),
            meta=self._meta(options, detector_name),
        )
        return RunOutput(result=result, timings_s=monitor.timings_s, frames_decoded=frames_decoded,
                         crops=crops, wall_s=time.perf_counter() - t_start)

    def _stream_pass(self, reader, fe: FrontEnd, options: RunOptions, monitor: _Monitor):
        """One pass over the video: decode, detect, track, crop, backbone. Crops of a track wait in
        its buffer until the track has min_track_frames (so short false positives never reach the
        backbone), then go through the backbone in batches of batch_size."""
        import torch

        detector = _TimedDetector(self.detector(options.detector), monitor)
        stream: Iterable = fe.stream_people(_TimedReader(reader, monitor), detector,
                                            detection_stride=options.detection_stride,
                                            adaptive_detection=options.adaptive_detection)
        frame_count = max(int(reader.info.frame_count or 0), 1)
        # a pending track unseen for this long is over: free its crops (it cannot reach the backbone)
        stale_after = max(60, 4 * options.detection_stride)
        buffers: dict[int, _TrackBuffer] = {}
        queue: list[tuple[int, object]] = []                  # (track_id, crop) waiting for the backbone
        frames_decoded = crops_done = 0

        def flush(n: int) -> None:
            nonlocal crops_done
            batch, rest = queue[:n], queue[n:]
            queue[:] = rest
            with monitor.stage("backbone"):
                feats = self.extract_features(torch.stack([crop for _, crop in batch]))
            crops_done += len(batch)
            for (track_id, _), feat in zip(batch, feats):
                buffers[track_id].features.append(feat[None])

        iterator: Iterator = iter(stream)
        while True:
            monitor.check_cancel()
            timed_inside_s = monitor.timings_s["decode"] + monitor.timings_s["detect"]
            t = time.perf_counter()
            item = next(iterator, None)
            # the front end's own time, minus decoding and detection (timed inside it), is tracking
            front_s = time.perf_counter() - t
            timed_inside_s = monitor.timings_s["decode"] + monitor.timings_s["detect"] - timed_inside_s
            monitor.timings_s["track"] += max(0.0, front_s - timed_inside_s)
            if item is None:
                break
            frame_index, frame_rgb, people = item
            frames_decoded += 1
            if people:
                with monitor.stage("crop"):
                    boxes = np.asarray([box for _, box in people], dtype=np.float64).reshape(-1, 4)
                    frame_crops = torch.as_tensor(fe.crop_people(frame_rgb, boxes))
                for (track_id, box), crop in zip(people, frame_crops):
                    self._add_crop(buffers, queue, int(track_id), int(frame_index), box, crop, options)
                while len(queue) >= options.batch_size:
                    flush(options.batch_size)
            for track_id, buf in list(buffers.items()):
                if buf.pending_crops is not None and frame_index - buf.last_seen > stale_after:
                    del buffers[track_id]
            monitor.report(monitor.busiest_stream_stage(), "stream", frames_decoded / frame_count)
        if queue:
            flush(len(queue))
        return buffers, frames_decoded, crops_done

    @staticmethod
    def _add_crop(buffers, queue, track_id, frame_index, box, crop, options: RunOptions) -> None:
        buf = buffers.get(track_id)
        if buf is None:
            buf = buffers[track_id] = _TrackBuffer()
        buf.frame_ids.append(frame_index)
        buf.bboxes.append(np.asarray(box, dtype=np.float64))
        buf.last_seen = frame_index
        if buf.pending_crops is None:
            queue.append((track_id, crop))
            return
        buf.pending_crops.append(crop)
        if len(buf.pending_crops) >= options.min_track_frames:
            queue.extend((track_id, c) for c in buf.pending_crops)
            buf.pending_crops = None

    @staticmethod
    def _select_tracks(buffers: dict[int, _TrackBuffer], options: RunOptions, video_name: str):
        tracks = [(tid, buf) for tid, buf in buffers.items()
                  if buf.pending_crops is None and len(buf.frame_ids) >= options.min_track_frames]
        if not tracks:
            raise VibeError(
                f"Nobody was found in '{video_name}': no person was tracked for at least "
                f"{options.min_track_frames} frames. Use a clip where a whole person is visible, "
                "or lower min_track_frames for very short clips.")
        tracks.sort(key=lambda item: -len(item[1].frame_ids))
        if options.tracks_max is not None:
            tracks = tracks[:options.tracks_max]
        return sorted(tracks, key=lambda item: item[0])

    def _meta(self, options: RunOptions, detector_name: str) -> dict[str, str]:
        import torch

        from vibe_server import __version__

        meta = {k: ("" if v is None else str(v)) for k, v in asdict(options).items()}
        meta.update({
            "detector": detector_name, "vibe_mocap_version": __version__, "torch": torch.__version__,
            "device": self.device, "precision": self.precision,
            "backbone_compiled": str(self._use_compiled and self.backbone_runner.compiled),
            postprocess.UNCROP_META_KEY: (postprocess.UNCROP_OFFICIAL if options.official_uncrop
                                          else postprocess.UNCROP_CORRECTED),
        })
        return meta


# ---------------------------------------------------------------------------------------------
# Loading

SYNTHETIC_MODEL_NAME = "synthetic placeholder"


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda:0' when CUDA is available, else 'cpu'; other values are checked."""
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VibeError(f"Device '{device}' was asked for but this PyTorch build sees no CUDA GPU; use --device cpu.")
    if device != "cpu" and not device.startswith("cuda"):
        raise VibeError(f"Unknown device '{device}'; use auto, cpu or cuda[:N].")
    return device


def synthetic_cache_dir() -> Path:
    """Where the synthetic placeholder bundle is written once (user cache folder)."""
    from vibe_blender.core.user_dirs import user_dir

    return user_dir("cache") / "synthetic-placeholder"


def model_data_problem(data_dir: Path) -> str | None:
    """None when the model files load, else the sentence saying what is missing."""
    from vibe_server.data import bundle

    try:
        bundle.require_files(data_dir, bundle.MODEL_FILES + (bundle.SPIN_CHECKPOINT, bundle.VIBE_CHECKPOINT))
    except VibeError as err:
        return str(err)
    return None


def load_engine(data_dir=None, *, device: str = "auto", precision: str = "auto", allow_synthetic: bool = False,
                synthetic_dir: Path | None = None, frontend: FrontEnd | None = None,
                log: Callable[[str], None] | None = None, compile_backbone: str = "auto") -> Engine:
    """The Engine for the model data in ``data_dir`` (flag > $VIBE_DATA_DIR > platform default).

    precision "auto": fp16 on CUDA, bf16 on a CPU with AVX512-BF16/AMX, else fp32 (see
    :mod:`.cpu_features`).

    When the data is missing: VibeError saying how to install it, or, with ``allow_synthetic``, a
    clearly labelled random-weight placeholder (written once to ``synthetic_dir``) whose results
    carry ``model_name == "synthetic placeholder"``.
    """
    from vibe_server import load_model
    from vibe_server.data.bundle import resolve_data_dir

    device = resolve_device(device)
    if precision == "auto":
        precision = default_precision(device)
    data_dir = resolve_data_dir(data_dir)
    problem = model_data_problem(data_dir)
    model_name = None
    if problem is not None:
        if not allow_synthetic:
            raise VibeError(problem)
        data_dir = Path(synthetic_dir or synthetic_cache_dir())
        if model_data_problem(data_dir) is not None:
            from vibe_server.data.synthetic import write_synthetic_bundle

            if log:
                log(f"Writing the synthetic placeholder model to {data_dir} (once).")
            write_synthetic_bundle(data_dir)
        model_name = SYNTHETIC_MODEL_NAME
    model = load_model(data_dir, device=device)
    model_name = model_name or getattr(model, "model_name", "vibe")
    return Engine(model, model_name=model_name, data_dir=data_dir, device=device, precision=precision,
                  frontend=frontend, compile_backbone=compile_backbone, log=log)

"""The Engine: a loaded model plus detectors, running one video at a time (video -> ``MocapResult``).

    decode -> detect -> track -> crop -> backbone     one streaming pass over the video: each frame is
                                                      decoded once, people are cropped as the tracker
                                                      emits them (on a GPU a few frames at a time) and
                                                      the crops go through ResNet-50 in batches; only
                                                      2048-d features are kept per track
    temporal + regressor                              per track, over the whole track, in chunks with
                                                      the GRU state carried (or the official fresh
                                                      state every 450 frames)
    smpl                                              joints recomputed from a smoothed pose
    postprocess -> write                              cameras, root translation, the result file

The engine receives a loaded model (``data/loading.py`` reads the files; :func:`load_engine` joins
the two). Options: ``options.py``; progress, timing and cancel: ``progress.py``; the swappable video,
detector, tracker and crop functions: ``frontend.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import (
    MAX_TRACKS,
    WARNINGS_META_KEY,
    MocapResult,
    Track,
    VideoInfo,
    longest_track_ids,
)

from .. import __version__
from ..data import loading
from ..geometry import batch_rodrigues
from . import postprocess
from .batched.transfers import to_device
from .compiled import COMPILE_MODES, CompiledRunner, compile_pays
from .cpu_features import default_precision
from .detect import Detector
from .devices import OUT_OF_MEMORY_STAGE, out_of_memory_error, usable_cores
from .frontend import FrontEnd
from .options import MAX_TEMPORAL_CHUNK_FRAMES, RunOptions
from .precision import autocast, check_precision, exact_fp32_on_cuda
from .progress import ProgressFn, StageMonitor, TimedDetector, TimedReader
from .smooth import smooth_pose

OFFICIAL_CHUNK_FRAMES = 450  # the official demo's --vibe_batch_size: fresh GRU state per chunk
CPU_BACKBONE_BATCH, GPU_BACKBONE_BATCH = 32, 128  # crops per backbone call by default
# frames with people the device crop takes in one call (its launches and copies paid once): they
# are held on the host until then, within this many frames of each other (4K: ~200 MB more)
CROP_GROUP_FRAMES = 8
# a run's crop: (frames_rgb, each frame's boxes (K_i, 4) cxcywh) -> (sum K_i, 3, 224, 224), in order
CropFrames = Callable[[list[np.ndarray], list[np.ndarray]], torch.Tensor]
# frames (tracks × chunk frames) in one temporal-model call with the GPU front end: the regressor
# builds SMPL vertices for each (4,096 x 6,890 x 3 fp32: 340 MB, a few times that inside SMPL)
TEMPORAL_BATCH_FRAMES = MAX_TEMPORAL_CHUNK_FRAMES  # and the largest chunk a run may ask for
# crops a track still too short for the result holds at most (600 KB each): past this its crops go
# through the backbone and it holds their features, so memory does not grow with min_track_frames
PENDING_CROPS_MAX = 32
# the GPU front end's decode thread runs at most this far ahead (4K: ~800 MB; with several decoding
# threads their queues hold at most parallel_decode.MAX_BYTES); the staged runs after it hold at most
# people.RUNS_BYTES_MAX more (1 GiB: shorter runs for large frames), and a crop group CROP_GROUP_FRAMES
DECODE_AHEAD_FRAMES = 32
# threads decoding keyframe-aligned chunks at once for the GPU front end: one per 4 cores, at most 4.
# Below 8 cores one decoder: FFmpeg's own threads already fill 2 cores (docs/server.md: one decoder
# 1,480 frames/s, two chunk threads 1,570, four 1,430).
DECODE_WORKERS = min(4, max(1, usable_cores() // 4))


def no_frames_error(video_name: str) -> VibeError:
    return VibeError(
        f"No frame of '{video_name}' could be decoded. Check that the file plays, "
        "or re-encode it (for example to H.264 .mp4)."
    )


class DeviceStageMonitor(StageMonitor):
    """:class:`StageMonitor` whose stages name themselves on a device's out-of-memory error that
    leaves them (the innermost stage), for :func:`naming_out_of_memory`."""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        try:
            with super().stage(name):
                yield
        except torch.cuda.OutOfMemoryError as err:
            if not hasattr(err, OUT_OF_MEMORY_STAGE):
                setattr(err, OUT_OF_MEMORY_STAGE, name)
            raise


T = TypeVar("T")


def naming_out_of_memory(run: Callable[[], T]) -> T:
    """``run()``, with a device's out-of-memory error turned into the one clear VibeError naming the
    stage (see :class:`DeviceStageMonitor`) and what to change. It is raised once the failed work is
    gone, so that its memory goes back to the device first."""
    try:
        return run()
    except torch.cuda.OutOfMemoryError as err:
        stage = getattr(err, OUT_OF_MEMORY_STAGE, None)
    raise out_of_memory_error(stage)


@dataclass
class RunOutput:
    """What :meth:`Engine.run` returns: the result and where the time went."""

    result: MocapResult
    timings_s: dict[str, float]  # seconds per stage (STAGES)
    frames_decoded: int
    crops: int  # person crops that went through the backbone
    wall_s: float
    warnings: list[str] = field(default_factory=list)  # e.g. the video broke off (also in meta)


@dataclass
class _TrackBuffer:
    frame_ids: list[int] = field(default_factory=list)
    bboxes: list[np.ndarray] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)  # (B_i, 2048) blocks, in frame order
    pending_crops: list | None = field(default_factory=list)  # held while the track is young; None: it is not
    last_seen: int = 0


class _StreamTracks:
    """The tracks of a stream pass: each one's frames, boxes and backbone features, and the crops
    waiting for the backbone (``queue``, in order).

    A young track's crops wait in its buffer until it has ``min_track_frames`` frames, so short false
    positives never reach the backbone; past ``PENDING_CROPS_MAX`` held crops they go through the
    backbone anyway and the track keeps their 8 KB features instead of 600 KB crops, whatever
    ``min_track_frames`` is. A young track unseen for ``stale_after`` frames is over: it is dropped,
    with its crops and features. The young tracks are kept least recently seen first, so the
    sweep for stale ones looks only at those that may be."""

    def __init__(self, min_track_frames: int, stale_after: int) -> None:
        self.min_track_frames, self.stale_after = min_track_frames, stale_after
        self.buffers: dict[int, _TrackBuffer] = {}  # every track kept so far, young or not
        self.young: OrderedDict[int, _TrackBuffer] = OrderedDict()  # pending, least recently seen first
        self.queue: list[tuple[_TrackBuffer, object]] = []  # (its track's buffer, crop) for the backbone
        self.dropped_frames: dict[int, int] = {}  # frames of each track dropped young (for "Nobody was found")

    def add(self, track_id: int, frame_index: int, box, crop, *, copy_held: bool) -> None:
        """The crop goes to the backbone's queue, or waits in its young track's buffer (a copy, with
        ``copy_held``)."""
        buf = self.buffers.get(track_id)
        if buf is None:
            buf = self.buffers[track_id] = self.young[track_id] = _TrackBuffer()
        buf.frame_ids.append(frame_index)
        buf.bboxes.append(np.asarray(box, dtype=np.float64))
        buf.last_seen = frame_index
        if buf.pending_crops is None:
            self.queue.append((buf, crop))
            return
        self.young.move_to_end(track_id)
        buf.pending_crops.append(crop.clone() if copy_held else crop)
        if len(buf.frame_ids) >= self.min_track_frames:  # long enough: a track of the result
            self.queue.extend((buf, c) for c in buf.pending_crops)
            buf.pending_crops = None
            del self.young[track_id]
        elif len(buf.pending_crops) >= PENDING_CROPS_MAX:  # hold features rather than crops
            self.queue.extend((buf, c) for c in buf.pending_crops)
            buf.pending_crops = []

    def drop_stale(self, frame_index: int, waiting: Callable[[], set[int]]) -> None:
        """Drops the young tracks unseen for more than ``stale_after`` frames, but those in
        ``waiting()`` (seen in frames not cropped yet)."""
        unseen = self.young.items()
        stale = list(itertools.takewhile(lambda item: frame_index - item[1].last_seen > self.stale_after, unseen))
        held = waiting() if stale else set()
        for track_id, buf in stale:
            if track_id in held:
                continue
            del self.young[track_id], self.buffers[track_id]
            self.dropped_frames[track_id] = len(buf.frame_ids)
            if any(owner is buf for owner, _ in self.queue):  # crops sent on early: not needed now
                self.queue[:] = [(owner, crop) for owner, crop in self.queue if owner is not buf]

    def drop_young_from_queue(self) -> None:
        """At the end: the crops of tracks still too short need no features."""
        self.queue[:] = [(owner, crop) for owner, crop in self.queue if owner.pending_crops is None]


class Engine:
    """The loaded model plus detectors: runs videos one at a time (not thread-safe; one per device)."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        model_name: str,
        data_dir: Path | None,
        device: str = "cpu",
        precision: str = "fp32",
        frontend: FrontEnd | None = None,
        compile_backbone: str = "auto",
        gpu_front_end: bool | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """precision: the default of runs that do not set one; compile_backbone: "auto" | "on" |
        "off", likewise (see :mod:`.compiled`); gpu_front_end: decode, detect and track in
        overlapping stages (:mod:`.staged`), crop on the device and run the tracks through the
        temporal model many at once (``--official`` runs keep OpenCV's crop and one track a call)
        (default: on CUDA); log: where notes such as a compile fallback go."""
        self.model, self.model_name, self.data_dir = model, model_name, data_dir
        self.device = device
        self.frontend = frontend
        self.gpu_front_end = device.startswith("cuda") if gpu_front_end is None else bool(gpu_front_end)
        if device.startswith("cuda"):
            exact_fp32_on_cuda()
        self._detectors: dict[tuple[str, str, bool, bool], Detector] = {}
        self._channels_last: bool | None = None  # the backbone's memory format is set below
        # A live session shares the engine with the job worker: a run's precision switch re-lays the
        # backbone's weights, which must never happen in the middle of the other thread's forward.
        self._backbone_lock = threading.Lock()
        self.batch_size = self.default_batch_size()  # crops per backbone call in the current run
        self.precision = check_precision(precision, self.device)
        self.default_precision = self.precision
        if compile_backbone not in COMPILE_MODES:
            raise VibeError(f"Unknown backbone compile mode '{compile_backbone}'; use auto, on or off.")
        self.compile_backbone = compile_backbone
        self._use_compiled = False
        self._log = log  # notes such as a compile fallback
        self.backbone_runner = CompiledRunner(model.backbone, on_fallback=log) if hasattr(model, "backbone") else None
        self._set_precision(self.precision)

    def default_batch_size(self) -> int:
        """Crops per backbone call when a run does not say: a GPU keeps busy only with large batches."""
        return GPU_BACKBONE_BATCH if self.device.startswith("cuda") else CPU_BACKBONE_BATCH

    def _set_precision(self, precision: str) -> None:
        """Autocast dtype, and channels_last for the backbone whenever it is not plain fp32 on CPU."""
        self.precision = check_precision(precision, self.device)
        channels_last = precision != "fp32" or self.device.startswith("cuda")
        with self._backbone_lock:
            if channels_last != self._channels_last and hasattr(self.model, "backbone"):
                self.model.backbone.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            self._channels_last = channels_last

    # -- helpers ------------------------------------------------------------------------------
    def _frontend(self) -> FrontEnd:
        if self.frontend is None:
            self.frontend = FrontEnd.default()
        return self.frontend

    def open_video(self, path: str | Path, *, stopped: Callable[[], bool] | None = None) -> Any:
        """The front end's video reader (VibeError when the file is not a readable video); ``stopped``:
        see ``FrontEnd.open_video``."""
        return self._frontend().open_video(str(path), stopped=stopped)

    def resolve_detector_name(self, name: str) -> str:
        """'auto' -> 'yolo' when its weights are in the data folder, else 'hog'; other names as given."""
        if name != "auto":
            return name
        has_yolo = self.data_dir is not None and (Path(self.data_dir) / loading.YOLO_WEIGHTS).is_file()
        return "yolo" if has_yolo else "hog"

    def detector_warnings(self, requested: str, used: str) -> list[str]:
        """Why the run did not use YOLOv3 where the user would expect it: the official model data is
        installed but its yolov3.weights is not, and 'auto' fell back to HOG (the placeholder model,
        which has no YOLO either, is labelled loudly of its own)."""
        if (
            requested != "auto"
            or used != "hog"
            or self.data_dir is None
            or self.model_name == loading.SYNTHETIC_MODEL_NAME
        ):
            return []
        return [
            f"{loading.YOLO_WEIGHTS} is not in the model data ({self.data_dir}), so people were found with OpenCV's "
            "HOG detector, which misses and invents far more people than YOLOv3: install it with "
            f"'vibe-mocap data install yolov3.weights', then run again."
        ]

    def check_options(self, options: RunOptions) -> None:
        """VibeError when ``options`` cannot run on this engine whatever the video (a precision its
        device lacks, a detector without its weights): said once, before any video is read."""
        options.validate()
        options = options.effective()
        check_precision(options.precision or self.default_precision, self.device)
        if self.resolve_detector_name(options.detector) == "yolo":
            self._check_not_placeholder()
            from . import detect  # start-up: the detectors load only when used
            from .detect.darknet_weights import check_weights_file

            # the weights file is the default front end's; another one may find its own or need none
            if self.data_dir is not None and self._frontend().make_detector is detect.make_detector:
                check_weights_file(Path(self.data_dir) / loading.YOLO_WEIGHTS)

    def _check_not_placeholder(self) -> None:
        if self.model_name == loading.SYNTHETIC_MODEL_NAME:  # its folder is a cache, not the user's
            raise VibeError(
                f"The detector 'yolo' needs {loading.YOLO_WEIGHTS}, which the synthetic placeholder model (no "
                "model data installed) does not have: install the model data ('vibe-mocap data install'), or "
                "use the detector 'auto' or 'hog'."
            )

    def detector(
        self, name: str, *, compiled: bool = False, official: bool = False, precision: str | None = None
    ) -> Detector:
        """The detector ``name`` (made once, then reused); ``compiled``: YOLOv3's network through
        torch.compile (see :mod:`.compiled`); ``official``: YOLO's exact per-frame post-processing
        of the official code, also on a GPU (which otherwise merges a batch's boxes on the device);
        ``precision``: YOLO's, by default the current run's (a live session, beside the jobs, asks
        for the engine's default)."""
        from .detect.yolo import batches_postprocessing  # start-up: the detectors load only when used

        name = self.resolve_detector_name(name)
        # YOLO follows the run's precision (bf16/fp16 autocast + channels_last); HOG is OpenCV's
        yolo = name == "yolo"
        precision = self.precision if precision is None else precision  # read once: a job may switch it
        batched = yolo and not official and batches_postprocessing(self.device)
        key = (name, precision if yolo else "", compiled and yolo, batched)
        if key not in self._detectors:
            if yolo:
                self._check_not_placeholder()  # the weights file is the front end's to find (or not to need)
            options: dict[str, Any] = {"precision": precision, "batched_postprocess": batched} if yolo else {}
            if compiled and yolo:
                options.update(compiled=True, on_compile_fallback=self._log)
            self._detectors[key] = self._frontend().make_detector(
                name, data_dir=self.data_dir, device=self.device, **options
            )
        return self._detectors[key]

    def extract_features(self, crops: np.ndarray | torch.Tensor, *, run_settings: bool = True) -> np.ndarray:
        """crops (B, 3, 224, 224) float32 -> features (B, 2048) float32 numpy.
        run_settings: in the current run's precision and compile choice (:meth:`prepare_run`); False:
        eager, in the engine's default precision (live sessions, which run beside the jobs)."""
        images = to_device(crops, self.device)  # host crops go to a GPU from pinned memory, without waiting
        precision = self.precision if run_settings else self.default_precision
        with self._backbone_lock, torch.inference_mode(), autocast(precision, self.device.split(":")[0]):
            if self._channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if self._use_compiled and run_settings:
                features = self.backbone_runner(images, compiled=True, batch_size=self.batch_size)
            else:
                features = self.model.extract_features(images[None])[0]
            return features.float().cpu().numpy()

    def temporal(
        self,
        features: np.ndarray,
        *,
        chunking: str,
        chunk_frames: int,
        engine_for_chunk: Callable[[int], Engine] | None = None,
    ) -> dict[str, np.ndarray]:
        """features (T, 2048) -> {'theta' (T, 85), 'kp_3d' (T, 49, 3)} over the whole track.

        "carry": chunks of chunk_frames with the GRU state passed on, so the output equals one call
        over the whole track. "official": fresh state every 450 frames, as the official demo.
        engine_for_chunk(start): the engine (device) that runs the chunk starting at the track's
        frame ``start`` (default: this one); the GRU state is handed over from device to device."""
        if engine_for_chunk is None:
            return self.temporal_tracks([features], chunking=chunking, chunk_frames=chunk_frames)[0]
        chunk_frames, carry = _chunk_plan(chunking, chunk_frames)
        feats = torch.as_tensor(features, dtype=torch.float32)
        theta, kp_3d, h = [], [], None
        with torch.inference_mode():
            for start in range(0, len(feats), chunk_frames):
                engine = engine_for_chunk(start)
                x = feats[start : start + chunk_frames][None].to(engine.device)  # (1, t, 2048)
                h = None if h is None else h.to(engine.device)
                out = engine.model.forward_features(x, h0=h)
                theta.append(out["theta"][0].float().cpu())
                kp_3d.append(out["kp_3d"][0].float().cpu())
                if carry:
                    h = engine._final_gru_state(out, x, h)
        return {"theta": torch.cat(theta).numpy(), "kp_3d": torch.cat(kp_3d).numpy()}

    def temporal_tracks(
        self,
        features: list[np.ndarray],
        *,
        chunking: str,
        chunk_frames: int,
        batch_frames: int | None = None,
    ) -> list[dict]:
        """:meth:`temporal` for several tracks at once: chunk k of the tracks of a group goes
        through the model in one batch (shorter chunks padded at the end). Equal to one call per
        track up to float rounding (the batched kernels round differently: |Δtheta| about 6e-8 on a
        CPU): the GRU runs forward in time, so padding never changes a real frame, and only a
        track's last chunk can be short, so a state after padding is never carried on.

        The tracks go in groups of similar length, as many as keep tracks × chunk frames within
        ``batch_frames`` (default ``TEMPORAL_BATCH_FRAMES``; at least one track a call), so the
        memory of a call does not grow with the number of tracks in the video."""
        chunk_frames, carry = _chunk_plan(chunking, chunk_frames)
        per_call = max(1, (batch_frames or TEMPORAL_BATCH_FRAMES) // chunk_frames)
        feats = [torch.as_tensor(f, dtype=torch.float32) for f in features]
        longest_first = sorted(range(len(feats)), key=lambda i: -len(feats[i]))  # little padding in a group
        pieces: list[dict[str, list[torch.Tensor]]] = [{"theta": [], "kp_3d": []} for _ in feats]
        with torch.inference_mode():
            for first in range(0, len(longest_first), per_call):
                group = longest_first[first : first + per_call]
                active: list[int] = []
                h = None  # (layers, len(active), hidden): the carried state of the tracks in ``active``
                for start in range(0, len(feats[group[0]]), chunk_frames):
                    now = [i for i in group if len(feats[i]) > start]
                    if h is not None:
                        h = h[:, [active.index(i) for i in now]]
                    active = now
                    chunks = [feats[i][start : start + chunk_frames] for i in active]
                    x = torch.nn.utils.rnn.pad_sequence(chunks, batch_first=True).to(self.device)
                    out = self.model.forward_features(x, h0=h)
                    for row, (i, chunk) in enumerate(zip(active, chunks, strict=True)):
                        pieces[i]["theta"].append(out["theta"][row, : len(chunk)].float().cpu())
                        pieces[i]["kp_3d"].append(out["kp_3d"][row, : len(chunk)].float().cpu())
                    h = self._final_gru_state(out, x, h) if carry else None
                    del out
        return [{key: torch.cat(parts).numpy() for key, parts in track.items()} for track in pieces]

    def _final_gru_state(self, out: dict, x, h0):
        """The GRU state after a chunk: from the model's output when it returns one, else by running
        the encoder's GRU over the chunk again (it costs little next to the backbone)."""
        if out.get("gru_state") is not None:
            return out["gru_state"]
        _, h_n = self.model.encoder.gru(x.permute(1, 0, 2), h0)  # GRU is time-major
        return h_n

    def smpl(self, pose: np.ndarray, betas: np.ndarray, *, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """pose (T, 72), betas (T, 10) -> verts (T, 6890, 3), joints (T, 49, 3) with the model's SMPL."""
        verts, joints = [], []
        for v, j in self._smpl_batches(pose, betas, batch):
            verts.append(v.float().cpu())
            joints.append(j.float().cpu())
        return torch.cat(verts).numpy(), torch.cat(joints).numpy()

    def smpl_joints(self, pose: np.ndarray, betas: np.ndarray, *, batch: int = 256) -> np.ndarray:
        """pose (T, 72), betas (T, 10) -> joints (T, 49, 3): :meth:`smpl` without the vertices, which
        stay on the device, ``batch`` frames at a time (82 KB a frame: 17 GB for an hour at 60 fps)."""
        return torch.cat([j.float().cpu() for _, j in self._smpl_batches(pose, betas, batch)]).numpy()

    def _smpl_batches(self, pose: np.ndarray, betas: np.ndarray, batch: int) -> Iterator[tuple]:
        """(verts (B, 6890, 3), joints (B, 49, 3)) on the device, ``batch`` frames at a time."""
        for start in range(0, len(pose), batch):
            with torch.inference_mode():
                p = torch.as_tensor(pose[start : start + batch], dtype=torch.float32, device=self.device)
                b = torch.as_tensor(betas[start : start + batch], dtype=torch.float32, device=self.device)
                rotmat = batch_rodrigues(p.reshape(-1, 3)).reshape(len(p), 24, 3, 3)
                out = self.model.regressor.smpl.forward_joints(b, rotmat)
            yield out

    # -- the pipeline ---------------------------------------------------------------------------
    def run(
        self,
        video_path: str | Path,
        options: RunOptions | None = None,
        *,
        progress: ProgressFn | None = None,
        should_cancel: Callable[[], bool] | None = None,
        video_name: str | None = None,
    ) -> RunOutput:
        """video_name: the name to report (an upload's original file name); default the file's. A
        GPU that runs out of memory is one VibeError naming the stage and what to change."""
        return naming_out_of_memory(
            lambda: self._run(
                video_path, options, progress=progress, should_cancel=should_cancel, video_name=video_name
            )
        )

    def _run(
        self,
        video_path: str | Path,
        options: RunOptions | None = None,
        *,
        progress: ProgressFn | None = None,
        should_cancel: Callable[[], bool] | None = None,
        video_name: str | None = None,
    ) -> RunOutput:
        options = options or RunOptions()
        options.validate()
        options = options.effective()
        monitor = DeviceStageMonitor(progress, should_cancel)
        t_start = time.perf_counter()
        fe = self._frontend()
        detector_name = self.resolve_detector_name(options.detector)

        reader = self.open_video(video_path)
        if self.gpu_front_end and hasattr(reader, "prefetch"):  # decode ahead, in threads of their own
            reader.prefetch = max(reader.prefetch, DECODE_AHEAD_FRAMES)
            reader.decode_workers = max(reader.decode_workers, DECODE_WORKERS)
        info = reader.info
        video_name = video_name or info.name
        check_long_enough(info.frame_count, options, video_name)
        self.prepare_run(options, expected_crops=int(info.frame_count or 0))
        monitor.report("decode", "stream", 0.0, force=True)
        stream_tracks, frames_decoded, crops = self._stream_pass(reader, fe, options, monitor)
        if frames_decoded == 0:
            raise no_frames_error(video_name)
        tracks, track_warnings = self._select_tracks(stream_tracks, options, video_name)
        return self.finish_run(
            [(track_id, buf.frame_ids, buf.bboxes, np.concatenate(buf.features)) for track_id, buf in tracks],
            info=info,
            options=options,
            video_name=video_name,
            detector_name=detector_name,
            monitor=monitor,
            t_start=t_start,
            frames_decoded=frames_decoded,
            crops=crops,
            # e.g. truncated (the frames before the break ran), too many tracks
            warnings=[*getattr(reader, "warnings", ()), *track_warnings],
        )

    def prepare_run(self, options: RunOptions, *, expected_crops: int) -> None:
        """The run's precision, backbone batch size and whether the compiled backbone pays."""
        self._set_precision(options.precision or self.default_precision)
        self.batch_size = options.batch_size or self.default_batch_size()
        self._use_compiled = self.backbone_runner is not None and compile_pays(
            options.compile_backbone or self.compile_backbone,
            device=self.device,
            precision=self.precision,
            expected_crops=expected_crops,
            compiled_already=self.backbone_runner.compiled,
        )

    def finish_run(
        self,
        tracks: list[tuple[int, list[int], list[np.ndarray], np.ndarray]],
        *,
        info: VideoInfo,
        options: RunOptions,
        video_name: str,
        detector_name: str,
        monitor: StageMonitor,
        t_start: float,
        frames_decoded: int,
        crops: int,
        warnings: list[str],
        engine_for_frame: Callable[[int], Engine] | None = None,
    ) -> RunOutput:
        """Tracks [(track_id, frame ids, boxes, features (T, 2048))] -> the RunOutput: the temporal
        model per track, smoothing, cameras. engine_for_frame(frame index): the engine whose device
        runs the GRU chunk that starts at that frame (default: this one)."""
        results: list[Track] = []
        focal_px = options.focal_px or postprocess.default_focal_length_px(info.width, info.height)
        monitor.report("temporal", "temporal", 0.0, force=True)
        # With the GPU front end the tracks go through the temporal model many at once (up to
        # TEMPORAL_BATCH_FRAMES a call); a CPU would spend the padding of the shorter tracks (the
        # regressor and SMPL run on every padded frame). That equals one track a call only up to
        # float rounding, so an --official run takes each track alone, as the official demo does.
        together = engine_for_frame is None and self.gpu_front_end and not options.official
        if together:
            with monitor.stage("temporal"):
                outputs = self.temporal_tracks(
                    [features for *_, features in tracks],
                    chunking=options.chunking,
                    chunk_frames=options.temporal_chunk_frames,
                )
        else:  # track by track (with several devices: each chunk on its segment's device)
            outputs = []
            for i, (_, frame_ids, _, features) in enumerate(tracks):
                monitor.check_cancel()
                monitor.report("temporal", "temporal", i / len(tracks), force=True)
                with monitor.stage("temporal"):
                    outputs.append(
                        self.temporal(
                            features,
                            chunking=options.chunking,
                            chunk_frames=options.temporal_chunk_frames,
                            engine_for_chunk=None
                            if engine_for_frame is None
                            else lambda start, frames=frame_ids: engine_for_frame(frames[start]),
                        )
                    )
        # each phase ends at 100 % before the next begins (its last report may have been throttled away)
        monitor.report("temporal", "temporal", 1.0, force=True)
        if options.smoothing > 0:
            for i, out in enumerate(outputs):
                monitor.check_cancel()
                monitor.report("smpl", "smpl", i / len(tracks), force=True)
                with monitor.stage("smpl"):
                    theta = out["theta"].copy()
                    theta[:, 3:75] = smooth_pose(
                        theta[:, 3:75], options.smoothing, fps=info.fps or 30.0, method=options.smoothing_method
                    )
                    outputs[i] = {"theta": theta, "kp_3d": self.smpl_joints(theta[:, 3:75], theta[:, 75:85])}
            monitor.report("smpl", "smpl", 1.0, force=True)
        refused = 0  # rows a result file cannot hold, left out
        for i, (track_id, frame_ids, bboxes, _) in enumerate(tracks):
            monitor.check_cancel()
            monitor.report("write", "write", i / len(tracks))
            out, outputs[i] = outputs[i], None  # (the track holds its own arrays: none kept twice)
            with monitor.stage("write"):
                track = postprocess.build_track(
                    track_id,
                    np.asarray(frame_ids),
                    out["theta"],
                    out["kp_3d"],
                    np.stack(bboxes),
                    width=info.width,
                    height=info.height,
                    focal_px=focal_px,
                    official_uncrop=options.official_uncrop,
                )
            refused += len(frame_ids) - (track.num_frames if track is not None else 0)
            if track is not None:
                results.append(track)
        monitor.report("write", "write", 1.0, force=True)
        if refused:
            warnings = [*warnings, postprocess.refused_rows_warning(refused)]

        result = MocapResult(
            video=VideoInfo(
                name=video_name,
                fps=float(info.fps),
                width=int(info.width),
                height=int(info.height),
                frame_count=max(int(info.frame_count or 0), frames_decoded),
            ),
            tracks=results,
            model_name=self.model_name,
            focal_length_px=float(focal_px),
            meta=self._meta(options, detector_name),
        )
        warnings = [*self.detector_warnings(options.detector, detector_name), *warnings]
        if warnings:
            result.meta[WARNINGS_META_KEY] = "\n".join(warnings)
        return RunOutput(
            result=result,
            timings_s=monitor.timings_s,
            frames_decoded=frames_decoded,
            crops=crops,
            wall_s=time.perf_counter() - t_start,
            warnings=warnings,
        )

    def _stream_pass(self, reader, fe: FrontEnd, options: RunOptions, monitor: StageMonitor):
        """One pass over the video: decode, detect, track, crop, backbone. Crops of a track wait in
        its buffer until the track has min_track_frames (so short false positives never reach the
        backbone; see :class:`_StreamTracks`), then go through the backbone in batches of the run's
        batch size."""
        detector = self.detector(options.detector, compiled=options.compile_detector, official=options.official)
        detector = TimedDetector(detector, monitor)
        stream_people = fe.stream_people
        if self.gpu_front_end and fe.stream_people_staged is not None:
            stream_people = fe.stream_people_staged
        crop_frames, group_frames = self.crop_function(options)
        stream: Iterable = stream_people(
            TimedReader(reader, monitor),
            detector,
            detection_stride=options.detection_stride,
            adaptive_detection=options.adaptive_detection,
        )
        if hasattr(stream, "keep_tracklets"):  # a PeopleStream: the tracks are kept here, not twice
            stream.keep_tracklets = False
        frame_count = max(int(reader.info.frame_count or 0), 1)
        # a pending track unseen for this long is over: free its crops (it cannot reach the backbone)
        tracks = _StreamTracks(options.min_track_frames, stale_after=max(60, 4 * options.detection_stride))
        queue = tracks.queue  # (track buffer, crop) waiting for the backbone
        group: list[tuple] = []  # (frame_index, frame_rgb, people) of frames waiting to be cropped together
        frames_decoded = crops_done = 0

        def flush(n: int) -> None:
            nonlocal crops_done
            batch, rest = queue[:n], queue[n:]
            queue[:] = rest
            with monitor.stage("backbone"):
                feats = self.extract_features(torch.stack([crop for _, crop in batch]))
            crops_done += len(batch)
            for (buf, _), feat in zip(batch, feats):
                buf.features.append(feat[None])

        def crop_group() -> None:
            """Crops the frames in ``group`` in one call; each crop joins its track's buffer, in order."""
            with monitor.stage("crop"):
                boxes = [
                    np.asarray([box for _, box in people], dtype=np.float64).reshape(-1, 4) for *_, people in group
                ]
                crops = crop_frames([frame_rgb for _, frame_rgb, _ in group], boxes).unbind(0)
            # on the device, a crop held for a track still too short is copied out of the call's batch,
            # which it would otherwise keep in memory whole while the track lasts
            copy_held = group_frames > 1 and len(crops) > 1
            people_crops = ((index, person) for index, _, people in group for person in people)
            for (index, (track_id, box)), crop in zip(people_crops, crops, strict=True):
                tracks.add(int(track_id), int(index), box, crop, copy_held=copy_held)
            group.clear()
            while len(queue) >= self.batch_size:
                flush(self.batch_size)

        def waiting() -> set[int]:
            """The tracks seen in frames not cropped yet."""
            return {int(track_id) for *_, people in group for track_id, _ in people}

        iterator: Iterator = iter(stream)
        while True:
            monitor.check_cancel()
            timed_inside_s = monitor.timings_s["decode"] + monitor.timings_s["detect"]
            tracked_s = getattr(stream, "tracking_s", None)
            t = time.perf_counter()
            item = next(iterator, None)
            if tracked_s is not None:  # the tracker's own clock: decode and detect may run in other threads
                monitor.timings_s["track"] += stream.tracking_s - tracked_s
            else:  # the front end's own time, minus decoding and detection (timed inside it), is tracking
                front_s = time.perf_counter() - t
                timed_inside_s = monitor.timings_s["decode"] + monitor.timings_s["detect"] - timed_inside_s
                monitor.timings_s["track"] += max(0.0, front_s - timed_inside_s)
            if item is None:
                break
            frame_index, frame_rgb, people = item
            frames_decoded += 1
            if people:
                group.append(item)
            if group and (len(group) == group_frames or frame_index - group[0][0] >= group_frames - 1):
                crop_group()
            tracks.drop_stale(frame_index, waiting)
            monitor.report(monitor.busiest_stream_stage(), "stream", frames_decoded / frame_count)
        if group:
            crop_group()
        tracks.drop_young_from_queue()
        if queue:
            flush(len(queue))
        monitor.report(monitor.busiest_stream_stage(), "stream", 1.0, force=True)  # (the last one may be throttled)
        return tracks, frames_decoded, crops_done

    def crop_function(self, options: RunOptions) -> tuple[CropFrames, int]:
        """The crop of a run and how many frames it takes at once: (frames_rgb, each frame's boxes
        (K_i, 4) cxcywh) -> (sum K_i, 3, 224, 224) crops in order. On the device with the GPU front
        end, ``CROP_GROUP_FRAMES`` frames a call (``--official`` keeps OpenCV's crop); else the front
        end's, frame by frame."""
        fe = self._frontend()
        if self.gpu_front_end and fe.crop_people_on_device is not None and not options.official:
            return (lambda frames, boxes: fe.crop_people_on_device(frames, boxes, self.device)), CROP_GROUP_FRAMES

        def crop_one_by_one(frames, boxes):
            crops = [torch.as_tensor(fe.crop_people(frame, frame_boxes)) for frame, frame_boxes in zip(frames, boxes)]
            return crops[0] if len(crops) == 1 else torch.cat(crops)  # one frame: no copy

        return crop_one_by_one, 1

    @staticmethod
    def _select_tracks(tracks: _StreamTracks, options: RunOptions, video_name: str):
        """(the kept tracks' (id, buffer), warnings): those long enough (the young ones still held, and those
        dropped, are counted too, so that "Nobody was found" can say how long the longest lasted)."""
        frames = {**tracks.dropped_frames, **{tid: len(buf.frame_ids) for tid, buf in tracks.buffers.items()}}
        kept, warnings = select_tracks(frames, options, video_name)
        return [(tid, tracks.buffers[tid]) for tid in kept], warnings

    def _meta(self, options: RunOptions, detector_name: str) -> dict[str, str]:
        meta = {k: ("" if v is None else str(v)) for k, v in asdict(options).items()}
        meta.update(
            {
                "detector": detector_name,
                "vibe_mocap_version": __version__,
                "torch": torch.__version__,
                "device": self.device,
                "precision": self.precision,
                "backbone_compiled": str(self._use_compiled and self.backbone_runner.compiled),
                "gpu_front_end": str(self.gpu_front_end),
                postprocess.UNCROP_META_KEY: (
                    postprocess.UNCROP_OFFICIAL if options.official_uncrop else postprocess.UNCROP_CORRECTED
                ),
            }
        )
        return meta


def _chunk_plan(chunking: str, chunk_frames: int) -> tuple[int, bool]:
    """chunking "carry" | "official" -> (frames per GRU call, whether the state is carried on):
    "official" restarts the state every 450 frames, as the official demo."""
    return (OFFICIAL_CHUNK_FRAMES, False) if chunking == "official" else (chunk_frames, True)


# how to ask for shorter tracks, in each front door's words
LOWER_MIN_TRACK_FRAMES = (
    "--min-track-frames N of vibe-mocap infer or batch; the job option min_track_frames over the server's API"
)


def check_long_enough(frame_count: int | None, options: RunOptions, video_name: str) -> None:
    """VibeError when the video's ``frame_count`` (its container's, when known) is well short of the
    ``min_track_frames`` a track must last: said before the decode, which could only find nobody. A
    count a few frames short may be the container's estimate (see ``video.count_slack``): decoded."""
    from .video import count_slack  # (start-up: OpenCV loads with the first video)

    if frame_count and frame_count + count_slack(frame_count) < options.min_track_frames:
        raise VibeError(
            f"'{video_name}' is shorter than the minimum track length: it has {frame_count} frames, and a track "
            f"must last {options.min_track_frames}. Lower it to {frame_count} or less ({LOWER_MIN_TRACK_FRAMES})."
        )


def select_tracks(
    frames_per_track: dict[int, int], options: RunOptions, video_name: str
) -> tuple[list[int], list[str]]:
    """{track_id: frames} -> (the ids of the tracks a run keeps, in id order: at least min_track_frames
    frames, the tracks_max longest; with no tracks_max, the MAX_TRACKS longest, the most a result file
    holds, with a warning that says so). VibeError when none is left."""
    kept = [tid for tid, n in frames_per_track.items() if n >= options.min_track_frames]
    if not kept:
        count = len(frames_per_track)
        longest = (
            f" (the longest of the {count} tracks found lasted {max(frames_per_track.values())} frames)"
            if count > 1
            else f" (the one track found lasted {max(frames_per_track.values())} frames)"
            if count
            else ""
        )
        if options.min_track_frames == 1:  # the lowest there is: nothing to lower
            raise VibeError(
                f"Nobody was found in '{video_name}': no person was tracked in any frame. Use a clip where a "
                "whole person is visible."
            )
        raise VibeError(
            f"Nobody was found in '{video_name}': no person was tracked for at least "
            f"{options.min_track_frames} frames{longest}. Use a clip where a whole person is visible, or, for "
            f"very short clips, lower the minimum track length ({LOWER_MIN_TRACK_FRAMES})."
        )
    ids, warnings = longest_track_ids({tid: frames_per_track[tid] for tid in kept}, options.tracks_max or MAX_TRACKS)
    return ids, [] if options.tracks_max else warnings  # (fewer asked for: nothing to warn of)


def load_engine(
    data_dir: str | Path | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    allow_synthetic: bool = False,
    synthetic_dir: Path | None = None,
    frontend: FrontEnd | None = None,
    log: Callable[[str], None] | None = None,
    compile_backbone: str = "auto",
) -> Engine:
    """The Engine for the model data in ``data_dir`` (flag > $VIBE_DATA_DIR > platform default): the
    model from :func:`vibe_server.data.loading.load_for_inference` (with ``allow_synthetic``, the
    labelled placeholder when the data is missing), handed to :class:`Engine`.

    precision "auto": fp16 on CUDA, bf16 on a CPU with AVX512-BF16/AMX, else fp32 (see
    :mod:`.cpu_features`)."""
    loaded = loading.load_for_inference(
        data_dir, device=device, allow_synthetic=allow_synthetic, synthetic_dir=synthetic_dir, log=log
    )
    if precision == "auto":
        precision = default_precision(loaded.device)
    return Engine(
        loaded.model,
        model_name=loaded.model_name,
        data_dir=loaded.data_dir,
        device=loaded.device,
        precision=precision,
        frontend=frontend,
        compile_backbone=compile_backbone,
        log=log,
    )

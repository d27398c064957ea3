"""The real clips the benchmarks run on, and the stand-in detections they use without real YOLO weights.

``REAL_CLIPS_DIR`` is where the clips are: the real footage kept in the repository for the tests
(``tests/data/real``, defined once in ``tests/testdata.py``).
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from testdata import REAL_CLIPS as REAL_CLIPS_DIR  # noqa: E402  (needs the path above)

# Every real clip the tests use
REAL_CLIPS = (
    "one-by-one-person-detection.mp4",
    "face-demographics-walking.gif",
    "asl-walk.mkv",
    "bottle-detection-negative.mp4",
)
# Real clips with no person in them: every track found there is a false positive
NO_PEOPLE_CLIPS = ("bottle-detection-negative.mp4",)
# The speed measurement: frames 250-449 of this clip (people visible)
SPEED_CLIP, SPEED_START, SPEED_FRAMES = "one-by-one-person-detection.mp4", 250, 200
# 768x432, 10 fps, 1394 frames: people walk into a room one at a time (tests/data/real/README.md)
WALKING_CLIP = REAL_CLIPS_DIR / SPEED_CLIP


def slice_clip(src: Path, dst: Path, start: int, frames: int | None) -> int:
    """Copy frames [start, start + frames) of src (all from start when frames is None) to dst (mp4v);
    returns the number written."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    if start:
        cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    writer, written = None, 0
    while frames is None or written < frames:
        ok, frame = cap.read()
        if not ok:
            break
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(dst), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
            if not writer.isOpened():
                raise SystemExit(f"This OpenCV cannot write an mp4v video to {dst}; the benchmark cuts its clips so.")
        writer.write(frame)
        written += 1
    cap.release()
    if writer is None:
        raise SystemExit(
            f"No frame could be read from {src} (from frame {start}); pass the clips folder with --clips-dir."
        )
    writer.release()
    return written


def frame_key(frame_rgb: np.ndarray) -> str:
    """A short hash of a frame's pixels (every 8th pixel), to find its detections again."""
    return hashlib.blake2b(np.ascontiguousarray(frame_rgb[::8, ::8]).tobytes(), digest_size=12).hexdigest()


def hog_boxes(clip: Path) -> dict[str, np.ndarray]:
    """{frame_key: (K, 5) [x1, y1, x2, y2, score]}: OpenCV HOG's detections on every frame of the clip."""
    from vibe_server.pipeline.detect import make_detector
    from vibe_server.pipeline.video import open_video

    hog = make_detector("hog")
    return {frame_key(frame): hog.detect([frame])[0] for _, frame in open_video(clip)}


class ReplayDetector:
    """Returns the detections found beforehand for each frame it is given (nothing is computed)."""

    batch_size = 8

    def __init__(self, boxes_by_frame: dict[str, np.ndarray]):
        self.boxes_by_frame = boxes_by_frame
        self.frames_detected = 0

    def detect(self, frames_rgb):
        self.frames_detected += len(frames_rgb)
        return [self.boxes_by_frame.get(frame_key(f), np.zeros((0, 5), np.float32)) for f in frames_rgb]


# Rows over YOLOv3's thresholds for one person (neighbouring cells and anchors, three scales), so that
# the post-processing merges as many boxes as the real weights make it merge.
CANDIDATES_PER_PERSON = 12


class YoloCostHogBoxes(ReplayDetector):
    """Runs the YOLO network and its post-processing on every frame it is given (so their cost is
    measured) but returns the HOG boxes found beforehand for that frame. Random YOLO weights find
    nobody, so the post-processing has nothing to merge; with ``person_rows`` the network's rows get
    ``CANDIDATES_PER_PERSON`` jittered person rows around each HOG box first, so that merging them is
    measured too (on a GPU its share counts; on a CPU the network's hides it)."""

    def __init__(self, yolo, boxes_by_frame: dict[str, np.ndarray], *, person_rows: bool = False):
        super().__init__(boxes_by_frame)
        self.yolo = yolo
        self.batch_size = yolo.batch_size
        self.device = getattr(yolo, "device", None)  # the staged front end gives a GPU detector its own stream
        if not person_rows:
            return
        network_rows = yolo.network_rows

        def rows_with_people(frames_rgb):
            rows = network_rows(frames_rgb)
            boxes = [self.boxes_by_frame.get(frame_key(f), np.zeros((0, 5), np.float32)) for f in frames_rgb]
            return with_person_rows(rows, boxes, frames_rgb[0].shape[:2], yolo.input_size_px)

        yolo.network_rows = rows_with_people  # what YoloDetector.detect calls between network and merge

    spot_batch_size = property(lambda self: getattr(self.yolo, "spot_batch_size", 1))  # as YOLO's, on the spot

    def detect(self, frames_rgb):
        self.yolo.detect(frames_rgb)
        return super().detect(frames_rgb)


def with_person_rows(rows, boxes_per_frame: list[np.ndarray], frame_hw: tuple[int, int], input_size_px: int):
    """rows (B, N, 85) decoded network rows -> the same with CANDIDATES_PER_PERSON person rows (objectness
    0.95, class person) jittered by up to 3 network pixels around each box [x1, y1, x2, y2, score] (frame
    pixels) of each frame, written over its first rows."""
    import torch

    height, width = frame_hw
    scale = input_size_px / max(height, width)
    pad_x, pad_y = (input_size_px - width * scale) / 2, (input_size_px - height * scale) / 2
    rng = np.random.default_rng(0)
    written = rows.clone()
    for b, boxes in enumerate(boxes_per_frame):
        if len(boxes) == 0:
            continue
        centre = np.stack(
            [(boxes[:, 0] + boxes[:, 2]) / 2 * scale + pad_x, (boxes[:, 1] + boxes[:, 3]) / 2 * scale + pad_y], 1
        )
        size = np.stack([(boxes[:, 2] - boxes[:, 0]) * scale, (boxes[:, 3] - boxes[:, 1]) * scale], 1)
        centre = np.repeat(centre, CANDIDATES_PER_PERSON, 0) + rng.uniform(
            -3, 3, (len(boxes) * CANDIDATES_PER_PERSON, 2)
        )
        size = np.repeat(size, CANDIDATES_PER_PERSON, 0) + rng.uniform(-3, 3, centre.shape)
        person = np.zeros((len(centre), rows.shape[-1]), np.float32)
        person[:, :2], person[:, 2:4], person[:, 4], person[:, 5] = centre, size, 0.95, 1.0  # class 0: person
        rows_on_host = torch.from_numpy(person)
        if written.is_cuda:  # pinned: the copy is queued, the host does not wait for the GPU (as the pipeline's)
            rows_on_host = rows_on_host.pin_memory()
        written[b, : len(person)] = rows_on_host.to(written.device, written.dtype, non_blocking=True)
    return written


class CountingDetector:
    """Wraps a detector: counts the frames it is given and the seconds it takes."""

    def __init__(self, detector):
        self.detector = detector
        self.lock = threading.Lock()  # the staged front end detects in two threads
        self.reset()

    def reset(self) -> None:
        self.frames, self.seconds = 0, 0.0

    def detect(self, frames_rgb):
        started = time.perf_counter()
        found = self.detector.detect(frames_rgb)  # boxes on the host: any GPU work is done
        with self.lock:
            self.seconds += time.perf_counter() - started
            self.frames += len(frames_rgb)
        return found

    def __getattr__(self, name):  # batch_size, spot_batch_size, device, ...
        return getattr(self.detector, name)

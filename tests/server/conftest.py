"""Fakes for the pipeline and server tests: a tiny VIBE-shaped model (real GRU, so chunking and
state carrying are tested for real) and a scripted front end (video, detector, tracker, crop)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from vibe_blender.core.errors import VibeError
from vibe_server.model.encoder import TemporalEncoder
from vibe_server.pipeline.engine import Engine
from vibe_server.pipeline.frame_counts import forget_counts
from vibe_server.pipeline.frontend import FrontEnd


class TinySMPL(nn.Module):
    def forward_joints(self, betas, rotmat):
        """betas (B, 10), rotmat (B, 24, 3, 3) -> verts (B, 6890, 3), joints (B, 49, 3)."""
        joints = torch.cat([rotmat[:, :, :, 0], rotmat[:, :, :, 1], rotmat[:, :1, :, 2]], dim=1) + betas[:, None, :3]
        return torch.zeros(len(betas), 6890, 3), joints


class TinyVIBE(nn.Module):
    """extract_features / forward_features like VIBE, with a small backbone and GRU (hidden 16)."""

    def __init__(self, *, return_gru_state: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 4, 16, stride=16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2048)
        )
        self.encoder = TemporalEncoder(n_layers=2, hidden_size=16)
        self.head = nn.Linear(2048, 85)
        self.regressor = SimpleNamespace(smpl=TinySMPL())
        self.return_gru_state = return_gru_state
        self.backbone_calls = 0

    def extract_features(self, images):
        self.backbone_calls += 1
        n, t = images.shape[:2]
        return self.backbone(images.reshape(n * t, *images.shape[2:])).reshape(n, t, 2048)

    def forward_features(self, features, j_regressor=None, h0=None):
        encoded, state = self.encoder(features, h0)
        theta = 0.1 * self.head(encoded)
        theta[..., 0] = 1.0 + 0.1 * torch.tanh(theta[..., 0])  # positive camera scale
        kp_3d = theta[..., 3:75].reshape(*theta.shape[:2], 24, 3).repeat(1, 1, 3, 1)[:, :, :49]
        out = {"theta": theta, "kp_3d": kp_3d, "verts": torch.zeros(*theta.shape[:2], 6890, 3)}
        if self.return_gru_state:
            out["gru_state"] = state
        return out


def progress_phases(reports: list[tuple]) -> list[tuple[str, float]]:
    """Progress reports (stage, fraction of the job, ...) -> the phases in the order they came (the
    streaming stages are one), each with the largest share of its own work reported: what the
    command line's bars show."""
    from vibe_server.pipeline.progress import STREAM_STAGES, phase_fraction

    phases: list[tuple[str, float]] = []
    for stage, fraction, *_ in reports:
        phase = "stream" if stage in STREAM_STAGES else stage
        done = phase_fraction(stage, fraction)
        if phases and phases[-1][0] == phase:
            done = max(done, phases.pop()[1])
        phases.append((phase, done))
    return phases


@dataclass
class FakeInfo:
    name: str = "fake.mp4"
    fps: float = 25.0
    width: int = 320
    height: int = 240
    frame_count: int = 60
    nobody: bool = False


class FakeReader:
    def __init__(self, info: FakeInfo, num_frames: int):
        self.info, self.num_frames = info, num_frames

    def __iter__(self):
        for i in range(self.num_frames):
            yield i, np.full((self.info.height, self.info.width, 3), i % 255, np.uint8)


class FakeDetector:
    def __init__(self):
        self.calls = 0

    def detect(self, frames):
        self.calls += len(frames)
        return [np.zeros((0, 5), np.float32) for _ in frames]


@dataclass
class ScriptedFrontEnd:
    """Frames 0..num_frames-1; ``tracks`` = {track_id: (first_frame, last_frame)} with a box that
    moves a little each frame. Paths ending in .txt, and files whose bytes start with 'not a video'
    (an upload is saved under a fixed name), raise like an unreadable video. ``real_video``: decode
    real files with the real reader instead (people still scripted). ``open_delay_s``: each open (the
    server's probe of a video, the job's own) takes this long, as a container that states no frame
    count is decoded whole to count them."""

    num_frames: int = 60
    tracks: dict = field(default_factory=lambda: {1: (0, 59), 2: (5, 14), 3: (10, 49)})
    detectors: list = field(default_factory=list)
    delay_s: float = 0.0
    real_video: bool = False
    open_delay_s: float = 0.0

    def open_video(self, path, stopped=None):
        time.sleep(self.open_delay_s)
        if self.real_video:
            from vibe_server.pipeline.video import open_video

            return open_video(path, stopped=stopped)
        head = Path(path).read_bytes()[:16] if Path(path).is_file() else b""
        if Path(path).suffix == ".txt" or head.startswith(b"not a video"):
            raise VibeError(f"'{path}' is not a video OpenCV can read; convert it to .mp4 (H.264).")
        nobody = head.startswith(b"nobody")
        return FakeReader(FakeInfo(name=Path(path).name, frame_count=self.num_frames, nobody=nobody), self.num_frames)

    def make_detector(self, name, *, data_dir=None, device="cpu", **options):
        detector = FakeDetector()
        detector.name, detector.options = name, options
        self.detectors.append(detector)
        return detector

    def stream_people(self, reader, detector, *, detection_stride=1, adaptive_detection=False):
        """Video files whose bytes start with 'nobody' have no people in them (no adaptive detection here)."""
        import time

        tracks = {} if getattr(reader.info, "nobody", False) else self.tracks
        for frame_index, frame in reader:
            if frame_index % detection_stride == 0:
                detector.detect([frame])
            if self.delay_s:
                time.sleep(self.delay_s)
            people = [
                (tid, np.array([100.0 + 2 * tid + frame_index, 120.0, 80.0 + tid, 80.0 + tid]))
                for tid, (first, last) in tracks.items()
                if first <= frame_index <= last
            ]
            yield frame_index, frame, people

    def crop_people(self, frame, boxes):
        """(K, 4) -> (K, 3, 224, 224): a pattern that depends on the frame and the box."""
        grid = torch.linspace(-1, 1, 224)
        crops = []
        for box in boxes:
            phase = float(frame[0, 0, 0]) / 10.0 + float(box[0]) / 50.0
            img = torch.sin(grid[None, :] * 3 + phase) * torch.cos(grid[:, None] * 2 - phase)
            crops.append(torch.stack([img, img * 0.5, -img]))
        return torch.stack(crops).numpy()

    def as_frontend(self) -> FrontEnd:
        return FrontEnd(
            open_video=self.open_video,
            make_detector=self.make_detector,
            stream_people=self.stream_people,
            crop_people=self.crop_people,
        )


@pytest.fixture(autouse=True)
def frame_counts_forgotten():
    """Each test decodes to count frames as if first: a count kept from another test would hide it."""
    forget_counts()


@pytest.fixture
def scripted():
    return ScriptedFrontEnd()


@pytest.fixture
def tiny_engine(scripted):
    return Engine(TinyVIBE(), model_name="tiny test model", data_dir=None, frontend=scripted.as_frontend())


@pytest.fixture
def make_engine():
    """make_engine(tracks=..., num_frames=..., return_gru_state=..., precision=...) -> Engine."""

    def make(*, return_gru_state=True, precision="fp32", **script):
        scripted = ScriptedFrontEnd(**script)
        return Engine(
            TinyVIBE(return_gru_state=return_gru_state),
            model_name="tiny test model",
            data_dir=None,
            precision=precision,
            frontend=scripted.as_frontend(),
        )

    return make


@pytest.fixture(scope="module")
def one_cpu_thread():
    """Tiny models train faster on one thread, and much faster when other processes share the CPU.
    Use with ``pytestmark = pytest.mark.usefixtures("one_cpu_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def short_clip(tmp_path_factory):
    """The first 24 frames of the bundled clip (one person walking), as its own file."""
    import cv2

    from vibe_server.pipeline.video import open_video

    # (not testdata.SAMPLE: servers started by the tests import this module without tests/ on sys.path)
    reader = open_video(Path(__file__).resolve().parents[2] / "samples" / "one-person-walk.mp4")
    path = tmp_path_factory.mktemp("live") / "walk24.avi"
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*"MJPG"), reader.info.fps, (reader.info.width, reader.info.height)
    )
    for index, rgb in reader:
        if index == 24:
            break
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="session")
def fp32_engine(vibe_model, synthetic_bundle):
    """The synthetic official-size model in fp32 on the CPU, as one Engine for the session."""
    return Engine(vibe_model, model_name="synthetic", data_dir=synthetic_bundle, device="cpu", precision="fp32")

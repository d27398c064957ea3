"""What the importer animates, whatever file it came from: tracks of SMPL pose, translation, shape.

Readers (our result file, the official ``vibe_output.pkl``, AMASS-style ``.npz``) all produce a
:class:`MotionSet`; the Blender side only ever sees this. Each track says in which frame its root
rotation and translation are expressed (``source_to_blender``), so there is exactly one place where
camera or Z-up data are turned into Blender's frame (:mod:`.skeleton`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import VibeError
from .result_file import META_UNKNOWN, WARNINGS_META_KEY, MocapResult
from .shown_text import display_text
from .skeleton import CAMERA_TO_BLENDER
from .smpl_math import smpl_forward
from .smpl_model import BodyModel

# Joints and vertices that touch the ground: ankles and feet.
_FOOT_JOINTS = (7, 8, 10, 11)
GROUND_SAMPLE_FRAMES = 48


@dataclass
class TrackMotion:
    """One person. T frames."""

    name: str  # object names in Blender, e.g. "track_1"
    frame_ids: np.ndarray  # (T,) int64, 0-based frame index in the source; may have gaps
    pose: np.ndarray  # (T, 72) axis-angle, root in the source frame
    trans_m: np.ndarray  # (T, 3) SMPL transl in the source frame, metres
    betas: np.ndarray  # (10,) the track's shape
    source_to_blender: np.ndarray = field(default_factory=lambda: CAMERA_TO_BLENDER.copy())  # (3, 3)

    def __post_init__(self):
        T = len(self.frame_ids)
        if T == 0:
            raise VibeError(f"{self.name} has no frames; nothing to animate.")
        if np.shape(self.pose) != (T, 72) or np.shape(self.trans_m) != (T, 3) or np.shape(self.betas) != (10,):
            raise VibeError(
                f"{self.name}: pose {np.shape(self.pose)}, translation {np.shape(self.trans_m)} and "
                f"betas {np.shape(self.betas)} do not fit {T} frames of SMPL (72, 3 and 10 values)."
            )
        if not (np.all(np.isfinite(self.pose)) and np.all(np.isfinite(self.trans_m))):
            raise VibeError(f"{self.name} contains NaN or infinite values; the file is damaged.")
        if np.any(np.diff(self.frame_ids) <= 0):
            raise VibeError(f"{self.name}: frame numbers are not increasing; the file is damaged.")


def frame_runs(frames: np.ndarray) -> list[tuple[int, int]]:
    """frames (T,) increasing frame numbers -> runs of consecutive frames as (first row, last row + 1);
    a gap (a missing frame) splits them. The keys of a character are such frames (Blender's, +1)."""
    breaks = np.flatnonzero(np.diff(np.asarray(frames)) > 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(frames)]])
    return list(zip(starts.tolist(), ends.tolist()))


@dataclass
class CameraInfo:
    """The video's pinhole camera: at the origin of the source (camera) frame."""

    width_px: int
    height_px: int
    focal_length_px: float


@dataclass
class MotionSet:
    tracks: list[TrackMotion]
    fps: float
    frame_count: int  # frames in the source (video length), >= last frame id + 1
    source_name: str  # video or file name, for messages and object names
    camera: CameraInfo | None = None
    ground_offset_m: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (3,) Blender world
    warnings: list[str] = field(default_factory=list)  # what the run that made it said (e.g. YOLO fell back to HOG)
    fps_stored: bool = True  # False: the file stores no frame rate; fps is the one given, or 30

    def __post_init__(self):
        # a file's or video's name: shown in messages and made into Blender names, which take no lone
        # surrogate (a file name that is not valid UTF-8) nor, in a message, control characters
        self.source_name = display_text(self.source_name, MAX_SOURCE_NAME_CHARS)
        if not self.tracks:
            raise VibeError(f"{self.source_name} contains no tracked person; nothing to import.")
        if not (self.fps > 0 and np.isfinite(self.fps)):
            raise VibeError(f"{self.source_name} has an invalid frame rate ({self.fps}).")


# Each character is a whole SMPL mesh with shape keys and an armature: a crowd of thousands of
# tracks (or a hostile file of them) would take hours. By default the longest this many are imported.
MAX_CHARACTERS = 50
MAX_SOURCE_NAME_CHARS = 200  # of a video's name, as the server records it


def longest_tracks(tracks: list[TrackMotion], limit: int) -> list[TrackMotion]:
    """The ``limit`` tracks with the most frames (ties: the earlier), in their original order."""
    if len(tracks) <= limit:
        return tracks
    kept = sorted(range(len(tracks)), key=lambda i: (-len(tracks[i].frame_ids), i))[:limit]
    return [tracks[i] for i in sorted(kept)]


def from_result(result: MocapResult) -> MotionSet:
    """Our result file (camera frame, OpenCV axes) -> MotionSet."""
    tracks = [
        TrackMotion(
            name=f"track_{t.track_id}",
            frame_ids=np.asarray(t.frame_ids, dtype=np.int64),
            pose=np.asarray(t.pose, dtype=np.float64),
            trans_m=np.asarray(t.trans_cam_m, dtype=np.float64),
            betas=np.asarray(t.betas_track, dtype=np.float64),
        )
        for t in result.tracks
        if t.num_frames > 0
    ]
    v = result.video
    last = max((int(t.frame_ids[-1]) + 1 for t in tracks), default=0)
    return MotionSet(
        tracks=tracks,
        fps=v.fps,
        frame_count=max(int(v.frame_count), last),
        source_name=v.name,
        camera=None  # a live take: no video, so no camera to match (its size is a stand-in)
        if result.meta.get("video_size") == META_UNKNOWN
        else CameraInfo(int(v.width), int(v.height), float(result.focal_length_px)),
        warnings=[display_text(line) for line in result.meta.get(WARNINGS_META_KEY, "").splitlines() if line.strip()],
    )


def ground_offset(model: BodyModel, tracks: list[TrackMotion]) -> np.ndarray:
    """(3,) vertical shift (Blender world) that puts the lowest foot point of all tracks on z = 0.

    The 2nd percentile over frames of each frame's lowest ankle/foot vertex, evaluated on up to
    GROUND_SAMPLE_FRAMES frames per track (without pose correctives), so a few bad frames cannot
    sink everyone into the floor.
    """
    foot_vertices = np.flatnonzero(model.lbs_weights[:, list(_FOOT_JOINTS)].sum(1) > 0.5)
    lows = []
    for track in tracks:
        rows = np.unique(
            np.linspace(0, len(track.frame_ids) - 1, min(GROUND_SAMPLE_FRAMES, len(track.frame_ids))).astype(int)
        )
        verts, _ = smpl_forward(
            model, track.pose[rows], track.betas, track.trans_m[rows], pose_correctives=False, vertex_ids=foot_vertices
        )
        z = (verts @ track.source_to_blender.T)[..., 2]
        lows.append(z.min(axis=1))
    return np.array([0.0, 0.0, -float(np.percentile(np.concatenate(lows), 2))])

"""Keyframing speed: the add-on's bulk path against per-frame ``keyframe_insert``, in one run.

    .venv-bpy-5.0/bin/python benchmarks/blender_import.py [--frames 1800] [--repeats 3]

Builds the synthetic SMPL character, then times (a) ``animate_character``: conversion of 1800 frames
of SMPL pose to 24 bone quaternions + root location and writing them with keyframe_points.add +
foreach_set, without and with the 207 baked pose-corrective shape keys, and (b) the naive path the
older VIBE/SMPL add-ons use: set each pose bone, ``keyframe_insert`` per bone per frame. Each figure
is the median of --repeats runs, each keying a character of its own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "server")]

import bpy  # noqa: E402
import numpy as np  # noqa: E402
from timing import median_seconds  # noqa: E402  (benchmarks/, the script's own folder)

from vibe_blender.animation import animate_character  # noqa: E402
from vibe_blender.core.motion import TrackMotion  # noqa: E402
from vibe_blender.core.readers import read_motion_file  # noqa: E402
from vibe_blender.core.result_file import MocapResult, Track, VideoInfo, save_result  # noqa: E402
from vibe_blender.core.skeleton import bone_basis_quats, root_locations  # noqa: E402
from vibe_blender.core.smpl_model import JOINT_NAMES  # noqa: E402
from vibe_blender.importer import ImportOptions, import_motion  # noqa: E402
from vibe_blender.rig_builder import build_character, rest_quats  # noqa: E402
from vibe_server.data.synthetic import make_body_model  # noqa: E402


def random_motion(frames: int, seed: int = 0) -> TrackMotion:
    """A smooth random walk in pose space, the root turning through 720°, drifting translation."""
    rng = np.random.default_rng(seed)
    pose = np.clip(np.cumsum(rng.normal(0, 0.03, (frames, 72)), axis=0), -1.2, 1.2)
    pose[:, :3] = np.stack(
        [
            np.pi + 0.2 * np.sin(np.linspace(0, 6, frames)),
            np.linspace(0, 4 * np.pi, frames),
            0.1 * np.cos(np.linspace(0, 9, frames)),
        ],
        1,
    )
    trans = np.array([0, 0, 4.0]) + np.cumsum(rng.normal(0, 0.01, (frames, 3)), axis=0)
    return TrackMotion(name="bench", frame_ids=np.arange(frames), pose=pose, trans_m=trans, betas=rng.normal(0, 1, 10))


def naive_keyframes(armature_obj, track: TrackMotion) -> None:
    """Per bone per frame: set the channel, keyframe_insert (what keyframing by hand in Python does)."""
    q_rest = rest_quats(armature_obj)
    quats = bone_basis_quats(track.pose, q_rest, track.source_to_blender)
    loc = root_locations(track.trans_m, np.zeros(3), q_rest[0], track.source_to_blender)
    bones = [armature_obj.pose.bones[n] for n in JOINT_NAMES]
    for f in range(len(quats)):
        for j, bone in enumerate(bones):
            bone.rotation_quaternion = quats[f, j].tolist()
            bone.keyframe_insert("rotation_quaternion", frame=f + 1)
        bones[0].location = loc[f].tolist()
        bones[0].keyframe_insert("location", frame=f + 1)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_keying(model, track: TrackMotion, key, repeats: int, correctives: str = "off") -> float:
    """Median seconds of ``key(armature, track)``, each run on a character of its own (new channels)."""
    seconds = []
    for _ in range(repeats):
        armature, _ = build_character(model, track.betas, key.__name__, correctives=correctives)
        seconds.append(timed(lambda a=armature: key(a, track)))
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1800)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    model = make_body_model(0)
    track = random_motion(args.frames)

    rows = []
    build_s = median_seconds(lambda: build_character(model, track.betas, "build"), args.repeats)
    rows.append(("build character (mesh, weights, 10 shape keys)", build_s))
    fast_s = median_keying(model, track, animate_character, args.repeats)
    rows.append((f"bulk keys: {args.frames} frames x 24 bones + root", fast_s))
    baked_s = median_keying(model, track, animate_character, args.repeats, correctives="baked")
    rows.append(("bulk keys: same + 207 corrective shape keys", baked_s))

    def whole_import():
        """A result file with this motion, read and imported as the add-on does after a capture."""
        import tempfile

        T = len(track.frame_ids)
        result = MocapResult(
            video=VideoInfo("bench.mp4", 30.0, 1280, 720, T),
            model_name="synthetic",
            focal_length_px=1280.0,
            tracks=[
                Track(
                    track_id=1,
                    frame_ids=track.frame_ids,
                    pose=track.pose,
                    betas=np.tile(track.betas, (T, 1)),
                    betas_track=track.betas,
                    pred_cam=np.ones((T, 3)),
                    orig_cam=np.ones((T, 4)),
                    bboxes=np.ones((T, 4)),
                    joints3d=np.zeros((T, 49, 3)),
                    trans_cam_m=track.trans_m,
                )
            ],
        )
        with tempfile.TemporaryDirectory() as folder:
            save_result(f"{folder}/bench.npz", result)
            start = time.perf_counter()
            import_motion(read_motion_file(f"{folder}/bench.npz"), model, ImportOptions(), report=lambda m: None)
            return time.perf_counter() - start

    import_s = statistics.median(whole_import() for _ in range(args.repeats))
    rows.append((f"whole import of a {args.frames}-frame result file", import_s))
    naive_s = median_keying(model, track, naive_keyframes, args.repeats)
    rows.append((f"naive keyframe_insert: {args.frames} frames x 24 bones + root", naive_s))

    print(
        f"\nBlender {bpy.app.version_string}, numpy {np.__version__}, {args.frames} frames, median of {args.repeats} "
        f"({args.frames * (24 * 4 + 3)} bone keys, {args.frames * 207} shape-key keys)"
    )
    print(f"{'step':58s} {'seconds':>9s}")
    for name, seconds in rows:
        print(f"{name:58s} {seconds:9.3f}")
    print(f"{'speed-up of bulk over naive (bones + root)':58s} {naive_s / fast_s:8.0f}x")


if __name__ == "__main__":
    main()

"""Retarget benchmark: the SMPL walk onto rigs of every naming convention the bone maps know.

    .venv-bpy-5.0/bin/python benchmarks/retarget.py [--frames 90] [--seed 0]

Each rig is built as the tests build them (tests/blender/retarget_rigs.py) from a convention's bone
table: T-pose or A-pose (40°), random bone rolls, legs, arms and feet scaled 0.8-1.3x (the feet up
to ±20 % off the legs' scale, another foot geometry), plus a custom ``_jnt`` rig and one matched by
body-part names only. Per rig it prints:

- map: body joints the automatic map found (of 22), the preset it recognised, its confidence;
- dir max / median: bone-direction error of every mapped bone against the source, all frames,
  degrees, with the foot lock off (the lock turns thighs and shins on purpose);
- root: the root scale and the largest distance (mm) between the target's hips and h_t + s·(p_s − h_s);
- slide: planted-ankle travel (mm/frame, true stance frames) of the source, of the target without
  and with the foot lock.
No timing, no assertions: figures for docs/retarget_cleanup_export.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "server")]

import numpy as np  # noqa: E402

from vibe_blender.core.retarget_map import BODY_JOINTS, FOREIGN_PRESETS, PRESETS, auto_map_report  # noqa: E402
from vibe_blender.retarget import retarget  # noqa: E402

_spec = importlib.util.spec_from_file_location("retarget_rigs", REPO / "tests/blender/retarget_rigs.py")
rigs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rigs)

CONVENTIONS = FOREIGN_PRESETS


def _name_tables() -> dict[str, dict[str, str]]:
    tables = {k: {j: b for j, b in PRESETS[k].items() if j in BODY_JOINTS} for k in CONVENTIONS}
    tables["HIK_Character1_"] = {j: "Character1_" + b.split(":")[-1] for j, b in tables["MIXAMO"].items()}
    tables["custom _jnt"] = {j: f"{j}_jnt" for j in BODY_JOINTS}
    names = {
        "pelvis": "Pelvis",
        "spine1": "Spine_A",
        "spine2": "Spine_B",
        "spine3": "Chest",
        "neck": "Neck",
        "head": "Head",
    }
    for s, side in (("L", "left"), ("R", "right")):
        names.update(
            {
                f"{side}_hip": f"{s}_Thigh",
                f"{side}_knee": f"{s}_Calf",
                f"{side}_ankle": f"{s}_Foot",
                f"{side}_foot": f"{s}_Toe",
                f"{side}_collar": f"{s}_Clavicle",
                f"{side}_shoulder": f"{s}_UpperArm",
                f"{side}_elbow": f"{s}_Forearm",
                f"{side}_wrist": f"{s}_Hand",
            }
        )
    tables["custom names"] = names
    return tables


def measure(names: dict[str, str], pose_deg: float, rng, frames_count: int) -> dict:
    rigs.reset_scene()
    source, frames, stance = rigs.smpl_source(T=frames_count)
    leg = rng.uniform(0.8, 1.3)
    options = dict(
        leg_scale=leg,
        arm_scale=rng.uniform(0.8, 1.3),
        foot_scale=leg * rng.uniform(0.8, 1.2),
        a_pose_deg=pose_deg,
        roll_seed=int(rng.integers(1 << 30)),
    )
    target = rigs.target_rig("Target", names, **options)
    bones = target.data.bones
    report = auto_map_report([b.name for b in bones], {b.name: b.parent.name if b.parent else None for b in bones})
    mapping = report.mapping
    ankles = [mapping["left_ankle"], mapping["right_ankle"]]
    fps = rigs.walk.FPS

    run = retarget(source, target, mapping, lock_feet=False, fps=fps)
    src_axes, src_heads = rigs.world_bone_axes(source, list(mapping), frames)
    tgt_axes, tgt_heads = rigs.world_bone_axes(target, list(mapping.values()), frames)
    err = rigs.angle_deg(src_axes, tgt_axes)
    slide_src = rigs.planted_slide_mm(source, ["left_ankle", "right_ankle"], frames, stance)
    slide_unlocked = rigs.planted_slide_mm(target, ankles, frames, stance)
    run_locked = retarget(source, target, mapping, fps=fps)
    slide_locked = rigs.planted_slide_mm(target, ankles, frames, stance)
    _, hips = rigs.world_bone_axes(target, [mapping["pelvis"]], frames)
    world_head = lambda obj, bone: (np.array(obj.matrix_world) @ np.array([*obj.data.bones[bone].head_local, 1.0]))[:3]
    expected = world_head(target, mapping["pelvis"]) + run_locked["root_scale"] * (
        src_heads[:, 0] - world_head(source, "pelvis")
    )
    return {
        "map": f"{22 - len(report.missing)}/22",
        "preset": report.preset or "(names)",
        "confidence": report.confidence,
        "dir_max": err.max(),
        "dir_median": float(np.median(err)),
        "leg": leg,
        "scale": run["root_scale"],
        "root_mm": np.linalg.norm(hips[:, 0] - expected, axis=-1).max() * 1000,
        "slide_src": slide_src,
        "slide_unlocked": slide_unlocked,
        "slide_locked": slide_locked,
        "contacts": run_locked["contact_frames"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import bpy

    rng = np.random.default_rng(args.seed)
    print(f"Blender {bpy.app.version_string}, {args.frames} frames of the SMPL walk at {rigs.walk.FPS:.0f} fps")
    header = (
        f"{'rig':18s} {'pose':4s} {'map':5s} {'preset':17s} {'conf':>4s} {'dir max°':>8s} {'dir med°':>8s} "
        f"{'legs':>5s} {'scale':>6s} {'root mm':>7s} {'slide src':>9s} {'no lock':>7s} {'lock':>6s}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for rig, names in _name_tables().items():
        for pose, deg in (("T", 0.0), ("A", 40.0)):
            r = measure(names, deg, rng, args.frames)
            rows.append(r)
            print(
                f"{rig:18s} {pose:4s} {r['map']:5s} {r['preset']:17s} {r['confidence']:4.2f} {r['dir_max']:8.4f} "
                f"{r['dir_median']:8.4f} {r['leg']:5.2f} {r['scale']:6.3f} {r['root_mm']:7.4f} "
                f"{r['slide_src']:9.3f} {r['slide_unlocked']:7.3f} {r['slide_locked']:6.3f}"
            )
    print("-" * len(header))
    print(
        f"{len(rows)} rigs: maps complete {sum(r['map'] == '22/22' for r in rows)}/{len(rows)}, "
        f"direction error max {max(r['dir_max'] for r in rows):.4f}°, root path error max "
        f"{max(r['root_mm'] for r in rows):.4f} mm, target slide - source slide max: without lock "
        f"{max(r['slide_unlocked'] - r['slide_src'] for r in rows):.3f}, with lock "
        f"{max(r['slide_locked'] - r['slide_src'] for r in rows):.3f} mm/frame"
    )


if __name__ == "__main__":
    main()

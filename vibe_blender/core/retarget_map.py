"""Bone maps for retargeting: which target bone follows which SMPL joint.

A map is a dict ``{smpl_joint_name: target_bone_name}`` over (a subset of) ``JOINT_NAMES``; it must
hold ``pelvis`` (the root, which also carries the root motion). Built-in presets cover Mixamo
(``mixamorig:`` names, any ``mixamorigN:`` prefix or none), Rigify (the meta-rig, the FK controls
of a generated rig, and ``DEF-`` bones for deform-only exports without Rigify's constraints), the Unreal Engine 5 mannequin and SMPL's
own names. Rigs without a preset are matched by name (:func:`auto_map`). Maps are saved as JSON::

    {"format": "vibe-retarget-map", "version": 1, "name": "My rig",
     "bones": {"pelvis": "Hips", "left_hip": "Thigh.L", ...}}
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import VibeError
from .smpl_model import JOINT_NAMES

MAP_FORMAT = "vibe-retarget-map"
MAP_VERSION = 1
ROOT_JOINT = "pelvis"

# SMPL joint -> bone name, per preset.  "{s}" is a side letter/word filled per preset below.
_MIXAMO = {
    "pelvis": "Hips", "spine1": "Spine", "spine2": "Spine1", "spine3": "Spine2", "neck": "Neck",
    "head": "Head", "left_hip": "LeftUpLeg", "left_knee": "LeftLeg", "left_ankle": "LeftFoot",
    "left_foot": "LeftToeBase", "left_collar": "LeftShoulder", "left_shoulder": "LeftArm",
    "left_elbow": "LeftForeArm", "left_wrist": "LeftHand",
}
_RIGIFY_META = {
    "pelvis": "spine", "spine1": "spine.001", "spine2": "spine.002", "spine3": "spine.003",
    "neck": "spine.004", "head": "spine.006", "left_hip": "thigh.L", "left_knee": "shin.L",
    "left_ankle": "foot.L", "left_foot": "toe.L", "left_collar": "shoulder.L",
    "left_shoulder": "upper_arm.L", "left_elbow": "forearm.L", "left_wrist": "hand.L",
}
_RIGIFY_CONTROLS = {
    "pelvis": "torso", "spine1": "spine_fk.001", "spine2": "spine_fk.002", "spine3": "spine_fk.003",
    "neck": "neck", "head": "head", "left_hip": "thigh_fk.L", "left_knee": "shin_fk.L",
    "left_ankle": "foot_fk.L", "left_foot": "toe_fk.L", "left_collar": "shoulder.L",
    "left_shoulder": "upper_arm_fk.L", "left_elbow": "forearm_fk.L", "left_wrist": "hand_fk.L",
}
_UE5 = {
    "pelvis": "pelvis", "spine1": "spine_01", "spine2": "spine_03", "spine3": "spine_05",
    "neck": "neck_01", "head": "head", "left_hip": "thigh_l", "left_knee": "calf_l",
    "left_ankle": "foot_l", "left_foot": "ball_l", "left_collar": "clavicle_l",
    "left_shoulder": "upperarm_l", "left_elbow": "lowerarm_l", "left_wrist": "hand_l",
}


def _mirror(half: dict[str, str]) -> dict[str, str]:
    """Add the right side to a left-side table (Left->Right, .L->.R, _l->_r)."""
    full = dict(half)
    for joint, bone in half.items():
        if joint.startswith("left_"):
            right = re.sub(r"^Left", "Right", bone)
            right = re.sub(r"\.L$", ".R", right)
            right = re.sub(r"_l$", "_r", right)
            full["right_" + joint[5:]] = right
    return full


PRESETS: dict[str, dict[str, str]] = {
    "SMPL": {name: name for name in JOINT_NAMES},
    "MIXAMO": {k: "mixamorig:" + v for k, v in _mirror(_MIXAMO).items()},
    "RIGIFY_CONTROLS": _mirror(_RIGIFY_CONTROLS),          # before DEF: a generated rig has both
    "RIGIFY_DEFORM": {k: "DEF-" + v for k, v in _mirror(_RIGIFY_META).items()},
    "RIGIFY_METARIG": _mirror(_RIGIFY_META),
    "UE5_MANNEQUIN": _mirror(_UE5),
}
PRESET_LABELS = {
    "SMPL": "SMPL names", "MIXAMO": "Mixamo", "RIGIFY_DEFORM": "Rigify (deform bones)",
    "RIGIFY_CONTROLS": "Rigify (FK controls)", "RIGIFY_METARIG": "Rigify (meta-rig)",
    "UE5_MANNEQUIN": "Unreal Engine 5 mannequin",
}

_MIXAMO_PREFIX = re.compile(r"^mixamorig\d*:")


def preset_map(preset: str, bone_names=None) -> dict[str, str]:
    """The preset's map. With ``bone_names`` (the target rig's bones), Mixamo names are re-prefixed
    to whatever prefix the rig uses (``mixamorig1:``, none ...)."""
    if preset not in PRESETS:
        raise VibeError(f"Unknown retarget preset '{preset}'; choose one of {', '.join(PRESETS)}.")
    mapping = dict(PRESETS[preset])
    if preset == "MIXAMO" and bone_names is not None:
        prefix = next((m.group(0) for n in bone_names if (m := _MIXAMO_PREFIX.match(n))), "")
        mapping = {k: prefix + _MIXAMO_PREFIX.sub("", v) for k, v in mapping.items()}
    return mapping


def match_preset(bone_names) -> str | None:
    """The preset whose bones the rig holds most completely (at least 90 % of them), or None; on a
    tie the earlier preset wins (a generated Rigify rig holds both its controls and DEF bones)."""
    names = set(bone_names)
    best, best_score = None, 0.0
    for preset in PRESETS:
        wanted = preset_map(preset, names).values()
        score = sum(b in names for b in wanted) / len(PRESETS[preset])
        if score > best_score:
            best, best_score = preset, score
    return best if best_score >= 0.9 else None


# ---------------------------------------------------------------- automatic matching by name
# Body-part words per SMPL joint (side removed), most specific first.
_PART_WORDS = {
    "pelvis": ["pelvis", "hips", "hip", "root"],
    "hip": ["upleg", "thigh", "upperleg", "hip"],
    "knee": ["shin", "calf", "lowerleg", "knee", "leg"],
    "ankle": ["foot", "ankle"],
    "foot": ["toebase", "toe", "ball", "toes"],
    "collar": ["clavicle", "collar", "shoulder"],
    "shoulder": ["upperarm", "arm", "shoulder"],
    "elbow": ["forearm", "lowerarm", "elbow"],
    "wrist": ["hand", "wrist"],
    "neck": ["neck"],
    "head": ["head"],
}
_NOISE = re.compile(r"^(def[-_]|org[-_]|mch[-_]|[A-Za-z0-9_]+:)", re.I)
_SIDE_TOKENS = {"l": "left", "left": "left", "r": "right", "right": "right"}


def split_name(bone_name: str) -> tuple[str | None, str]:
    """'mixamorig:LeftUpLeg' -> ('left', 'upleg'); 'thigh_l' -> ('left', 'thigh'); 'Spine.001' ->
    (None, 'spine001'): side (or None) and the lower-case body-part word without separators."""
    name = _NOISE.sub("", bone_name)
    camel = re.match(r"^(Left|Right)([^a-z].*)?$", name)
    if camel:
        return camel.group(1).lower(), re.sub(r"[^a-z0-9]", "", (camel.group(2) or "").lower())
    tokens = [t for t in re.split(r"[._\-\s]+", name) if t]
    side = None
    for i, token in enumerate(tokens):
        if token.lower() in _SIDE_TOKENS:
            side = _SIDE_TOKENS[token.lower()]
            del tokens[i]
            break
    return side, re.sub(r"[^a-z0-9]", "", "".join(tokens).lower())


def _part_rank(part: str, words: list[str]) -> int | None:
    """Index of the first word that ``part`` is (ignoring trailing digits), or None."""
    base = re.sub(r"\d+$", "", part)
    for i, word in enumerate(words):
        if base == word:
            return i
    return None


def auto_map(bone_names, parents: dict[str, str | None] | None = None) -> dict[str, str]:
    """Match SMPL joints to a rig's bones by name. bone_names: the rig's bones in hierarchy order
    (parents first); parents: bone -> parent name, used to order spine bones by depth.

    A preset that fits wins; otherwise each joint takes the bone with the most specific body-part
    word on the right side. The spine (spine1..3) takes the first, middle and last of the bones
    named spine/chest between the pelvis and the neck."""
    bone_names = list(bone_names)
    preset = match_preset(bone_names)
    if preset:
        return preset_map(preset, bone_names)
    mapping: dict[str, str] = {}
    split = {b: split_name(b) for b in bone_names}
    for joint in JOINT_NAMES:
        if joint.startswith("spine") or joint.endswith("_hand"):
            continue
        side = "left" if joint.startswith("left_") else "right" if joint.startswith("right_") else None
        words = _PART_WORDS[joint.split("_", 1)[1] if side else joint]
        best, best_rank = None, None
        for bone in bone_names:
            bone_side, part = split[bone]
            if bone_side != side or bone in mapping.values():
                continue
            rank = _part_rank(part, words)
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = bone, rank
        if best is not None:
            mapping[joint] = best
    spine = [b for b in bone_names if split[b][0] is None and split[b][1].startswith(("spine", "chest"))
             and b not in mapping.values()]
    if parents is not None:
        def depth(b):
            d = 0
            while parents.get(b):
                b, d = parents[b], d + 1
            return d
        spine.sort(key=depth)
    if spine:
        mapping["spine1"] = spine[0]
        if len(spine) >= 3:
            mapping["spine2"] = spine[len(spine) // 2]
        if len(spine) >= 2:
            mapping["spine3"] = spine[-1]
    return mapping


# ---------------------------------------------------------------- checks and files
def validate_map(mapping: dict[str, str], bone_names) -> None:
    """Raise VibeError unless every mapped bone exists, no bone is used twice and pelvis is mapped."""
    names = set(bone_names)
    unknown_joints = sorted(set(mapping) - set(JOINT_NAMES))
    if unknown_joints:
        raise VibeError(f"The bone map names SMPL joints that do not exist: {', '.join(unknown_joints)}; "
                        f"use the SMPL joint names ({JOINT_NAMES[0]}, {JOINT_NAMES[1]}, ...).")
    if not mapping.get(ROOT_JOINT):
        raise VibeError(f"The bone map has no bone for '{ROOT_JOINT}' (the hips); pick the target's hip/root "
                        "bone in the mapping list.")
    missing = sorted(b for b in mapping.values() if b and b not in names)
    if missing:
        raise VibeError(f"The target armature has no bone named {', '.join(repr(b) for b in missing)}; "
                        "choose another preset or fix those rows of the mapping.")
    used = [b for b in mapping.values() if b]
    twice = sorted({b for b in used if used.count(b) > 1})
    if twice:
        raise VibeError(f"Bone {', '.join(repr(b) for b in twice)} is mapped from more than one SMPL joint; "
                        "each target bone can follow one joint only.")


def save_map(path: str | Path, mapping: dict[str, str], name: str = "") -> Path:
    path = Path(path)
    payload = {"format": MAP_FORMAT, "version": MAP_VERSION, "name": name or path.stem,
               "bones": {j: mapping[j] for j in JOINT_NAMES if mapping.get(j)}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise VibeError(f"Could not write the bone map '{path}' ({err.strerror}); choose a writable folder.") from err
    return path


def load_map(path: str | Path) -> tuple[str, dict[str, str]]:
    """-> (name, mapping) from a JSON map file written by :func:`save_map`."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise VibeError(f"The bone map '{path}' does not exist; choose a .json map saved from the Retarget panel.") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VibeError(f"'{path}' is not a readable JSON bone map ({err}); save the map again.") from err
    if not isinstance(payload, dict) or payload.get("format") != MAP_FORMAT:
        raise VibeError(f"'{path}' is not a VIBE Mocap bone map (its 'format' is not '{MAP_FORMAT}').")
    if payload.get("version") != MAP_VERSION:
        raise VibeError(f"'{path}' is a bone map of version {payload.get('version')}; this add-on reads version "
                        f"{MAP_VERSION}. Update the add-on or save the map again.")
    bones = payload.get("bones")
    if not isinstance(bones, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in bones.items()):
        raise VibeError(f"'{path}': 'bones' must map SMPL joint names to bone names (strings).")
    unknown = sorted(set(bones) - set(JOINT_NAMES))
    if unknown:
        raise VibeError(f"'{path}' maps unknown SMPL joints {', '.join(unknown)}; use the SMPL joint names.")
    return str(payload.get("name", path.stem)), dict(bones)

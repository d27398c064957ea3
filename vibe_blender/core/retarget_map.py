"""Bone maps for retargeting: which target bone follows which SMPL joint.

A map is a dict ``{smpl_joint_name: target_bone_name}`` over (a subset of) ``JOINT_NAMES``; it must
hold ``pelvis`` (the root, which also carries the root motion). Built-in presets cover the naming
conventions animators bring: Mixamo / Maya HumanIK, Unreal Engine 5 and 4 mannequins, Rigify (the
meta-rig, the FK controls of a generated rig, its ``DEF-`` and ``ORG-`` bones), Unity Humanoid, VRM /
VRoid, Character Creator / iClone (``CC_Base_*``), DAZ Genesis, SMPL's own names and the official
SMPL FBX rig (``m_avg_L_Hip`` ...). A preset is
found under any namespace or name prefix the rig adds (``mixamorig1:``, ``Character1_`` ...).
Rigs without a preset are matched by name (:func:`auto_map`), with the usual side and suffix
variants (``_l``, ``.L``, ``Left``, ``l`` + capital, ``_jnt``, numbered spines). Maps are saved as JSON::

    {"format": "vibe-retarget-map", "version": 1, "name": "My rig",
     "bones": {"pelvis": "Hips", "left_hip": "Thigh.L", ...}}
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import safe_json
from .errors import VibeError
from .regular_file import open_user_file
from .shown_text import MAX_NAME_BYTES, display_text
from .smpl_model import JOINT_NAMES

MAP_FORMAT = "vibe-retarget-map"
MAP_VERSION = 1
ROOT_JOINT = "pelvis"
# The joints a humanoid rig is expected to have: SMPL's 24 less the hand ends (few rigs have a bone
# for SMPL's palm joint; the wrist bone carries the hand).
BODY_JOINTS = tuple(j for j in JOINT_NAMES if not j.endswith("_hand"))

# SMPL joint -> bone name of the left side and the middle, per convention.  "{L}" is filled with
# the convention's side token (left / right) given in _SIDES.
_TABLES = {
    "MIXAMO": {
        "pelvis": "mixamorig:Hips",
        "spine1": "mixamorig:Spine",
        "spine2": "mixamorig:Spine1",
        "spine3": "mixamorig:Spine2",
        "neck": "mixamorig:Neck",
        "head": "mixamorig:Head",
        "hip": "mixamorig:{L}UpLeg",
        "knee": "mixamorig:{L}Leg",
        "ankle": "mixamorig:{L}Foot",
        "foot": "mixamorig:{L}ToeBase",
        "collar": "mixamorig:{L}Shoulder",
        "shoulder": "mixamorig:{L}Arm",
        "elbow": "mixamorig:{L}ForeArm",
        "wrist": "mixamorig:{L}Hand",
    },
    "UE5_MANNEQUIN": {
        "pelvis": "pelvis",
        "spine1": "spine_01",
        "spine2": "spine_03",
        "spine3": "spine_05",
        "neck": "neck_01",
        "head": "head",
        "hip": "thigh_{L}",
        "knee": "calf_{L}",
        "ankle": "foot_{L}",
        "foot": "ball_{L}",
        "collar": "clavicle_{L}",
        "shoulder": "upperarm_{L}",
        "elbow": "lowerarm_{L}",
        "wrist": "hand_{L}",
    },
    "UE4_MANNEQUIN": {
        "pelvis": "pelvis",
        "spine1": "spine_01",
        "spine2": "spine_02",
        "spine3": "spine_03",
        "neck": "neck_01",
        "head": "head",
        "hip": "thigh_{L}",
        "knee": "calf_{L}",
        "ankle": "foot_{L}",
        "foot": "ball_{L}",
        "collar": "clavicle_{L}",
        "shoulder": "upperarm_{L}",
        "elbow": "lowerarm_{L}",
        "wrist": "hand_{L}",
    },
    "RIGIFY_CONTROLS": {
        "pelvis": "torso",
        "spine1": "spine_fk.001",
        "spine2": "spine_fk.002",
        "spine3": "spine_fk.003",
        "neck": "neck",
        "head": "head",
        "hip": "thigh_fk.{L}",
        "knee": "shin_fk.{L}",
        "ankle": "foot_fk.{L}",
        "foot": "toe_fk.{L}",
        "collar": "shoulder.{L}",
        "shoulder": "upper_arm_fk.{L}",
        "elbow": "forearm_fk.{L}",
        "wrist": "hand_fk.{L}",
    },
    "RIGIFY_METARIG": {
        "pelvis": "spine",
        "spine1": "spine.001",
        "spine2": "spine.002",
        "spine3": "spine.003",
        "neck": "spine.004",
        "head": "spine.006",
        "hip": "thigh.{L}",
        "knee": "shin.{L}",
        "ankle": "foot.{L}",
        "foot": "toe.{L}",
        "collar": "shoulder.{L}",
        "shoulder": "upper_arm.{L}",
        "elbow": "forearm.{L}",
        "wrist": "hand.{L}",
    },
    "UNITY_HUMANOID": {
        "pelvis": "Hips",
        "spine1": "Spine",
        "spine2": "Chest",
        "spine3": "UpperChest",
        "neck": "Neck",
        "head": "Head",
        "hip": "{L}UpperLeg",
        "knee": "{L}LowerLeg",
        "ankle": "{L}Foot",
        "foot": "{L}Toes",
        "collar": "{L}Shoulder",
        "shoulder": "{L}UpperArm",
        "elbow": "{L}LowerArm",
        "wrist": "{L}Hand",
    },
    "VRM": {
        "pelvis": "J_Bip_C_Hips",
        "spine1": "J_Bip_C_Spine",
        "spine2": "J_Bip_C_Chest",
        "spine3": "J_Bip_C_UpperChest",
        "neck": "J_Bip_C_Neck",
        "head": "J_Bip_C_Head",
        "hip": "J_Bip_{L}_UpperLeg",
        "knee": "J_Bip_{L}_LowerLeg",
        "ankle": "J_Bip_{L}_Foot",
        "foot": "J_Bip_{L}_ToeBase",
        "collar": "J_Bip_{L}_Shoulder",
        "shoulder": "J_Bip_{L}_UpperArm",
        "elbow": "J_Bip_{L}_LowerArm",
        "wrist": "J_Bip_{L}_Hand",
    },
    "CHARACTER_CREATOR": {
        "pelvis": "CC_Base_Hip",
        "spine1": "CC_Base_Waist",
        "spine2": "CC_Base_Spine01",
        "spine3": "CC_Base_Spine02",
        "neck": "CC_Base_NeckTwist01",
        "head": "CC_Base_Head",
        "hip": "CC_Base_{L}_Thigh",
        "knee": "CC_Base_{L}_Calf",
        "ankle": "CC_Base_{L}_Foot",
        "foot": "CC_Base_{L}_ToeBase",
        "collar": "CC_Base_{L}_Clavicle",
        "shoulder": "CC_Base_{L}_Upperarm",
        "elbow": "CC_Base_{L}_Forearm",
        "wrist": "CC_Base_{L}_Hand",
    },
    "DAZ_GENESIS": {
        "pelvis": "hip",
        "spine1": "abdomenLower",
        "spine2": "chestLower",
        "spine3": "chestUpper",
        "neck": "neckLower",
        "head": "head",
        "hip": "{L}ThighBend",
        "knee": "{L}Shin",
        "ankle": "{L}Foot",
        "foot": "{L}Toe",
        "collar": "{L}Collar",
        "shoulder": "{L}ShldrBend",
        "elbow": "{L}ForearmBend",
        "wrist": "{L}Hand",
    },
}
_SIDES = {  # convention -> (left token, right token)
    "MIXAMO": ("Left", "Right"),
    "UE5_MANNEQUIN": ("l", "r"),
    "UE4_MANNEQUIN": ("l", "r"),
    "RIGIFY_CONTROLS": ("L", "R"),
    "RIGIFY_METARIG": ("L", "R"),
    "UNITY_HUMANOID": ("Left", "Right"),
    "VRM": ("L", "R"),
    "CHARACTER_CREATOR": ("L", "R"),
    "DAZ_GENESIS": ("l", "r"),
}


def _expand(table: dict[str, str], sides: tuple[str, str]) -> dict[str, str]:
    """A convention's table -> {SMPL joint: bone} for the middle joints and both sides."""
    full = {}
    for joint in BODY_JOINTS:
        side, _, part = joint.partition("_")
        if side in ("left", "right") and part:
            full[joint] = table[part].format(L=sides[side == "right"])
        else:
            full[joint] = table[joint]
    return full


# Order matters on a tie (see match_preset): UE5 before UE4 (a UE5 rig also holds spine_01..03),
# Rigify controls before DEF / ORG bones (a generated rig holds all three).
PRESETS: dict[str, dict[str, str]] = {"SMPL": {name: name for name in JOINT_NAMES}}
# The official SMPL FBX / Unity rig: SMPL's joints as 'm_avg_Pelvis', 'm_avg_L_Hip', ... (a rig under
# 'f_avg_' or another prefix is matched by name: its Ankle / Foot, Wrist / Hand bones are told apart).
PRESETS["SMPL_FBX"] = {
    j: "m_avg_" + (f"{j[0].upper()}_{j.partition('_')[2].title()}" if "_" in j else j.title()) for j in JOINT_NAMES
}
for _key in ("MIXAMO", "UE5_MANNEQUIN", "UE4_MANNEQUIN", "RIGIFY_CONTROLS"):
    PRESETS[_key] = _expand(_TABLES[_key], _SIDES[_key])
PRESETS["RIGIFY_DEFORM"] = {k: "DEF-" + v for k, v in _expand(_TABLES["RIGIFY_METARIG"], ("L", "R")).items()}
PRESETS["RIGIFY_ORG"] = {k: "ORG-" + v for k, v in _expand(_TABLES["RIGIFY_METARIG"], ("L", "R")).items()}
for _key in ("RIGIFY_METARIG", "UNITY_HUMANOID", "VRM", "CHARACTER_CREATOR", "DAZ_GENESIS"):
    PRESETS[_key] = _expand(_TABLES[_key], _SIDES[_key])
# The naming conventions of other tools (every preset except SMPL's own names)
FOREIGN_PRESETS = tuple(name for name in PRESETS if name != "SMPL")

PRESET_LABELS = {
    "SMPL": "SMPL names",
    "SMPL_FBX": "SMPL FBX (m_avg_...)",
    "MIXAMO": "Mixamo / Maya HumanIK",
    "UE5_MANNEQUIN": "Unreal Engine 5 mannequin",
    "UE4_MANNEQUIN": "Unreal Engine 4 mannequin",
    "RIGIFY_CONTROLS": "Rigify (FK controls)",
    "RIGIFY_DEFORM": "Rigify (deform bones)",
    "RIGIFY_ORG": "Rigify (ORG bones)",
    "RIGIFY_METARIG": "Rigify (meta-rig)",
    "UNITY_HUMANOID": "Unity Humanoid",
    "VRM": "VRM / VRoid",
    "CHARACTER_CREATOR": "Character Creator / iClone",
    "DAZ_GENESIS": "DAZ Genesis",
}

_NAMESPACE = re.compile(r"^[^:]*:")


def _bare(name: str) -> str:
    """The name without a namespace ('mixamorig:Hips' -> 'Hips')."""
    return _NAMESPACE.sub("", name)


def _rig_affixes(wanted, names: set[str]) -> tuple[str, str]:
    """The namespace or name prefix (ending in ':' or '_') and the suffix (starting with '_' or '.')
    under which most of the ``wanted`` bare names exist in the rig (``Character1_Hips``,
    ``Hips_jnt``); ('', '') on a tie."""
    wanted = [_bare(w) for w in wanted]
    candidates = {("", "")}
    for name in names:
        for w in wanted:
            i = name.find(w)
            if i < 0:
                continue
            prefix, suffix = name[:i], name[i + len(w) :]
            if (not prefix or prefix[-1] in ":_") and (not suffix or suffix[0] in "_."):
                candidates.add((prefix, suffix))
    return max(
        sorted(candidates, key=lambda a: len(a[0]) + len(a[1])),
        key=lambda a: sum(a[0] + w + a[1] in names for w in wanted),
    )


def preset_map(preset: str, bone_names=None) -> dict[str, str]:
    """The preset's map. With ``bone_names`` (the target rig's bones), the names are re-prefixed to
    whatever namespace, prefix or suffix the rig uses (``mixamorig1:``, ``Character1_``, ``_jnt`` ...)."""
    if preset not in PRESETS:
        raise VibeError(f"Unknown retarget preset '{preset}'; choose one of {', '.join(PRESETS)}.")
    mapping = dict(PRESETS[preset])
    if bone_names is not None:
        names = set(bone_names)
        if sum(b in names for b in mapping.values()) < len(mapping):
            prefix, suffix = _rig_affixes(mapping.values(), names)
            mapping = {k: prefix + _bare(v) + suffix for k, v in mapping.items()}
    return mapping


def _preset_score(preset: str, names: set[str]) -> float:
    wanted = preset_map(preset, names)
    return sum(wanted[j] in names for j in BODY_JOINTS if j in wanted) / len(BODY_JOINTS)


def match_preset(bone_names) -> str | None:
    """The preset whose body bones the rig holds most completely (at least 90 % of them), or None;
    on a tie the earlier preset wins (a generated Rigify rig holds its controls and DEF bones)."""
    names = set(bone_names)
    best, best_score = None, 0.0
    for preset in PRESETS:
        score = _preset_score(preset, names)
        if score > best_score:
            best, best_score = preset, score
    return best if best_score >= 0.9 else None


# ---------------------------------------------------------------- automatic matching by name
# Body-part words per SMPL joint (side removed), most specific first.
_PART_WORDS = {
    "pelvis": ["pelvis", "hips", "hip", "root"],
    "hip": ["upleg", "thigh", "upperleg", "thighbend", "hip"],
    "knee": ["shin", "calf", "lowerleg", "knee", "leg"],
    "ankle": ["foot", "ankle"],
    "foot": ["toebase", "toe", "ball", "toes", "foot"],  # 'foot': a rig named by joint (Ankle, Foot)
    "collar": ["clavicle", "collar", "shoulder"],
    "shoulder": ["upperarm", "shldrbend", "arm", "shoulder"],
    "elbow": ["forearm", "lowerarm", "forearmbend", "elbow"],
    "wrist": ["hand", "wrist"],
    "hand": ["hand"],
    "neck": ["neck"],
    "head": ["head"],
}
# Joints whose own name, when a bone on that side has it, wins over the words above: a rig named
# by joint (SMPL's L_Ankle, L_Foot, L_Wrist, L_Hand) keeps its Foot and Hand for the next joint.
_OWN_NAME_FIRST = ("ankle", "wrist")
# 'Shoulder' is the collar only on a side that also has an upper-arm bone (Auto-Rig Pro's shoulder.l
# and arm.l); on a rig named by joint without clavicles (Shoulder, Elbow, Wrist) it is the upper arm.
_UPPER_ARM_WORDS = [w for w in _PART_WORDS["shoulder"] if w != "shoulder"]
_SPINE_WORDS = ("spine", "chest", "upperchest", "abdomen", "waist", "torso")
_NOISE = re.compile(r"^(def[-_]|org[-_]|mch[-_]|[^:]*:)", re.I)
_SIDE_TOKENS = {"l": "left", "left": "left", "r": "right", "right": "right"}
# Tokens that say what kind of node a bone is, not which body part: dropped before matching ("x":
# Auto-Rig Pro's middle bones, root.x, neck.x).
_KIND_TOKENS = {"jnt", "joint", "jt", "bind", "bnd", "skin", "bone", "bn", "def", "c", "m", "mid", "center", "x"}


def _tokens(name: str) -> list[str]:
    """'CC_Base_L_Thigh' -> ['CC', 'Base', 'L', 'Thigh']; 'LeftUpLeg' -> ['Left', 'UpLeg'];
    'lThighBend' -> ['l', 'ThighBend'] (a lone side letter before a capital)."""
    name = _NOISE.sub("", name)
    tokens = []
    for token in re.split(r"[._\-\s|]+", name):
        side = re.match(r"^(Left|Right|l|r)(?=[A-Z])(.*)$", token)
        tokens += [side.group(1), side.group(2)] if side else [token] if token else []
    return tokens


def split_name(bone_name: str, common=frozenset()) -> tuple[str | None, str]:
    """'mixamorig:LeftUpLeg' -> ('left', 'upleg'); 'thigh_l' -> ('left', 'thigh'); 'Spine.001' ->
    (None, 'spine001'); 'pelvis_jnt' -> (None, 'pelvis'): side (or None) and the lower-case body-part
    word without separators. ``common``: lower-case tokens shared by most of the rig's bones (a
    naming prefix such as ``CC``, ``Base``), dropped too."""
    side, words = None, []
    for token in _tokens(bone_name):
        low = token.lower()
        if side is None and low in _SIDE_TOKENS:
            side = _SIDE_TOKENS[low]
        elif low not in _KIND_TOKENS and low not in common:
            words.append(low)
    return side, re.sub(r"[^a-z0-9]", "", "".join(words))


def _common_tokens(bone_names) -> frozenset:
    """Lower-case tokens (not sides) found in more than 60 % of the bone names: a naming prefix."""
    counts = Counter(t for b in bone_names for t in {t.lower() for t in _tokens(b)})
    n = max(len(bone_names), 1)
    return frozenset(t for t, c in counts.items() if c > 0.6 * n and t not in _SIDE_TOKENS and n >= 5)


def _part_rank(part: str, words: list[str]) -> int | None:
    """Index of the first word that ``part`` is (ignoring trailing digits), or None."""
    base = re.sub(r"\d+$", "", part)
    for i, word in enumerate(words):
        if base == word:
            return i
    return None


@dataclass
class AutoMap:
    """An automatic bone map and how sure it is.

    mapping: {SMPL joint: bone}; preset: the convention recognised (None: matched by name);
    missing: body joints left without a bone (the user picks them in the list); confidence 0..1:
    the share of body joints mapped, weighted by how specific each name match was."""

    mapping: dict[str, str]
    preset: str | None
    missing: list[str] = field(default_factory=list)
    confidence: float = 0.0
    how: str | None = None  # where the map came from, when neither a preset nor bone names (a saved map)

    @property
    def complete(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        found = len(BODY_JOINTS) - len(self.missing)
        how = self.how or (PRESET_LABELS[self.preset] if self.preset else "bone names")
        text = f"{found} of {len(BODY_JOINTS)} body joints mapped from {how} (confidence {self.confidence:.0%})"
        if self.missing:
            text += f"; missing: {', '.join(self.missing)}. Pick their bones in the list"
        return text + "."


def preset_report(preset: str, bone_names) -> AutoMap:
    """A preset's map for a rig, without the bones the rig lacks (those joints are ``missing``)."""
    names = set(bone_names)
    mapping = {j: b for j, b in preset_map(preset, names).items() if b in names}
    missing = [j for j in BODY_JOINTS if j not in mapping]
    return AutoMap(mapping, preset, missing, 1.0 - len(missing) / len(BODY_JOINTS))


def auto_map(bone_names, parents: dict[str, str | None] | None = None) -> dict[str, str]:
    """{SMPL joint: bone} for a rig, see :func:`auto_map_report`."""
    return auto_map_report(bone_names, parents).mapping


def auto_map_report(bone_names, parents: dict[str, str | None] | None = None) -> AutoMap:
    """Match SMPL joints to a rig's bones. bone_names: the rig's bones in hierarchy order (parents
    first); parents: bone -> parent name, used to order spine bones by depth.

    A preset that fits (90 % of the body joints) wins; otherwise each joint takes the bone with the
    most specific body-part word on the right side. The spine (spine1..3) takes the first, middle
    and last of the bones named spine/chest/... between the pelvis and the neck."""
    bone_names = list(bone_names)
    names = set(bone_names)
    preset = match_preset(bone_names)
    if preset:
        return preset_report(preset, names)
    mapping: dict[str, str] = {}
    quality: dict[str, float] = {}
    common = _common_tokens(bone_names)
    split = {b: split_name(b, common) for b in bone_names}
    for joint in JOINT_NAMES:  # the body, then the hand ends where a bone is left for them
        if joint.startswith("spine"):
            continue
        side = "left" if joint.startswith("left_") else "right" if joint.startswith("right_") else None
        own = joint.split("_", 1)[1] if side else joint
        words = _PART_WORDS[own]
        if own == "collar" and not any(
            bone_side == side and _part_rank(part, _UPPER_ARM_WORDS) is not None for bone_side, part in split.values()
        ):
            words = [w for w in words if w != "shoulder"]
        best, best_rank = None, None
        for bone in bone_names:
            bone_side, part = split[bone]
            if bone_side != side or bone in mapping.values():
                continue
            rank = -1 if own in _OWN_NAME_FIRST and _part_rank(part, [own]) == 0 else _part_rank(part, words)
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = bone, rank
        if best is not None:
            mapping[joint] = best
            if joint in BODY_JOINTS:
                quality[joint] = 1.0 if best_rank <= 0 else 0.9
    spine = [
        b
        for b in bone_names
        if split[b][0] is None and split[b][1].startswith(_SPINE_WORDS) and b not in mapping.values()
    ]
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
        for joint in ("spine1", "spine2", "spine3"):
            if joint in mapping:
                quality[joint] = 0.9 if parents is None else 1.0
    missing = [j for j in BODY_JOINTS if j not in mapping]
    confidence = sum(quality.values()) / len(BODY_JOINTS)
    return AutoMap({j: mapping[j] for j in JOINT_NAMES if j in mapping}, None, missing, confidence)


# ---------------------------------------------------------------- checks and files
def map_report(mapping: dict[str, str], bone_names, how: str) -> AutoMap:
    """How complete a map made elsewhere (a saved preset, ``how`` names it) is for a rig: its body joints
    whose bone the rig lacks, or that have none, are ``missing``."""
    names = set(bone_names)
    usable = {j: b for j, b in mapping.items() if b in names}
    missing = [j for j in BODY_JOINTS if j not in usable]
    return AutoMap(usable, None, missing, 1.0 - len(missing) / len(BODY_JOINTS), how=how)


def validate_map(mapping: dict[str, str], bone_names) -> None:
    """Raise VibeError unless every mapped bone exists, no bone is used twice and pelvis is mapped."""
    names = set(bone_names)
    unknown_joints = sorted(set(mapping) - set(JOINT_NAMES))
    if unknown_joints:
        raise VibeError(
            f"The bone map names SMPL joints that do not exist: {', '.join(unknown_joints)}; "
            f"use the SMPL joint names ({JOINT_NAMES[0]}, {JOINT_NAMES[1]}, ...)."
        )
    if not mapping.get(ROOT_JOINT):
        raise VibeError(
            f"The bone map has no bone for '{ROOT_JOINT}' (the hips); pick the target's hip/root "
            "bone in the mapping list."
        )
    missing = sorted(b for b in mapping.values() if b and b not in names)
    if missing:
        raise VibeError(
            f"The target armature has no bone named {', '.join(repr(b) for b in missing)}; "
            "choose another preset or fix those rows of the mapping."
        )
    used = [b for b in mapping.values() if b]
    twice = sorted({b for b in used if used.count(b) > 1})
    if twice:
        raise VibeError(
            f"Bone {', '.join(repr(b) for b in twice)} is mapped from more than one SMPL joint; "
            "each target bone can follow one joint only."
        )


def save_map(path: str | Path, mapping: dict[str, str], name: str = "") -> Path:
    path = Path(path)
    payload = {
        "format": MAP_FORMAT,
        "version": MAP_VERSION,
        "name": name or path.stem,
        "bones": {j: mapping[j] for j in JOINT_NAMES if mapping.get(j)},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise VibeError(f"Could not write the bone map '{path}' ({err.strerror}); choose a writable folder.") from err
    return path


MAX_MAP_BYTES = 1 << 20


def load_map(path: str | Path) -> tuple[str, dict[str, str]]:
    """-> (name, mapping) from a JSON map file written by :func:`save_map`."""
    path = Path(path)
    try:
        with open_user_file(path, "the bone map", "Choose a .json map saved from the Retarget panel.") as file:
            data = file.read(MAX_MAP_BYTES + 1)  # a map is a few kB: never read a wrong pick whole
        if len(data) > MAX_MAP_BYTES:
            raise VibeError(
                f"'{path}' is over {MAX_MAP_BYTES // 1024} KiB, far larger than a bone map; choose a .json map "
                "saved from the Retarget panel."
            )
        payload = safe_json.loads(data.decode("utf-8"))
    except safe_json.JSONTooDeep as err:
        raise VibeError(
            f"'{path}' holds {err}, which no bone map does; choose a .json map saved from the Retarget panel."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VibeError(f"'{path}' is not a readable JSON bone map ({err}); save the map again.") from err
    if not isinstance(payload, dict) or payload.get("format") != MAP_FORMAT:
        raise VibeError(f"'{path}' is not a VIBE Mocap bone map (its 'format' is not '{MAP_FORMAT}').")
    if payload.get("version") != MAP_VERSION:
        raise VibeError(
            f"'{path}' is a bone map of version {payload.get('version')}; this add-on reads version "
            f"{MAP_VERSION}. Update the add-on or save the map again."
        )
    bones = payload.get("bones")
    if not isinstance(bones, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in bones.items()):
        raise VibeError(f"'{path}': 'bones' must map SMPL joint names to bone names (strings).")
    unknown = sorted(set(bones) - set(JOINT_NAMES))
    if unknown:
        shown = ", ".join(display_text(joint, 40) for joint in unknown[:10]) + (" ..." if unknown[10:] else "")
        raise VibeError(f"'{path}' maps unknown SMPL joints {shown}; use the SMPL joint names.")
    for bone in bones.values():  # before the panel's rows are touched: Blender refuses such a name halfway
        if not bone.isprintable():
            why = "it holds characters that are not printable"
        elif len(bone.encode()) > MAX_NAME_BYTES:
            why = f"it is {len(bone.encode())} bytes long, more than the {MAX_NAME_BYTES} a name holds"
        else:
            continue
        raise VibeError(
            f"'{path}' maps a joint to '{display_text(bone, 40)}', which cannot be a Blender bone's name ({why}); "
            "save the map again."
        )
    name = payload.get("name")
    return display_text(name if isinstance(name, str) else path.stem, 100), dict(bones)

"""Bone maps: presets, prefix handling, name matching, validation and the JSON file format."""

import json

import pytest

from vibe_blender.core.errors import VibeError
from vibe_blender.core.retarget_map import (
    BODY_JOINTS,
    FOREIGN_PRESETS,
    PRESETS,
    auto_map,
    auto_map_report,
    load_map,
    match_preset,
    preset_map,
    save_map,
    split_name,
    validate_map,
)
from vibe_blender.core.smpl_model import JOINT_NAMES


def test_every_preset_maps_the_body_and_is_recognised_from_its_bone_names():
    for preset, mapping in PRESETS.items():
        assert {"pelvis", "left_hip", "right_wrist", "head", "left_foot"} <= set(mapping), preset
        assert len(set(mapping.values())) == len(mapping), preset
        assert match_preset(list(mapping.values()) + ["extra_bone"]) == preset


def test_presets_have_both_sides():
    assert PRESETS["MIXAMO"]["right_knee"] == "mixamorig:RightLeg"
    assert PRESETS["RIGIFY_DEFORM"]["right_shoulder"] == "DEF-upper_arm.R"
    assert PRESETS["UE5_MANNEQUIN"]["right_ankle"] == "foot_r"
    assert PRESETS["SMPL"] == {n: n for n in JOINT_NAMES}


def test_mixamo_prefix_follows_the_rig():
    bones = [b.replace("mixamorig:", "mixamorig2:") for b in PRESETS["MIXAMO"].values()]
    assert match_preset(bones) == "MIXAMO"
    assert auto_map(bones)["pelvis"] == "mixamorig2:Hips"
    plain = [b.replace("mixamorig:", "") for b in PRESETS["MIXAMO"].values()]
    assert preset_map("MIXAMO", plain)["left_elbow"] == "LeftForeArm"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mixamorig:LeftUpLeg", ("left", "upleg")),
        ("thigh_l", ("left", "thigh")),
        ("Spine.001", (None, "spine001")),
        ("DEF-upper_arm.R", ("right", "upperarm")),
        ("L_Hip", ("left", "hip")),
        ("Hips", (None, "hips")),
        ("Leftovers", (None, "leftovers")),
        ("rig:RightHand", ("right", "hand")),
        ("pelvis_jnt", (None, "pelvis")),
        ("l_knee_jnt", ("left", "knee")),
        ("lThighBend", ("left", "thighbend")),
        ("Hip.R", ("right", "hip")),
        ("Left_Thigh", ("left", "thigh")),
        ("ORG-shin.L", ("left", "shin")),
        ("neck.x", (None, "neck")),  # Auto-Rig Pro's middle bones
        ("root.x", (None, "root")),
    ],
)
def test_split_name(name, expected):
    assert split_name(name) == expected


def test_auto_map_matches_an_unknown_naming_scheme():
    bones = ["Root", "Pelvis", "Spine_A", "Spine_B", "Chest", "Neck", "Head"]
    for s in "LR":
        bones += [
            f"{s}_Thigh",
            f"{s}_Calf",
            f"{s}_Foot",
            f"{s}_Toe",
            f"{s}_Clavicle",
            f"{s}_UpperArm",
            f"{s}_Forearm",
            f"{s}_Hand",
        ]
    parents = {"Pelvis": "Root", "Spine_A": "Pelvis", "Spine_B": "Spine_A", "Chest": "Spine_B"}
    mapping = auto_map(bones, parents)
    assert mapping["pelvis"] == "Pelvis"
    assert (mapping["spine1"], mapping["spine2"], mapping["spine3"]) == ("Spine_A", "Spine_B", "Chest")
    assert mapping["left_knee"] == "L_Calf" and mapping["right_foot"] == "R_Toe"
    assert mapping["left_collar"] == "L_Clavicle" and mapping["left_shoulder"] == "L_UpperArm"
    assert mapping["right_elbow"] == "R_Forearm" and mapping["right_wrist"] == "R_Hand"
    validate_map(mapping, bones)


def test_validate_map_says_what_is_wrong():
    bones = list(PRESETS["UE5_MANNEQUIN"].values())
    validate_map(PRESETS["UE5_MANNEQUIN"], bones)
    with pytest.raises(VibeError, match="no bone for 'pelvis'"):
        validate_map({"left_hip": "thigh_l"}, bones)
    with pytest.raises(VibeError, match="no bone named 'Nope'"):
        validate_map({"pelvis": "pelvis", "head": "Nope"}, bones)
    with pytest.raises(VibeError, match="more than one"):
        validate_map({"pelvis": "pelvis", "head": "pelvis"}, bones)
    with pytest.raises(VibeError, match="do not exist: tail"):
        validate_map({"pelvis": "pelvis", "tail": "head"}, bones)
    with pytest.raises(VibeError, match="Unknown retarget preset"):
        preset_map("BLENDER_HUMAN")


def test_map_file_round_trip_and_bad_files(tmp_path):
    path = save_map(tmp_path / "sub" / "rig.json", PRESETS["MIXAMO"], name="My rig")
    name, mapping = load_map(path)
    assert name == "My rig" and mapping == PRESETS["MIXAMO"]
    with pytest.raises(VibeError, match="does not exist"):
        load_map(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(VibeError, match="not a readable JSON"):
        load_map(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something", "bones": {}}))
    with pytest.raises(VibeError, match="not a VIBE Mocap bone map"):
        load_map(tmp_path / "other.json")
    (tmp_path / "v9.json").write_text(json.dumps({"format": "vibe-retarget-map", "version": 9, "bones": {}}))
    with pytest.raises(VibeError, match="version 9"):
        load_map(tmp_path / "v9.json")
    (tmp_path / "j.json").write_text(json.dumps({"format": "vibe-retarget-map", "version": 1, "bones": {"tail": "x"}}))
    with pytest.raises(VibeError, match="unknown SMPL joints tail"):
        load_map(tmp_path / "j.json")


def test_a_deeply_nested_map_file_is_one_clear_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"format": "vibe-retarget-map", "bones": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(VibeError) as err:
        load_map(path)
    assert str(err.value) == (
        f"'{path}' holds JSON nested deeper than 64 levels, which no bone map does; choose a .json map "
        "saved from the Retarget panel."
    )


def test_a_file_far_larger_than_a_map_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "video.json"
    with path.open("wb") as f:
        f.truncate(64 << 20)  # 64 MiB, sparse
    with pytest.raises(VibeError, match="is over 1024 KiB, far larger than a bone map"):
        load_map(path)


CONVENTIONS = FOREIGN_PRESETS


@pytest.mark.parametrize("preset", CONVENTIONS)
def test_every_convention_maps_fully_with_extra_bones_and_a_prefix(preset):
    """The rig holds the convention's bones plus unmapped ones (twists, a root, fingers), under a
    namespace or a name prefix: the map is complete and names the rig's own bones."""
    body = {j: b for j, b in PRESETS[preset].items() if j in BODY_JOINTS}
    extras = ["root", "ik_foot_root", "thigh_twist_01_l", "index_01_l", "spine_extra"]
    for prefix, suffix in (("", ""), ("Character1_", ""), ("rig7:", ""), ("", "_jnt")):
        rig = {j: prefix + b.split(":")[-1] + suffix for j, b in body.items()}
        bones = ["root"] + list(rig.values()) + extras[1:]
        report = auto_map_report(bones)
        assert report.preset == preset and report.complete and report.confidence == 1.0, (prefix, suffix, report)
        assert report.mapping == rig
        validate_map(report.mapping, bones)


def _jnt_rig():
    """A custom rig of the issue: every bone ends in _jnt, sides as l_ / r_, numbered spine."""
    names = {
        "pelvis": "pelvis_jnt",
        "spine1": "spine_01_jnt",
        "spine2": "spine_02_jnt",
        "spine3": "spine_03_jnt",
        "neck": "neck_jnt",
        "head": "head_jnt",
    }
    for s, side in (("l", "left"), ("r", "right")):
        for joint, word in (
            ("hip", "hip"),
            ("knee", "knee"),
            ("ankle", "ankle"),
            ("foot", "ball"),
            ("collar", "clavicle"),
            ("shoulder", "shoulder"),
            ("elbow", "elbow"),
            ("wrist", "wrist"),
        ):
            names[f"{side}_{joint}"] = f"{s}_{word}_jnt"
    parents = {b: "pelvis_jnt" for b in names.values() if b != "pelvis_jnt"}
    parents.update({"spine_02_jnt": "spine_01_jnt", "spine_03_jnt": "spine_02_jnt"})
    return names, parents


def test_auto_map_reads_auto_rig_pros_middle_bones():
    """root.x, neck.x, head.x: before, the '.x' kept the pelvis, neck and head unmapped."""
    parents = {"root.x": None, "spine_01.x": "root.x", "spine_02.x": "spine_01.x", "spine_03.x": "spine_02.x"}
    parents.update({"neck.x": "spine_03.x", "head.x": "neck.x"})
    for s in "lr":
        for chain, top in (("thigh leg foot toes_01", "root.x"), ("shoulder arm forearm hand", "spine_03.x")):
            for part in chain.split():
                parents[f"{part}.{s}"], top = top, f"{part}.{s}"
    report = auto_map_report(list(parents), parents)
    assert report.missing == []
    assert (report.mapping["pelvis"], report.mapping["neck"], report.mapping["head"]) == ("root.x", "neck.x", "head.x")
    assert (report.mapping["left_knee"], report.mapping["right_shoulder"]) == ("leg.l", "arm.r")


def test_a_shoulder_bone_is_the_upper_arm_on_a_rig_without_clavicles():
    """A rig named by joint (Shoulder, Elbow, Wrist) and no clavicle: before, the collar took
    'Shoulder_L' and the upper arm was left missing. With an upper-arm bone beside it, as on Auto-Rig
    Pro's rig above, 'shoulder' is still the collar."""
    bones = ["Hips", "Spine", "Chest", "Neck", "Head"]
    bones += [f"{part}_{s}" for s in "LR" for part in ("Hip", "Knee", "Ankle", "Toe", "Shoulder", "Elbow", "Wrist")]
    report = auto_map_report(bones)
    assert (report.mapping["left_shoulder"], report.mapping["right_shoulder"]) == ("Shoulder_L", "Shoulder_R")
    assert report.missing == ["spine2", "left_collar", "right_collar"]
    report = auto_map_report(bones + ["UpperArm_L"])
    assert (report.mapping["left_collar"], report.mapping["left_shoulder"]) == ("Shoulder_L", "UpperArm_L")
    assert report.mapping["right_shoulder"] == "Shoulder_R"  # the other side has no upper-arm bone


def test_auto_map_handles_jnt_suffixes_and_reports_a_full_map():
    """Before: 'pelvis_jnt' matched no body-part word, 21 of 22 joints mapped and Retarget refused."""
    names, parents = _jnt_rig()
    report = auto_map_report(["world_jnt"] + list(names.values()), parents)
    assert report.preset is None and report.complete, report.summary()
    assert report.mapping == names
    assert "22 of 22" in report.summary() and report.confidence > 0.8


@pytest.mark.parametrize("style", ["{side}_{part}", "{part}.{S}", "{part}_{s}", "{Side}{Part}", "{Side}_{Part}"])
def test_auto_map_side_variants(style):
    parts = {
        "hip": "thigh",
        "knee": "shin",
        "ankle": "foot",
        "foot": "toe",
        "collar": "clavicle",
        "shoulder": "upperarm",
        "elbow": "forearm",
        "wrist": "hand",
    }
    bones = ["Hips", "Spine1", "Spine2", "Spine3", "Neck", "Head"]
    expected = {
        "pelvis": "Hips",
        "spine1": "Spine1",
        "spine2": "Spine2",
        "spine3": "Spine3",
        "neck": "Neck",
        "head": "Head",
    }
    for side in ("left", "right"):
        for joint, part in parts.items():
            name = style.format(
                side=side[0], S=side[0].upper(), s=side[0], Side=side.title(), part=part, Part=part.title()
            )
            bones.append(name)
            expected[f"{side}_{joint}"] = name
    parents = {"Spine2": "Spine1", "Spine3": "Spine2", "Spine1": "Hips"}
    report = auto_map_report(bones, parents)
    assert report.complete and report.mapping == expected, report.summary()


def test_incomplete_map_names_the_missing_joints_and_a_lower_confidence():
    names, parents = _jnt_rig()
    bones = [b for j, b in names.items() if j not in ("left_elbow", "neck")]
    report = auto_map_report(bones, parents)
    assert report.missing == ["neck", "left_elbow"]
    assert not report.complete and report.confidence < 0.95
    assert "20 of 22" in report.summary() and "missing: neck, left_elbow" in report.summary()
    ue = [b for j, b in PRESETS["UE5_MANNEQUIN"].items() if j != "right_wrist"]  # 21 of 22: still the preset
    report = auto_map_report(ue)
    assert (
        report.preset == "UE5_MANNEQUIN" and report.missing == ["right_wrist"] and "right_wrist" not in report.mapping
    )


def _smpl_fbx_rig(prefix):
    """The official SMPL FBX rig's bones (SMPL's joints, 'L_Ankle', 'L_Foot', 'L_Wrist', 'L_Hand' ...)
    under ``prefix``, parents from SMPL's tree: -> ({joint: bone}, parents)."""
    from vibe_blender.core.smpl_model import PARENTS

    fbx = "Pelvis L_Hip R_Hip Spine1 L_Knee R_Knee Spine2 L_Ankle R_Ankle Spine3 L_Foot R_Foot Neck L_Collar "
    fbx += "R_Collar Head L_Shoulder R_Shoulder L_Elbow R_Elbow L_Wrist R_Wrist L_Hand R_Hand"
    names = {j: prefix + b for j, b in zip(JOINT_NAMES, fbx.split())}
    bones = [names[j] for j in JOINT_NAMES]
    return names, {b: (bones[PARENTS[i]] if PARENTS[i] >= 0 else None) for i, b in enumerate(bones)}


def test_the_official_smpl_fbx_rig_is_recognised_with_its_ankles_and_wrists():
    """Before: no preset knew 'm_avg_L_Hip', and name matching gave the ankle 'L_Foot' (and the wrist
    'L_Hand'): the feet were left unmapped and the ankle row turned the toe."""
    names, parents = _smpl_fbx_rig("m_avg_")
    report = auto_map_report(list(names.values()), parents)
    assert report.preset == "SMPL_FBX" and report.complete and report.mapping == names == PRESETS["SMPL_FBX"]
    assert (report.mapping["left_ankle"], report.mapping["left_foot"]) == ("m_avg_L_Ankle", "m_avg_L_Foot")


@pytest.mark.parametrize("prefix", ["f_avg_", "m_", ""])
def test_name_matching_gives_the_ankle_and_wrist_their_own_bones(prefix):
    """A rig named by joint (Ankle and Foot, Wrist and Hand on each side) that no preset knows: the
    ankle and wrist take their own bones, the foot and hand the next ones. Before: the ankle took
    'L_Foot', the foot was left missing and the wrist took 'L_Hand'."""
    names, parents = _smpl_fbx_rig(prefix)
    report = auto_map_report(list(names.values()), parents)
    assert report.preset is None and report.complete, report.summary()
    assert report.mapping == names
    assert report.confidence > 0.9


@pytest.mark.parametrize(
    "bone, problem",
    [("\ud800", "not printable"), ("Hips\nSpine", "not printable"), ("b" * 64, "64 bytes long, more than the 63")],
)
def test_a_map_naming_a_bone_blender_cannot_hold_is_refused_before_the_rows_change(tmp_path, bone, problem):
    """JSON escapes can make a lone surrogate: Blender refused it while the panel's rows were being
    filled, so the map shown was lost."""
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"format": "vibe-retarget-map", "version": 1, "bones": {"pelvis": bone}}))
    with pytest.raises(VibeError, match="cannot be a Blender bone's name") as refused:
        load_map(path)
    assert problem in str(refused.value)
    str(refused.value).encode()  # the message itself can be shown
    (tmp_path / "ok.json").write_text(
        json.dumps({"format": "vibe-retarget-map", "version": 1, "name": "\udc80rig", "bones": {"pelvis": "b" * 63}})
    )
    name, mapping = load_map(tmp_path / "ok.json")
    assert mapping == {"pelvis": "b" * 63} and name == " rig"


def test_unknown_joints_with_unshowable_names_are_named_showably(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"format": "vibe-retarget-map", "version": 1, "bones": {"\ud800x": "a"}}))
    with pytest.raises(VibeError, match="unknown SMPL joints  x") as refused:
        load_map(path)
    str(refused.value).encode()

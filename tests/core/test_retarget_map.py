"""Bone maps: presets, prefix handling, name matching, validation and the JSON file format."""
import json

import pytest

from vibe_blender.core.errors import VibeError
from vibe_blender.core.retarget_map import (PRESETS, auto_map, load_map, match_preset, preset_map, save_map,
                                            split_name, validate_map)
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


@pytest.mark.parametrize("name, expected", [
    ("mixamorig:LeftUpLeg", ("left", "upleg")), ("thigh_l", ("left", "thigh")), ("Spine.001", (None, "spine001")),
    ("DEF-upper_arm.R", ("right", "upperarm")), ("L_Hip", ("left", "hip")), ("Hips", (None, "hips")),
    ("Leftovers", (None, "leftovers")), ("rig:RightHand", ("right", "hand")),
])
def test_split_name(name, expected):
    assert split_name(name) == expected


def test_auto_map_matches_an_unknown_naming_scheme():
    bones = ["Root", "Pelvis", "Spine_A", "Spine_B", "Chest", "Neck", "Head"]
    for s in "LR":
        bones += [f"{s}_Thigh", f"{s}_Calf", f"{s}_Foot", f"{s}_Toe", f"{s}_Clavicle", f"{s}_UpperArm",
                  f"{s}_Forearm", f"{s}_Hand"]
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

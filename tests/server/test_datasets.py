"""Database files in the original's layouts -> windows and training items."""

import gc
import os

import h5py
import joblib
import numpy as np
import pytest
import torch
from hostile_files import compressed_reuse, read_in_sandbox

from vibe_blender.core.errors import VibeError
from vibe_server.train import datasets
from vibe_server.train.datasets import SequenceDataset, split_into_chunks
from vibe_server.train.synthetic_db import write_synthetic_db


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory):
    return write_synthetic_db(tmp_path_factory.mktemp("vibe_db"), seed=1)


def test_windows_stay_inside_tracks_and_drop_tails():
    names = np.array(["b"] * 40 + ["a"] * 23 + ["c"] * 10)
    assert split_into_chunks(names, 16, 16) == [(0, 15), (16, 31), (40, 55)]
    stride4 = split_into_chunks(names, 16, 4)
    assert len(stride4) == 7 + 2  # floor((n - 16) / 4) + 1 per track
    assert stride4[0] == (0, 15) and stride4[-1] == (44, 59)
    assert all(names[s] == names[e] for s, e in stride4)
    with pytest.raises(
        VibeError, match=r"x_db.pt: the frames of track 'a' are not together \(rows 0-19, then again from row 40\)"
    ):
        split_into_chunks(np.array(["a"] * 20 + ["b"] * 20 + ["a"] * 20), 16, 16, "x_db.pt")


def test_a_split_track_is_named_with_its_file(db_dir, tmp_path):
    db = joblib.load(db_dir / "3dpw_test_db.pt")
    db["vid_name"][0] = db["vid_name"][-1]  # the last track's name on the first row too
    joblib.dump(db, tmp_path / "3dpw_test_db.pt")
    with pytest.raises(
        VibeError, match=r"3dpw_test_db.pt: the frames of track 'courtyard_test_2' .*\(row 0, then again"
    ):
        SequenceDataset(tmp_path, "3dpw", "test")


def test_every_layout_gives_items_of_the_documented_shapes(db_dir):
    for name, split, kp_3d_joints in [
        ("mpii3d", "train", 49),
        ("mpii3d", "val", 14),
        ("3dpw", "train", 49),
        ("3dpw", "test", 14),
        ("h36m", "train", 49),
        ("h36m", "val", 14),
    ]:
        item = SequenceDataset(db_dir, name, split)[1]
        assert item["features"].shape == (16, 2048) and item["features"].dtype == torch.float32
        assert item["kp_2d"].shape == (16, 49, 3)
        assert item["kp_3d"].shape == (16, kp_3d_joints, 3)
        assert item["theta"].shape == (16, 85)
        assert torch.equal(item["theta"][:, :3], torch.tensor([1.0, 0.0, 0.0]).expand(16, 3))
        has_smpl = name == "3dpw" or (name == "h36m" and split == "train")
        assert torch.all(item["w_smpl"] == float(has_smpl)) and torch.all(item["w_3d"] == 1)
    for name in ("insta", "pennaction", "posetrack"):
        item = SequenceDataset(db_dir, name, "train")[0]
        assert set(item) == {"features", "kp_2d"} and item["kp_2d"].shape == (16, 49, 3)
    motion = SequenceDataset(db_dir, "amass", "train")
    assert len(motion) == 5 + 4 + 3 and motion[0]["theta"].shape == (16, 85)


def test_2d_sets_use_overlapping_windows_3d_sets_do_not(db_dir):
    assert len(SequenceDataset(db_dir, "pennaction", "train")) == 7 + 2  # stride 4
    assert len(SequenceDataset(db_dir, "mpii3d", "train")) == 2 + 1  # stride 16


def test_keypoints_are_normalised_to_the_crop(db_dir):
    kp = np.array([[[500.0, 400.0, 1.0], [500.0 + 0.6 * 200, 400.0 - 0.6 * 200, 1.0]]])
    bbox = np.array([[500.0, 400.0, 200.0, 200.0]])
    out = datasets.normalize_keypoints_to_crop(kp, bbox, 1.2)
    np.testing.assert_allclose(out[0], [[0.0, 0.0, 1.0], [1.0, -1.0, 1.0]])
    assert kp[0, 1, 0] == 620.0  # input untouched

    raw = datasets.load_db(db_dir / "insta_train_db.h5")
    item = SequenceDataset(db_dir, "insta", "train")[0]
    # insta joint 14 (OpenPose nose) -> spin 0; pixels of the 224 crop -> 2k/224 - 1
    np.testing.assert_allclose(item["kp_2d"][:, 0, :2].numpy(), 2 * raw["joints2D"][:16, 14, :2] / 224 - 1, atol=1e-6)


def test_keypoint_crop_scale_switch(db_dir):
    fixed = SequenceDataset(db_dir, "mpii3d", "train")[0]["kp_2d"]
    original = SequenceDataset(db_dir, "mpii3d", "train", match_keypoint_crop=False)[0]["kp_2d"]
    visible = fixed[..., 2] > 0
    ratio = original[..., :2][visible] / fixed[..., :2][visible]
    torch.testing.assert_close(ratio, torch.full_like(ratio, 1.3 / 1.2))


def test_insta_keypoints_are_never_box_normalised(db_dir):
    """Insta has no boxes: its keypoints are pixels of the stored crop, with the switch on or off."""
    default = SequenceDataset(db_dir, "insta", "train")[0]["kp_2d"]
    original = SequenceDataset(db_dir, "insta", "train", match_keypoint_crop=False)[0]["kp_2d"]
    assert torch.equal(original, default)


def test_pennaction_joint_order_switch(db_dir):
    raw = datasets.load_db(db_dir / "pennaction_train_db.pt")
    fixed = SequenceDataset(db_dir, "pennaction", "train", match_keypoint_crop=False)[0]["kp_2d"]
    original = SequenceDataset(db_dir, "pennaction", "train", fix_pennaction_joints=False, match_keypoint_crop=False)[
        0
    ]["kp_2d"]
    bbox = raw["bbox"][:16]
    expect = datasets.normalize_keypoints_to_crop(raw["joints2D"][:16], bbox, 1.2)
    # fixed: common order -> spin 25..38 (headtop = common 13); original: spin 38 <- common 0 (right ankle)
    np.testing.assert_allclose(fixed[:, 25:39].numpy(), expect, atol=1e-5)
    np.testing.assert_allclose(original[:, 38].numpy(), expect[:, 0], atol=1e-5)
    assert not torch.allclose(fixed[:, 38], original[:, 38])


def test_items_never_modify_the_database(db_dir):
    dataset = SequenceDataset(db_dir, "mpii3d", "train")
    before = {k: np.array(v, copy=True) for k, v in dataset.db.items()}
    first = dataset[0]["kp_2d"].clone()
    assert torch.equal(dataset[0]["kp_2d"], first)  # same item twice: same values
    for key, value in before.items():
        assert np.array_equal(dataset.db[key], value), key


def test_bad_inputs_get_one_clear_message(db_dir, tmp_path):
    with pytest.raises(VibeError, match="not found"):
        SequenceDataset(tmp_path, "mpii3d", "train")
    with pytest.raises(VibeError, match="Unknown dataset"):
        SequenceDataset(db_dir, "coco", "train")
    with pytest.raises(VibeError, match="no 'test' split"):
        SequenceDataset(db_dir, "mpii3d", "test")
    joblib.dump({"features": np.zeros((20, 2048)), "vid_name": np.array(["a"] * 20)}, tmp_path / "mpii3d_train_db.pt")
    with pytest.raises(VibeError, match="lacks joints2D, joints3D, bbox"):
        SequenceDataset(tmp_path, "mpii3d", "train")
    joblib.dump(
        {
            "features": np.zeros((8, 2048)),
            "vid_name": np.array(["a"] * 8),
            "joints2D": np.zeros((8, 49, 3)),
            "joints3D": np.zeros((8, 49, 3)),
            "bbox": np.ones((8, 4)),
        },
        tmp_path / "mpii3d_val_db.pt",
    )
    with pytest.raises(VibeError, match="no track of at least 16 frames"):
        SequenceDataset(tmp_path, "mpii3d", "val")


def _mpii3d(n: int = 32, **changes) -> dict:
    return {
        "features": np.zeros((n, 2048)),
        "vid_name": np.array(["a"] * n),
        "joints2D": np.zeros((n, 49, 3)),
        "joints3D": np.zeros((n, 49, 3)),
        "bbox": np.ones((n, 4)),
        **changes,
    }


@pytest.mark.parametrize(
    "name, split, db, match",
    [
        (
            "mpii3d",
            "val",
            _mpii3d(features=np.zeros((10, 2048))),
            r"'features' has shape \(10, 2048\), expected \(N, 2048\) with N = 32",
        ),
        ("mpii3d", "val", _mpii3d(joints2D="not an array"), "'joints2D' is a str, not an array"),
        ("mpii3d", "val", _mpii3d(bbox=np.ones((32, 4, 1))), r"'bbox' has shape \(32, 4, 1\), expected \(N, 4\)"),
        ("mpii3d", "val", _mpii3d(bbox=np.ones((32, 4), bool)), "'bbox' is an array of bool, not an array of numbers"),
        (
            "mpii3d",
            "val",
            _mpii3d(features=np.array(["x"] * 32)),
            "'features' is an array of <U1, not an array of numbers",
        ),
        ("mpii3d", "val", _mpii3d(vid_name=np.array([["a"]] * 32)), r"'vid_name' has shape \(32, 1\), expected \(N,\)"),
        (
            "mpii3d",
            "val",
            _mpii3d(vid_name=np.array([np.nan] * 16 + [1.0] * 16)),
            "'vid_name' is an array of float64, not of text",
        ),
        (
            "amass",
            "train",
            {"theta": "not an array", "vid_name": np.array(["a"] * 32)},
            "'theta' is a str, not an array",
        ),
        (
            "amass",
            "train",
            {"theta": np.zeros((32, 72)), "vid_name": np.array(["a"] * 32)},
            r"'theta' has shape \(32, 72\), expected \(N, >=82\)",
        ),
        (
            "3dpw",
            "train",
            {**_mpii3d(joints2D=np.zeros((32, 14, 3))), "pose": np.zeros((32, 69)), "shape": np.zeros((32, 10))},
            r"'pose' has shape \(32, 69\), expected \(N, 72\)",
        ),
    ],
)
def test_a_database_whose_arrays_do_not_fit_its_layout_is_named(tmp_path, name, split, db, match):
    path = datasets.db_path(tmp_path, name, split)
    joblib.dump(db, path)
    with pytest.raises(VibeError, match=rf"{path.name}: {match}"):
        SequenceDataset(tmp_path, name, split)


@pytest.mark.parametrize(
    "db, match",
    [
        (
            _mpii3d(joints2D=np.zeros((32, 14, 3))),
            r"its joints2D has shape \(32, 14, 3\), mpii3d files have \(N, 49, 3\)\. "
            "It looks like 3dpw data",
        ),
        (_mpii3d(joints3D=np.zeros((32, 20, 3))), r"its joints3D has shape \(32, 20, 3\), expected \(N, 14 or 49, 3\)"),
        (  # 3DPW's joints2D, but joints3D in no dataset's layout: no guess
            _mpii3d(joints2D=np.zeros((32, 14, 3)), joints3D=np.zeros((32, 20, 3))),
            r"its joints2D has shape \(32, 14, 3\), mpii3d files have \(N, 49, 3\); its joints3D has shape "
            r"\(32, 20, 3\), expected \(N, 14 or 49, 3\)\.(?! It looks like)",
        ),
    ],
)
def test_a_database_in_another_joint_layout_is_named_before_other_shapes(tmp_path, db, match):
    path = tmp_path / "mpii3d_val_db.pt"
    joblib.dump({**db, "bbox": np.ones((32, 4, 1))}, path)  # a wrong bbox too: the joints speak first
    with pytest.raises(VibeError, match=rf"{path.name} is not in the mpii3d layout: {match}.*Use the database file"):
        SequenceDataset(tmp_path, "mpii3d", "val")


def test_a_database_that_fits_its_layout_still_reads(tmp_path):
    joblib.dump(_mpii3d(joints3D=np.zeros((32, 49, 4), np.float32)), tmp_path / "mpii3d_val_db.pt")
    assert [item["kp_3d"].shape for item in SequenceDataset(tmp_path, "mpii3d", "val")] == [(16, 14, 3)] * 2


class _RunsCode:
    """Pickles as a call of ``func(arg)``: what a hostile database file would hold."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("func", [os.system, exec], ids=["os.system", "exec"])
def test_database_files_never_run_code(tmp_path, func):
    marker = tmp_path / "ran"
    arg = f"touch '{marker}'" if func is os.system else f"open({str(marker)!r}, 'w').close()"
    path = tmp_path / "amass_db.pt"
    joblib.dump({"theta": np.zeros((20, 82)), "vid_name": _RunsCode(func, arg)}, path)
    with pytest.raises(VibeError, match=r"amass_db\.pt. is not a training database .* \(refusing to load"):
        datasets.load_db(path)
    assert not marker.exists()


def test_a_compressed_database_builds_within_the_budget_of_the_file_on_disk(tmp_path):
    """The unpickler had a new budget, 50 times the 8 MB the 8 kB file decompressed to: 320 MB built."""
    path = tmp_path / "amass_db.pt"
    path.write_bytes(compressed_reuse(8, 40))
    outcome = read_in_sandbox("vibe_server.train.datasets:load_db", path, memory_mb=3072)
    baseline = read_in_sandbox("vibe_server.train.datasets:load_db", tmp_path / "absent.pt", memory_mb=3072)
    assert outcome.refused and "bytes a file of this size may produce" in outcome.message, outcome
    assert outcome.peak_mb < baseline.peak_mb + 120, (outcome.peak_mb, baseline.peak_mb)


def test_real_layouts_are_read_without_joblib(db_dir, tmp_path, monkeypatch):
    """Every layout (numbers, text names), compressed or not, reads as joblib reads it, without joblib.load."""
    joblib.dump(joblib.load(db_dir / "3dpw_train_db.pt"), tmp_path / "compressed.pt", compress=3)
    paths = [*sorted(db_dir.glob("*.pt")), tmp_path / "compressed.pt"]
    expected = {path: joblib.load(path) for path in paths}

    def unrestricted(*args, **kwargs):
        raise AssertionError("joblib.load unpickles anything")

    monkeypatch.setattr(joblib, "load", unrestricted)
    for path in paths:
        db = datasets.load_db(path)
        assert db.keys() == expected[path].keys(), path
        for key, value in expected[path].items():
            assert db[key].dtype == value.dtype and np.array_equal(db[key], value), (path, key)


# ---- values the items read: finite where the original would fail on them --------------------------


def _changed_copy(db_dir, tmp_path, file_name: str, change) -> None:
    db = joblib.load(db_dir / file_name)
    change(db)
    joblib.dump(db, tmp_path / file_name)


def _set(key: str, index, value):
    return lambda db: db[key].__setitem__(index, value)


def _set_huge(key: str, index):
    """1e300 at ``index`` of ``key``, the array stored as float64 (where the value fits)."""

    def change(db):
        db[key] = db[key].astype(np.float64)
        db[key][index] = 1e300

    return change


@pytest.mark.parametrize(
    "name, split, change, match",
    [
        (
            "3dpw",
            "test",
            _set("joints3D", (5, 3, 0), np.nan),
            r"'joints3D' holds a NaN, an infinite value or one beyond float32's range \(3.4e38\) at row 5 "
            r"\(track 'courtyard_test_0'\), which evaluation reads \(the original would end in NaN metrics\)",
        ),
        ("3dpw", "test", _set("features", (41, 7), np.inf), r"'features' .* at row 41 \(track 'courtyard_test_1'\)"),
        ("3dpw", "train", _set("pose", (20, 10), np.nan), r"'pose' .* at row 20 .*a NaN loss"),
        ("3dpw", "train", _set("shape", (3, 9), np.nan), r"'shape' .* at row 3 .*a NaN loss"),
        ("mpii3d", "train", _set("joints2D", (3, 30, 0), np.nan), r"'joints2D' .* row 3 .*which training reads"),
        (
            "mpii3d",
            "train",
            _set("bbox", (7, slice(2, 4)), 0.0),
            r"'bbox' \[.*, 0.0, 0.0\] at row 7 \(track 'subj1_seq1_vid0_seg_0'\) has no finite, positive width",
        ),
        ("pennaction", "train", _set("bbox", (50, 2), np.nan), r"'bbox' .* at row 50 \(track 'penn_1'\)"),
        ("amass", "train", _set("theta", (10, 40), np.nan), r"'theta' .* at row 10 \(track 'CMU_01_0'\)"),
        # finite in the file's float64, infinite in the items' float32
        ("3dpw", "test", _set_huge("joints3D", (5, 3, 0)), r"'joints3D' .* at row 5 .*which evaluation reads"),
        ("3dpw", "test", _set_huge("features", (41, 7)), r"'features' .* at row 41 \(track 'courtyard_test_1'\)"),
        ("3dpw", "train", _set_huge("pose", (20, 10)), r"'pose' .* at row 20 .*a NaN loss"),
        ("3dpw", "train", _set_huge("shape", (3, 9)), r"'shape' .* at row 3 .*a NaN loss"),
        ("mpii3d", "train", _set_huge("joints2D", (3, 30, 2)), r"'joints2D' .* row 3 .*which training reads"),
        ("amass", "train", _set_huge("theta", (10, 40)), r"'theta' .* at row 10 \(track 'CMU_01_0'\)"),
    ],
)
def test_a_value_the_items_read_must_be_finite(db_dir, tmp_path, name, split, change, match):
    path = datasets.db_path(tmp_path, name, split)
    _changed_copy(db_dir, tmp_path, path.name, change)
    with pytest.raises(VibeError, match=rf"{path.name}: {match}.*The file is damaged"):
        SequenceDataset(tmp_path, name, split)


@pytest.mark.parametrize(
    "name, split, change",
    [
        ("3dpw", "test", _set("joints3D", (35, 0, 0), np.nan)),  # a track's tail: no window reads it
        ("mpii3d", "val", _set("joints3D", (5, 0, 0), np.nan)),  # spin joint 0: neither the loss nor the metrics
        ("mpii3d", "val", _set("joints2D", (5, 30, 0), np.nan)),  # evaluation reads no 2D keypoints
        ("amass", "train", _set("theta", (10, 75), np.nan)),  # betas: the discriminator reads the body pose only
        ("3dpw", "val", _set("pose", (20, 10), np.nan)),  # evaluation: PVE becomes NaN, as in the original
        ("3dpw", "test", _set("shape", (3, 9), np.nan)),
    ],
)
def test_values_no_item_reads_are_left_alone(db_dir, tmp_path, name, split, change):
    _changed_copy(db_dir, tmp_path, datasets.db_path(tmp_path, name, split).name, change)
    dataset = SequenceDataset(tmp_path, name, split)
    assert len(dataset) > 0
    for index in range(len(dataset)):  # every window is read, none refused
        assert dataset[index]


def test_3dpw_padded_boxes_are_read_as_the_original_writes_them(db_dir, tmp_path):
    """The original's 3DPW files carry boxes [0, 0, inf, inf] (a zero-padded scale) where a track's first
    frames had no keypoints; evaluation does not read the boxes, so such a file is scored as it is."""
    _changed_copy(db_dir, tmp_path, "3dpw_test_db.pt", _set("bbox", slice(0, 4), [0.0, 0.0, np.inf, np.inf]))
    with np.errstate(all="raise"):  # and no division by a zero or infinite size on the way
        item = SequenceDataset(tmp_path, "3dpw", "test")[0]
    assert torch.isfinite(item["kp_2d"]).all()
    assert torch.all(item["kp_2d"][:4] == 0) and torch.all(item["kp_2d"][4:, 25:37, 2] == 1)


def test_3dpw_padded_boxes_in_training_give_those_frames_no_keypoints(db_dir, tmp_path):
    """Training refused the whole 3DPW file as damaged where evaluation reads it: those frames' keypoints
    now get confidence 0 in training too, and the dataset counts them (the run says how many)."""
    _changed_copy(db_dir, tmp_path, "3dpw_train_db.pt", _set("bbox", slice(0, 4), [0.0, 0.0, np.inf, np.inf]))
    with np.errstate(all="raise"):
        dataset = SequenceDataset(tmp_path, "3dpw", "train")
        item = dataset[0]
    assert dataset.frames_without_box == 4
    assert torch.all(item["kp_2d"][:4] == 0) and torch.all(item["kp_2d"][4:, 25:37, 2] == 1)
    assert SequenceDataset(db_dir, "3dpw", "train").frames_without_box == 0


# ---- the .h5 (InstaVariety) file ---------------------------------------------------------------------


def _insta_copy(db_dir, folder, **options):
    """The synthetic insta_train_db.h5 written again; options[key]: create_dataset keyword arguments,
    "fill" (declared, never written), a (data, kwargs) pair, or another h5py object to store there."""
    folder.mkdir(exist_ok=True)
    with h5py.File(db_dir / "insta_train_db.h5", "r") as src, h5py.File(folder / "insta_train_db.h5", "w") as dst:
        for key in src:
            option, data = options.get(key, {}), src[key][()]
            if option == "fill":
                dst.create_dataset(key, shape=data.shape, dtype=data.dtype, chunks=True)
            elif isinstance(option, tuple):
                dst.create_dataset(key, data=option[0], **option[1])
            elif isinstance(option, dict):
                dst.create_dataset(key, data=data, **option)
            else:
                dst[key] = option
    return folder


@pytest.mark.parametrize(
    "options, match",
    [
        ({"vid_name": "fill"}, r"'vid_name' declares 1,168 bytes \(\(73,\) \|S16\) but the file stores 0 for it"),
        ({"features": {"scaleoffset": 3}}, r"'features' uses the HDF5 filters \[6\], not only gzip, shuffle, lzf"),
        (
            {"joints2D": {"chunks": (30000, 25, 3), "maxshape": (None, 25, 3), "compression": "gzip"}},
            r"'joints2D' has chunks of 18,000,000 bytes, more than 16,777,216",
        ),
        (
            {"features": h5py.ExternalLink("elsewhere.h5", "/features")},
            r"'features' is not an array stored in the file \(a group, or a link to elsewhere\)",
        ),
        (
            {"vid_name": h5py.SoftLink("/frame_id")},
            r"'vid_name' is not an array stored in the file \(a group, or a link to elsewhere\)",
        ),
        (
            {"vid_name": (np.array(["a"] * 73, dtype=object), {"dtype": h5py.string_dtype()})},
            r"'vid_name' has the type object, not plain numbers or fixed-width text",
        ),
    ],
    ids=["fill-values", "filter", "huge-chunks", "external-link", "soft-link", "variable-length-text"],
)
def test_an_h5_dataset_is_read_only_within_what_the_file_stores(db_dir, tmp_path, options, match):
    folder = _insta_copy(db_dir, tmp_path / "db", **options)
    with pytest.raises(VibeError, match=rf"insta_train_db.h5: {match}; the file is damaged"):
        SequenceDataset(folder, "insta", "train")


def test_a_compressed_h5_reads_as_the_plain_one(db_dir, tmp_path):
    folder = _insta_copy(
        db_dir,
        tmp_path / "db",
        features={"compression": "gzip", "shuffle": True},
        joints2D={"compression": "lzf"},
    )
    plain, packed = SequenceDataset(db_dir, "insta", "train"), SequenceDataset(folder, "insta", "train")
    assert len(plain) == len(packed)
    for key in ("features", "kp_2d"):
        assert torch.equal(plain[1][key], packed[1][key])


def test_h5_values_are_checked_window_by_window(db_dir, tmp_path):
    """The .h5 is 18 GB: not read whole when opened, but no window with a NaN reaches training."""
    with h5py.File(db_dir / "insta_train_db.h5", "r") as src:
        features = src["features"][()]
    features[20, 5] = np.nan
    folder = _insta_copy(db_dir, tmp_path / "db", features=(features, {}))
    dataset = SequenceDataset(folder, "insta", "train")
    assert torch.isfinite(dataset[0]["features"]).all()  # rows 0-15
    with pytest.raises(VibeError, match=r"'features' .* at row 20 \(track 'insta.tfrecord_0'\), which training reads"):
        dataset[1]  # rows 16-31
    # read by DataLoader workers (as training does): the same one message, not torch's report of the worker
    with pytest.raises(VibeError) as in_worker, datasets.worker_errors_unwrapped():
        list(torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2))
    with pytest.raises(VibeError) as here:
        dataset[1]
    assert str(in_worker.value) == str(here.value)
    gc.collect()  # (torch's loader is freed by the collector: its workers end now, not during a later test)


def test_h5_track_names_need_not_be_utf8(db_dir, tmp_path):
    with h5py.File(db_dir / "insta_train_db.h5", "r") as src:
        names = src["vid_name"][()]
    folder = _insta_copy(db_dir, tmp_path / "db", vid_name=(np.char.add(b"\xff", names), {}))
    dataset = SequenceDataset(folder, "insta", "train")
    assert dataset.window_track(0) == "\\xffinsta.tfrecord_0"
    assert len(dataset) == len(SequenceDataset(db_dir, "insta", "train"))


# ---- what a database path may be ---------------------------------------------------------------------


@pytest.mark.parametrize("file_name", ["amass_db.pt", "insta_train_db.h5"])
def test_a_database_path_to_a_device_is_refused_unread(tmp_path, file_name):
    (tmp_path / file_name).symlink_to("/dev/null")
    with pytest.raises(VibeError, match=rf"{file_name}'? is not a regular file \(a device, FIFO or socket\)"):
        datasets.load_db(tmp_path / file_name)

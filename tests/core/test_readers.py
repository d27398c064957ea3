import importlib
import importlib.util
import os
import pickle
import threading
import tracemalloc

import numpy as np
import pytest
from testdata import OFFICIAL_PKL

from vibe_blender.core import bounded_arrays
from vibe_blender.core.errors import VibeError
from vibe_blender.core.motion import frame_runs
from vibe_blender.core.readers import read_motion_file
from vibe_blender.core.readers.official_pkl import load_joblib_pickle, read_official_pkl
from vibe_blender.core.skeleton import CAMERA_TO_BLENDER, ZUP_TO_BLENDER


def importorskip_in_blender(name: str):
    """``import name``; skipped only in a bpy venv, which does not have the test extra."""
    if importlib.util.find_spec("bpy") is not None:
        return pytest.importorskip(name, reason="not installed in Blender's Python")
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def official_pkl():
    if not OFFICIAL_PKL.is_file():
        pytest.fail(f"fixture {OFFICIAL_PKL} is missing (the official demo's vibe_output.pkl)")
    return OFFICIAL_PKL


def test_official_pkl_reads_without_joblib(official_pkl):
    data = load_joblib_pickle(official_pkl)
    track = data[1]
    assert track["pose"].shape == (32, 72) and track["pose"].dtype == np.float32
    assert track["verts"].shape == (32, 6890, 3) and track["joints2d"] is None
    np.testing.assert_array_equal(track["frame_ids"], np.arange(32))


def test_official_pkl_matches_joblib(official_pkl):
    joblib = importorskip_in_blender("joblib")
    ours, theirs = load_joblib_pickle(official_pkl), joblib.load(official_pkl)
    assert ours.keys() == theirs.keys()
    for key, value in theirs[1].items():
        if value is None:
            assert ours[1][key] is None
        else:
            np.testing.assert_array_equal(ours[1][key], value)


def test_official_pkl_motion_recovers_video_size_and_depth(official_pkl):
    motion = read_official_pkl(official_pkl, fps=25.0)
    assert (motion.camera.width_px, motion.camera.height_px) == (256, 192)  # the fixture's video size
    assert motion.fps == 25.0 and motion.frame_count == 32
    (track,) = motion.tracks
    assert track.name == "track_1"
    np.testing.assert_allclose(track.source_to_blender, CAMERA_TO_BLENDER)
    assert np.all(track.trans_m[:, 2] > 0.5)  # in front of the camera
    raw = load_joblib_pickle(official_pkl)[1]
    np.testing.assert_allclose(track.trans_m[:, :2], raw["orig_cam"][:, 2:])
    # Weak perspective sx·(X + tx) equals a pinhole of focal f at depth tz = 2 f / (W sx).
    np.testing.assert_allclose(track.trans_m[:, 2], 2 * 256 / (256 * raw["orig_cam"][:, 0]))


def test_restricted_reader_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "vibe_output.pkl"
    bad.write_bytes(pickle.dumps({1: Evil()}))
    with pytest.raises(VibeError, match="not a VIBE vibe_output.pkl"):
        read_motion_file(bad)


def test_person_ids_that_read_alike_keep_their_own_names(official_pkl, tmp_path):
    person = load_joblib_pickle(official_pkl)[1]
    both = tmp_path / "vibe_output.pkl"
    both.write_bytes(pickle.dumps({1: person, "1": person}))
    assert sorted(t.name for t in read_official_pkl(both).tracks) == ["track_'1'", "track_1"]


def test_person_ids_become_names_of_printable_characters(official_pkl, tmp_path):
    """An id reaches object names (Blender cuts a name at a NUL) and printed lines (escape sequences)."""
    person = load_joblib_pickle(official_pkl)[1]
    ids = tmp_path / "vibe_output.pkl"
    ids.write_bytes(pickle.dumps({"a\x00b": person, "a b": person, "\x1b[31mRED\u202e": person, "x" * 500: person}))
    names = sorted(t.name for t in read_official_pkl(ids).tracks)
    assert all(name.isprintable() and len(name) <= 60 for name in names)
    assert len(set(names)) == 4
    assert "track_ [31mRED " in names and "track_a b" in names


def test_truncated_pkl_is_reported(tmp_path, official_pkl):
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(official_pkl.read_bytes()[:5000])
    with pytest.raises(VibeError, match="cut.pkl"):
        read_motion_file(cut)


def test_result_file_becomes_motion(server_files):
    motion = read_motion_file(server_files[0])
    assert [t.name for t in motion.tracks] == ["track_1", "track_2"]
    assert motion.fps == 25.0 and motion.frame_count == 12
    assert (motion.camera.width_px, motion.camera.height_px, motion.camera.focal_length_px) == (320, 240, 400.0)
    assert frame_runs(motion.tracks[1].frame_ids) == [(0, 2), (2, 4)]


def test_amass_npz(tmp_path):
    rng = np.random.default_rng(0)
    poses = rng.normal(size=(7, 156))
    np.savez(
        tmp_path / "walk_poses.npz",
        poses=poses,
        trans=rng.normal(size=(7, 3)),
        betas=rng.normal(size=16),
        mocap_framerate=np.array(120.0),
        gender=np.array("female"),
    )
    motion = read_motion_file(tmp_path / "walk_poses.npz")
    (track,) = motion.tracks
    assert motion.fps == 120.0 and motion.camera is None
    np.testing.assert_allclose(track.pose[:, :66], poses[:, :66])
    np.testing.assert_allclose(track.pose[:, 66:], 0.0)  # SMPL-H hands are not SMPL's hand joints
    assert track.betas.shape == (10,)
    np.testing.assert_allclose(track.source_to_blender, ZUP_TO_BLENDER)


def test_amass_without_frame_rate_asks_for_one(tmp_path):
    np.savez(tmp_path / "a.npz", poses=np.zeros((3, 72)), trans=np.zeros((3, 3)), betas=np.zeros(10))
    with pytest.raises(VibeError, match="frame rate"):
        read_motion_file(tmp_path / "a.npz")
    assert read_motion_file(tmp_path / "a.npz", fps=25.0).fps == 25.0  # the import option gives it


def test_amass_own_frame_rate_wins_over_the_import_option(tmp_path):
    np.savez(tmp_path / "a.npz", poses=np.zeros((3, 72)), trans=np.zeros((3, 3)), mocap_framerate=np.array(60.0))
    assert read_motion_file(tmp_path / "a.npz", fps=30.0).fps == 60.0


def test_amass_motion_longer_than_the_caller_takes_is_refused_by_the_reader(tmp_path):
    """The import's limit was applied only to what the reader returned, after it converted every frame."""
    np.savez(tmp_path / "a.npz", poses=np.zeros((4, 72)), trans=np.zeros((4, 3)), mocap_framerate=np.array(30.0))
    with pytest.raises(VibeError, match="'a.npz' holds 4 frames of motion, more than the 3 an import takes"):
        read_motion_file(tmp_path / "a.npz", max_frames=3)
    assert read_motion_file(tmp_path / "a.npz", max_frames=4).frame_count == 4


def test_translations_kilometres_away_are_refused(tmp_path):
    trans = np.zeros((3, 3))
    trans[1, 2] = 2e4  # 20 km: float32 keys would still hold it, but no capture does
    np.savez(tmp_path / "far.npz", poses=np.zeros((3, 72)), trans=trans, mocap_framerate=np.array(30.0))
    with pytest.raises(VibeError, match=r"a translation in 'trans' is 2e\+04 m, beyond ±10000 m"):
        read_motion_file(tmp_path / "far.npz")


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "does not exist"),
        (b"not a zip", "is not a VIBE Mocap result"),
    ],
)
def test_unreadable_files(tmp_path, content, match):
    path = tmp_path / "x.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VibeError, match=match):
        read_motion_file(path)


def test_unknown_npz_names_its_arrays(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(VibeError, match="weights"):
        read_motion_file(tmp_path / "other.npz")


def test_nan_pose_is_refused(tmp_path):
    poses = np.zeros((3, 72))
    poses[1, 5] = np.nan
    np.savez(tmp_path / "nan.npz", poses=poses, trans=np.zeros((3, 3)), mocap_framerate=np.array(30.0))
    with pytest.raises(VibeError, match="NaN"):
        read_motion_file(tmp_path / "nan.npz")


# ---- what a joblib file may be, and how large ---------------------------------------------------------


@pytest.mark.parametrize("make", [lambda p: p.symlink_to("/dev/null"), os.mkfifo], ids=["device", "fifo"])
def test_a_pickle_path_that_is_no_regular_file_is_refused_unread(tmp_path, make):
    """A link to a device is read without end (/dev/zero), a FIFO waits for a writer for ever."""
    path = tmp_path / "vibe_output.pkl"
    make(path)
    outcome = []

    def load():
        try:
            load_joblib_pickle(path)
        except VibeError as err:
            outcome.append(str(err))

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert outcome and "vibe_output.pkl' is not a regular file (a device, FIFO or socket)" in outcome[0]


def _random_arrays(rows: int) -> dict:
    return {"theta": np.random.default_rng(0).normal(size=(rows, 82)), "frame_ids": np.arange(rows)}


def test_an_uncompressed_file_is_limited_by_its_size_not_a_fixed_cap(tmp_path, monkeypatch):
    """Stands in for a genuine file over the 4 GiB caps (made 1 MiB here): read, since it holds every byte;
    compressed, it is too large to decompress, which the message says without calling it damaged."""
    joblib = importorskip_in_blender("joblib")
    for cap in ("MAX_ARRAY_BYTES", "MAX_DECODED_BYTES"):
        monkeypatch.setattr(bounded_arrays, cap, 1 << 20)
    monkeypatch.setattr(bounded_arrays, "MIN_BUDGET_BYTES", 1 << 16)
    arrays = _random_arrays(2048)  # theta: 1.3 MiB
    joblib.dump(arrays, tmp_path / "plain.pkl")
    assert np.array_equal(load_joblib_pickle(tmp_path / "plain.pkl")["theta"], arrays["theta"])

    joblib.dump(arrays, tmp_path / "packed.pkl", compress=3)
    with pytest.raises(VibeError) as refused:
        load_joblib_pickle(tmp_path / "packed.pkl")
    message = str(refused.value)
    assert "expands past" in message and "a genuine file this large is read when stored uncompressed" in message
    assert "again" not in message and "damaged" not in message


def test_an_uncompressed_file_is_read_without_extra_copies(tmp_path):
    joblib = importorskip_in_blender("joblib")
    arrays = _random_arrays(16384)  # theta: 10.5 MiB
    joblib.dump(arrays, tmp_path / "plain.pkl")
    tracemalloc.start()
    try:
        loaded = load_joblib_pickle(tmp_path / "plain.pkl")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(loaded["theta"], arrays["theta"])
    assert peak < 1.3 * arrays["theta"].nbytes  # each array read into its own memory once


def test_a_file_whose_name_is_not_utf8_gives_a_name_blender_can_hold(official_pkl, tmp_path):
    """A file name that is not valid UTF-8 reaches Python with lone surrogates, which Blender's names
    and reports refuse: the motion's name shows them as spaces."""
    named = tmp_path / os.fsdecode(b"take\xff\xfe.pkl")
    named.write_bytes(official_pkl.read_bytes())
    motion = read_motion_file(named, fps=25.0)
    assert motion.source_name == "take  "
    motion.source_name.encode()

"""The result file: round trip, pickle-free, clear errors."""

import gc
import io

import numpy as np
import pytest

from vibe_blender.core.errors import VibeError
from vibe_blender.core.result_file import (
    FORMAT_VERSION,
    MocapResult,
    Track,
    VideoInfo,
    load_result,
    longest_track_ids,
    save_result,
)


def make_track(track_id=1, frames=(0, 1, 2, 5, 6), seed=0):
    rng = np.random.default_rng(seed)
    T = len(frames)
    return Track(
        track_id=track_id,
        frame_ids=np.array(frames),
        pose=rng.normal(size=(T, 72)),
        betas=rng.normal(size=(T, 10)),
        betas_track=rng.normal(size=10),
        pred_cam=rng.normal(size=(T, 3)),
        orig_cam=rng.normal(size=(T, 4)),
        bboxes=rng.uniform(10, 100, size=(T, 4)),
        joints3d=rng.normal(size=(T, 49, 3)),
        trans_cam_m=rng.normal(size=(T, 3)),
    )


def make_result():
    return MocapResult(
        video=VideoInfo("clip.mp4", 29.97, 640, 360, 120),
        tracks=[make_track(1), make_track(4, frames=(3, 4), seed=1)],
        model_name="vibe_model_wo_3dpw",
        focal_length_px=5000.0,
        meta={"device": "cpu"},
    )


def test_round_trip_keeps_every_array_and_field():
    buf = io.BytesIO()
    original = make_result()
    save_result(buf, original)
    buf.seek(0)
    loaded = load_result(buf)
    assert loaded.video == original.video
    assert (loaded.model_name, loaded.focal_length_px, loaded.meta) == ("vibe_model_wo_3dpw", 5000.0, {"device": "cpu"})
    assert [t.track_id for t in loaded.tracks] == [1, 4]
    for a, b in zip(loaded.tracks, original.tracks):
        np.testing.assert_array_equal(a.frame_ids, b.frame_ids)
        np.testing.assert_allclose(a.pose, b.pose, rtol=1e-6)
        np.testing.assert_allclose(a.joints3d, b.joints3d, rtol=1e-6)
    assert loaded.track(4).num_frames == 2


def test_file_is_readable_without_pickles(tmp_path):
    path = tmp_path / "r.npz"
    save_result(path, make_result())
    with np.load(path, allow_pickle=False) as z:
        assert int(z["format_version"]) == FORMAT_VERSION
        assert z["track_1/pose"].dtype == np.float32


class FullDisk(io.BytesIO):
    """A file on a disk that fills after ``room`` bytes."""

    def __init__(self, room: int):
        super().__init__()
        self.room = room

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(28, "No space left on device")
        return super().write(data)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_write_that_fails_midway_closes_the_archive_before_the_file_is_closed():
    file = FullDisk(room=4096)
    with pytest.raises(OSError, match="No space left"):
        save_result(file, make_result())
    file.close()  # as the caller's "with open(...)" does next
    gc.collect()  # an archive left open would try to finish itself on this closed file now


def test_other_files_are_refused_with_a_reason(tmp_path):
    bad = tmp_path / "amass.npz"
    np.savez(bad, poses=np.zeros((2, 72)))
    with pytest.raises(VibeError, match="not a VIBE Mocap result"):
        load_result(bad)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(VibeError, match="Cannot read"):
        load_result(text)


def test_newer_version_asks_for_an_update(tmp_path):
    path = tmp_path / "r.npz"
    save_result(path, make_result())
    with np.load(path) as z:
        arrays = dict(z)
    arrays["format_version"] = np.array(FORMAT_VERSION + 1)
    np.savez(path, **arrays)
    with pytest.raises(VibeError, match="Update VIBE Mocap"):
        load_result(path)


def test_damaged_tracks_are_reported():
    with pytest.raises(VibeError, match="'pose' has shape"):
        Track(
            1,
            np.arange(3),
            np.zeros((2, 72)),
            np.zeros((3, 10)),
            np.zeros(10),
            np.zeros((3, 3)),
            np.zeros((3, 4)),
            np.zeros((3, 4)),
            np.zeros((3, 49, 3)),
            np.zeros((3, 3)),
        )
    with pytest.raises(VibeError, match="not increasing"):
        make_track(frames=(0, 2, 1))


@pytest.mark.parametrize("frame_ids", [np.array(0), np.zeros((5, 2), np.int64)], ids=["a number", "a table"])
def test_frame_ids_that_are_not_a_list_are_reported(tmp_path, frame_ids):
    """Both passed the value checks, then failed in len() or int() with a TypeError Blender showed raw."""
    path = tmp_path / "r.npz"
    save_result(path, make_result())
    with np.load(path) as z:
        arrays = dict(z)
    arrays["track_1/frame_ids"] = frame_ids
    np.savez(path, **arrays)
    with pytest.raises(VibeError, match="frame ids must be a list of integers in 0..*the file is damaged"):
        load_result(path)


@pytest.mark.parametrize("key", ["format", "video_name", "model_name", "meta_keys", "meta_values"])
def test_text_stored_as_bytes_is_refused_by_name(tmp_path, key):
    """save_result writes text as numpy's unicode; bytes were read back as "np.bytes_(b'clip.mp4')" (a
    name that no longer matched its video) and meta values as bytes."""
    path = tmp_path / "r.npz"
    save_result(path, make_result())
    with np.load(path) as z:
        arrays = dict(z)
    arrays[key] = arrays[key].astype("S")
    np.savez(path, **arrays)
    words = (
        "but not a VIBE Mocap result"
        if key == "format"
        else f"'{key}' holds bytes \\(\\|S\\d+\\) where a result stores"
    )
    with pytest.raises(VibeError, match=words):
        load_result(path)


def test_the_longest_tracks_are_kept_in_id_order_ties_to_the_earlier():
    frames = {9: 5, 3: 7, 4: 5, 1: 2}
    assert longest_track_ids(frames, 4) == ([1, 3, 4, 9], [])
    kept, warnings = longest_track_ids(frames, 2)
    assert kept == [3, 9]  # 9 and 4 tie: 9 comes first
    assert warnings == ["4 people were tracked; the result keeps the 2 tracked longest, the most a result file holds."]

"""Hostile and malformed .npz files against the three npz readers (result, AMASS, body model).

Every malformed file must give one VibeError naming it; memory bombs are read in a sandboxed child
(address-space limit) and must be refused without allocating what the file does not hold.
"""

import io
import zipfile
import zlib

import numpy as np
import pytest
from hostile_files import (
    Member,
    deflated,
    npy,
    npz_members,
    read_in_sandbox,
    repeated_deflate_zeros,
    zip_bytes,
)

from vibe_blender.core.errors import VibeError
from vibe_blender.core.readers import read_motion_file
from vibe_blender.core.readers.amass_npz import read_amass_npz
from vibe_blender.core.result_file import (
    MocapResult,
    Track,
    VideoInfo,
    load_result,
    save_result,
)
from vibe_blender.core.safe_npz import MAX_DIRECTORY_BYTES, MAX_MEMBERS, npz_names
from vibe_blender.core.smpl_model import load_body_model, save_body_model


def result_arrays(**video) -> dict:
    T = 3
    track = Track(
        track_id=1,
        frame_ids=np.arange(T),
        pose=np.zeros((T, 72)),
        betas=np.zeros((T, 10)),
        betas_track=np.zeros(10),
        pred_cam=np.ones((T, 3)),
        orig_cam=np.ones((T, 4)),
        bboxes=np.ones((T, 4)),
        joints3d=np.zeros((T, 49, 3)),
        trans_cam_m=np.ones((T, 3)),
    )
    info = {"name": "clip.mp4", "fps": 25.0, "width": 320, "height": 240, "frame_count": 3, **video}
    buf = io.BytesIO()
    save_result(buf, MocapResult(video=VideoInfo(**info), tracks=[track], model_name="m", focal_length_px=400.0))
    buf.seek(0)
    with np.load(buf) as z:
        return dict(z)


def amass_arrays() -> dict:
    return {
        "poses": np.zeros((4, 156)),
        "trans": np.zeros((4, 3)),
        "betas": np.zeros(16),
        "mocap_framerate": np.array(60.0),
    }


def body_arrays(body_model) -> dict:
    buf = io.BytesIO()
    save_body_model(buf, body_model)
    buf.seek(0)
    with np.load(buf) as z:
        return dict(z)


READERS = {  # name -> (sandbox reader, in-process reader, member to spoil)
    "result": ("vibe_blender.core.result_file:load_result", load_result, "track_1/pose"),
    "amass": ("vibe_blender.core.readers.amass_npz:read_amass_npz", read_amass_npz, "poses"),
    "body model": ("vibe_blender.core.smpl_model:load_body_model", load_body_model, "v_template"),
}


@pytest.fixture(scope="module")
def valid_arrays(body_model):
    return {"result": result_arrays(), "amass": amass_arrays(), "body model": body_arrays(body_model)}


def spoiled(arrays: dict, target: str, *replacement: Member) -> bytes:
    """The valid file's members with ``target`` replaced by ``replacement`` (none: removed)."""
    members = [m for m in npz_members(arrays) if m.name != f"{target}.npy"]
    return zip_bytes(list(replacement) + members)


def npy_member(target, **kw) -> Member:
    return Member(f"{target}.npy", npy(**kw))


F8 = np.zeros((2, 72))
GOOD_HEADER = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 72), }"

# name -> builder(valid arrays, target member) -> file bytes
MALFORMED = {
    "not a zip": lambda a, t: b"PK\x03\x04 not really a zip",
    "empty file": lambda a, t: b"",
    "truncated": lambda a, t: spoiled(a, t, npy_member(t, array=F8))[:700],
    "wrong checksum": lambda a, t: spoiled(a, t, Member(f"{t}.npy", npy(F8), crc=1234)),
    "encrypted": lambda a, t: spoiled(a, t, Member(f"{t}.npy", npy(F8), flags=1)),
    "bzip2 member": lambda a, t: spoiled(a, t, Member(f"{t}.npy", b"BZh9garbage", method=12, file_size=1000)),
    "unknown compression": lambda a, t: spoiled(a, t, Member(f"{t}.npy", b"xx", method=99, file_size=10)),
    "broken deflate": lambda a, t: spoiled(a, t, Member(f"{t}.npy", b"\xff" * 64, method=8, file_size=1280)),
    "member twice": lambda a, t: spoiled(a, t, npy_member(t, array=F8), npy_member(t, array=F8)),
    "declared size larger": lambda a, t: spoiled(a, t, Member(f"{t}.npy", npy(F8), file_size=len(npy(F8)) + 9)),
    "declared size smaller": lambda a, t: spoiled(
        a, t, Member(f"{t}.npy", deflated(npy(F8)), method=8, file_size=len(npy(F8)) - 8)
    ),
    "not an npy": lambda a, t: spoiled(a, t, Member(f"{t}.npy", b"hello world")),
    "npy version 9": lambda a, t: spoiled(a, t, npy_member(t, array=F8, version=(9, 0))),
    "header length beyond the file": lambda a, t: spoiled(a, t, npy_member(t, array=F8, header_len=60000)),
    "header not a literal": lambda a, t: spoiled(a, t, npy_member(t, header="{'descr': f8}", data=b"")),
    "header a list": lambda a, t: spoiled(a, t, npy_member(t, header="[1, 2]", data=b"")),
    "header extra key": lambda a, t: spoiled(
        a,
        t,
        npy_member(t, header="{'descr': '<f8', 'fortran_order': False, 'shape': (2, 72), 'x': 1}", data=F8.tobytes()),
    ),
    "header deeply nested": lambda a, t: spoiled(a, t, npy_member(t, header="(" * 3000 + ")" * 3000, data=b"")),
    "header not utf-8": lambda a, t: spoiled(a, t, npy_member(t, header="\xff\xfe{", data=b"", version=(3, 0))),
    "object dtype": lambda a, t: spoiled(
        a, t, npy_member(t, header="{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", data=bytes(16))
    ),
    "record dtype": lambda a, t: spoiled(
        a, t, npy_member(t, header="{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (2,), }", data=bytes(16))
    ),
    "complex dtype": lambda a, t: spoiled(
        a, t, npy_member(t, header="{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }", data=bytes(32))
    ),
    "negative shape": lambda a, t: spoiled(
        a, t, npy_member(t, header="{'descr': '<f8', 'fortran_order': False, 'shape': (-1, 72), }", data=b"")
    ),
    "float shape": lambda a, t: spoiled(
        a, t, npy_member(t, header="{'descr': '<f8', 'fortran_order': False, 'shape': (2.0, 72), }", data=F8.tobytes())
    ),
    "too many dimensions": lambda a, t: spoiled(
        a,
        t,
        npy_member(
            t, header="{'descr': '<f8', 'fortran_order': False, 'shape': " + repr((1,) * 40) + ", }", data=bytes(8)
        ),
    ),
    "shape overflows int64": lambda a, t: spoiled(
        a, t, npy_member(t, header="{'descr': '<f8', 'fortran_order': False, 'shape': (2**62, 2**62), }", data=bytes(8))
    ),
    "fortran flag not a bool": lambda a, t: spoiled(
        a, t, npy_member(t, header="{'descr': '<f8', 'fortran_order': 1, 'shape': (2, 72), }", data=F8.tobytes())
    ),
    "data shorter than shape": lambda a, t: spoiled(a, t, npy_member(t, header=GOOD_HEADER, data=bytes(100))),
    "data longer than shape": lambda a, t: spoiled(a, t, npy_member(t, header=GOOD_HEADER, data=F8.tobytes() + b"x")),
    "text where numbers belong": lambda a, t: spoiled(a, t, npy_member(t, array=np.array([["a"] * 72] * 2))),
    "member missing": lambda a, t: spoiled(a, t),
}


# case -> the reason the message gives, for every reader (where one reader says it its own way: {reader: reason})
REASONS = {
    "not a zip": "it is not a zip archive",
    "empty file": "it is not a zip archive",
    "truncated": "it is not a zip archive",
    "wrong checksum": "is damaged: its data fails the archive's checks",
    "encrypted": "is encrypted",
    "bzip2 member": "uses zip compression method 12",
    "unknown compression": "uses zip compression method 99",
    "broken deflate": "is damaged: its data fails the archive's checks",
    "member twice": "twice",
    "declared size larger": "needs 1152 bytes but 1161 are declared",
    "declared size smaller": "is damaged: its data fails the archive's checks",
    "not an npy": "not in numpy's .npy format",
    "npy version 9": "version 9 is unknown",
    "header length beyond the file": "claims 60000 bytes",
    "header not a literal": "not a literal dict",
    "header a list": "is not numpy's {descr, fortran_order, shape}",
    "header extra key": "is not numpy's {descr, fortran_order, shape}",
    "header deeply nested": "not a literal dict",
    "header not utf-8": "the .npy header is not UTF-8 text",
    "object dtype": "refusing dtype '|O'",
    "record dtype": "refusing dtype [('a', '<f8')]",
    "complex dtype": "refusing dtype '<c16'",
    "negative shape": "shape (-1, 72) holds something other than non-negative integers",
    "float shape": "shape (2.0, 72) holds something other than non-negative integers",
    "too many dimensions": "is not a tuple of at most 32 sizes",
    "shape overflows int64": "not a literal dict",  # 2**62 is an expression, which no .npy header holds
    "fortran flag not a bool": "is not numpy's {descr, fortran_order, shape}",
    "data shorter than shape": "needs 1152 bytes but 100 are declared",
    "data longer than shape": "needs 1152 bytes but 1153 are declared",
    "text where numbers belong": {
        "result": "'pose' holds <U1 values where a capture stores floating-point numbers",
        "amass": "refusing dtype '<U1'",
        "body model": "'v_template' holds <U1 values where numbers belong",
    },
    "member missing": {
        "result": "'track_1/pose' is missing",
        "amass": "has no 'poses' array",
        "body model": "lacks v_template",
    },
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_npz_gives_one_clear_error(tmp_path, valid_arrays, reader, case):
    _, read, target = READERS[reader]
    path = tmp_path / "bad.npz"
    path.write_bytes(MALFORMED[case](valid_arrays[reader], target))
    reason = REASONS[case][reader] if isinstance(REASONS[case], dict) else REASONS[case]
    with pytest.raises(VibeError, match=r"bad\.npz") as refused:
        read(path)
    assert reason in str(refused.value)
    assert "Error" not in str(refused.value)  # no exception's name in place of a reason


def test_the_valid_files_built_here_read_back(tmp_path, valid_arrays):
    """The builders above make files the readers accept, so each refusal is about the spoiled member."""
    frames = {  # what each reader made of its file: frames of motion, or the body's vertices
        "result": lambda result: [len(track.frame_ids) for track in result.tracks],
        "amass": lambda motion: [len(track.frame_ids) for track in motion.tracks],
        "body model": lambda model: [len(model.v_template)],
    }
    expected = {"result": [3], "amass": [4], "body model": [6890]}
    for reader, (_, read, _) in READERS.items():
        path = tmp_path / f"{reader}.npz"
        path.write_bytes(zip_bytes(npz_members(valid_arrays[reader])))
        assert frames[reader](read(path)) == expected[reader], reader


# ---- memory bombs -------------------------------------------------------------------------------


def _declared_huge(arrays, target):
    """A 1 MB member whose header asks for 3.4 GB."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (425000000,), }"
    return spoiled(arrays, target, npy_member(target, header=header, data=bytes(1 << 20)))


def _deflate_bomb(arrays, target):
    """2 GB of real zeros deflated to 2 MB, sizes consistent (only the checksum is left wrong)."""
    header = npy(header="{'descr': '<f8', 'fortran_order': False, 'shape': (268435456,), }", data=b"")
    payload = _raw_deflate(header) + repeated_deflate_zeros(2048)
    return spoiled(
        arrays, target, Member(f"{target}.npy", payload, method=8, file_size=len(header) + (2048 << 20), crc=0)
    )


def _raw_deflate(data: bytes) -> bytes:
    """A raw deflate stream of ``data`` that does not end, so more blocks may follow."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("bomb", [_declared_huge, _deflate_bomb], ids=["declared 3.4 GB", "deflate 2 GB"])
def test_npz_memory_bombs_are_refused_before_allocating(tmp_path, valid_arrays, reader, bomb):
    sandboxed, _, target = READERS[reader]
    path = tmp_path / "bomb.npz"
    path.write_bytes(bomb(valid_arrays[reader], target))
    outcome = read_in_sandbox(sandboxed, path, memory_mb=1024)
    assert outcome.refused, outcome.message
    assert "bomb.npz" in outcome.message and outcome.peak_mb < 300, (outcome.message, outcome.peak_mb)


def _narrow_zeros(target: str, descr: str, shape: tuple) -> Member:
    """A member of zeros of a narrow dtype (bool, uint8, float16), deflated: 48 MB stored in 50 kB."""
    header = npy(header=repr({"descr": descr, "fortran_order": False, "shape": shape}), data=b"")
    data = header + bytes(int(np.prod(shape)) * np.dtype(descr).itemsize)
    return Member(f"{target}.npy", deflated(data), method=8, file_size=len(data), crc=zlib.crc32(data))


WIDE_FRAMES = (48 << 20) // 132  # float16 poses of 66 values: 381 300 frames, past an import's 300 000
NARROW = {  # reader -> (member, its narrow zeros, the keywords the caller passes, what the refusal says)
    "result": (
        "track_1/frame_ids",
        ("|u1", (48 << 20,)),
        {},
        "track 1: 'pose' has shape (3, 72), expected (50331648, 72)",
    ),
    "amass": (
        "poses",
        ("<f2", (WIDE_FRAMES, 66)),
        {"max_frames": 300_000},
        f"holds {WIDE_FRAMES:,} frames of motion, more than the 300,000 an import takes",
    ),
    "body model": (
        "shapedirs",
        ("|b1", (48 << 20,)),
        {},
        "'shapedirs' has shape (50331648,), expected (6890, 3, >=10)",
    ),
}


@pytest.mark.parametrize("reader", list(NARROW))
def test_narrow_arrays_are_refused_by_their_shapes_before_they_are_converted(tmp_path, valid_arrays, reader):
    """Converted to float64 or int64 first, 48 MB of stored bool, uint8 or float16 took 4 to 8 times as
    much (5 GB and more from a 13 MB file) before a shape was compared."""
    sandboxed, _, _ = READERS[reader]
    target, (descr, shape), keywords, words = NARROW[reader]
    arrays = dict(valid_arrays[reader])
    if reader == "amass":  # trans follows poses' frames
        arrays["trans"] = np.zeros((WIDE_FRAMES, 3), np.float16)
    path = tmp_path / "narrow.npz"
    path.write_bytes(spoiled(arrays, target, _narrow_zeros(target, descr, shape)))
    baseline = read_in_sandbox(sandboxed, tmp_path / "absent.npz", memory_mb=1024)
    outcome = read_in_sandbox(sandboxed, path, memory_mb=1024, keywords=keywords)
    assert outcome.refused and words in outcome.message, outcome
    # the 48 MB as decompressed and as its array, nothing converted
    assert outcome.peak_mb < baseline.peak_mb + 2 * 48 + 40, (outcome.peak_mb, baseline.peak_mb)


def test_an_amass_file_converts_only_the_pose_columns_it_reads(tmp_path, valid_arrays):
    """1000 frames of 25 000 float16 values (48 MB): all of them were converted to float64 (192 MB),
    where the first 66 are all an import reads."""
    sandboxed = READERS["amass"][0]
    arrays = {**valid_arrays["amass"], "trans": np.zeros((1000, 3))}
    path = tmp_path / "wide.npz"
    path.write_bytes(spoiled(arrays, "poses", _narrow_zeros("poses", "<f2", (1000, 24 << 10))))
    baseline = read_in_sandbox(sandboxed, tmp_path / "absent.npz", memory_mb=1024)
    outcome = read_in_sandbox(sandboxed, path, memory_mb=1024)
    assert outcome.message == "returned", outcome
    # as decompressed, as its array, and |values| checked in float16 (the largest temporary)
    assert outcome.peak_mb < baseline.peak_mb + 3 * 48 + 40, (outcome.peak_mb, baseline.peak_mb)


def test_motion_file_dispatch_reads_names_only(tmp_path, valid_arrays):
    """read_motion_file looks at member names; a bomb in an AMASS file is still refused by the reader."""
    path = tmp_path / "walk.npz"
    path.write_bytes(_declared_huge(valid_arrays["amass"], "poses"))
    with pytest.raises(VibeError, match="walk.npz"):
        read_motion_file(path)


# ---- zip directories listing more members than allowed -----------------------------------------


HUGE_DIRECTORIES = {  # name -> builder(valid result arrays) -> file bytes
    "zip64 count": lambda a: zip_bytes(npz_members(a)[:1], copies=MAX_MEMBERS + 1, zip64=True),
    # the end record's count cannot be trusted: zipfile reads every entry of the directory
    "count understated": lambda a: zip_bytes(npz_members(a)[:1], copies=MAX_DIRECTORY_BYTES // 46, declared=1),
    "zip64 count understated": lambda a: zip_bytes(
        npz_members(a)[:1], copies=MAX_DIRECTORY_BYTES // 46, declared=1, zip64=True
    ),
}


@pytest.fixture
def zipfile_opened(monkeypatch):
    """The files zipfile.ZipFile was asked to open (it builds an object per directory entry)."""
    opened, real = [], zipfile.ZipFile

    def spy(file, *args, **kwargs):
        opened.append(file)
        return real(file, *args, **kwargs)

    monkeypatch.setattr(zipfile, "ZipFile", spy)
    return opened


@pytest.mark.parametrize("read", [load_result, npz_names], ids=["load_result", "npz_names"])
@pytest.mark.parametrize("case", list(HUGE_DIRECTORIES))
def test_huge_zip_directories_are_refused_before_zipfile_reads_them(tmp_path, valid_arrays, zipfile_opened, read, case):
    path = tmp_path / "huge.npz"
    path.write_bytes(HUGE_DIRECTORIES[case](valid_arrays["result"]))
    with pytest.raises(VibeError, match=rf"huge\.npz.*(more than {MAX_MEMBERS}|directory)"):
        read(path)
    assert zipfile_opened == []


def test_zip64_end_records_read_back(tmp_path, valid_arrays):
    """The zip64 records built above are the ones zipfile follows: a valid file ending so still reads."""
    path = tmp_path / "r.npz"
    path.write_bytes(zip_bytes(npz_members(valid_arrays["result"]), zip64=True))
    assert load_result(path).tracks


# ---- values no capture produces -----------------------------------------------------------------


def _result_with(**changes) -> dict:
    arrays = result_arrays()
    for key, value in changes.items():
        arrays[key] = np.asarray(value)
    return arrays


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"track_1/frame_ids": np.array([0, 1, 2**62])}, "frame ids"),
        ({"track_1/frame_ids": np.array([-5, 1, 2])}, "frame ids"),
        ({"track_1/frame_ids": np.array([0.0, 1.0, 2.0])}, "frame ids"),
        ({"track_1/betas": np.full((3, 10), 50.0)}, "beta"),
        ({"track_1/betas_track": np.full(10, -11.0)}, "beta"),
        ({"track_1/pose": np.full((3, 72), np.nan)}, "NaN"),
        ({"track_1/trans_cam_m": np.full((3, 3), np.inf)}, "NaN"),
        ({"track_1/joints3d": np.full((3, 49, 3), -np.inf)}, "NaN"),
        ({"focal_length_px": 0.0}, "focal_length_px"),
        ({"focal_length_px": np.inf}, "focal_length_px"),
        ({"focal_length_px": 1e300}, "focal_length_px"),
        ({"video_fps": np.nan}, "video_fps"),
        ({"video_fps": -25.0}, "video_fps"),
        ({"video_width": 0}, "video_width"),
        ({"video_height": 10**9}, "video_height"),
        ({"video_frame_count": 2**62}, "video_frame_count"),
        ({"video_fps": np.array([25.0, 30.0])}, "single number"),
        ({"format_version": np.array("one")}, "single number"),
        ({"track_ids": np.array([1.5])}, "track_ids"),
        ({"track_ids": np.array([1, 1])}, "track_ids"),
        ({"video_name": np.array(3.0)}, "text"),
        ({"meta_keys": np.array(["a", "b"]), "meta_values": np.array(["x"])}, "meta"),
        # a few KB that would unpack into millions of Python objects: refused by count first
        ({"track_ids": np.arange(2_000_000)}, "2,000,000 tracks, more than the 10,000"),
        ({"meta_keys": np.full(3_000_000, "ab"), "meta_values": np.full(3_000_000, "cd")}, "3,000,000 notes"),
        # bool or int motion is no capture (a bool pose would animate as 0/1 rad)
        ({"track_1/pose": np.ones((3, 72), bool)}, "'pose' holds bool values"),
        ({"track_1/trans_cam_m": np.ones((3, 3), np.int64)}, "'trans_cam_m' holds int64 values"),
        ({"track_1/betas": np.zeros((3, 10), np.int8)}, "'betas' holds int8 values"),
        ({"video_fps": np.array(True)}, "video_fps"),
        # rotations whose quaternions would be NaN, translations no capture makes
        ({"track_1/pose": np.full((3, 72), 1e200)}, r"a joint rotation in 'pose' is 1e\+200 rad, beyond ±1000 rad"),
        ({"track_1/pose": np.full((3, 72), -1001.0)}, "a joint rotation"),
        ({"track_1/trans_cam_m": np.full((3, 3), 2e4)}, "a translation in 'trans_cam_m'"),
    ],
)
def test_result_values_out_of_range_are_refused(tmp_path, changes, match):
    path = tmp_path / "r.npz"
    np.savez(path, **_result_with(**changes))
    with pytest.raises(VibeError, match=match):
        load_result(path)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"mocap_framerate": np.array(np.inf)}, "frame rate"),
        ({"mocap_framerate": np.array(-120.0)}, "frame rate"),
        ({"betas": np.full(16, 1e6)}, "beta"),
        ({"trans": np.full((4, 3), np.nan)}, "NaN"),
        ({"poses": np.zeros((4, 10))}, "not AMASS motion"),
        ({"poses": np.ones((4, 156), bool)}, "'poses' holds bool values"),
        ({"trans": np.zeros((4, 3), np.int32)}, "'trans' holds int32 values"),
        ({"betas": np.zeros(16, np.int64)}, "'betas' holds int64 values"),
        ({"poses": np.full((4, 156), 1e200)}, "a joint rotation in 'poses'"),
        ({"mocap_framerate": np.array(True)}, "frame rate is stored as bool, not a number"),
    ],
)
def test_amass_values_out_of_range_are_refused(tmp_path, changes, match):
    path = tmp_path / "a.npz"
    np.savez(path, **{**amass_arrays(), **changes})
    with pytest.raises(VibeError, match=match):
        read_amass_npz(path)


def test_integer_frame_rates_and_rotations_up_to_the_bound_still_read(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, **{**amass_arrays(), "mocap_framerate": np.array(120), "poses": np.full((4, 156), 999.0)})
    assert read_amass_npz(path).fps == 120.0
    path = tmp_path / "r.npz"
    np.savez(path, **_result_with(**{"track_1/pose": np.full((3, 72), -1000.0, np.float32)}))
    assert load_result(path).tracks[0].pose.min() == -1000.0


def test_text_members_are_read_without_pickles(tmp_path):
    path = tmp_path / "r.npz"
    np.savez(path, **_result_with(meta_keys=np.array(["device"]), meta_values=np.array(["cpu"])))
    assert load_result(path).meta == {"device": "cpu"}
    with zipfile.ZipFile(path) as z:
        assert "meta_keys.npy" in z.namelist()


@pytest.mark.parametrize("reader", ["result", "body model"])
@pytest.mark.parametrize("code_point", [0xFFFFFFFF, 0x110000, 0xD800, 0xDFFF])
def test_text_that_holds_no_unicode_characters_is_refused(tmp_path, valid_arrays, reader, code_point):
    """numpy turns a code point beyond U+10FFFF into a SystemError when Python reads it, and a
    surrogate into a string nothing can encode: each text member holding one is refused by name."""
    _, read, _ = READERS[reader]
    text_members = [name for name, array in valid_arrays[reader].items() if array.dtype.kind == "U" and array.size]
    assert text_members, "the valid file has text to spoil"
    for name in text_members:
        good = valid_arrays[reader][name]
        raw = bytearray(np.ascontiguousarray(good).astype(good.dtype.newbyteorder("<")).tobytes())
        raw[:4] = code_point.to_bytes(4, "little")
        header = repr({"descr": f"<U{good.dtype.itemsize // 4}", "fortran_order": False, "shape": good.shape})
        path = tmp_path / "bad.npz"
        path.write_bytes(spoiled(valid_arrays[reader], name, npy_member(name, header=header, data=bytes(raw))))
        with pytest.raises(VibeError, match=r"bad\.npz") as refused:
            read(path)
        assert "no Unicode characters" in str(refused.value), (name, str(refused.value))


@pytest.mark.parametrize("text", ["plain", "é ü ß", "\U0010ffff", "\ud7ff\ue000"])
def test_text_of_any_unicode_character_still_reads(tmp_path, text):
    path = tmp_path / "r.npz"
    np.savez(path, **_result_with(meta_keys=np.array(["note"]), meta_values=np.array([text])))
    assert load_result(path).meta == {"note": text}


@pytest.mark.parametrize("order", ["<", ">"])
def test_both_array_builders_refuse_code_points_that_are_no_characters(order):
    """The .npz/.pkl readers build arrays from bytes (array_from_bytes) or straight from the file
    (array_from_stream, the joblib pickles): both check text the same way, in either byte order."""
    from vibe_blender.core.bounded_arrays import UntrustedDataError, array_from_bytes, array_from_stream

    dtype = np.dtype(f"{order}U2")
    good = np.array(["ok", "é"], dtype=dtype).tobytes()
    bad = good[:4] + (0xD800).to_bytes(4, "little" if order == "<" else "big") + good[8:]
    assert array_from_bytes(good, dtype, (2,)).tolist() == ["ok", "é"]
    assert array_from_stream(io.BytesIO(good), dtype, (2,)).tolist() == ["ok", "é"]
    for build in (array_from_bytes, lambda raw, *a: array_from_stream(io.BytesIO(raw), *a)):
        with pytest.raises(UntrustedDataError, match="no Unicode characters"):
            build(bad, dtype, (2,))

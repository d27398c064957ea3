"""Crafted pickles against the two pickle readers (SMPL_NEUTRAL.pkl and vibe_output.pkl).

Each attack class is generated here and read in a sandboxed child (address-space limit, timeout):
the reader must answer with one VibeError, without crashing, hanging or allocating what the file
does not hold.
"""

import bz2
import gzip
import lzma
import zlib

import numpy as np
import pytest
from hostile_files import (
    APPEND,
    BUILD,
    EMPTY_DICT,
    EMPTY_LIST,
    EMPTY_TUPLE,
    HOSTILE_DTYPES,
    LIST,
    MARK,
    NEWFALSE,
    NEWOBJ,
    NONE,
    PLAIN_F8_STATE,
    POP,
    REDUCE,
    SETITEM,
    TUPLE,
    TUPLE1,
    TUPLE2,
    TUPLE3,
    compressed_reuse,
    dtype_ops,
    get,
    glob,
    joblib_array,
    person_dict,
    program,
    put,
    read_in_sandbox,
    reconstructed_array,
    shared_list_bomb,
    shared_tuple_bomb,
    smpl_dict,
    value,
)

from vibe_blender.core import bounded_arrays
from vibe_blender.core.errors import VibeError
from vibe_blender.core.readers.official_pkl import load_joblib_pickle
from vibe_blender.core.smpl_model import load_smpl_pkl

SMPL = "vibe_blender.core.smpl_model:load_smpl_pkl"
OFFICIAL = "vibe_blender.core.readers.official_pkl:load_joblib_pickle"


def write(tmp_path, blob: bytes, name="hostile.pkl"):
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def assert_refused(reader, path, *match, memory_mb=1024, timeout_s=60):
    outcome = read_in_sandbox(reader, path, memory_mb=memory_mb, timeout_s=timeout_s)
    assert outcome.refused, outcome.message
    for text in match:
        assert text in outcome.message, outcome.message
    return outcome


# ---- 1. No file-controlled state reaches dtype.__setstate__ / ndarray.__setstate__ ------------

# How each reader meets an array: numpy's own pickle layout, or joblib's wrapper + raw bytes.
ARRAY_LAYOUTS = {
    SMPL: lambda dtype: smpl_dict(v_template=reconstructed_array(dtype, (2,), bytes([0x41]) * 16)),
    OFFICIAL: lambda dtype: person_dict(pose=joblib_array(dtype, (2,), bytes([0x41]) * 16)),
}


@pytest.mark.parametrize("reader", list(ARRAY_LAYOUTS))
@pytest.mark.parametrize("name", list(HOSTILE_DTYPES))
def test_hostile_dtypes_are_refused(tmp_path, reader, name):
    kind, state = HOSTILE_DTYPES[name]
    path = write(tmp_path, program(ARRAY_LAYOUTS[reader](dtype_ops(kind, state))))
    assert_refused(reader, path, "refusing", "dtype")


def test_state_cannot_be_set_again_on_a_built_array(tmp_path):
    """Fetch an array that is already built and BUILD a hostile state onto it (ndarray.__setstate__)."""
    good = reconstructed_array(dtype_ops("f8", PLAIN_F8_STATE), (2,), bytes(16)) + put(7000) + POP
    restate = (
        get(7000)
        + MARK
        + value(1)
        + value((2,))
        + dtype_ops("f8", PLAIN_F8_STATE)
        + NEWFALSE
        + value(bytes([0x41]) * 16)
        + TUPLE
        + BUILD
    )
    path = write(tmp_path, program(smpl_dict(v_template=good + restate)))
    assert_refused(SMPL, path, "refusing to set the state of a ndarray")


def test_object_scalars_are_refused(tmp_path):
    scalar = (
        glob("numpy.core.multiarray", "scalar")
        + dtype_ops("O8", (3, "|", None, None, None, -1, -1, 63))
        + value(bytes(8))
        + b"\x86"
        + REDUCE
    )
    path = write(tmp_path, program(person_dict(pose=scalar)))
    assert_refused(OFFICIAL, path, "refusing dtype 'O8'")


def test_array_bytes_must_match_shape(tmp_path):
    short = reconstructed_array(dtype_ops("f8", PLAIN_F8_STATE), (1000, 1000), bytes(16))
    path = write(tmp_path, program(smpl_dict(v_template=short)))
    with pytest.raises(VibeError, match="needs 8000000 bytes but the file holds 16"):
        load_smpl_pkl(path)


# ---- 2. Memory and time bombs -----------------------------------------------------------------


def _bomb_stream(kind: str) -> bytes:
    """~2 GB of zeros behind a small joblib-style compressed container (concatenated streams where the
    format allows, a repeated deflate block for bare zlib)."""
    if kind == "zlib":
        c = zlib.compressobj(9)
        head = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
        block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
        return head + block * 2047 + c.flush()
    compress = {"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[kind]
    return compress(bytes(16 << 20)) * 128


@pytest.mark.parametrize("kind", ["zlib", "gzip", "bz2", "xz"])
def test_decompression_is_capped(tmp_path, kind):
    path = write(tmp_path, _bomb_stream(kind))
    outcome = assert_refused(OFFICIAL, path, "expands past", memory_mb=1024)
    assert outcome.peak_mb < 400, outcome.peak_mb


def test_a_compressed_pickle_builds_within_the_budget_of_the_file_on_disk(tmp_path):
    """Decompressing took the budget of the 8 kB file, and the unpickler got a new one of the 8 MB it
    decompressed to (50 times that): 40 copies, 320 MB, were built (3.1 GB from a 61 kB file)."""
    path = write(tmp_path, compressed_reuse(8, 40))
    assert path.stat().st_size < 64 << 10
    outcome = assert_refused(OFFICIAL, path, "bytes a file of this size may produce", memory_mb=1024)
    assert outcome.peak_mb < 200, outcome


def test_narrow_smpl_arrays_are_refused_by_their_shapes_before_they_are_converted(tmp_path):
    """Four uint8 arrays of 12 MB, copies of one memoized string: each was converted to float64 or int64
    (384 MB; 7.4 GB from a 200 MB file) before a shape was compared."""
    shared = 12 << 20
    u1 = dtype_ops("u1", (3, "|", None, None, None, -1, -1, 0))
    narrow = {
        key: reconstructed_array(u1, (shared,), b"", raw_ops=get(7000))
        for key in ("weights", "shapedirs", "posedirs", "f")
    }
    path = write(tmp_path, program(value(bytes(shared)) + put(7000) + POP + smpl_dict(**narrow)))
    baseline = read_in_sandbox(SMPL, tmp_path / "absent.pkl", memory_mb=1024)
    outcome = assert_refused(SMPL, path, "'lbs_weights' has shape (12582912,), expected (4, 24)", memory_mb=1024)
    # the file, its string, that string encoded and the four arrays: 7 x 12 MB, nothing converted
    assert outcome.peak_mb < baseline.peak_mb + 7 * 12 + 40, (outcome.peak_mb, baseline.peak_mb)


@pytest.mark.parametrize(
    "reader, wrap",
    [
        (SMPL, lambda bomb: smpl_dict(f=bomb)),
        (OFFICIAL, lambda bomb: person_dict(pose=bomb)),
    ],
)
def test_shared_references_cannot_expand(tmp_path, reader, wrap):
    """'Billion laughs': 2**30 leaves from a few hundred bytes."""
    path = write(tmp_path, program(wrap(shared_list_bomb(30))))
    assert_refused(reader, path, "expands to more than", memory_mb=768, timeout_s=60)


def test_nested_tuple_keys_are_refused(tmp_path):
    """A dict key whose hash would take 2**60 steps."""
    path = write(tmp_path, program(EMPTY_DICT + shared_tuple_bomb(60) + value(1) + SETITEM))
    assert_refused(OFFICIAL, path, "dict key", timeout_s=60)


# Where a refusal names a value from the file, handed a tuple that holds one tuple twice, 60 levels deep:
# its whole repr has 2**60 leaves, so the message must be built from a bounded repr.
BOMB = shared_tuple_bomb(60)
F8_DTYPE = dtype_ops("f8", PLAIN_F8_STATE)
NAMED_IN_REFUSALS = {
    "called": BOMB + EMPTY_TUPLE + REDUCE,
    "created": BOMB + EMPTY_TUPLE + NEWOBJ,
    "dtype kind": glob("numpy", "dtype") + BOMB + value(False) + value(True) + TUPLE3 + REDUCE,
    "dtype state": glob("numpy", "dtype") + value(("f8", False, True)) + REDUCE + BOMB + BUILD,
    "dtype byte order": glob("numpy", "dtype")
    + value(("f8", False, True))
    + REDUCE
    + MARK
    + value(3)
    + BOMB
    + NONE * 3
    + value(-1) * 2
    + value(0)
    + TUPLE
    + BUILD,
    "array class": glob("numpy.core.multiarray", "_reconstruct") + BOMB + value((0,)) + value(b"b") + TUPLE3 + REDUCE,
    "array shape": reconstructed_array(F8_DTYPE, (), bytes(16), shape_ops=BOMB),
    "reconstructor class": glob("copy_reg", "_reconstructor")
    + BOMB
    + glob("builtins", "object")
    + NONE
    + TUPLE3
    + REDUCE,
}


@pytest.mark.parametrize(
    "reader, wrap", [(SMPL, lambda ops: smpl_dict(f=ops)), (OFFICIAL, lambda ops: person_dict(pose=ops))]
)
@pytest.mark.parametrize("where", list(NAMED_IN_REFUSALS))
def test_a_value_named_in_a_refusal_cannot_expand(tmp_path, reader, wrap, where):
    """About 1 kB of pickle: the message formatted the value with {x!r:.60}, which builds the whole
    repr first, and the reader never ended (time and memory grow as 2**depth)."""
    assert len(NAMED_IN_REFUSALS[where]) < 1500
    path = write(tmp_path, program(wrap(NAMED_IN_REFUSALS[where])))
    assert_refused(reader, path, "((...), (...))", memory_mb=1024, timeout_s=30)  # named, cut short


def test_deep_nesting_is_refused(tmp_path):
    depth = 100_000
    nested = MARK * depth + LIST * depth  # [[[...]]], two bytes per level
    path = write(tmp_path, program(smpl_dict(f=nested)))
    assert_refused(SMPL, path, "nests deeper than")


def test_copyreg_reconstructor_cannot_allocate(tmp_path):
    """copyreg._reconstructor(ndarray, ndarray, (2**28,)) would make numpy allocate 2 GB."""
    alloc = (
        glob("copy_reg", "_reconstructor")
        + glob("numpy", "ndarray")
        + glob("numpy", "ndarray")
        + value((1 << 28,))
        + TUPLE3
        + REDUCE
    )
    path = write(tmp_path, program(smpl_dict(v_template=alloc)))
    assert_refused(SMPL, path, "refusing copyreg._reconstructor", memory_mb=768)


def test_sparse_shape_must_match_the_model(tmp_path):
    """A csc_matrix whose _shape asks for a 100000 x 100000 dense matrix (80 GB)."""
    sparse = (
        glob("scipy.sparse.csc", "csc_matrix")
        + EMPTY_TUPLE
        + b"\x81"
        + EMPTY_DICT
        + value("_shape")
        + value((100_000, 100_000))
        + SETITEM
        + value("data")
        + value(np.zeros(1))
        + SETITEM
        + value("indices")
        + value(np.zeros(1, np.int32))
        + SETITEM
        + value("indptr")
        + value(np.zeros(100_001, np.int32))
        + SETITEM
        + BUILD
    )
    path = write(tmp_path, program(smpl_dict(J_regressor=sparse)))
    assert_refused(SMPL, path, "has shape (100000, 100000), expected (24, 4)", memory_mb=768)


# One memoized value (put once, fetched with BINGET) handed to many builds: each build is a full copy.
F8 = dtype_ops("f8", PLAIN_F8_STATE)
SHARED_BYTES = 128 << 10
REUSE = {
    "numpy _reconstruct": (
        value(bytes(SHARED_BYTES)),
        reconstructed_array(F8, (SHARED_BYTES // 8,), b"", raw_ops=get(9000)),
    ),
    "numpy _reconstruct of Python-2 text": (
        value("a" * SHARED_BYTES),
        reconstructed_array(
            dtype_ops("u1", (3, "|", None, None, None, -1, -1, 0)), (SHARED_BYTES,), b"", raw_ops=get(9000)
        ),
    ),
    "numpy _frombuffer": (
        value(bytes(SHARED_BYTES)),
        glob("numpy.core.numeric", "_frombuffer")
        + MARK
        + get(9000)
        + F8
        + value((SHARED_BYTES // 8,))
        + value("C")
        + TUPLE
        + REDUCE,
    ),
    "_codecs.encode": (
        value("a" * SHARED_BYTES),
        glob("_codecs", "encode") + get(9000) + value("latin1") + TUPLE2 + REDUCE,
    ),
    "set": (value(list(range(SHARED_BYTES // 32))), glob("builtins", "set") + get(9000) + TUPLE1 + REDUCE),
}


@pytest.mark.parametrize("name", list(REUSE))
def test_a_memoized_value_reused_by_many_builds_is_charged_each_time(tmp_path, monkeypatch, name):
    """A 130 kB file whose builds would copy 13 MB: refused once they pass the budget of its size (the
    budget's floor lowered from 64 MiB to 1 MiB so the file stays small: the budget is 50 x 130 kB)."""
    monkeypatch.setattr(bounded_arrays, "MIN_BUDGET_BYTES", 1 << 20)
    shared, build = REUSE[name]
    once = write(tmp_path, program(EMPTY_LIST + shared + put(9000) + POP + build + APPEND), "once.pkl")
    assert len(load_joblib_pickle(once)) == 1
    path = write(tmp_path, program(EMPTY_LIST + shared + put(9000) + POP + (build + APPEND) * 100))
    assert path.stat().st_size < 2 * SHARED_BYTES
    with pytest.raises(VibeError, match="more than the .* bytes a file of this size may produce"):
        load_joblib_pickle(path)


def test_the_smpl_reader_charges_its_builds_too(tmp_path, monkeypatch):
    monkeypatch.setattr(bounded_arrays, "MIN_BUDGET_BYTES", 1 << 20)
    shared, build = REUSE["numpy _reconstruct"]
    path = write(tmp_path, program(shared + put(9000) + POP + smpl_dict(f=EMPTY_LIST + (build + APPEND) * 100)))
    with pytest.raises(VibeError, match="may produce"):
        load_smpl_pkl(path)


def test_operation_count_is_bounded(tmp_path):
    """Millions of memoized empty dicts: memory grows with every three bytes of file."""
    flood = (EMPTY_DICT + b"\x94" + POP) * 1_100_000
    path = write(tmp_path, b"\x80\x04" + flood + smpl_dict() + b".")
    with pytest.raises(VibeError, match="more than 1000000 operations"):
        load_smpl_pkl(path)


@pytest.mark.parametrize("reader", [SMPL, OFFICIAL])
@pytest.mark.parametrize("claim", [1 << 33, 1 << 44], ids=["8 GiB", "16 TiB"])
@pytest.mark.parametrize(
    "opcode", [b"\x8e", b"\x8d", b"\x96", b"\x95"], ids=["BINBYTES8", "BINUNICODE8", "BYTEARRAY8", "FRAME"]
)
def test_a_length_beyond_the_file_reserves_nothing(tmp_path, reader, claim, opcode):
    """The standard unpickler asked the file for (or made a byte array of) the claimed length first:
    a 30-byte file was called too large for the free memory, or took the memory."""
    path = write(tmp_path, b"\x80\x04" + opcode + claim.to_bytes(8, "little") + b"abc.")
    outcome = assert_refused(reader, path, memory_mb=512)
    assert "free memory" not in outcome.message and outcome.peak_mb < 400, outcome


def test_huge_integers_are_refused(tmp_path):
    path = write(tmp_path, program(person_dict(frame_ids=b"\x8b" + (1 << 20).to_bytes(4, "little") + bytes(1 << 20))))
    with pytest.raises(VibeError, match="integer of"):
        load_joblib_pickle(path)


# ---- values read from vibe_output.pkl ----------------------------------------------------------


@pytest.mark.parametrize(
    "key, array, match",
    [
        ("frame_ids", np.array([0, 1, 2**62]), "frame ids"),
        ("frame_ids", np.array([-1, 0, 1]), "frame ids"),
        ("betas", np.full((3, 10), 50.0), "beta"),
        ("pose", np.full((3, 72), np.nan), "NaN"),
        ("orig_cam", np.full((3, 4), np.inf), "NaN or infinite"),
        ("pose", np.zeros((3, 71)), "shape"),
        ("pose", np.array(["a"] * 3), "dtype 'U1'"),
        # kinds are checked before any conversion: bool poses, truncated float frame ids
        ("pose", np.ones((3, 72), bool), "'pose' is an array of bool, not an array of floating-point numbers"),
        ("betas", np.zeros((3, 10), np.int64), "'betas' is an array of int64"),
        ("frame_ids", np.array([0.0, 1.5, 2.0]), "'frame_ids' is an array of float64, not an array of integer"),
        ("frame_ids", np.array(3), r"'frame_ids' has shape \(\), expected \(T,\)"),
        ("pose", np.full((3, 72), 1e200), "a joint rotation in 'pose' is 1e\\+200 rad"),
        # the translation the cameras imply: a huge tx, or a scale that puts the person kilometres away
        ("orig_cam", np.tile([0.5, 0.6, 1e300, 0.1], (3, 1)), "a translation in 'trans' is 1e\\+300 m"),
    ],
)
def test_official_values_are_checked(tmp_path, key, array, match):
    from vibe_blender.core.readers.official_pkl import read_official_pkl

    path = write(tmp_path, program(person_dict(**{key: value(array)})))
    with pytest.raises(VibeError, match=match):
        read_official_pkl(path)


def test_a_camera_scale_that_puts_the_person_kilometres_away_is_refused(tmp_path):
    """sx, sy and s all tiny, consistent with a 640 x 480 video: tz = 2 f / (W max(sx, 1e-6)) is 2000 km."""
    from vibe_blender.core.readers.official_pkl import read_official_pkl

    orig_cam = np.tile([1e-7, 1e-7 * 640 / 480, 0.0, 0.1], (3, 1))
    pred_cam = np.tile([1e-7 * 640 / 64, 0.0, 0.1], (3, 1))  # bboxes are 64 px high
    path = write(tmp_path, program(person_dict(orig_cam=value(orig_cam), pred_cam=value(pred_cam))))
    with pytest.raises(VibeError, match=r"person 1: a translation in 'trans' is 2e\+06 m, beyond ±10000 m"):
        read_official_pkl(path)


def test_official_reader_parameters_are_checked(tmp_path):
    from vibe_blender.core.readers.official_pkl import read_official_pkl

    path = write(tmp_path, program(person_dict()))
    assert read_official_pkl(path, fps=25).tracks[0].frame_ids.tolist() == [0, 1, 2]
    with pytest.raises(VibeError, match="frame rate"):
        read_official_pkl(path, fps=float("nan"))
    with pytest.raises(VibeError, match="focal length"):
        read_official_pkl(path, focal_length_px=-3.0)


SURROGATE = "\udc80x".encode("utf-8", "surrogatepass")
# each opcode that pushes a string, pushing one with a lone surrogate
SURROGATE_TEXTS = {
    "SHORT_BINUNICODE": b"\x8c" + bytes([len(SURROGATE)]) + SURROGATE,
    "BINUNICODE": b"X" + len(SURROGATE).to_bytes(4, "little") + SURROGATE,
    "BINUNICODE8": b"\x8d" + len(SURROGATE).to_bytes(8, "little") + SURROGATE,
    "UNICODE": b"V\\udc80x\n",
}
SURROGATE_PLACES = {  # reader -> where a string from the file ends up: a key, or a person's id
    SMPL: lambda text: smpl_dict() + text + value(np.zeros(3)) + SETITEM,
    OFFICIAL: lambda text: EMPTY_DICT + text + person_dict()[len(EMPTY_DICT) + len(value(1)) :],
}


@pytest.mark.parametrize("reader", list(SURROGATE_PLACES))
@pytest.mark.parametrize("opcode", list(SURROGATE_TEXTS))
def test_text_with_a_lone_surrogate_is_refused(tmp_path, reader, opcode):
    """A lone surrogate made Blender refuse a track's or a collection's name with a traceback, after
    the import had begun."""
    path = write(tmp_path, program(SURROGATE_PLACES[reader](SURROGATE_TEXTS[opcode])))
    assert_refused(reader, path, "lone surrogate")


@pytest.mark.parametrize("reader", list(SURROGATE_PLACES))
def test_the_surrogate_cases_differ_from_a_valid_file_only_in_that_text(tmp_path, reader):
    for text in ("ok", "é"):
        path = write(tmp_path, program(SURROGATE_PLACES[reader](value(text))))
        if reader == SMPL:
            assert load_smpl_pkl(path).v_template.shape == (4, 3)
        else:
            assert list(load_joblib_pickle(path)) == [text]

"""Builders of hostile files (crafted pickles, zips, .npy headers) and a sandbox to read them in.

The sandbox runs one reader in a child Python with an address-space limit, so a reader that
crashes (SIGSEGV), exhausts memory or hangs fails its test instead of taking the machine down.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# Pickle assembly (protocol 2 opcodes)
# ---------------------------------------------------------------------------------------------

PROTO2, STOP = b"\x80\x02", b"."
MARK, TUPLE, TUPLE1, TUPLE2, TUPLE3, EMPTY_TUPLE = b"(", b"t", b"\x85", b"\x86", b"\x87", b")"
REDUCE, BUILD, NEWOBJ = b"R", b"b", b"\x81"
EMPTY_LIST, EMPTY_DICT, LIST, APPEND, SETITEM, SETITEMS = b"]", b"}", b"l", b"a", b"s", b"u"
POP, NONE, NEWFALSE = b"0", b"N", b"\x89"


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def value(obj) -> bytes:
    """The opcodes that push ``obj`` (a plain value), without PROTO/STOP. Its memo indices are below
    1000 and only used inside it, so fragments can be concatenated."""
    return pickle.dumps(obj, protocol=2)[2:-1]


def put(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)


def get(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)


def program(*parts: bytes) -> bytes:
    return PROTO2 + b"".join(parts) + STOP


def dtype_ops(kind: str, state: tuple) -> bytes:
    """numpy.dtype(kind, False, True) followed by BUILD with a state chosen by the file."""
    return glob("numpy", "dtype") + value((kind, False, True)) + REDUCE + value(state) + BUILD


PLAIN_F8_STATE = (3, "<", None, None, None, -1, -1, 0)
# An object field and an int64 field at the same offset, flags 0 so that numpy believes the dtype
# holds no objects: reading the int as a pointer crashes, writing it moves reference counts.
OVERLAPPING_OBJECT_STATE = (3, "|", None, ("a", "b"), {"a": (np.dtype("O"), 0), "b": (np.dtype("<i8"), 0)}, 8, 1, 0)
HOSTILE_DTYPES = {
    "object field over a number, hasobject hidden": ("V8", OVERLAPPING_OBJECT_STATE),
    "object kind": ("O8", (3, "|", None, None, None, -1, -1, 63)),
    "plain record": ("V8", (3, "|", None, ("x",), {"x": (np.dtype("<f8"), 0)}, 8, 1, 16)),
    "sub-array": ("V16", (3, "|", (np.dtype("<f8"), (2,)), None, None, 16, 8, 0)),
    "metadata": ("f8", (4, "<", None, None, None, -1, -1, 0, {"x": 1})),
}


def reconstructed_array(
    dtype: bytes, shape: tuple, raw: bytes, *, raw_ops: bytes | None = None, shape_ops: bytes | None = None
) -> bytes:
    """numpy's protocol-2 array: _reconstruct(ndarray, (0,), b'b') then BUILD (1, shape, dtype, False, raw).
    ``raw_ops`` / ``shape_ops`` push the data / the shape another way instead (e.g. a memo fetch of a
    value put earlier)."""
    return (
        glob("numpy.core.multiarray", "_reconstruct")
        + glob("numpy", "ndarray")
        + value((0,))
        + value(b"b")
        + TUPLE3
        + REDUCE
        + MARK
        + value(1)
        + (value(shape) if shape_ops is None else shape_ops)
        + dtype
        + NEWFALSE
        + (value(raw) if raw_ops is None else raw_ops)
        + TUPLE
        + BUILD
    )


def joblib_array(dtype: bytes, shape: tuple, raw: bytes) -> bytes:
    """joblib's NumpyArrayWrapper (state dict) followed by the array's raw bytes."""
    return (
        glob("joblib.numpy_pickle", "NumpyArrayWrapper")
        + EMPTY_TUPLE
        + NEWOBJ
        + EMPTY_DICT
        + MARK
        + value("subclass")
        + glob("numpy", "ndarray")
        + value("shape")
        + value(shape)
        + value("order")
        + value("C")
        + value("dtype")
        + dtype
        + value("allow_mmap")
        + NEWFALSE
        + SETITEMS
        + BUILD
        + raw
    )


def shared_list_bomb(depth: int, leaf: bytes = value(0.5)) -> bytes:
    """'Billion laughs': L0 = [leaf], L(k+1) = [Lk, Lk]; a few bytes per level, 2**depth leaves."""
    ops = EMPTY_LIST + leaf + APPEND + put(5000) + POP
    for level in range(depth):
        ops += EMPTY_LIST + get(5000 + level) + APPEND + get(5000 + level) + APPEND + put(5001 + level) + POP
    return ops + get(5000 + depth)


def shared_tuple_bomb(depth: int) -> bytes:
    """T0 = (1,), T(k+1) = (Tk, Tk): hashing T(depth) takes 2**depth steps."""
    ops = value((1,)) + put(6000) + POP
    for level in range(depth):
        ops += get(6000 + level) + get(6000 + level) + TUPLE2 + put(6001 + level) + POP
    return ops + get(6000 + depth)


SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def smpl_dict(**overrides: bytes) -> bytes:
    """A dict with every key an SMPL model needs (24 joints, 4 vertices: a valid model), plain small
    arrays, ``overrides`` as raw opcodes."""
    arrays = {
        "v_template": np.zeros((4, 3)),
        "f": np.array([[0, 1, 2]]),
        "weights": np.full((4, 24), 1 / 24),
        "shapedirs": np.zeros((4, 3, 10)),
        "posedirs": np.zeros((4, 3, 207)),
        "J_regressor": np.full((24, 4), 0.25),
        "kintree_table": np.array([SMPL_PARENTS, list(range(24))]),
    }
    ops = EMPTY_DICT
    for key, array in arrays.items():
        ops += value(key) + overrides.get(key, value(array)) + SETITEM
    return ops


def compressed_reuse(shared_mb: int, builds: int) -> bytes:
    """A zlib-compressed pickle (a few kB) of a list of ``builds`` arrays, each a copy of one memoized
    string of ``shared_mb`` MB of zeros."""
    shared = shared_mb << 20
    u1 = dtype_ops("u1", (3, "|", None, None, None, -1, -1, 0))
    array = reconstructed_array(u1, (shared,), b"", raw_ops=get(7000))
    return zlib.compress(program(value(bytes(shared)) + put(7000) + POP + EMPTY_LIST + (array + APPEND) * builds), 9)


def person_dict(**overrides: bytes) -> bytes:
    """{1: {pose, betas, orig_cam, pred_cam, bboxes, frame_ids}} as VIBE's demo writes it, plain pickle."""
    T = 3
    arrays = {
        "pose": np.zeros((T, 72)),
        "betas": np.zeros((T, 10)),
        "orig_cam": np.tile([0.5, 0.6, 0.0, 0.1], (T, 1)),
        "pred_cam": np.tile([1.0, 0.0, 0.1], (T, 1)),
        "bboxes": np.tile([50.0, 50.0, 64.0, 64.0], (T, 1)),
        "frame_ids": np.arange(T),
    }
    ops = EMPTY_DICT + value(1) + EMPTY_DICT
    for key, array in arrays.items():
        ops += value(key) + overrides.get(key, value(array)) + SETITEM
    return ops + SETITEM


# ---------------------------------------------------------------------------------------------
# .npy headers and zip archives with chosen (possibly lying) sizes
# ---------------------------------------------------------------------------------------------


def npy(
    array: np.ndarray | None = None,
    *,
    header: str | None = None,
    data: bytes | None = None,
    version: tuple[int, int] = (1, 0),
    header_len: int | None = None,
) -> bytes:
    """A .npy file; ``header``/``data``/``header_len`` replace what numpy would write."""
    if header is None:
        header = repr(
            {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False, "shape": array.shape}
        )
    if data is None:
        data = array.tobytes()
    text = header.encode("latin1")
    length = len(text) if header_len is None else header_len
    size = struct.pack("<H", length) if version[0] == 1 else struct.pack("<I", length)
    return b"\x93NUMPY" + bytes(version) + size + text + data


@dataclass
class Member:
    name: str
    payload: bytes  # the bytes stored in the archive (already compressed when method=8)
    method: int = 0  # 0 stored, 8 deflated, 12 bzip2, 14 lzma
    file_size: int | None = None  # declared uncompressed size (default: len(payload) when stored)
    crc: int | None = None
    flags: int = 0


def deflated(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def zip_bytes(members: list[Member], *, copies: int = 1, declared: int | None = None, zip64: bool = False) -> bytes:
    """A zip archive written field by field, so sizes and flags can lie. ``copies``: how many times the
    central directory lists each member; ``declared``: the entry count the end record gives (default:
    the true one); ``zip64``: end with a zip64 record and locator, as zipfile does past 65535 entries."""
    body, directory = b"", b""
    for m in members:
        name = m.name.encode()
        size = len(m.payload) if m.file_size is None else m.file_size
        crc = zlib.crc32(m.payload) if m.crc is None else m.crc
        common = struct.pack("<HHHHHIII", 20, m.flags, m.method, 0, 0x21, crc, len(m.payload), size)
        offset = len(body)
        body += b"PK\x03\x04" + common + struct.pack("<HH", len(name), 0) + name + m.payload
        directory += (
            b"PK\x01\x02"
            + struct.pack("<H", 20)
            + common
            + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, offset)
            + name
        )
    directory *= copies
    count = len(members) * copies if declared is None else declared
    if not zip64:
        listed = count & 0xFFFF  # a 16-bit field in the plain record
        end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, listed, listed, len(directory), len(body), 0)
        return body + directory + end
    record = b"PK\x06\x06" + struct.pack("<QHHIIQQQQ", 44, 45, 45, 0, 0, count, count, len(directory), len(body))
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, len(body) + len(directory), 1)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + directory + record + locator + end


def npz_members(arrays: dict[str, np.ndarray]) -> list[Member]:
    return [Member(f"{k}.npy", npy(np.asarray(v))) for k, v in arrays.items()]


def tiny_gif(width: int, height: int, frames: int = 3) -> bytes:
    """A GIF whose screen is width x height, with ``frames`` frames of one pixel each."""
    data = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + bytes(3) + b"\xff" * 3
    for _ in range(frames):
        data += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # 0.1 s a frame
        data += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"  # 1 pixel, LZW
    return data + b"\x3b"


def repeated_deflate_zeros(megabytes: int) -> bytes:
    """A raw deflate stream of ``megabytes`` MB of zeros, built in milliseconds: one full-flush block
    repeated (each block stands alone), then an empty final block."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    c.compress(bytes(1 << 20))
    c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return block * megabytes + c.flush()


# ---------------------------------------------------------------------------------------------
# The sandbox
# ---------------------------------------------------------------------------------------------

_CHILD = r"""
import ast, importlib, resource, sys
limit = int(sys.argv[1]) << 20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
module, function, path, keywords = sys.argv[2:6]
from vibe_blender.core.errors import VibeError
reader = getattr(importlib.import_module(module), function)
try:
    reader(path, **ast.literal_eval(keywords))
    outcome = "returned"
except VibeError as err:
    outcome = "VibeError: " + str(err)
except BaseException as err:
    outcome = type(err).__name__ + ": " + str(err)[:300]
try:   # this process's own high-water mark (ru_maxrss would include the parent's size at fork on Linux)
    peak = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]) // 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1 << 20 if sys.platform == "darwin" else 1024)
print("OUTCOME", outcome.replace("\n", " "))
print("PEAK_MB", peak)
"""


@dataclass
class Outcome:
    returncode: int
    message: str  # 'VibeError: ...', 'MemoryError: ...', 'returned', or how the child died
    peak_mb: int

    @property
    def refused(self) -> bool:
        return self.returncode == 0 and self.message.startswith("VibeError: ")


def read_in_sandbox(
    reader: str, path: Path, *, memory_mb: int = 1024, timeout_s: float = 60, keywords: dict | None = None
) -> Outcome:
    """Run ``reader`` ('module:function') on ``path`` (and ``keywords``, plain values) in a child limited
    to ``memory_mb`` of address space."""
    module, function = reader.split(":")
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'server'}",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(memory_mb), module, function, str(path), repr(keywords or {})],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            cwd=ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Outcome(-1, f"still running after {timeout_s} s", -1)
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("OUTCOME", "PEAK_MB")))
    if "OUTCOME" not in lines:
        return Outcome(done.returncode, f"died with exit code {done.returncode}: {done.stderr[-300:]}", -1)
    return Outcome(done.returncode, lines["OUTCOME"], int(lines.get("PEAK_MB", -1)))


# ---------------------------------------------------------------------------------------------
# Paths that are no regular file
# ---------------------------------------------------------------------------------------------

NOT_REGULAR_KINDS = ("fifo", "dev-zero")  # opening a FIFO blocks; /dev/zero reads without end


def make_not_regular(path: Path, kind: str) -> Path:
    """A FIFO ('fifo') or a symbolic link to /dev/zero ('dev-zero') at ``path``."""
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


def call_with_deadline(call, *, timeout_s: float = 20, fifo: Path | None = None):
    """``call()`` in a thread -> (True, its value) or (False, the exception it raised); AssertionError
    when it is still running after ``timeout_s`` (a FIFO given as ``fifo`` is then opened for writing
    and closed, so the blocked reader ends)."""
    import threading

    outcome = []

    def run():
        try:
            outcome.append((True, call()))
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome.append((False, err))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        if fifo is not None and fifo.exists():
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        raise AssertionError(f"still running after {timeout_s} s: it blocks or reads without end")
    return outcome[0]


def without_read_override() -> None:
    """``preexec_fn`` of a child run as root that must meet file permissions: root's power to read any
    file is dropped (Linux's CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, from the bounding set, so exec
    does not give them back, and from the ambient set). Where this root may not drop them, the child
    still reads everything: its script checks that first (``CAN_READ_PROBE``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    for capability in (1, 2):
        libc.prctl(24, capability, 0, 0, 0)  # PR_CAPBSET_DROP


# The first lines of a child's script run under ``without_read_override``: it says READABLE and ends
# when it can read sys.argv[1] all the same (the test then has nothing to check, and skips).
CAN_READ_PROBE = (
    "import sys\n"
    "try:\n"
    "    open(sys.argv[1], 'rb').close()\n"
    "    print('READABLE')\n"
    "    sys.exit(0)\n"
    "except PermissionError:\n"
    "    pass\n"
)
CAN_STILL_READ = "this user reads files whatever their permissions (root keeping its capabilities)"


def run_probe(code: str, *args, preexec_fn=None, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """``python -c code *args`` (this test run's Python: a bpy venv's in the Blender suite) with the
    repository importable; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "server")])),
        preexec_fn=preexec_fn,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def unreadable_copy(source: Path, folder: Path) -> Path:
    """A copy of ``source`` in ``folder`` that nobody may read (mode 000)."""
    copy = folder / f"locked{source.suffix}"
    copy.write_bytes(source.read_bytes())
    copy.chmod(0)
    return copy

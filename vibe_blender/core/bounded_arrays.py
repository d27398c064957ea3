"""Arrays and byte streams built from untrusted files, within fixed limits.

Every reader of a file a user may have downloaded (result ``.npz``, AMASS ``.npz``, body-model
``.npz``, ``SMPL_NEUTRAL.pkl``, ``vibe_output.pkl``, the server's ``.npy``/``.npz`` model data) builds
its arrays here, so the limits are the same everywhere:

- dtypes come from an allow-list of plain kinds (bool, signed/unsigned int, float; fixed-width
  text where a format needs it); object, structured, sub-array and void dtypes are refused;
- an array's declared shape × itemsize must equal the bytes the file really holds for it, and
  stays under :data:`MAX_ARRAY_BYTES`;
- decompression, and what a restricted pickle builds from its stream, stop at a budget:
  :func:`byte_budget` of the file's (or stream's) size, at most :data:`MAX_DECODED_BYTES` and at most
  :data:`MAX_EXPANSION` times that size (but at least :data:`MIN_BUDGET_BYTES`), so an 800-byte file
  cannot expand to gigabytes; a file may always produce the bytes it really holds, so a large
  uncompressed file has no fixed cap;
- the readers open files with :func:`.regular_file.open_regular_file`, which refuses devices,
  FIFOs and sockets (a link to ``/dev/zero`` would never end, a FIFO would block).

Problems raise :class:`UntrustedDataError` (:class:`TooLargeError` when a file may be genuine but
decodes past the fixed cap); each reader turns it into one ``VibeError`` naming its file.
"""

from __future__ import annotations

import bz2
import io
import lzma
import math
import zlib
from typing import BinaryIO

import numpy as np

from .shown_text import shown_value

MAX_DECODED_BYTES = 4 << 30  # no file decodes to more than 4 GiB in total
MAX_ARRAY_BYTES = 4 << 30  # nor holds one array larger than that
MAX_EXPANSION = 50  # decoded bytes per byte of file (real float data compresses < 10x)
MIN_BUDGET_BYTES = 64 << 20  # small files may still decode to this much (zero-filled arrays)
MAX_NDIM = 32
_CHUNK = 1 << 20

# Plain numeric kinds as numpy writes them in pickles and .npy headers ('f8', '<f8', '|b1', ...).
NUMERIC_KINDS = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"})
MAX_TEXT_CHARS = 65536  # longest string a text array (names, settings) may hold


class UntrustedDataError(ValueError):
    """The data breaks a limit or is not what it claims; the message says how."""


class TooLargeError(UntrustedDataError):
    """Compressed data that decodes past :data:`MAX_DECODED_BYTES` at a ratio real data can have: maybe
    a genuine file, too large to decompress here (stored uncompressed it would be read)."""


def byte_budget(file_size: int) -> int:
    """How many decoded bytes a file of ``file_size`` bytes may produce (see the module docstring)."""
    return max(int(file_size), min(MAX_DECODED_BYTES, max(MIN_BUDGET_BYTES, MAX_EXPANSION * int(file_size))))


class ByteBudget:
    """Counts the bytes a reader decodes from one file; refuses to go past the budget."""

    def __init__(self, file_size: int):
        self.limit = byte_budget(file_size)
        self.used = 0

    def take(self, nbytes: int, what: str) -> None:
        if nbytes < 0 or self.used + nbytes > self.limit:
            raise UntrustedDataError(
                f"{what} would need {nbytes} bytes after {self.used} already built, more than the {self.limit} "
                "bytes a file of this size may produce (a damaged or deliberately inflated file)"
            )
        self.used += nbytes


def plain_dtype(descr: str, *, allow_text: bool = False) -> np.dtype:
    """A dtype string ('<f4', 'f8', '|b1', '>i8', '<U12' when allow_text) -> numpy dtype, or refuse.

    Only plain numbers (and fixed-width text on request) pass: no objects, records or sub-arrays.
    """
    if not isinstance(descr, str) or not 2 <= len(descr) <= 12:
        raise UntrustedDataError(f"refusing dtype {shown_value(descr)}: only plain bool/int/float arrays are accepted")
    order, kind = (descr[0], descr[1:]) if descr[0] in "<>|=" else ("=", descr)
    if (
        kind in NUMERIC_KINDS
        or allow_text
        and kind[:1] in ("U", "S")
        and kind[1:].isdigit()
        and 0 < int(kind[1:]) <= MAX_TEXT_CHARS
    ):
        pass
    else:
        raise UntrustedDataError(f"refusing dtype {shown_value(descr)}: only plain bool/int/float arrays are accepted")
    return np.dtype(("" if order in "|=" else order) + kind)


def checked_shape(shape) -> tuple[int, ...]:
    """A shape from a file: a tuple of at most 32 non-negative Python ints."""
    if not isinstance(shape, (tuple, list)) or len(shape) > MAX_NDIM:
        raise UntrustedDataError(f"shape {shown_value(shape, 80)} is not a tuple of at most {MAX_NDIM} sizes")
    if not all(type(s) is int and s >= 0 for s in shape):  # bool and huge-float tricks excluded
        raise UntrustedDataError(f"shape {shown_value(shape, 80)} holds something other than non-negative integers")
    return tuple(shape)


def array_nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes an array of ``shape`` and ``dtype`` needs; refuses more than MAX_ARRAY_BYTES."""
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if nbytes > MAX_ARRAY_BYTES:
        raise UntrustedDataError(
            f"an array of shape {shape} {dtype} would need {nbytes} bytes, more than the {MAX_ARRAY_BYTES} allowed"
        )
    return nbytes


def array_from_bytes(raw: bytes | bytearray, dtype: np.dtype, shape, *, fortran_order: bool = False) -> np.ndarray:
    """raw bytes, a plain dtype, a shape -> a writable native-order array (shape), copied once.

    The byte count must equal shape × itemsize exactly: nothing is allocated that the file does not hold.
    """
    shape = checked_shape(shape)
    nbytes = array_nbytes(shape, dtype)
    if len(raw) != nbytes:
        raise UntrustedDataError(
            f"an array of shape {shape} {dtype} needs {nbytes} bytes but the file "
            f"holds {len(raw)} for it (truncated or damaged)"
        )
    native = dtype.newbyteorder("=")
    if nbytes == 0:
        return np.zeros(shape, dtype=native)
    flat = np.frombuffer(raw, dtype=dtype, count=math.prod(shape))
    return checked_text(flat.reshape(shape, order="F" if fortran_order else "C").astype(native, copy=True))


def array_from_stream(file: BinaryIO, dtype: np.dtype, shape, *, fortran_order: bool = False) -> np.ndarray:
    """The next shape × itemsize bytes of a seekable binary stream -> a writable native-order array.

    Nothing is allocated before the stream is known to hold those bytes; they are read straight into
    the array (no intermediate copy), so the limit is what the file really holds, not a fixed cap.
    """
    shape = checked_shape(shape)
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    here = file.tell()
    left = file.seek(0, io.SEEK_END) - here
    file.seek(here)
    if nbytes > left:
        raise UntrustedDataError(
            f"an array of shape {shape} {dtype} needs {nbytes} bytes but the file "
            f"holds {max(left, 0)} after it (truncated or damaged)"
        )
    buffer = np.empty(nbytes, dtype=np.uint8)
    view, got = memoryview(buffer), 0
    while got < nbytes:  # a read may return less than asked for
        count = file.readinto(view[got:])
        if not count:
            raise UntrustedDataError(f"the file ends {nbytes - got} bytes into an array of shape {shape} {dtype}")
        got += count
    array = buffer.view(dtype).reshape(shape, order="F" if fortran_order else "C")
    return checked_text(array if dtype.isnative else array.astype(dtype.newbyteorder("=")))


def checked_text(array: np.ndarray) -> np.ndarray:
    """``array``, refused when it is text (numpy's 'U': one 32-bit code point a character, native order
    here) with a value that is no Unicode character: numpy hands one beyond U+10FFFF to Python, which
    fails with a SystemError, and a surrogate makes a string that nothing can encode."""
    if array.dtype.kind == "U" and array.size:
        code_points = array.ravel(order="K").view(np.uint32)
        if ((code_points > 0x10FFFF) | ((code_points >= 0xD800) & (code_points <= 0xDFFF))).any():
            raise UntrustedDataError(f"a {array.dtype} text array holds values that are no Unicode characters")
    return array


def _decompressor(raw: bytes):
    """joblib's containers: zlib ('ZF' header or bare), gzip, bz2, xz/lzma; None when not compressed."""
    if raw.startswith(b"ZF"):  # joblib < 0.10: 'ZF' + length + zlib
        start = raw.find(b"x", 2)
        if start < 0:
            raise UntrustedDataError("the 'ZF' compressed container holds no zlib stream")
        return (lambda: zlib.decompressobj()), raw[start:]
    if raw[:1] == b"\x78":
        return (lambda: zlib.decompressobj()), raw
    if raw[:2] == b"\x1f\x8b":
        return (lambda: zlib.decompressobj(wbits=31)), raw
    if raw[:3] == b"BZh":
        return bz2.BZ2Decompressor, raw
    if raw[:6] == b"\xfd7zXZ\x00" or raw[:2] == b"\x5d\x00":  # xz, or lzma-alone as joblib writes it
        return lzma.LZMADecompressor, raw
    return None, raw


def is_compressed(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first 6 bytes) is one of joblib's compressed containers."""
    return head.startswith(b"ZF") or _decompressor(head)[0] is not None  # 'ZF': its zlib start lies further on


def decompress_bounded(raw: bytes, limit: int) -> bytes:
    """raw file bytes -> the decompressed stream (or raw itself when not compressed), at most ``limit``
    bytes; refuses streams that would expand further (TooLargeError when ``limit`` is the fixed cap
    rather than the expansion ratio). Concatenated streams are read one after another."""
    new, data = _decompressor(raw)
    if new is None:
        return raw
    out = bytearray()
    while data:
        engine = new()
        while True:
            chunk = engine.decompress(data, min(_CHUNK, limit + 1 - len(out)))
            out += chunk
            if len(out) > limit and limit >= MAX_DECODED_BYTES:
                raise TooLargeError(
                    f"its compressed data expands past {limit} bytes, the most a compressed file is "
                    "decompressed to here; a genuine file this large is read when stored uncompressed"
                )
            if len(out) > limit:
                raise UntrustedDataError(
                    f"the compressed data expands past {limit} bytes (a damaged file or a decompression bomb)"
                )
            if engine.eof:
                break
            if hasattr(engine, "unconsumed_tail"):  # zlib hands back what it did not read
                data, pending = engine.unconsumed_tail, bool(engine.unconsumed_tail)
            else:  # bz2/lzma keep it inside
                data, pending = b"", not engine.needs_input
            if not pending and not chunk:
                raise UntrustedDataError("the compressed data ends early (the file is truncated)")
        data = engine.unused_data
    return bytes(out)

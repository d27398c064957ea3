"""Bounded reading of ``.npy`` and ``.npz`` files that a user may have downloaded.

``numpy.load`` trusts a file's declared shapes and sizes: a 1 MB ``.npz`` can ask for gigabytes and
a damaged one escapes as MemoryError, ValueError, BadZipFile or OverflowError. Here:

- the ``.npy`` header is parsed here (at most :data:`MAX_HEADER_BYTES`, a literal dict with exactly
  ``descr``, ``fortran_order``, ``shape``); the dtype comes from
  :func:`bounded_arrays.plain_dtype` (plain numbers, and fixed-width text where asked), never objects;
- a member's declared shape × itemsize must equal the size the zip declares for it, the bytes it
  really decompresses to, and stay within the file's :func:`bounded_arrays.byte_budget` (all members
  together); only stored or deflated members are read, never encrypted ones;
- the zip's end record (zip64 too) may declare at most :data:`MAX_MEMBERS` entries in a central
  directory of at most :data:`MAX_DIRECTORY_BYTES`, checked before ``zipfile`` builds an object
  per entry, and the entries counted again once read (:func:`open_bounded_zip`, which the server's
  checkpoint and model-data readers use with their own bounds);
- every failure, whatever its kind, becomes one ``VibeError`` naming the file and what is wrong.
"""

from __future__ import annotations

import ast
import io
import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

import numpy as np

from .bounded_arrays import (
    ByteBudget,
    UntrustedDataError,
    array_from_bytes,
    array_nbytes,
    checked_shape,
    plain_dtype,
)
from .errors import VibeError, failure_words
from .regular_file import NOT_REGULAR, NotRegularFileError, open_regular_file
from .zip_directory import central_directory

MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 10_000  # numpy's own default limit
MAX_MEMBERS = 100_000
# Room for MAX_MEMBERS directory entries of 112 bytes: 46, a result's longest names
# ('track_12345678/betas_track.npy' is 30) and a zip64 extra field (28) past 4 GiB. The end record's
# count may lie: zipfile builds an object for every entry the directory holds, so its size bounds that
# work (at worst ~2 s and ~120 MB).
MAX_DIRECTORY_BYTES = 112 * MAX_MEMBERS
_HEADER_KEYS = {"descr", "fortran_order", "shape"}


def _read_exact(file, n: int, what: str) -> bytes:
    data = file.read(n)
    if len(data) != n:
        raise UntrustedDataError(f"{what} ends early (the file is truncated)")
    return data


def _read_header(file) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """An open .npy stream -> (dtype, shape, fortran_order, header length in bytes)."""
    if _read_exact(file, 6, "the .npy header") != MAGIC:
        raise UntrustedDataError("an array is not in numpy's .npy format")
    major, _minor = _read_exact(file, 2, "the .npy header")
    if major not in (1, 2, 3):
        raise UntrustedDataError(f".npy format version {major} is unknown")
    size_bytes = 2 if major == 1 else 4
    length = int.from_bytes(_read_exact(file, size_bytes, "the .npy header"), "little")
    if length > MAX_HEADER_BYTES:
        raise UntrustedDataError(f"the .npy header claims {length} bytes, more than the {MAX_HEADER_BYTES} allowed")
    try:
        text = _read_exact(file, length, "the .npy header").decode("utf-8" if major == 3 else "latin1")
    except UnicodeDecodeError:
        raise UntrustedDataError("the .npy header is not UTF-8 text") from None
    try:
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise UntrustedDataError("the .npy header is not a literal dict") from None
    if not isinstance(header, dict) or set(header) != _HEADER_KEYS or type(header["fortran_order"]) is not bool:
        raise UntrustedDataError(f"the .npy header {text[:80]!r} is not numpy's {{descr, fortran_order, shape}}")
    return header["descr"], checked_shape(header["shape"]), header["fortran_order"], 6 + 2 + size_bytes + length


def _read_array(file, available: int, *, allow_text: bool) -> np.ndarray:
    """An open .npy stream of ``available`` declared bytes -> its array, sizes checked before reading."""
    descr, shape, fortran, header_bytes = _read_header(file)
    dtype = plain_dtype(descr, allow_text=allow_text)
    nbytes = array_nbytes(shape, dtype)
    if header_bytes + nbytes != available:
        raise UntrustedDataError(
            f"an array of shape {shape} {dtype} needs {nbytes} bytes but {available - header_bytes} are declared for it"
        )
    array = array_from_bytes(_read_exact(file, nbytes, "the array data"), dtype, shape, fortran_order=fortran)
    if file.read(1):
        raise UntrustedDataError(f"an array of shape {shape} {dtype} is followed by extra bytes")
    return array


@contextmanager
def _opened(source) -> Iterator[BinaryIO]:
    """A path opened as a regular file (never a device, FIFO or socket), or the binary file given."""
    if isinstance(source, (str, os.PathLike)):
        with open_regular_file(source) as file:
            yield file
    else:
        yield source


def _size_of(file: BinaryIO) -> int:
    """The bytes from the file's position to its end."""
    here = file.tell()
    size = file.seek(0, io.SEEK_END)
    file.seek(here)
    return size - here


def _label(source, label: str | None) -> str:
    if label:
        return label
    return f"'{source}'" if isinstance(source, (str, os.PathLike)) else "the file"


def _fail(label: str, err: Exception, hint: str) -> VibeError:
    if isinstance(err, NotRegularFileError):
        subject = label[:1].upper() + label[1:]
        return VibeError(f"{subject} {NOT_REGULAR}, so it was not read." + (f" {hint}" if hint else ""))
    reason = str(err) if isinstance(err, UntrustedDataError) else failure_words(err)
    return VibeError(f"Cannot read {label}: {reason}." + (f" {hint}" if hint else ""))


def check_zip_directory(
    file, *, max_members: int = MAX_MEMBERS, max_directory_bytes: int = MAX_DIRECTORY_BYTES
) -> None:
    """Refuses (UntrustedDataError) a zip in the binary ``file`` whose end record states more than
    ``max_members`` entries or a central directory larger than ``max_directory_bytes`` (or than the
    file), before ``zipfile`` reads that directory (it builds an object per entry, whatever the end
    record's count says); and a file with no end record. The one check of every zip a user may have
    downloaded (``.npz`` files, checkpoints, ``vibe_data.zip``). Its messages complete "it has ..."."""
    size = file.seek(0, io.SEEK_END)
    numbers = central_directory(file)
    if numbers is None:
        raise UntrustedDataError("no end-of-central-directory record (it is not a zip archive)")
    entries, directory_bytes = numbers
    if entries > max_members:
        raise UntrustedDataError(f"a zip directory listing {entries} entries, more than {max_members}")
    if directory_bytes > min(size, max_directory_bytes):
        raise UntrustedDataError(
            f"a zip directory of {directory_bytes} bytes, more than the file holds or the "
            f"{max_directory_bytes} that {max_members} entries need"
        )


def open_bounded_zip(
    file, *, max_members: int = MAX_MEMBERS, max_directory_bytes: int = MAX_DIRECTORY_BYTES
) -> zipfile.ZipFile:
    """``zipfile.ZipFile`` on the binary ``file`` (from where it stands) once its end record passed
    :func:`check_zip_directory`, and its entries counted again: the end record's count may understate
    them (zipfile reads entries until the directory's bytes run out). UntrustedDataError else."""
    here = file.tell()
    check_zip_directory(file, max_members=max_members, max_directory_bytes=max_directory_bytes)
    file.seek(here)
    archive = zipfile.ZipFile(file)
    if len(archive.infolist()) > max_members:
        archive.close()
        raise UntrustedDataError(f"a zip directory listing {len(archive.infolist())} entries, more than {max_members}")
    return archive


BOUNDED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_COMPRESSION_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}


def unbounded_member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why the zip member ``info`` must not be read (None when it may): it is encrypted, or compressed
    otherwise than stored or deflated. Only there does a read of n bytes decompress at most n: zipfile
    hands bzip2 and LZMA data to their decompressors without a limit, so a few KB may fill the memory
    whatever size the member declares. The text completes "'member' ..."."""
    if info.flag_bits & 0x1:
        return "is encrypted"
    if info.compress_type not in BOUNDED_COMPRESSION:
        name = _COMPRESSION_NAMES.get(info.compress_type)
        return f"uses zip compression method {info.compress_type}" + (f" ({name})" if name else "")
    return None


@contextmanager
def _open_zip(source) -> Iterator[tuple[zipfile.ZipFile, int]]:
    """(``zipfile.ZipFile`` of ``source``, the bytes it holds) once :func:`open_bounded_zip` passed,
    on one open file (the file checked is the file read)."""
    with _opened(source) as file:
        size = _size_of(file)
        with open_bounded_zip(file) as archive:
            yield archive, size


def read_npy(source, *, label: str | None = None, hint: str = "", allow_text: bool = False) -> np.ndarray:
    """A ``.npy`` path or binary file -> its array (plain dtype, size checked); else one VibeError."""
    label = _label(source, label)
    try:
        with _opened(source) as file:
            size = _size_of(file)
            ByteBudget(size).take(size, "the array")
            return _read_array(file, size, allow_text=allow_text)
    except Exception as err:
        raise _fail(label, err, hint) from err


def npz_names(source, *, label: str | None = None, hint: str = "") -> list[str]:
    """The array names in a ``.npz`` (member names without '.npy'), without reading any array."""
    label = _label(source, label)
    try:
        with _open_zip(source) as (archive, _size):
            return [info.filename.removesuffix(".npy") for info in archive.infolist()]
    except Exception as err:
        raise _fail(label, err, hint) from err


def read_npz(
    source, *, names: Iterable[str] | None = None, label: str | None = None, hint: str = "", allow_text: bool = True
) -> dict[str, np.ndarray]:
    """A ``.npz`` path or binary file -> {name: array} for ``names`` (all when None); arrays absent from
    the file are simply not in the dict. Limits: see the module docstring; any failure is one VibeError."""
    label = _label(source, label)
    wanted = None if names is None else set(names)
    try:
        arrays: dict[str, np.ndarray] = {}
        with _open_zip(source) as (archive, size):
            budget = ByteBudget(size)
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                if wanted is not None and name not in wanted:
                    continue
                if name in arrays:
                    raise UntrustedDataError(f"the archive holds '{name}' twice")
                problem = unbounded_member_problem(info)
                if problem:
                    raise UntrustedDataError(f"'{name}' {problem}; numpy writes stored or deflated members only")
                budget.take(info.file_size, f"'{name}'")
                with archive.open(info) as member:
                    try:
                        arrays[name] = _read_array(member, info.file_size, allow_text=allow_text)
                    except UntrustedDataError as err:
                        raise UntrustedDataError(f"'{name}': {err}") from None
                    except (zlib.error, zipfile.BadZipFile, EOFError):  # broken deflate data, a wrong CRC-32
                        raise UntrustedDataError(f"'{name}' is damaged: its data fails the archive's checks") from None
        return arrays
    except Exception as err:
        raise _fail(label, err, hint) from err

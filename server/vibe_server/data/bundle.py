"""The model-data bundle: installing and checking it. Where it lives, its file names and reading the
files are :mod:`vibe_server.data.loading`'s (re-exported here under the same names).

The files are licensed to each user (SMPL) or large (weights), so they never ship with VIBE Mocap:
``vibe-mocap data install SOURCE`` copies them from the official ``vibe_data.zip``, a folder or a
URL (a download cut off continues where it stopped) into the data folder, each only once it passes
the same validation as ``vibe-mocap data check`` (an invalid file never replaces an installed one),
and ``data check`` says, file by file, what is present, missing or invalid. The folder is chosen
by: command-line flag > ``$VIBE_DATA_DIR`` > the platform's user-data folder (see :func:`default_data_dir`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import BinaryIO

from vibe_blender.core import safe_json
from vibe_blender.core.atomic_file import atomic_write_bytes, sync_folder
from vibe_blender.core.bounded_arrays import UntrustedDataError
from vibe_blender.core.client import parse_content_length
from vibe_blender.core.errors import VibeError, failure_words
from vibe_blender.core.regular_file import NotRegularFileError, open_regular_file
from vibe_blender.core.safe_npz import open_bounded_zip, unbounded_member_problem
from vibe_blender.core.smpl_model import MAX_SMPL_PKL_BYTES, load_smpl_pkl

from ..folder_lock import folder_lock
from . import synthetic

# The folder, the file names and the readers are the loader's; install and check use the same ones.
from .loading import (  # noqa: F401 - re-exported: `bundle.X` is the install/check side's name for them
    ENV_VAR,
    EXTRA_REGRESSOR,
    H36M_REGRESSOR,
    MEAN_PARAMS,
    MODEL_FILES,
    OPTIONAL_FILES,
    REQUIRED_FILES,
    SMPL_FILE,
    SPIN_CHECKPOINT,
    VIBE_CHECKPOINT,
    VIBE_CHECKPOINT_3DPW,
    YOLO_WEIGHTS,
    YOLO_WEIGHTS_BYTES,
    default_data_dir,
    install_command,
    install_hint,
    load_joint_regressor,
    load_mean_params,
    require_files,
    resolve_data_dir,
    yolo_weights_problem,
)

MiB, GiB = 1 << 20, 1 << 30
# The most each model file may hold: the official files' sizes with a wide margin, so that a wrong or
# hostile source (a zip bomb, a link to /dev/zero) cannot fill the disk. The regressors are
# (J, 6890) float64 (under 1 MB), the mean parameters 157 floats, SMPL_NEUTRAL.pkl tens of MB, the
# checkpoints a few hundred MB at most; yolov3.weights its official size at most (format 0.1 is 4 bytes less).
MAX_FILE_BYTES = {
    SMPL_FILE: MAX_SMPL_PKL_BYTES,  # the add-on's bound too
    EXTRA_REGRESSOR: 8 * MiB,
    H36M_REGRESSOR: 8 * MiB,
    MEAN_PARAMS: 1 * MiB,
    SPIN_CHECKPOINT: 1 * GiB,
    VIBE_CHECKPOINT: 1 * GiB,
    VIBE_CHECKPOINT_3DPW: 1 * GiB,
    YOLO_WEIGHTS: YOLO_WEIGHTS_BYTES,
}
MAX_TOTAL_BYTES = 3 * GiB  # all model files of one install together
MAX_DOWNLOAD_BYTES = 4 * GiB  # vibe_data.zip also holds files that are not installed (a sample video)
# vibe_data.zip holds a few dozen entries; zipfile builds an object per central-directory entry before
# any other check, so the directory is bounded first (a 13 MB archive may list 300 000 entries).
MAX_ARCHIVE_MEMBERS = 10_000
MAX_ARCHIVE_DIRECTORY_BYTES = 4 * MiB
# A download slower than this, on average over the window, has stalled (vibe_data.zip would take most
# of a day): it is stopped, saying so.
MIN_DOWNLOAD_RATE = 10 * 1024  # bytes per second
RATE_WINDOW_SECONDS = 60


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------


@dataclass
class FileStatus:
    name: str
    status: str  # "present" | "missing" | "invalid"
    detail: str = ""


def _check_smpl(path: Path) -> str:
    model = load_smpl_pkl(path, hint="")  # data check and install end with what to do
    if model.num_vertices != 6890:
        raise VibeError(f"{model.num_vertices} vertices, expected 6890 (SMPL)")
    return f"SMPL, {model.num_vertices} vertices, {model.faces.shape[0]} faces"


def _check_regressor(num_joints: int) -> Callable[[Path], str]:
    def check(path: Path) -> str:
        load_joint_regressor(path, num_joints)
        return f"({num_joints}, 6890)"

    return check


def _check_mean_params(path: Path) -> str:
    load_mean_params(path)
    return "pose, shape, cam"


def _check_spin(path: Path) -> str:
    from .. import checkpoints  # start-up: torch loads only when a checkpoint is checked
    from ..model.backbone import ResNet50Features

    state = checkpoints.load_spin_checkpoint(path)
    checkpoints.load_spin_into(SimpleNamespace(backbone=ResNet50Features()), state, source=path)
    return f"{len(state)} tensors"


def _check_vibe(path: Path) -> str:
    from .. import checkpoints  # start-up: torch loads only when a checkpoint is checked

    ckpt = checkpoints.load_vibe_checkpoint(path)  # performance: a finite np.float64 or None
    checkpoints.check_generator_keys(ckpt["gen_state_dict"], source=path)
    perf = ckpt["performance"]
    return f"{len(ckpt['gen_state_dict'])} tensors" + (f", PA-MPJPE {perf:.2f}" if perf is not None else "")


def _check_yolo(path: Path) -> str:
    with open_regular_file(path) as file:
        problem = yolo_weights_problem(file.read(8), os.fstat(file.fileno()).st_size)
    if problem:
        raise VibeError(problem)
    return "Darknet YOLOv3, size and header OK"


CHECKS: dict[str, Callable[[Path], str]] = {
    SMPL_FILE: _check_smpl,
    EXTRA_REGRESSOR: _check_regressor(9),
    H36M_REGRESSOR: _check_regressor(17),
    MEAN_PARAMS: _check_mean_params,
    SPIN_CHECKPOINT: _check_spin,
    VIBE_CHECKPOINT: _check_vibe,
    VIBE_CHECKPOINT_3DPW: _check_vibe,
    YOLO_WEIGHTS: _check_yolo,
}


def check_file(name: str, path: Path) -> FileStatus:
    """One model file's status by ``data check``'s validators; 'invalid' carries the reason (whatever
    went wrong: a file they did not foresee is invalid, so an install goes on with the other files)."""
    if not path.is_file():
        if os.path.lexists(path):
            return FileStatus(name, "invalid", "not a regular file (a folder, device, FIFO, socket or broken link)")
        return FileStatus(name, "missing", "optional" if name in OPTIONAL_FILES else "")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES[name]:  # never read an impossible file
        return FileStatus(
            name, "invalid", f"{size:,} bytes, more than any real {name} ({MAX_FILE_BYTES[name]:,} at most)"
        )
    try:
        return FileStatus(name, "present", CHECKS[name](path))
    except VibeError as err:
        return FileStatus(name, "invalid", str(err))
    except Exception as err:  # noqa: BLE001 - a file the validators did not foresee is invalid, never a crash
        return FileStatus(name, "invalid", f"unreadable as {name} ({failure_words(err)})")


def check_bundle(data_dir: Path, names=REQUIRED_FILES + OPTIONAL_FILES) -> list[FileStatus]:
    """Each file's status; 'invalid' carries the reason."""
    return [check_file(name, data_dir / name) for name in names]


def bundle_ok(statuses: list[FileStatus]) -> bool:
    return all(s.status == "present" for s in statuses if s.name in REQUIRED_FILES)


def still_to_install(statuses: list[FileStatus], data_dir: Path) -> str:
    """What an install into ``data_dir`` that went well leaves to do: the required files not present
    yet, by name."""
    names = [s.name for s in statuses if s.name in REQUIRED_FILES and s.status != "present"]
    if not names:
        return "All required files are present and valid."
    where = "it" if len(names) == 1 else "them"
    return f"Still to install: {', '.join(names)}. Install {where} the same way: '{install_command(data_dir)}'."


# --------------------------------------------------------------------------------------------
# Installing
# --------------------------------------------------------------------------------------------

KNOWN_FILES = REQUIRED_FILES + OPTIONAL_FILES
CHUNK_BYTES = 1 << 20


@dataclass
class _Found:
    """One model file found in the source, checked but not yet copied."""

    name: str  # the model file it provides
    entry: str  # where it is, for messages
    size: int  # bytes, from the file system or as the zip declares them
    open: Callable[[], BinaryIO]


def _refuse(entry: str, problem: str, advice: str = "") -> VibeError:
    return VibeError(
        f"Not installed: '{entry}' {problem}. "
        + (advice or "Use the official files (vibe_data.zip and yolov3.weights) as downloaded.")
    )


def _check_size(name: str, entry: str, size: int) -> None:
    if size > MAX_FILE_BYTES[name]:
        raise _refuse(entry, f"holds {size:,} bytes, more than any real {name} ({MAX_FILE_BYTES[name]:,} at most)")


def _open_regular(path: Path, entry: str, *, follow_symlink: bool) -> BinaryIO:
    """:func:`open_regular_file`, its refusals worded for the install."""
    try:
        return open_regular_file(path, follow_symlink=follow_symlink)
    except NotRegularFileError as err:
        raise _refuse(entry, str(err)) from None
    except OSError as err:
        raise _refuse(
            entry, f"cannot be opened ({err.strerror})", "Check that it is a plain file you can read."
        ) from err


def _regular_size(path: Path, entry: str, *, follow_symlink: bool) -> int:
    """Size of a regular file; a symbolic link (unless followed) or a special file is refused."""
    try:
        info = os.stat(path, follow_symlinks=follow_symlink)
    except OSError as err:
        raise _refuse(entry, f"cannot be read ({err.strerror})", "Check that it is a plain file you can read.") from err
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(entry, "is a symbolic link", "Copy the real file into the folder, or install it by its own path.")
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(entry, "is not a regular file (a device, FIFO or socket)")
    return info.st_size


def _found_in_folder(folder: Path) -> list[_Found]:
    """The first (in sorted path order) file of each known name anywhere under ``folder``. Links are
    never followed: a link, or a special file, with a model file's name is refused."""
    matches: dict[str, list[Path]] = {}
    for root, dirs, files in os.walk(folder):  # does not descend into linked folders
        for entry in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            if entry in KNOWN_FILES:
                matches.setdefault(entry, []).append(Path(root) / entry)
    found = []
    for name in KNOWN_FILES:
        paths = sorted(matches.get(name, ()))
        sizes = [_regular_size(path, str(path), follow_symlink=False) for path in paths]  # refuses links
        if paths:
            path, size = paths[0], sizes[0]
            _check_size(name, str(path), size)
            found.append(_Found(name, str(path), size, lambda p=path: _open_regular(p, str(p), follow_symlink=False)))
    return found


@contextlib.contextmanager
def _open_archive(path: Path, source: str) -> Iterator[zipfile.ZipFile]:
    """``zipfile.ZipFile`` on the archive once its central directory is bounded (zipfile builds an
    object per entry before anything else is checked), on one open file: the file checked is the file read."""
    with open(path, "rb") as file:
        try:
            archive = open_bounded_zip(
                file, max_members=MAX_ARCHIVE_MEMBERS, max_directory_bytes=MAX_ARCHIVE_DIRECTORY_BYTES
            )
        except UntrustedDataError as err:
            raise _refuse(source, f"has {err}, which vibe_data.zip has not", "Get it again.") from err
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise _refuse(source, f"is a damaged zip archive ({err})", "Get it again.") from err
        with archive:
            yield archive


def _found_in_zip(archive: zipfile.ZipFile, source: str) -> list[_Found]:
    """The first member of each known name. Link and special-file members are refused, and so are
    members whose reads are not bounded by the bytes asked (encrypted, or bzip2 or LZMA: there a
    declared size bounds nothing); each member's declared size is bounded before anything is decompressed."""
    found: dict[str, _Found] = {}
    for info in archive.infolist():
        name = Path(info.filename).name
        if info.is_dir() or name not in KNOWN_FILES:
            continue
        entry = f"{source}:{info.filename}"
        kind = stat.S_IFMT(info.external_attr >> 16)  # Unix file type, 0 when not recorded
        if stat.S_ISLNK(kind):
            raise _refuse(entry, "is a symbolic link")
        if kind and not stat.S_ISREG(kind):
            raise _refuse(entry, "is not a regular file")
        problem = unbounded_member_problem(info)
        if problem:
            raise _refuse(
                entry,
                f"{problem}; only stored or deflated files are read from a zip (vibe_data.zip's are deflated)",
                "Use the official vibe_data.zip as downloaded, or zip the files again with plain zip (deflate).",
            )
        _check_size(name, entry, info.file_size)
        found.setdefault(name, _Found(name, entry, info.file_size, lambda i=info: archive.open(i)))
    return list(found.values())


def _web_page(source: str, *, downloaded: bool) -> VibeError:
    """The error for a web page where a file was expected: a download link that answers with a page
    (Google Drive's confirmation for large files), fetched by the install or saved by the user."""
    what = f"for '{source}' the server sent" if downloaded else f"'{source}' is"
    return VibeError(
        f"Not installed: {what} a web page, not the file (Google Drive asks for a confirmation for large files). "
        "Download it in a browser and install the downloaded file with 'vibe-mocap data install FILE'."
    )


def _starts_like_a_web_page(path: Path, source: str) -> bool:
    """Whether the file begins as HTML does ('<', after blanks or a byte-order mark); no model file does."""
    with _open_regular(path, source, follow_symlink=True) as file:
        return file.read(64).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def _chunks_at_a_living_rate(response: http.client.HTTPResponse, url: str) -> Iterator[bytes]:
    """The answer's body as it arrives (each read returns what came, never waits for a full chunk);
    VibeError once it arrives at under MIN_DOWNLOAD_RATE over RATE_WINDOW_SECONDS. The socket's timeout
    only ends a download that sends nothing at all: one byte every few seconds would run for years."""
    window_start, window_bytes = time.monotonic(), 0
    while chunk := response.read1(CHUNK_BYTES):
        yield chunk
        window_bytes += len(chunk)
        elapsed = time.monotonic() - window_start
        if elapsed >= RATE_WINDOW_SECONDS:
            if window_bytes < MIN_DOWNLOAD_RATE * elapsed:
                raise VibeError(
                    f"The download of '{url}' was stopped: it brought {window_bytes:,} bytes in {elapsed:.0f} s, "
                    f"under the {MIN_DOWNLOAD_RATE // 1024} KiB/s it needs (the server or the connection stalls). "
                    "Try again later, or download it in a browser and install the file with "
                    "'vibe-mocap data install FILE'."
                )
            window_start, window_bytes = time.monotonic(), 0


# A connection cut off mid-download is tried again, from where it stopped where the server allows
# (Range with If-Range); what an interrupted install downloaded is kept in the data folder for the next.
DOWNLOAD_TRIES = 4  # the first try and 3 more
RETRY_BACKOFF_SECONDS = 2.0  # before the second try; doubled before each next
DOWNLOAD_TIMEOUT_SECONDS = 60  # a connection that sends nothing for this long is cut off
PARTIAL_PREFIX = ".vibe-download-"  # + sha256(url)[:16] + .part / .json, in the data folder
PARTIAL_MAX_AGE_SECONDS = 7 * 24 * 3600  # an interrupted download left longer than this is deleted
MAX_SIDECAR_BYTES = 4096
MAX_VALIDATOR_CHARS = 1024
CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+)")


class _CutOff(Exception):
    """The answer ended before the file did: the connection closed, was reset or timed out (or, for a
    download that has bytes to continue, could not be made again: a blip of the network)."""


# what opening a connection raises when the network, not the server's answer, failed
CONNECTION_FAILURES = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.RemoteDisconnected)


@dataclass
class _Partial:
    """A download under way: ``offset`` bytes of ``url`` in ``part``, and what continuing it needs
    (``sidecar`` holds them for the next install)."""

    url: str
    part: Path
    sidecar: Path
    validator: str = ""  # for If-Range: the strong ETag, else Last-Modified; "" when the server sent neither
    total: int | None = None  # the file's size; None when the server did not say
    offset: int = 0

    @property
    def resumable(self) -> bool:
        return bool(self.validator) and self.total is not None

    def discard(self) -> None:
        for path in (self.part, self.sidecar):
            path.unlink(missing_ok=True)


def _partial_paths(folder: Path, url: str) -> tuple[Path, Path]:
    stem = PARTIAL_PREFIX + hashlib.sha256(url.encode()).hexdigest()[:16]
    return folder / f"{stem}.part", folder / f"{stem}.json"


def _kept_partial(folder: Path, url: str, limit: int) -> _Partial:
    """The download of ``url`` an interrupted install left in ``folder``, to continue; a new one (from
    byte 0) when there is none, or when anything about it is odd: the sidecar is a file anyone may write."""
    part, sidecar = _partial_paths(folder, url)
    try:
        with open_regular_file(sidecar, follow_symlink=False) as file:
            text = file.read(MAX_SIDECAR_BYTES + 1)
        kept = safe_json.loads(text) if len(text) <= MAX_SIDECAR_BYTES else None
        info = os.lstat(part)
    except (OSError, ValueError):  # missing, a link or special file, not JSON or nested too deep (ValueErrors)
        return _Partial(url, part, sidecar)
    if not isinstance(kept, dict) or kept.get("url") != url or not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        return _Partial(url, part, sidecar)
    validator, total = kept.get("validator"), kept.get("total")
    if not (isinstance(validator, str) and validator and _usable_validator(validator)):
        return _Partial(url, part, sidecar)
    if type(total) is not int or not 0 < info.st_size < total <= limit:  # type(): True is an int too
        return _Partial(url, part, sidecar)
    return _Partial(url, part, sidecar, validator, total, info.st_size)


def _open_part(partial: _Partial) -> BinaryIO:
    """The partial file open for writing at ``partial.offset`` (a new file at 0); OSError unless it
    is a plain file of its own (no link, FIFO or device put in its place is written through)."""
    if partial.offset == 0:
        atomic_write_bytes(partial.part, b"", private=True)  # renamed into place: never written through a link
    flags = os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(partial.part, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise OSError(errno.EINVAL, "the partial download is not a plain file of its own", str(partial.part))
        if info.st_size < partial.offset:  # bytes counted never reached the disk (its close failed): no gap of zeros
            raise OSError(errno.EIO, "the partial download is shorter than the bytes received", str(partial.part))
        os.ftruncate(fd, partial.offset)  # what a try wrote past the bytes counted (none, unless it crashed)
        os.lseek(fd, partial.offset, os.SEEK_SET)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def _usable_validator(text: str) -> bool:
    """Whether ``text`` may go into an If-Range header (and a sidecar the next install accepts)."""
    return text.isascii() and text.isprintable() and len(text) <= MAX_VALIDATOR_CHARS


def _validator(headers) -> str:
    """What If-Range may name: a strong ETag (a weak one never matches a range), else Last-Modified."""
    etag = (headers.get("ETag") or "").strip()
    if etag.startswith('"') and etag.endswith('"') and len(etag) > 1:
        return etag
    return (headers.get("Last-Modified") or "").strip()


def _in_words(size: int) -> str:
    return f"{size / 1e6:,.0f} MB" if size >= 10**6 else f"{size:,} bytes"


def _start_over(partial: _Partial, response: http.client.HTTPResponse, limit: int, too_big: tuple[str, str]) -> None:
    """Take a whole-file answer: the partial restarts from 0 with this answer's size and validator
    (the sidecar follows: rewritten, or deleted when the server gave nothing to continue by)."""
    partial.offset = 0  # what was kept is not continued, whatever this answer turns out to be
    total = parse_content_length(response.headers.get("Content-Length"))
    if total is not None and total > limit:
        raise _refuse(partial.url, *too_big)
    validator = _validator(response.headers)
    if not _usable_validator(validator):
        validator = ""  # not one the next install would accept
    partial.validator, partial.total = validator, total
    if partial.resumable:
        kept = {"url": partial.url, "validator": partial.validator, "total": partial.total}
        atomic_write_bytes(partial.sidecar, json.dumps(kept).encode(), private=True)
    else:
        partial.sidecar.unlink(missing_ok=True)


def _check_continuation(partial: _Partial, response: http.client.HTTPResponse) -> None:
    """A 206 must hold exactly the rest of the same file: from the offset asked to the total the first answer gave."""
    sent = response.headers.get("Content-Range") or ""
    parts = CONTENT_RANGE.fullmatch(sent.strip())
    if not parts or [int(n) for n in parts.groups()] != [partial.offset, partial.total - 1, partial.total]:
        partial.discard()  # the next install starts over
        raise VibeError(
            f"Could not download '{partial.url}': asked to continue at byte {partial.offset:,} of "
            f"{partial.total:,}, the server sent '{sent[:100]}' instead. Run the same command again to download "
            "it from the start, or download it in a browser and install the file with 'vibe-mocap data install FILE'."
        )


def _body(response: http.client.HTTPResponse, url: str) -> Iterator[bytes]:
    """:func:`_chunks_at_a_living_rate`, a connection that fails while sending it being :class:`_CutOff`
    (the disk's errors, raised where the chunks are written, are not)."""
    try:
        yield from _chunks_at_a_living_rate(response, url)
    except (OSError, http.client.HTTPException) as err:  # reset, timeout, IncompleteRead (chunked)
        raise _CutOff() from err


def _fetch(partial: _Partial, name: str, limit: int, log: Callable[[str], None]) -> None:
    """One request: the rest of the file from ``partial.offset`` (all of it where the server does not
    continue), written to the partial file. :class:`_CutOff` when the answer ends before the file does."""
    from tqdm import tqdm  # start-up: only a download shows a progress bar

    too_big = (
        f"is larger than the model data can be ({limit:,} bytes at most)",
        "Check the URL: it should be vibe_data.zip or one model file.",
    )
    resuming = partial.offset > 0 and partial.resumable
    asked = {"Range": f"bytes={partial.offset}-", "If-Range": partial.validator} if resuming else {}
    request = urllib.request.Request(partial.url, headers=asked)
    try:
        response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_SECONDS)
    except urllib.error.HTTPError:
        raise  # the server's answer: not a blip
    except CONNECTION_FAILURES as err:
        if partial.offset > 0:  # the network failed again while a download was under way: tried again
            raise _CutOff() from err
        raise
    with response:
        continues = resuming and response.status == 206
        if response.headers.get_content_type() == "text/html":  # (a captive portal's: what was kept stays)
            raise _web_page(partial.url, downloaded=True)
        if continues:
            _check_continuation(partial, response)
            log(f"Resuming the download of {name} at {_in_words(partial.offset)} of {_in_words(partial.total)}.")
        elif response.status == 206:  # part of a file, asked for all of it: it would be taken as the whole
            partial.offset = 0  # nothing of it is kept
            raise VibeError(
                f"Could not download '{partial.url}': asked for the whole file, the server sent part of it (206 "
                "Partial Content). Download it in a browser and install the file with 'vibe-mocap data install FILE'."
            )
        else:
            if resuming:
                log(f"The server sent all of {name} again (it cannot continue, or the file changed): starting over.")
            _start_over(partial, response, limit, too_big)
        with (
            _writing(partial, name) as write,
            tqdm(
                total=partial.total, initial=partial.offset, unit="B", unit_scale=True, desc=f"download {name}"
            ) as bar,
        ):
            for chunk in _body(response, partial.url):
                if partial.offset + len(chunk) > limit:
                    raise _refuse(partial.url, *too_big)
                write(chunk)
                partial.offset += len(chunk)
                bar.update(len(chunk))
    if partial.total is not None and partial.offset != partial.total:  # the connection closed early
        raise _CutOff()


class _DiskRefused(Exception):
    """The partial file could not be written (``args[0]``: the OSError)."""


@contextlib.contextmanager
def _writing(partial: _Partial, name: str) -> Iterator[Callable[[bytes], object]]:
    """A function that appends to the partial file. When the disk refuses (full, or the file is not
    the plain file it should be), the partial goes (its space is freed) and one VibeError says so;
    an OSError of anything else (the terminal the progress bar writes to) is not the disk's."""

    def refused(err: OSError) -> VibeError:
        partial.discard()
        partial.offset = 0  # nothing is kept to continue
        return VibeError(
            f"The download of {name} could not be written in '{partial.part.parent}' ({err}). Free some space "
            "there (a full disk), or install into another folder with --data-dir, then install again."
        )

    def write(chunk: bytes) -> None:
        try:
            out.write(chunk)
        except OSError as err:
            raise _DiskRefused(err) from None

    try:
        out = _open_part(partial)
    except OSError as err:
        raise refused(err) from None
    try:
        yield write
    except BaseException as err:
        with contextlib.suppress(OSError):  # what failed is said: the file's own close adds nothing
            out.close()
        if isinstance(err, _DiskRefused):
            raise refused(err.args[0]) from None
        raise
    try:
        out.close()  # it flushes: the disk may refuse there too
    except OSError as err:
        raise refused(err) from None


def _cut_off(partial: _Partial, kept: bool) -> VibeError:
    """The error once every try was cut off."""
    where = f", at {_in_words(partial.offset)} of {_in_words(partial.total)}" if partial.total else ""
    if not kept:
        return VibeError(
            f"The download of '{partial.url}' was cut off before its end ({DOWNLOAD_TRIES} tries{where}); download it "
            "again (or in a browser, then install the file with 'vibe-mocap data install FILE')."
        )
    return VibeError(
        f"The download of '{partial.url}' was cut off before its end ({DOWNLOAD_TRIES} tries{where}). The part "
        "downloaded is kept: run the same command again to continue it (or download it in a browser, then install "
        "the file with 'vibe-mocap data install FILE')."
    )


def _download(url: str, dest_dir: Path, keep_dir: Path | None, log: Callable[[str], None]) -> Path:
    """Download ``url`` into ``dest_dir``. The bytes go to a partial file in ``keep_dir``, which an
    interrupted download leaves there (when the server can continue it) for the next install of the
    URL to continue; None: in ``dest_dir``, kept by nothing."""
    name = Path(urllib.request.urlparse(url).path).name
    target = dest_dir / (name if name not in ("", "..") else "download.zip")
    limit = MAX_FILE_BYTES.get(target.name, MAX_DOWNLOAD_BYTES)
    partial = _kept_partial(keep_dir or dest_dir, url, limit)

    def kept() -> bool:  # whether what was downloaded stays for the next install
        return keep_dir is not None and partial.resumable and partial.offset > 0

    try:
        for attempt in range(1, DOWNLOAD_TRIES + 1):
            try:
                _fetch(partial, target.name, limit, log)
                break
            except _CutOff:
                if attempt == DOWNLOAD_TRIES:
                    raise _cut_off(partial, kept()) from None
                log(f"The download of {target.name} was cut off; trying again ({attempt + 1} of {DOWNLOAD_TRIES}).")
                time.sleep(RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1))
            except (OSError, http.client.HTTPException) as err:
                if getattr(err, "code", None) == 416:  # no such range: nothing to continue
                    partial.offset = 0
                raise VibeError(
                    f"Could not download '{url}': {err}. Download it in a browser and install the file with "
                    "'vibe-mocap data install FILE'"
                    + ("; or run the same command again: the part downloaded is kept and continued." if kept() else ".")
                ) from err
        os.replace(partial.part, target)
        partial.discard()  # the sidecar: the download is complete, whatever the install makes of it
    except BaseException:  # Ctrl-C too: a download that can be continued is kept
        if not kept():
            partial.discard()
        raise
    return target


def _starts_like_a_zip(path: Path) -> bool:
    """Whether the file begins as a zip archive does (its first local header's signature)."""
    with open(path, "rb") as file:
        return file.read(4) == b"PK\x03\x04"


def _read_exactly(item: _Found) -> Iterator[bytes]:
    """item.size bytes from item, in chunks; a source that holds more or fewer is refused."""
    copied = 0
    try:
        with item.open() as src:
            while chunk := src.read(min(CHUNK_BYTES, item.size + 1 - copied)):
                copied += len(chunk)
                if copied > item.size:
                    break
                yield chunk
    except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as err:
        raise _refuse(item.entry, f"cannot be read ({err})", "The source is damaged: get it again.") from err
    if copied != item.size:
        raise _refuse(
            item.entry,
            f"holds {'more' if copied > item.size else f'only {copied:,}'} bytes where {item.size:,} were declared",
            "The source is damaged or changed while it was read: get it again.",
        )


def _install_one(item: _Found, stage: Path, data_dir: Path, log: Callable[[str], None]) -> bool:
    """Copy ``item`` into ``stage`` (inside data_dir, so the rename is atomic), validate the copy with
    ``data check``'s validators and only then rename it over the installed file: an invalid file never
    replaces one, and an interrupted install (a power cut too) never leaves half a file. True when installed."""
    staged = stage / item.name  # the real name: some readers and messages go by it
    try:
        with open(staged, "xb") as out:
            for chunk in _read_exactly(item):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())  # on disk before the rename: else a power cut may leave the name on an empty file
        status = check_file(item.name, staged)
        if status.status == "present":
            os.replace(staged, data_dir / item.name)
            sync_folder(data_dir)
            log(f"installed {item.name}: {status.detail}")
            return True
    finally:
        staged.unlink(missing_ok=True)
    reason = status.detail.replace(str(staged), item.entry)  # name the source, not the staged copy
    if os.path.lexists(data_dir / item.name):
        log(f"kept the existing {item.name}: the new one is invalid: {reason}")
    else:
        log(f"not installed {item.name}: the new one is invalid, and none is installed: {reason}")
    return False


URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
DOWNLOADED_SCHEMES = ("http", "https")
INSTALL_LOCK = ".install.lock"  # in the data folder: one install at a time (kept: never a leftover)
STAGING_PREFIX = ".download-"  # an install's own folder in the data folder, which a killed install leaves


def _remove_staging_leftovers(data_dir: Path, log: Callable[[str], None]) -> None:
    """Delete the staging folders that killed installs left (a download of up to gigabytes); only under
    the install lock, so that none is another install's at work."""
    leftovers = [
        entry.path
        for entry in os.scandir(data_dir)
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False)
    ]
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)
    if leftovers:
        log(f"removed what {len(leftovers)} interrupted install(s) left in {data_dir}")
    _remove_stale_partials(data_dir, log)


def _remove_stale_partials(data_dir: Path, log: Callable[[str], None]) -> None:
    """Delete the interrupted downloads (kept to be continued) that no install continued for
    PARTIAL_MAX_AGE_SECONDS; a partial file and its sidecar go together, by the newer one's age."""
    newest: dict[str, float] = {}
    for entry in os.scandir(data_dir):
        stem, _, suffix = entry.name.rpartition(".")
        if (
            entry.name.startswith(PARTIAL_PREFIX)
            and suffix in ("part", "json")
            and not entry.is_dir(follow_symlinks=False)
        ):
            newest[stem] = max(newest.get(stem, 0.0), entry.stat(follow_symlinks=False).st_mtime)
    stale = [stem for stem, mtime in newest.items() if time.time() - mtime > PARTIAL_MAX_AGE_SECONDS]
    for stem in stale:
        for suffix in (".part", ".json"):
            (data_dir / (stem + suffix)).unlink(missing_ok=True)
    if stale:
        days = PARTIAL_MAX_AGE_SECONDS // 86400
        log(f"removed {len(stale)} interrupted download(s) left for over {days} days in {data_dir}")


def install(source: str, data_dir: Path, log: Callable[[str], None] = print) -> list[str]:
    """Copy the known model files from ``source`` (zip, folder, single file or http(s) URL) into
    ``data_dir``, each only once it passes ``data check``'s validation, logging what happened to each.
    Returns the names installed; raises VibeError when nothing usable was found, before copying
    anything when an entry is a link or special file, or too large, and at the end when some file was
    invalid (the others are installed). One install at a time per folder: it first deletes what killed
    installs left there (where the folder can be locked: not on Windows). A download cut off is tried
    again, from where it stopped where the server allows it, and where the folder is locked an unfinished
    one is kept there for the next install of the same URL to continue (for a week)."""
    scheme = URL_SCHEME.match(source)
    downloaded = scheme is not None and scheme[1].lower() in DOWNLOADED_SCHEMES
    path = None if downloaded else Path(source).expanduser()
    if path is not None and not path.exists():  # said before the data folder is made
        if scheme is not None:
            raise VibeError(
                f"'{source}' is a {scheme[1]}:// URL; only http:// and https:// URLs are downloaded. Download "
                "the file another way and install it from its local path."
            )
        raise VibeError(
            f"'{source}' does not exist. Give the path of vibe_data.zip, of a folder holding the model files, or a URL."
        )
    busy = f"Another install into '{data_dir}' is running; wait for it to end, then install again."

    def unguarded(problem: str) -> None:
        log(f"{problem}: what interrupted installs left there ('{STAGING_PREFIX}*' folders) is kept.")

    with folder_lock(data_dir, INSTALL_LOCK, busy, unguarded=unguarded) as guarded:
        if guarded:
            _remove_staging_leftovers(data_dir, log)
        return _install(source, path, data_dir, log, keep_partial=guarded)


def _install(
    source: str, path: Path | None, data_dir: Path, log: Callable[[str], None], *, keep_partial: bool
) -> list[str]:
    """:func:`install` under its lock; ``path``: the local source, None for a URL. ``keep_partial``: an
    interrupted download is kept in the data folder for the next install (only where the folder is
    locked: two installs of one URL would write the same file)."""
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=STAGING_PREFIX) as tmp, contextlib.ExitStack() as stack:
        downloaded = path is None
        if downloaded:
            downloads = Path(tmp) / "download"  # apart from the staging folder, whatever the URL's name
            downloads.mkdir()
            path = _download(source, downloads, data_dir if keep_partial else None, log)
        if path.is_dir():
            if synthetic.is_placeholder_folder(path):
                raise VibeError(
                    f"'{source}' holds the synthetic placeholder model (random weights, written when no model data "
                    f"is installed), not the official model data. {install_hint(data_dir)}"
                )
            found = _found_in_folder(path)
        else:
            # a path the user typed may be a link, but what it names must be a plain file: a FIFO
            # would block zipfile's probe, /dev/zero would never end
            size = _regular_size(path, source, follow_symlink=True)
            if _starts_like_a_web_page(path, source):
                raise _web_page(source, downloaded=downloaded)
            if path.name in KNOWN_FILES:  # before the zip test: smpl_mean_params.npz is a zip too
                _check_size(path.name, source, size)
                found = [_Found(path.name, source, size, lambda: _open_regular(path, source, follow_symlink=True))]
            elif zipfile.is_zipfile(path):
                archive = stack.enter_context(_open_archive(path, source))
                found = _found_in_zip(archive, source)
            elif path.suffix.lower() == ".zip" or _starts_like_a_zip(path):
                raise VibeError(
                    f"'{source}' is a zip archive that cannot be read: it is damaged or cut short (an interrupted "
                    "download?). Get it again, then install it."
                )
            else:
                raise VibeError(
                    f"'{source}' is neither a zip archive, a folder nor one of the model files "
                    f"({', '.join(KNOWN_FILES)})."
                )
        for item in found:  # a file cannot replace a folder, and the folder may hold the user's files
            target = data_dir / item.name
            if target.is_dir() and not target.is_symlink():
                raise VibeError(
                    f"Nothing installed: '{target}' is a folder where {item.name} must be a file. Move it "
                    "out of the data folder (it was left as it is) and install again."
                )
        total = sum(item.size for item in found)
        if total > MAX_TOTAL_BYTES:
            raise _refuse(
                source,
                f"holds {total:,} bytes of model files, more than the whole model data "
                f"can be ({MAX_TOTAL_BYTES:,} at most)",
            )
        stage = Path(tmp) / "staged"
        stage.mkdir()
        invalid = [item.name for item in found if not _install_one(item, stage, data_dir, log)]
    if not found:
        raise VibeError(f"'{source}' holds none of the model files ({', '.join(KNOWN_FILES)}).")
    if invalid:
        raise VibeError(
            f"Not installed: {', '.join(invalid)} from '{source}' {'is' if len(invalid) == 1 else 'are'} invalid "
            f"(see above); whatever {data_dir} held under {'that name' if len(invalid) == 1 else 'those names'} "
            "is unchanged. Get the official files again (vibe_data.zip and yolov3.weights) and install them; "
            f"'vibe-mocap data check --data-dir {data_dir}' shows the state of each installed file."
        )
    return [item.name for item in found]

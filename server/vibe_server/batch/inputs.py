"""Which videos a batch processes: files, folders (searched recursively, linked folders followed once)
and text files of paths.

Each video gets a key, its path relative to the input it came from (a folder's videos keep their
layout under it; a single file is its own name; a list's entries are relative to the list file's
folder, so adding an entry renames no other). The result goes to ``OUTDIR/<key without extension>.npz``.
A video that cannot be run at all (a file name that is not valid UTF-8, or a result name longer than
the output folder's file system takes) carries its ``problem``: it gets a failed record without a
worker.
"""

from __future__ import annotations

import os
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vibe_blender.core.errors import VibeError
from vibe_blender.core.regular_file import NOT_REGULAR
from vibe_blender.core.shown_text import printable

from ..pipeline.video import check_file_name
from .names import OWN_FILES

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".avi",
        ".webm",
        ".gif",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".ts",
        ".mts",
        ".m2ts",
        ".3gp",
    }
)
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})
RESULT_SUFFIX = ".npz"
DEFAULT_NAME_MAX = 255  # bytes in a file name, where the system does not say (most file systems' limit)


@dataclass(frozen=True)
class BatchItem:
    key: str  # input path relative to its root, '/'-separated: the manifest's identity of a video
    input_path: str  # absolute path of the video
    output_path: str  # absolute path of its result file
    input_stamp: tuple[int, int] | None = None  # (size, mtime_ns) when found; None: no file there
    problem: str | None = None  # why the video cannot be run at all: its failed record's error

    @property
    def output_key(self) -> str:
        """The result's path relative to the output folder."""
        return output_key(self.key)


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(size in bytes, modification time in ns) of a file, None when there is none: a video replaced at
    the same path gets another stamp, so a resumed batch runs it again."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)


def output_key(key: str) -> str:
    """The result file's path relative to the output folder for the video ``key``."""
    return str(PurePosixPath(key).with_suffix(RESULT_SUFFIX))


def check_inside(path: str | Path, output_dir: str | Path) -> None:
    """VibeError when ``path`` really lies outside ``output_dir`` (a symbolic link in between)."""
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(os.path.realpath(output_dir)):
        raise VibeError(
            f"The result '{path}' would be written to '{real}', outside the output folder, through a symbolic "
            "link; remove the link or choose another output folder."
        )


def input_problem(path: Path) -> str | None:
    """Why the video at ``path`` cannot be run at all, or None: a name the video reader cannot open
    (it would crash its worker) is found here, before any worker runs it."""
    try:
        check_file_name(path, "this video")
    except VibeError as err:
        return str(err)
    return None


def name_limit(folder: Path) -> int:
    """The longest file name, in bytes, that the file system of ``folder`` (or of its nearest existing
    parent, for a folder not made yet) takes."""
    for place in (folder, *folder.parents):
        try:
            limit = os.pathconf(place, "PC_NAME_MAX")
        except FileNotFoundError:
            continue
        except (OSError, ValueError, AttributeError):  # no such query here (Windows), or no answer
            break
        return limit if limit > 0 else DEFAULT_NAME_MAX
    return DEFAULT_NAME_MAX


def result_name_problem(result_key: str, limit: int) -> str | None:
    """Why the result ``result_key`` (relative to the output folder) cannot be written, or None: a name
    in it longer than ``limit`` bytes, which the file system refuses (found before any worker runs)."""
    for name in PurePosixPath(result_key).parts:
        size, units = name_length(name)
        if size > limit:
            return (
                f"The result's name '{name}' is {size} {units} long, more than the output folder's file "
                f"system takes ({limit}); rename the video (or its folder) to a shorter name."
            )
    return None


def name_length(name: str) -> tuple[int, str]:
    """(length, its units) as the file system counts it: Windows in UTF-16 units (255 at most), other
    systems in the bytes they store."""
    if os.name == "nt":
        return len(name.encode("utf-16-le")) // 2, "UTF-16 units"
    return len(os.fsencode(name)), "bytes"


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _is_text(path: Path, sniffed: int = 4096) -> bool:
    """Whether the file starts as UTF-8 text without NUL bytes (a video container's header has binary
    sizes and flags, so NUL bytes, at once); False when it cannot be read (the run says why)."""
    try:
        with open(path, "rb") as file:
            head = file.read(sniffed)
    except OSError:
        return False
    if not head or b"\0" in head:
        return False
    for cut in range(4):  # a character cut at the end of what was read
        try:
            head[: len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def _folder_videos(folder: Path) -> list[tuple[str, Path]]:
    """(key, path) of the videos under ``folder`` (a resolved path), hidden files and folders skipped and
    linked folders followed (see ``_to_search``)."""
    found = []
    searched = {_identity(folder): folder}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=_unreadable_folder):
        dirnames[:] = [
            name
            for name in sorted(dirnames)
            if not name.startswith(".") and _to_search(Path(dirpath) / name, folder, searched)
        ]
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not name.startswith(".") and is_video(path):
                found.append((path.relative_to(folder).as_posix(), path))
    return found


def _unreadable_folder(err: OSError) -> None:
    """The walk passes over a folder it cannot list: a note says which and why, as its videos are left out."""
    _note(
        f"cannot read the folder '{err.filename}' ({err.strerror or err}): its videos are left out of the batch; "
        "give this user read permission to it (or fix it), then run the same command again to add them."
    )


def _identity(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def _to_search(path: Path, root: Path, searched: dict[tuple[int, int], Path]) -> bool:
    """Whether the walk of ``root`` goes into the folder ``path``: each folder is searched once, so a
    symbolic-link loop ends and no video is taken twice under two names. A link to a folder inside
    ``root`` is not followed (its videos keep the keys of their own path), nor one to a folder that
    holds ``root`` (``..``, the home folder, ``/``: the walk would leave the folder the user named for
    everything around it), nor one to a folder already searched; a note names each link passed over.
    ``searched``: folder (device, inode) -> its path."""
    try:
        target = Path(os.path.realpath(path)) if path.is_symlink() else None
        if target is not None and target.is_relative_to(root):
            _note(f"'{path}' links to '{target}' in the same input folder: its videos are taken there.")
            return False
        if target is not None and root.is_relative_to(target):
            _note(f"'{path}' links to '{target}', which holds the input folder: it is not searched.")
            return False
        earlier = searched.setdefault(_identity(path), path)
    except OSError:
        return True  # a folder that cannot be read: the walk passes over it
    if earlier != path:
        _note(f"'{path}' leads to '{earlier}', a folder already searched: its videos are taken once, from there.")
        return False
    return True


def _note(text: str) -> None:
    print(printable(f"Note: {text}"), file=sys.stderr)


def expanded(path: str) -> Path:
    """``path`` with a leading ``~`` or ``~user`` made the home folder; a name that only starts with ``~``
    (``~take.mp4``, no such user) is left as it is (``Path.expanduser`` raises there)."""
    return Path(os.path.expanduser(path))


def _list_videos(list_file: Path) -> list[tuple[str, Path]]:
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()  # (a BOM, as Notepad writes, is no path)
    except (OSError, UnicodeDecodeError) as err:
        raise VibeError(
            f"Cannot read the list of videos '{list_file}' ({err}); give a UTF-8 text file with "
            "one video path per line."
        ) from err
    root = list_file.parent.resolve()
    videos = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = expanded(line)
        joined = path if path.is_absolute() else root / path
        try:
            # the key: the file's own name (a link keeps its name, as in a folder input) in its real
            # folder; the video is read through its real path. realpath, not Path.resolve(): a
            # symbolic-link loop is a path that leads nowhere, not an error
            listed = Path(os.path.realpath(joined.parent)) / joined.name
            path = Path(os.path.realpath(joined))
        except ValueError as err:  # a NUL character: no file name holds one
            shown = line.replace("\0", "\\0")
            raise VibeError(
                f"Line {number} of the list of videos '{list_file}' ('{shown}') is not a path a file can have "
                f"({err}); fix or remove that line."
            ) from None
        key = _list_key(listed, root)
        if not PurePosixPath(key).name or _is_folder(path):  # '.', '/', the list's own folder, a subfolder
            raise VibeError(
                f"Line {number} of the list of videos '{list_file}' ('{line}') names a folder, not a video "
                "file; list one video file per line (give a folder as an input of its own to take its videos)."
            )
        videos.append((key, path))
    return videos


def _is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder; a name the file system refuses (too long) is none: it fails as a video."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _list_key(path: Path, root: Path) -> str:
    """A listed video's key: its path relative to the list's folder, which does not change when entries
    are added (a path outside that folder keeps its whole path, without its root)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return PurePosixPath(*path.parts[1:]).as_posix()


def discover(inputs: list[str], output_dir: str | Path) -> list[BatchItem]:
    """inputs: video files, folders or text files listing videos -> the batch, in a stable order.

    A listed path that does not exist is still an item (it fails in the manifest like any bad
    video); an input given on the command line that does not exist is a VibeError."""
    output_dir = Path(output_dir).resolve()
    keyed: list[tuple[str, Path]] = []
    for raw in inputs:
        path = expanded(raw)
        if path.is_dir():
            videos = _folder_videos(path.resolve())
            if not videos:
                raise VibeError(
                    f"The folder '{path}' holds no video (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})."
                )
            keyed += videos
        elif path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
            keyed += _list_videos(path)
        elif path.is_file() and not is_video(path) and _is_text(path):  # (a list named .csv was run as a video)
            raise VibeError(
                f"'{path}' is a text file, not a video; a list of videos must be named "
                f"{', '.join(sorted(LIST_EXTENSIONS))} (one path per line)."
            )
        elif path.is_file():
            keyed.append((path.name, path.resolve()))
        elif path.exists():
            raise VibeError(
                f"'{path}' {NOT_REGULAR}; give a video file, a folder of videos or a text file listing them."
            )
        else:
            raise VibeError(f"There is no file or folder at '{path}'; check the path.")
    if not keyed:
        raise VibeError("No video to process: the inputs name no video file.")

    items: list[BatchItem] = []
    by_output: dict[str, tuple[str, str]] = {}  # folded result name -> (input path, result name)
    folders: dict[str, tuple[str, str]] = {}  # folded folder of results -> (input path, result name) of one in it
    separately = "rename one of them, or run them as separate batches, each into another OUTDIR."
    limit = name_limit(output_dir)
    first_key: dict[str, str] = {}  # real path of a video -> the key it is run under
    for key, path in keyed:
        real = os.path.realpath(path)
        if real in first_key:  # one video reached twice (a folder and a file in it, a link): run once
            _note(f"'{path}' is the video '{first_key[real]}' again: it is processed once.")
            continue
        first_key[real] = key
        item = BatchItem(
            key=key,
            input_path=str(path),
            output_path=str(output_dir / PurePosixPath(key).with_suffix(RESULT_SUFFIX)),
            input_stamp=file_stamp(path),
            problem=input_problem(path) or result_name_problem(output_key(key), limit),
        )
        folded = folded_name(item.output_key)
        if folded in by_output:
            earlier, earlier_output = by_output[folded]
            written = (
                f"would both write '{item.output_key}'"
                if earlier_output == item.output_key
                else f"would write '{earlier_output}' and '{item.output_key}', one file where case and accents "
                "are not told apart (macOS, Windows, exFAT, SMB shares),"
            )
            raise VibeError(f"'{earlier}' and '{path}' {written} in {output_dir}; {separately}")
        parents = [folded_name(str(folder)) for folder in PurePosixPath(item.output_key).parents if str(folder) != "."]
        in_the_way = folders.get(folded) or next((by_output[p] for p in parents if p in by_output), None)
        if in_the_way is not None:  # 'a.npz' and 'a.npz/b.npz': one name, a file and a folder
            earlier, earlier_output = in_the_way
            raise VibeError(
                f"'{earlier}' and '{path}' would write '{earlier_output}' and '{item.output_key}' in {output_dir}, "
                f"a result file and a folder of the same name; {separately}"
            )
        own = next((name for name in OWN_FILES if parents and folded_name(name) == parents[-1]), None)
        if own is not None:  # 'manifest.jsonl/a.npz': the folder would take the name of the batch's own file
            raise VibeError(
                f"'{path}' would write '{item.output_key}' in {output_dir}, in a folder named as the batch's own "
                f"file '{own}' there; rename that folder of the input, or run its videos as a separate batch into "
                "another OUTDIR."
            )
        for folder in parents:
            folders.setdefault(folder, (item.input_path, item.output_key))
        by_output[folded] = (item.input_path, item.output_key)
        items.append(item)
    return items


def folded_name(name: str) -> str:
    """``name`` as file systems that ignore case and Unicode normalization compare it: two result
    names with the same folded name are one file there. They map case letter by letter (NTFS, exFAT
    and APFS use a table of single letters), so 'Straße' and 'strasse' stay two files, as do 'ﬁle'
    and 'file': not ``casefold()``, which also expands letters."""
    return unicodedata.normalize("NFC", name).lower()

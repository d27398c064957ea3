"""How big a zip's central directory says it is, read before ``zipfile.ZipFile`` reads it.

``ZipFile`` reads the whole central directory and builds one object per entry it holds, whatever the
file's other limits, so a small file can cost seconds and hundreds of MB before any check on its
members runs. The end record states the directory's size (and a count of entries, which may lie:
``ZipFile`` does not use it). Standard library only: it runs inside Blender.
"""

from __future__ import annotations

import zipfile


def central_directory(file) -> tuple[int, int] | None:
    """(entries the end record states, bytes of the central directory) of the zip in the binary
    ``file``, zip64 included, without reading the directory; None when it is not a zip."""
    # zipfile's own reader of the end records, so the numbers are the ones ZipFile then acts on
    end = zipfile._EndRecData(file)
    if end is None:
        return None
    return int(end[zipfile._ECD_ENTRIES_TOTAL]), int(end[zipfile._ECD_SIZE])


def recorded_directory_offset(file) -> int | None:
    """Where the end record of the zip in the binary ``file`` says its central directory starts (zip64
    included); None when it is not a zip. ``ZipFile`` reads it where it finds it (its ``start_dir``),
    moving every entry by the difference, where other readers (torch's) take the recorded offsets."""
    end = zipfile._EndRecData(file)
    return None if end is None else int(end[zipfile._ECD_OFFSET])

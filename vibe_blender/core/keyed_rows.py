"""Rows of float32 values, each keyed by (track id, frame index), kept in chunks allocated as they
fill: a live recording (the server's) and a live take (the add-on's) grow for hours, so they never
copy what they hold and leave at most one chunk unused; a Python object per row would take several
times the memory."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

CHUNK_ROWS = 4096


class ByTrack(NamedTuple):
    """Rows grouped by track, in arrays only (no object per track): track ``ids[k]``'s rows are
    ``rows[starts[k]:starts[k + 1]]``, in the order they were added (frame order), seen in the frames
    ``frames[...]`` alike."""

    ids: np.ndarray
    starts: np.ndarray  # len(ids) + 1
    rows: np.ndarray
    frames: np.ndarray

    def rows_of(self) -> dict[int, np.ndarray]:
        """track id -> its rows."""
        return {int(i): self.rows[a:b] for i, a, b in zip(self.ids, self.starts[:-1], self.starts[1:], strict=True)}


class KeyedRows:
    """``width`` float32 values a row, and its key (track id, frame index) as int64."""

    def __init__(self, width: int):
        self.width = width
        self.count = 0
        self._values: list[np.ndarray] = []  # (CHUNK_ROWS, width) float32
        self._keys: list[np.ndarray] = []  # (CHUNK_ROWS, 2) int64

    def add(self, track_id: int, frame_index: int) -> np.ndarray:
        """A new row keyed (track_id, frame_index) -> its (width,) values, for the caller to fill."""
        chunk, row = divmod(self.count, CHUNK_ROWS)
        if chunk == len(self._values):
            self._values.append(np.empty((CHUNK_ROWS, self.width), np.float32))
            self._keys.append(np.empty((CHUNK_ROWS, 2), np.int64))
        self._keys[chunk][row] = track_id, frame_index
        self.count += 1
        return self._values[chunk][row]

    def keys(self) -> np.ndarray:
        """(count, 2) int64: each row's track id and frame index, in the order they were added."""
        return np.concatenate(self._keys)[: self.count] if self.count else np.empty((0, 2), np.int64)

    def by_track(self) -> ByTrack:
        """The rows grouped by track id, in one sort (a pass over every row per track took seconds for
        thousands of tracks)."""
        keys = self.keys()
        rows = np.argsort(keys[:, 0], kind="stable")  # each track's rows in the order added: frame order
        ids, starts = np.unique(keys[rows, 0], return_index=True)
        return ByTrack(ids, np.append(starts, self.count), rows, keys[rows, 1])

    def values_at(self, rows: np.ndarray) -> np.ndarray:
        """The rows at these positions -> (len(rows), width) float32."""
        out = np.empty((len(rows), self.width), np.float32)
        chunk_of, offset = np.divmod(rows, CHUNK_ROWS)
        for chunk in np.unique(chunk_of):
            in_chunk = chunk_of == chunk
            out[in_chunk] = self._values[chunk][offset[in_chunk]]
        return out

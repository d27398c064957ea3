"""Run an iterator in a thread of its own, a bounded number of items ahead of its consumer.

    for item in ahead_in_thread(decode_frames(), max_ahead=64, name="decode"):
        ...

The producer thread fills a queue of at most ``max_ahead`` items; an exception in it is raised in
the consumer; a consumer that stops early (a cancelled run, an error) releases the thread. Used by
the video reader's prefetch, its parallel decode and the staged front end's detection.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()


class InThread(Generic[T]):
    """``items`` produced in a daemon thread started at once, at most ``max_ahead`` items ahead.

    Iterate it once; ``close()`` (also run when the iteration ends or fails) releases the thread,
    so call it for one that is dropped unread.
    """

    def __init__(self, items: Iterator[T], *, max_ahead: int, name: str):
        self._items = items
        self._ready: queue.Queue = queue.Queue(maxsize=max(1, int(max_ahead)))
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._produce, name=name, daemon=True)
        self._worker.start()

    def __iter__(self) -> Iterator[T]:
        try:
            while (item := self._ready.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._worker.join(timeout=5)

    def _put(self, item) -> bool:
        """Wait for room unless the consumer has gone; False once it has."""
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as err:  # handed to the consumer, raised there
            self._put(err)


def ahead_in_thread(items: Iterator[T], *, max_ahead: int, name: str) -> Iterator[T]:
    """``items``, produced in a daemon thread called ``name``, at most ``max_ahead`` items ahead.
    The thread starts with the first ``next()``."""
    yield from InThread(items, max_ahead=max_ahead, name=name)

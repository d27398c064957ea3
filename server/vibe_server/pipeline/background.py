"""Run an iterator in a thread of its own, a bounded number of items ahead of its consumer.

    for item in ahead_in_thread(decode_frames(), max_ahead=64, name="decode"):
        ...

The producer thread fills a queue of at most ``max_ahead`` items; an exception in it is raised in
the consumer; a consumer that stops early (a cancelled run, an error) releases the thread. Used by
the video reader's prefetch and the staged front end's detection.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


def ahead_in_thread(items: Iterator[T], *, max_ahead: int, name: str) -> Iterator[T]:
    """``items``, produced in a daemon thread called ``name``, at most ``max_ahead`` items ahead."""
    ready: queue.Queue = queue.Queue(maxsize=max(1, int(max_ahead)))
    stop = threading.Event()

    def put(item) -> bool:
        """Wait for room unless the consumer has gone; False once it has."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as err:  # handed to the consumer, raised there
            put(err)

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)

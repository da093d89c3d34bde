"""Layer 2: flat combining of Redis writes.

Threads that each have something to send hand it to :meth:`Combiner.submit`;
whichever thread finds no flush in progress sends everything queued in one
pipeline. Alone, a thread sends its own item at once (no hand-off, no added
latency); under load, items ride in shared round trips.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("rpcapp.combiner")


class Combiner(Generic[T]):
    def __init__(self, flush: Callable[[list[T]], None]) -> None:
        self._flush = flush
        self._items: list[T] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()

    def submit(self, item: T) -> None:
        """Queue ``item``; it is flushed by this thread or by one already flushing."""
        with self._lock:
            self._items.append(item)
        while self._flushing.acquire(blocking=False):
            try:
                while True:
                    with self._lock:
                        batch, self._items = self._items, []
                    if not batch:
                        break
                    try:
                        self._flush(batch)
                    except Exception:
                        log.exception("flushing %d item(s) failed", len(batch))
            finally:
                self._flushing.release()
            with self._lock:
                if not self._items:
                    return

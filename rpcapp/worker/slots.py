"""Layer 2: the call threads of a worker, which take turns reading.

Leader/follower: an idle thread with nothing queued becomes the reader,
takes up to the free slots of requests in one read, keeps the first for
itself and queues the rest for the other idle threads. A lone request is run
by the thread that read it, with no hand-off between threads; under load the
reads come in batches. The worker never holds more requests than it has
free slots: ``busy`` (running plus queued) never exceeds ``size``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

Entry = tuple[str, str, dict[bytes, bytes]]


class CallThreads:
    def __init__(
        self, size: int, read: Callable[[int, int, bool], list[Entry]], run: Callable[[Entry], None], stopping: threading.Event, groups: int = 1
    ) -> None:
        self.size = size
        self.groups = groups
        self._read = read
        self._run = run
        self._stopping = stopping
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # idle call threads wait here for work or the reader role
        self._drained = threading.Condition(lock)  # wait_idle waits here
        self._queue: deque[Entry] = deque()
        self._reading: set[int] = set()  # groups with a read under way
        self._reserved = 0  # slots held by the reads under way
        self._next_group = 0
        self._hot: set[int] = set()  # groups whose last read found work
        self._busy = 0
        self._threads: list[threading.Thread] = []
        self._running: set[str] = set()  # entry ids being run

    def running_ids(self) -> set[str]:
        """Entry ids taken and not finished (queued or running)."""
        with self._cond:
            return set(self._running) | {e[1] for e in self._queue}

    @property
    def busy(self) -> int:
        """Requests taken and not yet finished (running or queued)."""
        return self._busy

    def start(self) -> None:
        for i in range(self.size):
            t = threading.Thread(target=self._loop, name=f"rpcapp-call-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no read is under way and nothing is taken; False on timeout."""
        end = time.monotonic() + timeout
        with self._drained:
            while self._busy or self._reading:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._drained.wait(left)
        return True

    def _reader_wanted(self) -> bool:
        return len(self._reading) < self.groups and self.size - self._busy - self._reserved > 0

    def _next(self) -> tuple[Entry | None, int, int]:
        """Under the lock: a queued entry, or the reader role of a group with
        the count it may read: (entry, group, count)."""
        with self._cond:
            while not self._queue and not self._reader_wanted() and not self._stopping.is_set():
                self._cond.wait(0.5)
            if self._queue:
                return self._queue.popleft(), 0, 0
            if self._stopping.is_set() or not self._reader_wanted():
                return None, 0, 0
            if self.groups == 1:
                group, count = 0, self.size - self._busy
            else:
                order = [g % self.groups for g in range(self._next_group, self._next_group + self.groups)]
                idle = [g for g in order if g not in self._reading]
                group = next((g for g in idle if g in self._hot), idle[0])
                self._next_group = group + 1
                count = 1  # more, without blocking, once this read finds work
            self._reading.add(group)
            self._reserved += count
            return None, group, count

    def _loop(self) -> None:
        while True:
            item, group, free = self._next()
            if item is None and free <= 0:
                if self._stopping.is_set():
                    return
                continue
            if item is None:
                item = self._take(group, free)
                if item is None:
                    continue
            self._running.add(item[1])
            try:
                self._run(item)
            finally:
                self._running.discard(item[1])
                with self._cond:
                    self._busy -= 1
                    if self.groups > 1:
                        self._cond.notify()  # a freed slot: a group may be waiting for a reader
                    if not self._busy:
                        self._drained.notify_all()

    def _take(self, group: int, free: int) -> Entry | None:
        entries: list[Entry] = []
        reserved = free
        try:
            entries = self._read(free, group, True)[:free]
            if entries and self.groups > 1:
                with self._cond:
                    more = self.size - self._busy - self._reserved
                    if more > 0:
                        self._reserved += more
                        reserved += more
                if more > 0:
                    entries += self._read(more, group, False)[:more]
        finally:
            with self._cond:
                self._reading.discard(group)
                self._reserved -= reserved
                self._busy += len(entries)
                if self.groups > 1:
                    if entries:
                        self._hot.add(group)
                    else:
                        self._hot.discard(group)
                self._queue.extend(entries[1:])
                self._cond.notify(len(entries) or 1)
                if not self._busy:
                    self._drained.notify_all()
        return entries[0] if entries else None

"""Layer 2: a worker's call records, buffered and appended to ``ns:history``
by a background thread, a batch at a time, after the replies went out.

Recording never delays or loses a reply: a record is built after its reply
was handed to the finisher, and Redis refusing the append only costs the
records (logged). A worker killed abruptly loses the records of its last
``FLUSH_EVERY`` seconds (the calls themselves are unaffected).
"""

from __future__ import annotations

import logging
import threading

from ..transport import Transport

log = logging.getLogger("rpcapp.history")

FLUSH_EVERY = 0.2  # seconds
MAX_BUFFERED = 20_000  # records held while Redis refuses them; older ones are dropped


class RecordBuffer:
    def __init__(self, transport: Transport, history_max: int) -> None:
        self.transport = transport
        self.history_max = history_max
        self._items: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def add(self, record: bytes | None) -> None:
        if record is None:
            return
        with self._lock:
            self._items.append(record)
            if len(self._items) > MAX_BUFFERED:
                self.dropped += len(self._items) - MAX_BUFFERED
                del self._items[: len(self._items) - MAX_BUFFERED]

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="rpcapp-records", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Flush what is buffered, then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.flush()

    def flush(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        if not items:
            return
        try:
            for start in range(0, len(items), 1000):
                self.transport.record_calls(items[start : start + 1000], self.history_max)
        except Exception as exc:  # Redis away: keep them for the next flush
            log.warning("%d call record(s) not written yet: %s", len(items), exc)
            with self._lock:
                self._items[:0] = items[-MAX_BUFFERED:]

    def _loop(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            self.flush()

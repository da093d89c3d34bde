"""Layer 2: request-id claims of a worker's threads, sent together.

Each call claims its request id before it runs (``Transport.claim_runs``:
a request id runs at most once). A thread alone sends its claim at once; when
several threads claim at the same moment, one of them sends every claim
waiting in one pipeline and hands each thread its answer (flat combining
with results, like ``rpcapp.combiner`` for replies), so under load the
claims ride in shared round trips.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

Claim = tuple[str, str, str, int]  # (service, marker, entry id, ttl ms)


@dataclass
class _Slot:
    claim: Claim
    done: threading.Event = field(default_factory=threading.Event)
    granted: bool = False
    error: BaseException | None = None


class ClaimBatcher:
    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self._waiting: list[_Slot] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()

    def claim(self, service: str, marker: str, entry_id: str, ttl_ms: int) -> bool:
        """True if this entry may run ``marker``; raises what the transport raised."""
        slot = _Slot((service, marker, entry_id, ttl_ms))
        with self._lock:
            self._waiting.append(slot)
        while not slot.done.is_set():
            if self._flushing.acquire(blocking=False):
                try:
                    self._flush()
                finally:
                    self._flushing.release()
            else:
                slot.done.wait(0.002)  # another thread is sending; it may be carrying ours
        if slot.error is not None:
            raise slot.error
        return slot.granted

    def _flush(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting, []
        if not batch:
            return
        try:
            granted = self.transport.claim_runs([slot.claim for slot in batch])
        except BaseException as exc:  # every thread of the batch gets the error
            for slot in batch:
                slot.error = exc
                slot.done.set()
            return
        for slot, ok in zip(batch, granted, strict=True):
            slot.granted = ok
            slot.done.set()

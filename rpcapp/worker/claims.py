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

from ..protocol import Event, Request, now_ms

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


@dataclass
class Taken:
    """A stream entry decoded (``message`` None: rejected, with ``problem``)
    and whether its id was claimed for this entry (None: not asked yet)."""

    raw: bytes
    message: Request | Event | None
    problem: str = ""
    granted: bool | None = None

    def marker(self) -> str | None:
        """The id to claim: the request's id, or the event delivery's marker."""
        if isinstance(self.message, Event):
            return self.message.marker
        return self.message.id if self.message is not None else None

    def ttl_ms(self, event_ttl: float) -> int:
        """How long the claim must last: to the deadline (or the event's expiry), plus 1 s."""
        if isinstance(self.message, Event):
            return self.message.expiry(int(event_ttl * 1000)) - now_ms() + 1000
        assert self.message is not None
        return self.message.deadline - now_ms() + 1000

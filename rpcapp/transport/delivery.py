"""Layer 1: at-most-once bookkeeping: which stream entry took a request id.

A request id runs once (DESIGN 14): a worker claims the id before running it,
naming the stream entry it took it from. The same entry delivered again (its
worker's own restart) may go on; another entry with the same id (a byte-exact
replay written by someone with Redis access, or a send the client repeated
after an ambiguous failure) is refused. Recovery forgets the claim of an
idempotent request it puts back on the queue, so that its redelivery runs.
"""

from __future__ import annotations

from typing import Any

from .. import keys
from .base import _guard, _text


class DeliveryOps:
    """Mixed into ``Transport``: needs ``redis`` and ``ns``."""

    redis: Any
    ns: str

    @_guard
    def claim_runs(self, claims: list[tuple[str, str, str, int]]) -> list[bool]:
        """For each (service, id, entry id, ttl ms): True if this entry may run
        the id (claimed now, or by this same entry before), False if another
        entry took it. One round trip (``SET NX PX`` each); a second one only
        for ids already claimed, to tell the same entry from another."""
        if len(claims) == 1:  # the common case: no pipeline to build
            service, call_id, entry_id, ttl_ms = claims[0]
            granted = [bool(self.redis.set(keys.ran(self.ns, service, call_id), entry_id, nx=True, px=max(1, ttl_ms)))]
        else:
            pipe = self.redis.pipeline(transaction=False)
            for service, call_id, entry_id, ttl_ms in claims:
                pipe.set(keys.ran(self.ns, service, call_id), entry_id, nx=True, px=max(1, ttl_ms))
            granted = [bool(ok) for ok in pipe.execute()]
        taken = [i for i, ok in enumerate(granted) if not ok]
        if taken:
            pipe = self.redis.pipeline(transaction=False)
            for i in taken:
                pipe.get(keys.ran(self.ns, claims[i][0], claims[i][1]))
            for i, holder in zip(taken, pipe.execute(), strict=True):
                granted[i] = holder is not None and _text(holder) == claims[i][2]
        return granted

    def claim_run(self, service: str, call_id: str, entry_id: str, ttl_ms: int) -> bool:
        """:meth:`claim_runs` for one id."""
        return self.claim_runs([(service, call_id, entry_id, ttl_ms)])[0]

    @_guard
    def forget_run(self, service: str, call_id: str) -> None:
        """Let request ``call_id`` run again (an idempotent redelivery)."""
        self.redis.delete(keys.ran(self.ns, service, call_id))

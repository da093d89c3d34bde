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
from .base import _guard

CLAIM_RUN = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
"""


class DeliveryOps:
    """Mixed into ``Transport``: needs ``redis`` and ``ns``."""

    redis: Any
    ns: str
    _claim_run: Any = None

    @_guard
    def claim_run(self, service: str, call_id: str, entry_id: str, ttl_ms: int) -> bool:
        """True if this entry may run request ``call_id`` (claimed now, or by
        this same entry before); False if another entry took the id."""
        if self._claim_run is None:
            self._claim_run = self.redis.register_script(CLAIM_RUN)
        return bool(self._claim_run(keys=[keys.ran(self.ns, service, call_id)], args=[entry_id, max(1, ttl_ms)]))

    @_guard
    def forget_run(self, service: str, call_id: str) -> None:
        """Let request ``call_id`` run again (an idempotent redelivery)."""
        self.redis.delete(keys.ran(self.ns, service, call_id))

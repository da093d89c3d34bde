"""Layer 1: the Redis operations of the service catalog, rate limits and
provider inboxes (the queues of the load-balancing policies)."""

from __future__ import annotations

import time
from typing import Any

from .. import keys
from .base import _guard, _text, execute_publishing, stream_entries
from .events import Subscription


class CatalogOps:
    """Mixed into ``Transport``: needs ``redis``, ``ns`` and the scripts it registers."""

    redis: Any
    ns: str
    _rate_limit: Any
    _requeue_to: Any

    # -- catalog -------------------------------------------------------------
    @_guard
    def catalog_get(self, service: str) -> bytes | None:
        return self.redis.hget(keys.catalog(self.ns), service)

    @_guard
    def catalog_all(self) -> dict[str, bytes]:
        return {_text(k): v for k, v in self.redis.hgetall(keys.catalog(self.ns)).items()}

    @_guard
    def catalog_put(self, configs: dict[str, bytes], removed: list[str] | None = None) -> None:
        """Store service configs (and drop ``removed``), then announce each change."""
        pipe = self.redis.pipeline(transaction=False)
        if configs:
            pipe.hset(keys.catalog(self.ns), mapping=configs)
        if removed:
            pipe.hdel(keys.catalog(self.ns), *removed)
        channel = keys.catalog_changed(self.ns)
        execute_publishing(self.redis, pipe, [(channel, name) for name in [*configs, *(removed or [])]], self.clustered)

    @_guard
    def listen_catalog(self) -> Subscription:
        channel = keys.catalog_changed(self.ns)
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel)
        return Subscription(pubsub, len(channel))

    # -- rate limits -----------------------------------------------------------
    @_guard
    def rate_limit(self, service: str, checks: list[tuple[str, float, int]]) -> int:
        """Charge one call to each (scope, period seconds, limit); 0 if allowed,
        else the 1-based index of the limit that refused it."""
        if not checks:
            return 0
        args: list[Any] = [f"{time.time() * 1000:.3f}"]
        for _, period, limit in checks:
            args += [period * 1000, limit]
        return int(self._rate_limit(keys=[keys.rate_limit(self.ns, service, scope) for scope, _, _ in checks], args=args))

    # -- inboxes ------------------------------------------------------------------
    @_guard
    def close_inbox(self, service: str, provider: str) -> None:
        """Forget a provider's inbox (long dead: nobody sends to it any more)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(keys.requests(self.ns, keys.inbox_route(service, provider)))
        pipe.zrem(keys.inboxes(self.ns, service), provider)
        pipe.execute()

    @_guard
    def silent_inboxes(self, service: str, before_ms: int) -> list[tuple[str, int]]:
        """(provider, last heartbeat ms) of inboxes whose owner has not beaten since ``before_ms``."""
        rows = self.redis.zrangebyscore(keys.inboxes(self.ns, service), "-inf", f"({before_ms}", withscores=True)
        return [(_text(p), int(score)) for p, score in rows]

    @_guard
    def take_unread(self, route: str, consumer: str, count: int = 100) -> list[tuple[str, dict[bytes, bytes]]]:
        """Read (without blocking) entries nobody has read from a route's stream."""
        res = self.redis.xreadgroup(keys.GROUP, consumer, {keys.requests(self.ns, route): ">"}, count=count)
        return [(eid, fields) for _, eid, fields in stream_entries(res)]

    @_guard
    def requeue_to(self, route: str, target: str, entry_id: str, raw: bytes, deliveries: int, maxlen: int) -> str | None:
        """Atomically move a pending entry of ``route`` to the end of ``target``'s queue."""
        res = self._requeue_to(
            keys=[keys.requests(self.ns, route), keys.requests(self.ns, target)],
            args=[keys.GROUP, entry_id, raw, deliveries, maxlen],
        )
        return _text(res) if res else None

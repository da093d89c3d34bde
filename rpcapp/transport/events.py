"""Layer 1: the Redis operations of events and streaming calls."""

from __future__ import annotations

from typing import Any

from .. import keys
from .base import _guard, _text, execute_publishing, log


class EventOps:
    """Mixed into ``Transport``: needs ``redis``, ``ns`` and the ``_release_due`` script."""

    redis: Any
    ns: str
    _release_due: Any

    # -- events ----------------------------------------------------------------
    @_guard
    def subscribe_topics(self, topics: dict[str, list[str]]) -> None:
        """Record which services subscribe to which topics (durable handlers)."""
        if topics:
            pipe = self.redis.pipeline(transaction=False)
            for topic, services in topics.items():
                pipe.sadd(keys.topic_subscribers(self.ns, topic), *services)
            pipe.execute()

    @_guard
    def subscribers(self, topic: str) -> set[str]:
        return {_text(x) for x in self.redis.smembers(keys.topic_subscribers(self.ns, topic))}

    @_guard
    def publish_event(self, items: list[tuple[str, bytes]], topic: str, broadcast: bytes | None, maxlen: int) -> None:
        """XADD each (service, frame) and PUBLISH ``broadcast``: one round trip.
        Never trims the request stream (``maxlen`` is not applied: trimming
        would drop requests already accepted)."""
        pipe = self.redis.pipeline(transaction=False)
        for service, frame in items:
            pipe.xadd(keys.requests(self.ns, service), {"m": frame})
        execute_publishing(self.redis, pipe, [] if broadcast is None else [(keys.broadcast(self.ns, topic), broadcast)], self.clustered)

    @_guard
    def retry_later(self, service: str, entry_id: str, frame: bytes, due_ms: int) -> None:
        """Atomically retire a stream entry and schedule ``frame`` for ``due_ms``."""
        stream = keys.requests(self.ns, service)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(keys.delayed(self.ns, service), {frame: due_ms})
        pipe.xack(stream, keys.GROUP, entry_id)
        pipe.xdel(stream, entry_id)
        pipe.execute()

    @_guard
    def release_due(self, service: str, now: int, maxlen: int) -> int:
        """Move scheduled retries whose time has come back to the queue (never
        trimmed: ``maxlen`` is not applied to what was accepted)."""
        return int(self._release_due(keys=[keys.requests(self.ns, service), keys.delayed(self.ns, service)], args=[now, maxlen]))

    @_guard
    def replay_dead(self, service: str, entry_id: str, frame: bytes, maxlen: int) -> bool:
        """Queue ``frame`` again and drop dead letter ``entry_id``; False if it was gone."""
        if not self.redis.xdel(keys.dead_letters(self.ns, service), entry_id):
            return False
        self.redis.xadd(keys.requests(self.ns, service), {"m": frame})  # never trimmed (``maxlen`` unused)
        return True

    @_guard
    def listen(self, channels: list[str]) -> Subscription:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(*[keys.broadcast(self.ns, c) for c in channels])
        return Subscription(pubsub, len(keys.broadcast(self.ns, "")))

    # -- streams -----------------------------------------------------------------
    @_guard
    def grant(self, service: str, call_id: str, message: bytes, ttl_ms: int) -> None:
        """A streaming caller's acknowledgement (or cancellation) for the worker."""
        key = keys.credit(self.ns, service, call_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(key, message)
        pipe.pexpire(key, max(ttl_ms, 1000))
        pipe.execute()

    @_guard
    def take_credits(self, service: str, call_id: str, block: float = 0.0) -> list[bytes]:
        """The caller's messages so far; with ``block``, wait that long for one."""
        key = keys.credit(self.ns, service, call_id)
        if block > 0:
            got = self.redis.blpop([key], timeout=block)
            if not got:
                return []
            return [got[1], *(self.redis.lpop(key, 100) or [])]
        return list(self.redis.lpop(key, 100) or [])

    @_guard
    def drop_credits(self, service: str, call_id: str) -> None:
        self.redis.delete(keys.credit(self.ns, service, call_id))


class Subscription:
    """A pub/sub subscription to broadcast topics (errors as TransportError)."""

    def __init__(self, pubsub: Any, prefix_len: int) -> None:
        self._pubsub = pubsub
        self._prefix_len = prefix_len

    @_guard
    def get(self, timeout: float) -> tuple[str, bytes] | None:
        """(topic, frame) of the next message, or None after ``timeout``."""
        msg = self._pubsub.get_message(timeout=timeout)
        if not msg or msg.get("type") != "message":
            return None
        return _text(msg["channel"])[self._prefix_len :], msg["data"]

    def close(self) -> None:
        try:
            self._pubsub.close()
        except Exception:  # closing a broken connection must not raise
            log.debug("error closing a subscription", exc_info=True)

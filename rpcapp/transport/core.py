"""Layer 1: the Redis operations of calls and workers (``Transport``).

Requests, replies, idempotency keys, providers, specs and recovery are here;
events and streams are in ``events.py``. One method per operation, each a
single round trip (a command, a pipeline or a Lua script).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from redis.cluster import RedisCluster

from .. import keys
from ..errors import TransportError
from ..redlock import COMPARE_AND_DELETE
from . import scripts
from .base import _guard, _text, failed, log, stream_entries
from .catalog import CatalogOps
from .delivery import DeliveryOps
from .events import EventOps

Finish = tuple[str, str, "str | None", "bytes | None"]
"""(route, entry id, reply key, reply frame) of a finished request."""


class Transport(CatalogOps, EventOps, DeliveryOps):
    """Redis operations of rpcapp, under one namespace."""

    def __init__(self, client: Any, namespace: str = "rpcapp") -> None:
        self.redis = client
        self.ns = namespace
        self.address: str | None = getattr(client, "rpcapp_address", None)
        """The Redis URL, password masked, for messages (None: not made by ``connect``)."""
        self.clustered = isinstance(client, RedisCluster)
        """A Redis Cluster: a command's keys must share a slot (see ``keys.py``)."""
        self._claim_idem = client.register_script(scripts._CLAIM_IDEMPOTENCY)
        self._complete_idem = client.register_script(scripts._COMPLETE_IDEMPOTENCY)
        self._requeue = client.register_script(scripts._REQUEUE)
        self._unlock = client.register_script(COMPARE_AND_DELETE)
        self._release_idem = client.register_script(scripts._RELEASE_IDEMPOTENCY)
        self._release_due = client.register_script(scripts._RELEASE_DUE)
        self._rate_limit = client.register_script(scripts.RATE_LIMIT)
        self._requeue_to = client.register_script(scripts.REQUEUE_TO)
        self._enqueue = client.register_script(scripts.ENQUEUE)

    # -- requests -----------------------------------------------------
    @_guard
    def enqueue(self, items: list[tuple[str, bytes]], limit: int) -> list[str | None]:
        """Add each (route, frame) to its request stream unless the stream
        already holds ``limit`` entries: one round trip for all of them (one
        per service on a Redis Cluster). Returns each entry id, or None for a
        request refused because its queue is full (not queued). A
        TransportError says with ``maybe_sent`` whether Redis may have queued
        any of them."""
        if len(items) == 1 or not self.clustered:
            return self._enqueue_together(items, limit)
        by_service: dict[str, list[int]] = {}
        for i, (route, _) in enumerate(items):
            by_service.setdefault(keys.base(route), []).append(i)
        ids: list[str | None] = [None] * len(items)
        sent = False
        for indexes in by_service.values():
            try:
                for i, entry_id in zip(indexes, self._enqueue_together([items[i] for i in indexes], limit), strict=True):
                    ids[i] = entry_id
            except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, TransportError) as exc:
                if sent:  # the requests of the services before are queued
                    raise failed(f"redis failed part-way through a batch: {exc}", maybe_sent=True) from exc
                raise
            sent = True
        return ids

    def _enqueue_together(self, items: list[tuple[str, bytes]], limit: int) -> list[str | None]:
        """Run the ``ENQUEUE`` script (check each queue's length, then XADD,
        atomically) on the items: one round trip. On a Redis Cluster the
        items share a slot (a cluster pipeline would send commands again
        after a timeout, which could queue a request twice)."""
        streams = [keys.requests(self.ns, route) for route, _ in items]
        try:
            res = self._enqueue(keys=streams, args=[limit, *(f for _, f in items)])
        except redis.exceptions.ResponseError as exc:
            if len(items) == 1:
                raise  # refused (see _guard)
            raise failed(f"redis error: {exc}", maybe_sent=True) from exc  # the script may have stopped half-way
        errors = [r for r in res if isinstance(r, Exception)]
        if errors:  # a key's own error (e.g. WRONGTYPE): that one not queued, the others may be
            raise failed(f"redis error: {errors[0]}", maybe_sent=len(errors) < len(res))
        return [None if x is None else _text(x) for x in res]

    @_guard
    def ensure_group(self, service: str) -> None:
        self._create_group(keys.requests(self.ns, service), keys.GROUP)

    def _create_group(self, stream: str, group: str) -> None:
        """Create ``group`` on ``stream`` (and the stream) unless it exists."""
        try:
            self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @_guard
    def read(self, services: list[str], consumer: str, count: int, block_ms: int | None) -> list[tuple[str, str, dict[bytes, bytes]]]:
        """XREADGROUP up to ``count`` new entries from each service's stream
        (waiting up to ``block_ms`` for one; None: not at all): (service, entry
        id, fields)."""
        streams = {keys.requests(self.ns, s): ">" for s in services}
        res = self.redis.xreadgroup(keys.GROUP, consumer, streams, count=count, block=block_ms)
        by_key = dict(zip(streams, services, strict=True))
        return [(by_key[key], eid, fields) for key, eid, fields in stream_entries(res)]

    @_guard
    def finish_many(self, items: list[Finish], reply_ttl: int) -> None:
        """Send replies and retire entries for many (service, entry id, reply key,
        frame) in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        replies: dict[str, list[bytes]] = {}
        done: dict[str, list[str]] = {}
        for service, entry_id, reply_key, frame in items:
            if reply_key and frame is not None:
                replies.setdefault(reply_key, []).append(frame)
            done.setdefault(service, []).append(entry_id)
        for key, frames in replies.items():
            pipe.lpush(key, *frames)
            pipe.expire(key, reply_ttl)
        for service, ids in done.items():
            stream = keys.requests(self.ns, service)
            pipe.xack(stream, keys.GROUP, *ids)
            pipe.xdel(stream, *ids)
        _skip_spoiled_replies(pipe.execute(raise_on_error=False), list(replies))

    @_guard
    def record_calls(self, records: list[bytes], history_max: int = 100_000) -> None:
        """Append call records, as one stream entry (a JSON array of them)."""
        if records:
            entry = records[0] if len(records) == 1 else b"[" + b",".join(records) + b"]"
            self.redis.xadd(keys.history(self.ns), {"r": entry}, maxlen=history_max, approximate=True)

    @_guard
    def ensure_recorders(self) -> None:
        self._create_group(keys.history(self.ns), keys.RECORDERS)

    @_guard
    def take_records(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, bytes]]:
        """Call records for the recorder: pending ones of this consumer first
        (left by a crash before they were stored), then new ones."""
        stream = keys.history(self.ns)
        for start in ("0", ">"):
            res = self.redis.xreadgroup(keys.RECORDERS, consumer, {stream: start}, count=count, block=None if start == "0" else block_ms)
            got = [(eid, fields.get(b"r", b"")) for _, eid, fields in stream_entries(res)]
            if got:
                return got
        return []

    @_guard
    def records_stored(self, ids: list[str]) -> None:
        if ids:
            stream = keys.history(self.ns)
            pipe = self.redis.pipeline(transaction=False)
            pipe.xack(stream, keys.RECORDERS, *ids)
            pipe.xdel(stream, *ids)
            pipe.execute()

    @_guard
    def bump_metrics(self, increments: dict[str, float]) -> None:
        """Add to the Prometheus counters kept in Redis (``ns:metrics``)."""
        if increments:
            pipe = self.redis.pipeline(transaction=False)
            for field, amount in increments.items():
                pipe.hincrbyfloat(keys.metrics(self.ns), field, amount)
            pipe.execute()

    @_guard
    def metrics(self) -> dict[str, float]:
        return {_text(k): float(v) for k, v in self.redis.hgetall(keys.metrics(self.ns)).items()}

    @_guard
    def send_replies(self, replies: Iterable[tuple[str, bytes]], reply_ttl: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        sent = []
        for key, frame in replies:
            pipe.lpush(key, frame)
            pipe.expire(key, reply_ttl)
            sent.append(key)
        _skip_spoiled_replies(pipe.execute(raise_on_error=False), sent)

    @_guard
    def dead_letter(self, service: str, entry_id: str | None, raw: bytes, reason: str, maxlen: int) -> None:
        """Park a message with its reason, and retire it from the request stream."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(
            keys.dead_letters(self.ns, service),
            {"m": raw, "reason": reason, "at": str(int(time.time() * 1000)), "entry": entry_id or ""},
            maxlen=maxlen,
            approximate=True,
        )
        if entry_id:
            stream = keys.requests(self.ns, service)
            pipe.xack(stream, keys.GROUP, entry_id)
            pipe.xdel(stream, entry_id)
        pipe.execute()

    @_guard
    def requeue(self, service: str, entry_id: str, raw: bytes, deliveries: int, maxlen: int, born_ms: int | None = None) -> str | None:
        """Atomically move a pending entry back to the end of the queue; with
        ``born_ms`` it keeps its age (field ``t``) for fair ordering. An
        accepted request goes back whatever the queue's length (``maxlen`` is
        not applied: nothing is trimmed)."""
        res = self._requeue(
            keys=[keys.requests(self.ns, service)],
            args=[keys.GROUP, entry_id, raw, deliveries, maxlen, "" if born_ms is None else born_ms],
        )
        return _text(res) if res else None

    # -- replies --------------------------------------------------------
    @_guard
    def wait_reply(self, reply_key: str, timeout: float) -> bytes | None:
        """Block up to ``timeout`` for one reply."""
        got = self.redis.brpop([reply_key], timeout=timeout)
        return got[1] if got else None

    @_guard
    def take_replies(self, reply_key: str, batch: int = 256) -> list[bytes]:
        """Whatever replies are waiting, without blocking."""
        return list(self.redis.rpop(reply_key, batch) or [])

    # -- idempotency ------------------------------------------------------
    @_guard
    def claim_idempotency(self, procedure: str, key: str, call_id: str, ttl_ms: int, waiter: bytes) -> tuple[int, bytes | None]:
        """0: run it; 1: another call is running it, we wait; 2: the stored reply."""
        state, value = self._claim_idem(
            keys=[keys.idempotency(self.ns, procedure, key), keys.idempotency_waiters(self.ns, procedure, key)],
            args=[max(ttl_ms, 1), waiter, call_id],
        )
        return int(state), value

    @_guard
    def complete_idempotency(self, procedure: str, key: str, reply: bytes, ttl: int) -> list[bytes]:
        return list(
            self._complete_idem(
                keys=[keys.idempotency(self.ns, procedure, key), keys.idempotency_waiters(self.ns, procedure, key)],
                args=[reply, ttl],
            )
        )

    @_guard
    def release_idempotency(self, procedure: str, key: str, call_id: str) -> list[bytes]:
        """Forget call ``call_id``'s claim that will never complete (only if the
        key still holds that claim); returns the calls waiting on it."""
        return list(
            self._release_idem(
                keys=[keys.idempotency(self.ns, procedure, key), keys.idempotency_waiters(self.ns, procedure, key)],
                args=[call_id],
            )
        )

    # -- providers and catalog ------------------------------------------
    @_guard
    def heartbeat(self, services: Iterable[str], consumer: str, info: bytes | None, at_ms: int, inbox: bool = False) -> None:
        """Mark ``consumer`` alive (and, with ``inbox``, the owner of a live inbox)."""
        pipe = self.redis.pipeline(transaction=False)
        for service in services:
            pipe.zadd(keys.consumers(self.ns, service), {consumer: at_ms})
            if info is not None:
                pipe.hset(keys.providers(self.ns, service), consumer, info)
            if inbox:
                pipe.zadd(keys.inboxes(self.ns, service), {consumer: at_ms})
        pipe.execute()

    @_guard
    def deregister(self, services: Iterable[str], consumer: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for service in services:
            pipe.zrem(keys.consumers(self.ns, service), consumer)
            pipe.hdel(keys.providers(self.ns, service), consumer)
        pipe.execute()

    @_guard
    def live_consumers(self, service: str, since_ms: int) -> list[str]:
        return [_text(x) for x in self.redis.zrangebyscore(keys.consumers(self.ns, service), since_ms, "+inf")]

    @_guard
    def count_live(self, service: str, since_ms: int) -> tuple[int, int]:
        """(providers that beat since ``since_ms``, providers registered at all)."""
        live, known, _ = self.pulse(service, since_ms)
        return live, known

    @_guard
    def pulse(self, service: str, since_ms: int) -> tuple[int, int, int]:
        """(providers that beat since ``since_ms``, providers registered at
        all, the newest heartbeat in ms, 0 if none)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcount(keys.consumers(self.ns, service), since_ms, "+inf")
        pipe.zcard(keys.consumers(self.ns, service))
        pipe.zrevrange(keys.consumers(self.ns, service), 0, 0, withscores=True)
        live, known, newest = pipe.execute()
        return int(live), int(known), int(newest[0][1]) if newest else 0

    @_guard
    def providers_info(self, service: str) -> dict[str, bytes]:
        return {_text(k): v for k, v in self.redis.hgetall(keys.providers(self.ns, service)).items()}

    @_guard
    def publish_specs(self, service: str, specs: dict[str, bytes]) -> None:
        if specs:
            self.redis.hset(keys.procedures(self.ns, service), mapping=specs)

    @_guard
    def published_specs(self, service: str) -> dict[str, bytes]:
        """Every procedure spec the service's workers published (signed frames)."""
        return {_text(k): v for k, v in self.redis.hgetall(keys.procedures(self.ns, service)).items()}

    @_guard
    def get_spec(self, procedure: str) -> bytes | None:
        return self.redis.hget(keys.procedures(self.ns, keys.service_of(procedure)), procedure)

    @_guard
    def incr(self, service: str, counter: str, amount: int = 1) -> None:
        self.redis.hincrby(keys.stats(self.ns, service), counter, amount)

    @_guard
    def stats(self, service: str) -> dict[str, int]:
        return {_text(k): int(v) for k, v in self.redis.hgetall(keys.stats(self.ns, service)).items()}

    # -- recovery ----------------------------------------------------------
    @_guard
    def try_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        return bool(self.redis.set(key, token, nx=True, px=ttl_ms))

    @_guard
    def unlock(self, key: str, token: str) -> None:
        """Delete ``key`` only if it still holds ``token``."""
        self._unlock(keys=[key], args=[token])

    @_guard
    def group_consumers(self, service: str) -> list[tuple[str, int]]:
        """(name, pending count) of every consumer in the service's group."""
        rows = self.redis.xinfo_consumers(keys.requests(self.ns, service), keys.GROUP)
        return [(_text(r["name"]), int(r["pending"])) for r in rows]

    @_guard
    def claim_pending(self, service: str, dead: str, claimer: str, count: int = 100) -> list[tuple[str, int, dict[bytes, bytes] | None]]:
        """Take over a dead consumer's pending entries: (id, times delivered, fields)."""
        stream = keys.requests(self.ns, service)
        rows = self.redis.xpending_range(stream, keys.GROUP, min="-", max="+", count=count, consumername=dead)
        if not rows:
            return []
        ids = [r["message_id"] for r in rows]
        claimed = self.redis.xclaim(stream, keys.GROUP, claimer, min_idle_time=0, message_ids=ids)
        fields = {_text(eid): f for eid, f in claimed if eid is not None}
        return [(_text(i), int(r["times_delivered"]), fields.get(_text(i))) for i, r in zip(ids, rows, strict=True)]

    @_guard
    def own_idle_pending(self, service: str, consumer: str, idle_ms: int, count: int = 100) -> list[tuple[str, dict[bytes, bytes] | None]]:
        """A consumer's pending entries idle for ``idle_ms``, claimed back to it
        (which resets their idle time): (id, fields or None if deleted)."""
        stream = keys.requests(self.ns, service)
        rows = self.redis.xpending_range(stream, keys.GROUP, min="-", max="+", count=count, consumername=consumer, idle=idle_ms)
        if not rows:
            return []
        ids = [r["message_id"] for r in rows]
        claimed = {_text(eid): f for eid, f in self.redis.xclaim(stream, keys.GROUP, consumer, min_idle_time=idle_ms, message_ids=ids) if eid is not None}
        return [(_text(i), claimed.get(_text(i))) for i in ids]

    @_guard
    def ack(self, service: str, entry_id: str) -> None:
        stream = keys.requests(self.ns, service)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(stream, keys.GROUP, entry_id)
        pipe.xdel(stream, entry_id)
        pipe.execute()

    @_guard
    def remove_consumer(self, service: str, consumer: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xgroup_delconsumer(keys.requests(self.ns, service), keys.GROUP, consumer)
        pipe.zrem(keys.consumers(self.ns, service), consumer)
        pipe.hdel(keys.providers(self.ns, service), consumer)
        pipe.execute()

    @_guard
    def forget_consumers(self, service: str, names: Iterable[str]) -> None:
        names = list(names)
        if names:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(keys.consumers(self.ns, service), *names)
            pipe.hdel(keys.providers(self.ns, service), *names)
            pipe.execute()

    @_guard
    def dead_letters(self, service: str, count: int = 100) -> list[tuple[str, dict[str, Any]]]:
        rows = self.redis.xrevrange(keys.dead_letters(self.ns, service), count=count)
        return [(_text(eid), {_text(k): v for k, v in f.items()}) for eid, f in rows]

    # -- misc ------------------------------------------------------------------
    @_guard
    def ping(self) -> bool:
        return bool(self.redis.ping())

    @_guard
    def scan_keys(self, match: str | None = None) -> Iterator[str]:
        for k in self.redis.scan_iter(match=match or keys.pattern(self.ns), count=1000):
            yield _text(k)

    def close(self) -> None:
        try:
            self.redis.close()
        except Exception:  # closing a broken connection must not raise
            log.debug("error closing redis client", exc_info=True)


def _skip_spoiled_replies(results: list[Any], reply_keys: list[str]) -> None:
    """Raise the first error of a pipeline whose first commands were LPUSH +
    EXPIRE of each of ``reply_keys``, except WRONGTYPE on a reply list: a key
    someone turned into another type loses its own reply (logged), never the
    rest of the batch (which would otherwise be sent again forever)."""
    for i, result in enumerate(results):
        if not isinstance(result, Exception):
            continue
        if i < 2 * len(reply_keys) and "WRONGTYPE" in str(result):
            log.warning("reply list %s holds another type: its reply is dropped", reply_keys[i // 2][:200])
            continue
        raise result

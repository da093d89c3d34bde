"""Layer 1: the only module that talks to redis-py.

Every Redis error is re-raised as :class:`rpcapp.errors.TransportError`; the
rest of rpcapp never sees a ``redis.exceptions`` class.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import keys
from .errors import TransportError
from .redlock import COMPARE_AND_DELETE

log = logging.getLogger("rpcapp.transport")
T = TypeVar("T")

SOCKET_TIMEOUT = 5.0
"""Bound on any single Redis command; blocking reads use at most 1 s of it."""

_CLAIM_IDEMPOTENCY = """
local v = redis.call('GET', KEYS[1])
if (not v) or v == ('P' .. ARGV[3]) then
  redis.call('SET', KEYS[1], 'P' .. ARGV[3], 'PX', ARGV[1])
  return {0, false}
end
if string.sub(v, 1, 1) == 'P' then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[1]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[1])
  end
  return {1, false}
end
return {2, string.sub(v, 2)}
"""

_COMPLETE_IDEMPOTENCY = """
redis.call('SET', KEYS[1], 'R' .. ARGV[1], 'EX', ARGV[2])
local w = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
return w
"""

_RELEASE_IDEMPOTENCY = """
if redis.call('GET', KEYS[1]) ~= ('P' .. ARGV[1]) then
  return {}
end
local w = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[1], KEYS[2])
return w
"""

_REQUEUE = """
local ok = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ok == 1 then
  if ARGV[6] ~= '' then
    return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'm', ARGV[3], 'n', ARGV[4], 't', ARGV[6])
  end
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'm', ARGV[3], 'n', ARGV[4])
end
return false
"""


_RELEASE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, frame in ipairs(due) do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'm', frame)
  redis.call('ZREM', KEYS[2], frame)
end
return #due
"""


def _guard(fn: Callable[..., T]) -> Callable[..., T]:
    """Re-raise redis-py errors as TransportError."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc):
                raise MissingGroup(str(exc)) from exc
            raise TransportError(f"redis error: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise TransportError(f"redis unreachable: {exc}") from exc
        except OSError as exc:
            raise TransportError(f"redis unreachable: {exc}") from exc

    return wrapper


class MissingGroup(TransportError):
    """Raised when a service's consumer group is gone (e.g. Redis restarted empty)."""


def connect(url: str, **options: Any) -> Any:
    """A redis-py client for ``redis://``, ``rediss://``, ``unix://``,
    ``redis+sentinel://`` or ``redis+cluster://`` URLs."""
    opts: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": 1.0,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    opts.update(options)
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme in ("redis+cluster", "rediss+cluster"):
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [ClusterNode(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in _hosts(parts)]
        opts.pop("health_check_interval", None)
        return RedisCluster(
            startup_nodes=nodes,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ssl=scheme.startswith("rediss"),
            **opts,
        )
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        from redis.sentinel import Sentinel

        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("a sentinel URL needs /master_name")
        hosts = [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in _hosts(parts)]
        sentinel = Sentinel(hosts, socket_timeout=1.0)
        return sentinel.master_for(
            path[0],
            db=int(path[1]) if len(path) > 1 else 0,
            password=unquote(parts.password) if parts.password else None,
            ssl=scheme.startswith("rediss"),
            **opts,
        )
    return redis.Redis.from_url(url, **opts)


def _hosts(parts: Any) -> list[str]:
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return [h for h in netloc.split(",") if h]


class Transport:
    """Redis operations of rpcapp, under one namespace."""

    def __init__(self, client: Any, namespace: str = "rpcapp") -> None:
        self.redis = client
        self.ns = namespace
        self._claim_idem = client.register_script(_CLAIM_IDEMPOTENCY)
        self._complete_idem = client.register_script(_COMPLETE_IDEMPOTENCY)
        self._requeue = client.register_script(_REQUEUE)
        self._unlock = client.register_script(COMPARE_AND_DELETE)
        self._release_idem = client.register_script(_RELEASE_IDEMPOTENCY)
        self._release_due = client.register_script(_RELEASE_DUE)

    # -- requests -----------------------------------------------------
    @_guard
    def enqueue(self, items: list[tuple[str, bytes]], maxlen: int) -> list[str]:
        """XADD each (service, frame); one round trip for all of them."""
        if len(items) == 1:  # a lone call skips the pipeline machinery
            (service, frame), = items
            return [_text(self.redis.xadd(keys.requests(self.ns, service), {"m": frame}, maxlen=maxlen, approximate=True))]
        pipe = self.redis.pipeline(transaction=False)
        for service, frame in items:
            pipe.xadd(keys.requests(self.ns, service), {"m": frame}, maxlen=maxlen, approximate=True)
        return [_text(x) for x in pipe.execute()]

    @_guard
    def ensure_group(self, service: str) -> None:
        try:
            self.redis.xgroup_create(keys.requests(self.ns, service), keys.GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @_guard
    def read(self, services: list[str], consumer: str, count: int, block_ms: int) -> list[tuple[str, str, dict[bytes, bytes]]]:
        """XREADGROUP up to ``count`` new entries from each service's stream:
        (service, entry id, fields)."""
        streams = {keys.requests(self.ns, s): ">" for s in services}
        res = self.redis.xreadgroup(keys.GROUP, consumer, streams, count=count, block=block_ms)
        if not res:
            return []
        by_key = dict(zip(streams, services, strict=True))
        rows = res.items() if isinstance(res, dict) else res  # RESP3 map or RESP2 pairs
        out = []
        for key, entries in rows:
            service = by_key[_text(key)]
            for eid, fields in entries:
                if fields:
                    out.append((service, _text(eid), fields))
        return out

    @_guard
    def finish_many(self, items: list[tuple[str, str, str | None, bytes | None]], reply_ttl: int) -> None:
        """``finish`` for many (service, entry id, reply key, frame) in one round trip."""
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
        pipe.execute()

    @_guard
    def send_replies(self, replies: Iterable[tuple[str, bytes]], reply_ttl: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for key, frame in replies:
            pipe.lpush(key, frame)
            pipe.expire(key, reply_ttl)
        pipe.execute()

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
        ``born_ms`` it keeps its age (field ``t``) for fair ordering."""
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
    def heartbeat(self, services: Iterable[str], consumer: str, info: bytes | None, at_ms: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for service in services:
            pipe.zadd(keys.consumers(self.ns, service), {consumer: at_ms})
            if info is not None:
                pipe.hset(keys.providers(self.ns, service), consumer, info)
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
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcount(keys.consumers(self.ns, service), since_ms, "+inf")
        pipe.zcard(keys.consumers(self.ns, service))
        live, known = pipe.execute()
        return int(live), int(known)

    @_guard
    def providers_info(self, service: str) -> dict[str, bytes]:
        return {_text(k): v for k, v in self.redis.hgetall(keys.providers(self.ns, service)).items()}

    @_guard
    def publish_specs(self, service: str, specs: dict[str, bytes]) -> None:
        if specs:
            self.redis.hset(keys.procedures(self.ns, service), mapping=specs)

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
        """XADD each (service, frame) and PUBLISH ``broadcast``: one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for service, frame in items:
            pipe.xadd(keys.requests(self.ns, service), {"m": frame}, maxlen=maxlen, approximate=True)
        if broadcast is not None:
            pipe.publish(keys.broadcast(self.ns, topic), broadcast)
        pipe.execute()

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
        """Move scheduled retries whose time has come back to the queue."""
        return int(self._release_due(keys=[keys.requests(self.ns, service), keys.delayed(self.ns, service)], args=[now, maxlen]))

    @_guard
    def replay_dead(self, service: str, entry_id: str, frame: bytes, maxlen: int) -> bool:
        """Queue ``frame`` again and drop dead letter ``entry_id``; False if it was gone."""
        if not self.redis.xdel(keys.dead_letters(self.ns, service), entry_id):
            return False
        self.redis.xadd(keys.requests(self.ns, service), {"m": frame}, maxlen=maxlen, approximate=True)
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

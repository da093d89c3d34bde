"""Layer 1: connecting to Redis, and the error boundary of the transport.

Every Redis error is re-raised as :class:`rpcapp.errors.TransportError`; the
rest of rpcapp never sees a ``redis.exceptions`` class.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from ..errors import TransportError

log = logging.getLogger("rpcapp.transport")
T = TypeVar("T")

SOCKET_TIMEOUT = 5.0
"""Bound on any single Redis command; blocking reads use at most 1 s of it."""

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
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
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
        from redis.cluster import ClusterNode

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


def stream_entries(res: Any) -> list[tuple[str, str, dict[bytes, bytes]]]:
    """(stream key, entry id, fields) of an XREADGROUP answer (a RESP3 map or
    RESP2 pairs), without the entries deleted meanwhile (no fields)."""
    rows = res.items() if isinstance(res, dict) else (res or [])
    return [(_text(key), _text(eid), fields) for key, entries in rows for eid, fields in entries if fields]


def execute_publishing(client: Any, pipe: Any, messages: list[tuple[str, Any]]) -> list[Any]:
    """Run ``pipe`` and PUBLISH each (channel, message) after its commands: in
    the same round trip, except on a Redis Cluster, whose pipelines refuse
    PUBLISH (there they follow one by one)."""
    clustered = isinstance(client, RedisCluster)
    if not clustered:
        for channel, message in messages:
            pipe.publish(channel, message)
    res = list(pipe.execute())
    if clustered:
        for channel, message in messages:
            client.publish(channel, message)
    return res


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

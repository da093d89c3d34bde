"""Layer 1: connecting to Redis, and the error boundary of the transport.

Every Redis error is re-raised as :class:`rpcapp.errors.TransportError`; the
rest of rpcapp never sees a ``redis.exceptions`` class.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from ..errors import TransportError
from .address import RedisAddress, mask_url, parse_url

log = logging.getLogger("rpcapp.transport")
T = TypeVar("T")

SOCKET_TIMEOUT = 5.0
"""Bound on any single Redis command; blocking reads use at most 1 s of it."""

_bound = threading.local()


class deadline:  # noqa: N801  (used as a function: ``with deadline(seconds):``)
    """Bound every Redis wait of this thread by ``seconds`` from now (plus a
    moment), below the connection's own socket timeout: a call's deadline
    holds even when Redis stops answering."""

    __slots__ = ("_until", "_previous")

    def __init__(self, seconds: float) -> None:
        self._until = time.monotonic() + max(seconds, 0.0) + DEADLINE_SLACK

    def __enter__(self) -> None:
        self._previous = previous = getattr(_bound, "until", None)
        _bound.until = self._until if previous is None else min(previous, self._until)

    def __exit__(self, *exc: Any) -> None:
        _bound.until = self._previous


DEADLINE_SLACK = 0.1
"""Seconds a bounded wait may go past its deadline (a blocking read that
ends at the deadline must not lose the race to its own socket timeout)."""


class NotSent(redis.exceptions.ConnectionError):
    """Redis could not be reached at all: the command was not sent."""


class _Bounded:
    """Mixin of rpcapp's redis-py connections: a failure to connect raises
    :class:`NotSent`, and a thread's :func:`deadline` bounds socket waits
    (connecting included). Kept cheap: it runs for every command."""

    socket_timeout: float | None
    socket_connect_timeout: float | None
    _sock: Any
    _rpc_bounded = False

    # redis-py connects through connect() (the pool's check on every checkout;
    # Sentinel looks up the master there) or straight through
    # connect_check_health() (a command on a closed connection).
    def connect(self, *args: Any, **kwargs: Any) -> Any:
        return None if self._sock is not None else self._connecting(super().connect, *args, **kwargs)  # type: ignore[misc]

    def connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
        return None if self._sock is not None else self._connecting(super().connect_check_health, *args, **kwargs)  # type: ignore[misc]

    def _connecting(self, connect: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Connect within the thread's deadline; a failure is :class:`NotSent`."""
        until = getattr(_bound, "until", None)
        usual = self.socket_connect_timeout
        if until is not None:
            left = max(until - time.monotonic(), 0.001)
            self.socket_connect_timeout = left if usual is None else min(usual, left)
        try:
            return connect(*args, **kwargs)
        except NotSent:
            raise
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise NotSent(str(exc)) from exc
        finally:
            self.socket_connect_timeout = usual

    def send_packed_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._rpc_bounded or getattr(_bound, "until", None) is not None:
            self._bound_waits()
        try:
            return super().send_packed_command(*args, **kwargs)  # type: ignore[misc]
        except AttributeError as exc:
            raise self._reset_under_us(exc) from exc

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if self._rpc_bounded or getattr(_bound, "until", None) is not None:
            self._bound_waits()
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except AttributeError as exc:
            raise self._reset_under_us(exc) from exc

    def _reset_under_us(self, exc: AttributeError) -> BaseException:
        """redis-py's cluster client disconnects every connection of a node when
        it refreshes its slot map, including ones another thread is using: that
        thread then finds its socket or parser gone (``None``). It is a lost
        connection, and is reported as one; any other AttributeError is a bug."""
        if self._sock is None:
            return redis.exceptions.ConnectionError(f"connection reset by another thread: {exc}")
        return exc

    def _bound_waits(self) -> None:
        sock = self._sock
        if sock is None:
            return
        until = getattr(_bound, "until", None)
        if until is None:  # back to the connection's own timeout
            sock.settimeout(self.socket_timeout)
            self._rpc_bounded = False
            return
        left = max(until - time.monotonic(), 0.001)
        if self.socket_timeout is not None and left >= self.socket_timeout:
            if self._rpc_bounded:  # a far deadline: the usual timeout is the tighter bound
                sock.settimeout(self.socket_timeout)
                self._rpc_bounded = False
            return
        sock.settimeout(left)
        self._rpc_bounded = True


_bounded_classes: dict[type, type] = {}


def bounded_class(connection_class: type) -> type:
    """``connection_class`` with the :class:`_Bounded` behaviour."""
    if connection_class not in _bounded_classes:
        _bounded_classes[connection_class] = type(f"Bounded{connection_class.__name__}", (_Bounded, connection_class), {})
    return _bounded_classes[connection_class]


class _BoundedPool(redis.ConnectionPool):
    """A connection pool of :func:`bounded_class` connections (Redis Cluster's nodes)."""

    def __init__(self, connection_class: type = redis.Connection, **kwargs: Any) -> None:
        super().__init__(connection_class=bounded_class(connection_class), **kwargs)


def _guard(fn: Callable[..., T]) -> Callable[..., T]:
    """Re-raise redis-py errors as TransportError (``maybe_sent`` is False
    when Redis refused the command or could not be reached at all, so the
    command did not take effect)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc):
                raise MissingGroup(str(exc)) from exc
            raise failed(f"redis error: {exc}", maybe_sent=False) from exc  # an error reply: refused
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise failed(unreachable(_address_of(args), exc), maybe_sent=not isinstance(exc, NotSent)) from exc
        except OSError as exc:
            raise TransportError(unreachable(_address_of(args), exc)) from exc

    return wrapper


def _address_of(args: tuple[Any, ...]) -> str | None:
    """The masked address of the transport a guarded method runs on."""
    return getattr(args[0], "address", None) if args else None


def failed(message: str, maybe_sent: bool) -> TransportError:
    """A TransportError saying whether the command may have reached Redis."""
    error = TransportError(message)
    error.maybe_sent = maybe_sent
    return error


class MissingGroup(TransportError):
    """Raised when a service's consumer group is gone (e.g. Redis restarted empty)."""


def connect(url: str, bounded: bool = True, **options: Any) -> Any:
    """A redis-py client for ``redis://``, ``rediss://``, ``unix://``,
    ``redis+sentinel://`` or ``redis+cluster://`` URLs (``ConfigurationError``
    for a malformed one). ``bounded``: its connections honour :func:`deadline`
    and raise :class:`NotSent` when they cannot connect (what sending calls
    needs; a worker's reads need neither)."""
    address = parse_url(url)
    opts: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": 1.0,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    opts.update(options)
    if address.kind == "cluster":
        client = _cluster(address, bounded, opts)
    elif address.kind == "sentinel":
        client = _sentinel(address, bounded, opts)
    else:
        plain = {"unix": redis.UnixDomainSocketConnection, "rediss": redis.SSLConnection}.get(address.scheme, redis.Connection)
        if bounded:
            opts.setdefault("connection_class", bounded_class(plain))
        client = redis.Redis.from_url(url, **opts)
    client.rpcapp_address = mask_url(url)  # for messages: see Transport.address
    return client


def _cluster(address: RedisAddress, bounded: bool, opts: dict[str, Any]) -> Any:
    from redis.cluster import ClusterNode

    nodes = [ClusterNode(host, port) for host, port in address.hosts[1:]]
    opts.pop("health_check_interval", None)
    # Given as a URL, the first node makes redis-py build every node's pool
    # with ``connection_pool_class`` (and TLS from the scheme).
    netloc = urlsplit(address.url).netloc
    userinfo = netloc.rsplit("@", 1)[0] + "@" if "@" in netloc else ""
    host, port = address.hosts[0]
    first = f"{address.scheme.split('+', 1)[0]}://{userinfo}{_netloc_host(host)}:{port}"
    pool = _BoundedPool if bounded else redis.ConnectionPool
    return RedisCluster(url=first, startup_nodes=nodes, connection_pool_class=pool, **opts)


def _sentinel(address: RedisAddress, bounded: bool, opts: dict[str, Any]) -> Any:
    from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

    sentinel = Sentinel(list(address.hosts), socket_timeout=1.0)
    managed = SentinelManagedSSLConnection if address.tls else SentinelManagedConnection
    if bounded:
        opts.setdefault("connection_class", bounded_class(managed))
    return sentinel.master_for(address.master, db=address.db, password=address.password, ssl=address.tls, **opts)


def _netloc_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def unreachable(address: str | None, exc: BaseException) -> str:
    """The one message for a Redis that cannot be reached: its (masked)
    address and the cause, e.g. ``Redis at redis://127.0.0.1:1/0 is
    unreachable: Connection refused``."""
    cause = str(exc).strip() or type(exc).__name__
    cause = _CONNECTING.sub("", cause).rstrip(".") or cause
    return f"Redis at {address or '(unknown address)'} is unreachable: {cause}"


_CONNECTING = re.compile(r"^(Error \S+ )?(while )?connecting to \S+\.\s+", re.IGNORECASE)


def stream_entries(res: Any) -> list[tuple[str, str, dict[bytes, bytes]]]:
    """(stream key, entry id, fields) of an XREADGROUP answer (a RESP3 map or
    RESP2 pairs), without the entries deleted meanwhile (no fields)."""
    rows = res.items() if isinstance(res, dict) else (res or [])
    return [(_text(key), _text(eid), fields) for key, entries in rows for eid, fields in entries if fields]


def execute_publishing(client: Any, pipe: Any, messages: list[tuple[str, Any]], clustered: bool) -> list[Any]:
    """Run ``pipe`` and PUBLISH each (channel, message) after its commands: in
    the same round trip, except on a Redis Cluster, whose pipelines refuse
    PUBLISH (there they follow one by one)."""
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

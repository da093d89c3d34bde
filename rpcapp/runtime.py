"""Layer 3: builds the process's client, transport and workers from settings."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.backends.signals import connection_created

from . import conf
from .catalog import CatalogCache
from .client import Client, ClientSettings
from .locks import RedLock
from .maintenance import WorkerDuties
from .protocol import CODECS, Signer, derive_key
from .registry import Registry, default_registry
from .transport import Transport, connect
from .worker import Worker, WorkerSettings

_lock = threading.Lock()
_client: Client | None = None
_installed: list[Any] = []  # clients put over the built one (local mode), innermost last


def build_signer() -> Signer:
    c = conf.get()
    secrets = [c.SIGNING_KEY or settings.SECRET_KEY, *c.OLD_SIGNING_KEYS]
    return Signer(tuple(derive_key(s) for s in secrets), CODECS[c.CODEC])


def build_transport(calls: bool = True) -> Transport:
    """A transport on the configured Redis; ``calls``: it sends calls, so its
    connections honour a call's deadline (workers' transports need not)."""
    return Transport(connect(conf.redis_url(), bounded=calls), conf.get().NAMESPACE)


def client_settings() -> ClientSettings:
    c = conf.get()
    return ClientSettings(
        default_timeout=c.DEFAULT_TIMEOUT,
        max_request_bytes=c.MAX_REQUEST_BYTES,
        max_reply_bytes=c.MAX_REPLY_BYTES,
        max_queue_length=c.MAX_QUEUE_LENGTH,
        provider_ttl=c.PROVIDER_TTL,
        reply_ttl=c.REPLY_TTL,
        stream_window=c.STREAM_WINDOW,
        catalog=c.CATALOG,
        catalog_refresh=c.CATALOG_REFRESH,
        record_calls=c.RECORD_CALLS,
        history_max=c.HISTORY_STREAM_MAX,
        event_ttl=c.EVENT_TTL,
    )


def worker_settings(**overrides: Any) -> WorkerSettings:
    c = conf.get()
    values: dict[str, Any] = {
        "heartbeat_interval": c.HEARTBEAT_INTERVAL,
        "provider_ttl": c.PROVIDER_TTL,
        "max_deliveries": c.MAX_DELIVERIES,
        "drain_grace": c.DRAIN_GRACE,
        "max_request_bytes": c.MAX_REQUEST_BYTES,
        "max_reply_bytes": c.MAX_REPLY_BYTES,
        "reply_ttl": c.REPLY_TTL,
        "idempotency_ttl": c.IDEMPOTENCY_TTL,
        "max_queue_length": c.MAX_QUEUE_LENGTH,
        "dead_letter_max": c.DEAD_LETTER_MAX,
        "event_max_attempts": c.EVENT_MAX_ATTEMPTS,
        "event_retry_delay": c.EVENT_RETRY_DELAY,
        "event_ttl": c.EVENT_TTL,
        "record_calls": c.RECORD_CALLS,
        "history_max": c.HISTORY_STREAM_MAX,
        "redact": tuple(k.lower() for k in c.REDACT_KEYS),
        "lock_factory": _lock_factory,
        "hooks": [DatabaseConnections(), WorkerDuties()],  # WorkerDuties: Provider row, maintenance
    }
    values.update(overrides)
    return WorkerSettings(**values)


_threads = threading.local()


def _database_used(**kwargs: Any) -> None:
    _threads.database = True


connection_created.connect(_database_used, dispatch_uid="rpcapp-database-used")


class DatabaseConnections:
    """A worker hook doing around each call what Django does around each
    request: the query log (kept while DEBUG is on) is emptied, and database
    connections past ``CONN_MAX_AGE`` or broken are closed. Free for the
    threads that never opened a database connection."""

    def before_call(self, req: Any) -> None:
        if getattr(_threads, "database", False):  # reset_queries() and close_old_connections()
            for connection in connections.all(initialized_only=True):
                connection.queries_log.clear()
                connection.close_if_unusable_or_obsolete()

    def after_call(self, req: Any, reply: Any) -> None:
        if getattr(_threads, "database", False):
            for connection in connections.all(initialized_only=True):
                connection.close_if_unusable_or_obsolete()

    def on_error(self, req: Any, exc: BaseException) -> None:
        self.after_call(req, None)


def _lock_factory(name: str, ttl: float) -> RedLock:
    return RedLock(name, ttl)


def build_worker(services: list[str] | None = None, registry: Registry | None = None, name: str | None = None, **overrides: Any) -> Worker:
    transport = build_transport(calls=False)
    c = conf.get()
    return Worker(
        transport,
        build_signer(),
        registry or default_registry,
        worker_settings(**overrides),
        services=services,
        name=name,
        catalog=CatalogCache(transport, c.CATALOG_REFRESH) if c.CATALOG else None,
    )


def get_client() -> Client:
    """The process's client: one installed by :func:`installed` (local mode),
    else the one built from settings on first use."""
    global _client
    if _installed:
        return _installed[-1]  # type: ignore[no-any-return]
    if _client is None:
        with _lock:
            if _client is None:
                _client = Client(build_transport(), build_signer(), client_settings(), default_registry)
    return _client


@contextlib.contextmanager
def installed(client: Any) -> Iterator[Any]:
    """Make ``client`` the process's client (``rpcapp.rpc``) until the block
    exits, even on error; blocks nest. Process-wide: every thread sees it."""
    with _lock:
        _installed.append(client)
    try:
        yield client
    finally:
        with _lock:
            _installed.remove(client)


def reset() -> None:
    """Forget the client built from settings (after a settings change); an
    installed one stays."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
            _client.transport.close()
        _client = None

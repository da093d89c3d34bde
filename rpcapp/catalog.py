"""Layer 2: the service catalog as callers and workers see it.

The admin (layer 3) stores each service's operational settings as one JSON
document in the Redis hash ``ns:catalog`` and announces the change on
``ns:catalog:changed``. Every process keeps what it read in memory
(:class:`CatalogCache`): a call looks it up in a dict, never in the database
and normally not in Redis; a thread listening to the channel drops the
entry of a changed service, and every entry is read again after
``refresh`` seconds in case an announcement was missed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import TransportError
from .pubsub import follow

log = logging.getLogger("rpcapp.catalog")

POLICIES = ("queue", "round_robin", "random", "weighted", "least_busy", "consistent_hash")
PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
MAX_ENTRIES = 1024
"""Service configs a process keeps in memory at most (the oldest read goes first)."""


def parse_rate(text: str | None) -> tuple[int, float] | None:
    """``"100/s"`` -> (100, 1.0); also ``/m`` and ``/h``. None for no limit."""
    if not text:
        return None
    count, _, unit = str(text).strip().partition("/")
    try:
        n = int(count)
    except ValueError:
        raise ValueError(f"rate limit {text!r} is not like '100/s'") from None
    if n <= 0 or unit not in PERIODS:
        raise ValueError(f"rate limit {text!r} is not like '100/s', '6000/m' or '10000/h'")
    return n, PERIODS[unit]


@dataclass(frozen=True)
class ProcedureConfig:
    enabled: bool = True
    timeout: float | None = None
    rate_limit: str | None = None
    retries: int = 0
    retry_backoff: float = 0.05
    hedge_after: float | None = None


@dataclass(frozen=True)
class ProviderConfig:
    weight: int = 1
    draining: bool = False


@dataclass(frozen=True)
class ServiceConfig:
    """One service's catalog entry; the defaults are what an unlisted service gets."""

    known: bool = False  # False: not in the catalog (every default applies)
    enabled: bool = True
    draining: bool = False
    policy: str = "queue"
    hash_argument: str = ""
    default_timeout: float | None = None
    rate_limit: str | None = None
    procedures: dict[str, ProcedureConfig] = field(default_factory=dict)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    allowed_groups: tuple[str, ...] = ()  # the HTTP gateways: only members may call (if any)

    def procedure(self, name: str) -> ProcedureConfig:
        return self.procedures.get(name) or _DEFAULT_PROCEDURE

    def provider(self, provider_id: str) -> ProviderConfig:
        return self.providers.get(provider_id) or _DEFAULT_PROVIDER

    def to_wire(self) -> bytes:
        data: dict[str, Any] = {
            "enabled": self.enabled,
            "draining": self.draining,
            "policy": self.policy,
            "hash_argument": self.hash_argument,
            "default_timeout": self.default_timeout,
            "rate_limit": self.rate_limit,
            "procedures": {k: vars(v) for k, v in self.procedures.items()},
            "providers": {k: vars(v) for k, v in self.providers.items()},
            "allowed_groups": list(self.allowed_groups),
        }
        return orjson.dumps(data)

    @classmethod
    def from_wire(cls, raw: bytes) -> ServiceConfig:
        d = orjson.loads(raw)
        return cls(
            known=True,
            enabled=bool(d.get("enabled", True)),
            draining=bool(d.get("draining", False)),
            policy=d.get("policy") if d.get("policy") in POLICIES else "queue",
            hash_argument=str(d.get("hash_argument") or ""),
            default_timeout=d.get("default_timeout"),
            rate_limit=d.get("rate_limit") or None,
            procedures={k: ProcedureConfig(**v) for k, v in (d.get("procedures") or {}).items()},
            providers={k: ProviderConfig(**v) for k, v in (d.get("providers") or {}).items()},
            allowed_groups=tuple(str(g) for g in d.get("allowed_groups") or ()),
        )


_DEFAULT_PROCEDURE = ProcedureConfig()
_DEFAULT_PROVIDER = ProviderConfig()
UNLISTED = ServiceConfig()


class CatalogCache:
    """Service configs read from Redis, kept in memory, invalidated by pub/sub."""

    def __init__(self, transport: Any, refresh: float = 10.0) -> None:
        self.transport = transport
        self.refresh = refresh
        self._entries: dict[str, tuple[float, ServiceConfig]] = {}
        self._generation = 0  # bumped by every invalidation: a read that raced one is not kept
        self._lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self._subscribed = threading.Event()

    def service(self, name: str) -> ServiceConfig:
        """The service's config (``UNLISTED`` if the catalog has none, or Redis is away)."""
        entry = self._entries.get(name)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        self._ensure_listener()
        generation = self._generation
        try:
            raw = self.transport.catalog_get(name)
            config = ServiceConfig.from_wire(raw) if raw else UNLISTED
        except TransportError:
            return entry[1] if entry is not None else UNLISTED  # keep what we knew
        except (ValueError, TypeError) as exc:
            log.warning("ignoring a malformed catalog entry for %s: %s", name, exc)
            config = UNLISTED
        # Read again after ``refresh`` in case a change announcement was missed
        # (e.g. while the subscription was reconnecting).
        with self._lock:
            if generation == self._generation:
                if len(self._entries) >= MAX_ENTRIES and name not in self._entries:
                    self._entries.pop(next(iter(self._entries)))  # bounded whatever names callers send
                self._entries[name] = (time.monotonic() + (self.refresh if self._subscribed.is_set() else 1.0), config)
        return config

    def invalidate(self, name: str | None = None) -> None:
        with self._lock:
            self._generation += 1
            if name is None:
                self._entries.clear()
            else:
                self._entries.pop(name, None)

    def close(self) -> None:
        self._stop.set()

    def _ensure_listener(self) -> None:
        if self._listener is None:
            with self._lock:
                if self._listener is None:
                    self._listener = threading.Thread(target=self._listen, name="rpcapp-catalog", daemon=True)
                    self._listener.start()

    def _listen(self) -> None:
        def changed(_: str, name: bytes) -> None:
            self.invalidate(name.decode() if isinstance(name, bytes) else str(name))

        # On (re)subscribing, anything may have changed while nobody listened.
        follow(self.transport.listen_catalog, changed, self._stop, self._subscribed, "catalog", on_subscribed=self.invalidate, level=logging.DEBUG)

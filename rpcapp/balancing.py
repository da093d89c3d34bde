"""Layer 2: load-balancing policies: which provider gets a call.

``queue`` (the default) addresses nobody: the call goes to the service's
shared stream and the first free worker takes it. Every other policy picks
one live provider and the call goes to that provider's inbox
(``ns:{svc}:inbox:<provider>``), which only it reads; recovery moves the
inbox of a provider that dies back to the shared stream, so nothing is
stranded.

Policies are per client process: ``round_robin`` and ``weighted`` (smooth
weighted round robin, as in nginx) rotate over the live providers this
client sees; ``least_busy`` takes the fewest calls in flight (as the
provider last reported it, plus this client's calls sent to it since);
``consistent_hash`` maps the named argument's value onto a hash ring with
``VNODES`` points per provider, so a provider leaving remaps only its own
keys.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import threading
import time
from collections.abc import Collection
from typing import Any

import orjson

from .catalog import ServiceConfig
from .errors import ServiceUnavailable, TransportError
from .providers import ProviderRecord, parse_all

VNODES = 64
PROVIDERS_CACHE_TTL = 1.0


def _hash(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")


class Ring:
    """A consistent-hash ring over provider ids."""

    def __init__(self, ids: list[str]) -> None:
        points = sorted((_hash(f"{pid}#{i}"), pid) for pid in ids for i in range(VNODES))
        self._hashes = [h for h, _ in points]
        self._ids = [pid for _, pid in points]

    def lookup(self, key: str) -> str:
        i = bisect.bisect(self._hashes, _hash(key)) % len(self._ids)
        return self._ids[i]


class Balancer:
    def __init__(self, transport: Any, provider_ttl: float) -> None:
        self.transport = transport
        self.provider_ttl = provider_ttl
        self._lock = threading.Lock()
        self._providers: dict[str, tuple[float, list[ProviderRecord]]] = {}
        self._turn: dict[str, int] = {}
        self._current: dict[str, dict[str, int]] = {}  # smooth weighted round robin state
        self._rings: dict[str, tuple[tuple[str, ...], Ring]] = {}
        self.outstanding: dict[str, int] = {}  # provider -> this client's calls in flight to it

    def pick(self, service: str, config: ServiceConfig, key: Any = None, avoid: Collection[str] = ()) -> str | None:
        """The provider to address, or None for the shared queue; ``avoid``
        (e.g. where a hedged call's first copy went) unless it is the only one."""
        if config.policy == "queue":
            return None
        ids = self._candidates(service, config)
        if avoid and len(ids) > 1:
            ids = [p for p in ids if p not in avoid] or ids
        if not ids:
            raise ServiceUnavailable(f"no live provider of service {service!r} takes work")
        with self._lock:
            return self._choose(service, config, ids, key)

    def sent(self, provider: str) -> None:
        with self._lock:
            self.outstanding[provider] = self.outstanding.get(provider, 0) + 1

    def done(self, provider: str) -> None:
        with self._lock:
            left = self.outstanding.get(provider, 0) - 1
            if left > 0:
                self.outstanding[provider] = left
            else:
                self.outstanding.pop(provider, None)

    def _choose(self, service: str, config: ServiceConfig, ids: list[str], key: Any) -> str:
        policy = config.policy
        if policy == "random":
            return random.choice(ids)
        if policy == "round_robin":
            turn = self._turn.get(service, -1) + 1
            self._turn[service] = turn
            return ids[turn % len(ids)]
        if policy == "weighted":
            return self._weighted(service, config, ids)
        if policy == "least_busy":
            busy = {r.id: r.in_flight for r in self._providers.get(service, (0.0, []))[1]}
            return min(ids, key=lambda p: (busy.get(p, 0) + self.outstanding.get(p, 0), random.random()))
        # consistent_hash
        ring_ids = tuple(ids)
        cached = self._rings.get(service)
        if cached is None or cached[0] != ring_ids:
            cached = (ring_ids, Ring(ids))
            self._rings[service] = cached
        return cached[1].lookup(orjson.dumps(key).decode())

    def _weighted(self, service: str, config: ServiceConfig, ids: list[str]) -> str:
        current = self._current.setdefault(service, {})
        for gone in set(current) - set(ids):
            del current[gone]
        weights = {p: max(0, config.provider(p).weight) for p in ids}
        total = sum(weights.values())
        if total == 0:
            raise ServiceUnavailable(f"every live provider of service {service!r} has weight 0")
        for p in ids:
            current[p] = current.get(p, 0) + weights[p]
        best = max(ids, key=lambda p: current[p])
        current[best] -= total
        return best

    def _candidates(self, service: str, config: ServiceConfig) -> list[str]:
        now = time.monotonic()
        cached = self._providers.get(service)
        if cached is None or cached[0] <= now:
            try:
                raw = self.transport.providers_info(service)
            except TransportError as exc:
                raise ServiceUnavailable(exc.message) from exc
            cached = (now + PROVIDERS_CACHE_TTL, parse_all(raw))
            self._providers[service] = cached
        fresh = time.time() - self.provider_ttl
        return sorted(r.id for r in cached[1] if r.state == "live" and not r.pool and r.heartbeat >= fresh and not config.provider(r.id).draining)

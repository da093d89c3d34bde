"""Layer 2: what the catalog decides for each call, before it is sent.

``Governor.admit`` applies, in order: the service and procedure being
enabled (and the service not draining), the timeout precedence, the rate
limits (across every caller, through Redis) and the load-balancing policy's
choice of provider. All from memory except the rate limit, which costs one
Redis round trip only for procedures that have one.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .balancing import Balancer
from .catalog import UNLISTED, CatalogCache, ProcedureConfig, ServiceConfig, parse_rate
from .errors import RateLimited, ServiceUnavailable, TransportError
from .keys import inbox_route
from .registry import Spec


@dataclass(frozen=True)
class Admission:
    route: str  # the service, or ``svc@provider`` for a provider's inbox
    provider: str | None
    seconds: float  # the call's timeout before deadline inheritance


class Governor:
    def __init__(self, transport: Any, default_timeout: float, provider_ttl: float, refresh: float, enabled: bool = True) -> None:
        self.enabled = enabled
        self.default_timeout = default_timeout
        self.catalog = CatalogCache(transport, refresh)
        self.balancer = Balancer(transport, provider_ttl)
        self.transport = transport

    def config(self, service: str) -> ServiceConfig:
        return self.catalog.service(service) if self.enabled else UNLISTED

    def admit(self, spec: Spec, args: list[Any], kwargs: dict[str, Any], timeout: float | None, avoid: Collection[str] = ()) -> Admission:
        """Raises ServiceUnavailable (disabled, draining, no provider) or RateLimited."""
        conf = self.config(spec.service)
        if not conf.enabled:
            raise ServiceUnavailable(f"service {spec.service!r} is disabled in the catalog", procedure=spec.name)
        if conf.draining:
            raise ServiceUnavailable(f"service {spec.service!r} is draining", procedure=spec.name)
        listed = spec.name in conf.procedures
        pconf = conf.procedure(spec.name)
        if not pconf.enabled:
            raise ServiceUnavailable(f"procedure {spec.name!r} is disabled in the catalog", procedure=spec.name)
        self._limit(spec, conf, pconf.rate_limit if listed else spec.rate_limit)
        provider = self.balancer.pick(spec.service, conf, self._hash_key(spec, conf, args, kwargs), avoid)
        return Admission(inbox_route(spec.service, provider) if provider else spec.service, provider, self.timeout_of(spec, timeout, conf))

    def timeout_of(self, spec: Spec, timeout: float | None, conf: ServiceConfig | None = None) -> float:
        """``timeout=``, else the catalog's procedure timeout, else the service's
        default timeout, else ``@procedure(timeout=)``, else ``DEFAULT_TIMEOUT``."""
        if timeout is not None:
            return timeout
        conf = conf or self.config(spec.service)
        own = conf.procedures[spec.name].timeout if spec.name in conf.procedures else None
        return own or conf.default_timeout or spec.timeout or self.default_timeout

    def resilience(self, spec: Spec) -> ProcedureConfig | None:
        """The retry/hedging settings of an idempotent procedure, if it has any."""
        if not spec.idempotent:
            return None
        pconf = self.config(spec.service).procedure(spec.name)
        return pconf if pconf.retries > 0 or pconf.hedge_after else None

    def _limit(self, spec: Spec, conf: ServiceConfig, procedure_rate: str | None) -> None:
        checks = []
        for scope, text in (("service", conf.rate_limit), (f"p:{spec.name}", procedure_rate)):
            try:
                rate = parse_rate(text)
            except ValueError:
                continue  # refused by the admin form; ignore a hand-written bad value
            if rate is not None:
                checks.append((scope, rate[1], rate[0], text))
        if not checks:
            return
        try:
            refused = self.transport.rate_limit(spec.service, [(scope, period, n) for scope, period, n, _ in checks])
        except TransportError as exc:
            raise ServiceUnavailable(exc.message, procedure=spec.name) from exc
        if refused:
            scope, _, _, text = checks[refused - 1]
            what = f"service {spec.service!r}" if scope == "service" else f"procedure {spec.name!r}"
            raise RateLimited(f"over the rate limit of {what} ({text})", procedure=spec.name)

    @staticmethod
    def _hash_key(spec: Spec, conf: ServiceConfig, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if conf.policy != "consistent_hash":
            return None
        name = conf.hash_argument
        if name in kwargs:
            return kwargs[name]
        positional = [p.name for p in spec.signature.params if p.kind == "pos"]
        if name in positional and positional.index(name) < len(args):
            return args[positional.index(name)]
        return args[0] if args else None  # no such argument: the first one

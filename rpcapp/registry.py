"""Layer 2: the ``@procedure`` decorator and the registry of procedures.

The default registry is filled as ``rpc.py`` modules are imported (Django
discovers them at start-up, like ``admin.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import keys
from .errors import ProcedureNotFound
from .signature import Signature

RESERVED = ("timeout", "idempotency_key")


@dataclass
class Spec:
    """What a caller needs to know about a procedure; published to Redis by workers."""

    name: str
    signature: Signature
    timeout: float | None = None
    idempotent: bool = False
    stream: bool = False
    lock: str | None = None
    rate_limit: str | None = None
    doc: str = ""

    @property
    def service(self) -> str:
        return keys.service_of(self.name)

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "signature": self.signature.to_wire(),
            "signature_text": self.signature.text(),
            "timeout": self.timeout,
            "idempotent": self.idempotent,
            "stream": self.stream,
            "lock": self.lock,
            "rate_limit": self.rate_limit,
            "doc": self.doc,
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Spec:
        return cls(
            name=d["name"],
            signature=Signature.from_wire(d["signature"]),
            timeout=d.get("timeout"),
            idempotent=bool(d.get("idempotent")),
            stream=bool(d.get("stream")),
            lock=d.get("lock"),
            rate_limit=d.get("rate_limit"),
            doc=d.get("doc") or "",
        )


@dataclass
class Procedure:
    spec: Spec
    func: Callable[..., Any]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Subscriber:
    """A handler of one topic, run by the workers of ``service``."""

    topic: str
    service: str
    func: Callable[[Any], Any]
    broadcast: bool = False

    @property
    def name(self) -> str:
        return f"{self.func.__module__}.{self.func.__qualname__}"


@dataclass
class Registry:
    procedures: dict[str, Procedure] = field(default_factory=dict)
    subscribers: list[Subscriber] = field(default_factory=list)

    def subscribe(self, sub: Subscriber) -> None:
        for i, old in enumerate(self.subscribers):
            if (old.topic, old.service, old.name) == (sub.topic, sub.service, sub.name):
                self.subscribers[i] = sub  # a re-imported module: the newer function
                return
        self.subscribers.append(sub)

    def handlers(self, service: str, topic: str, broadcast: bool = False) -> list[Subscriber]:
        """The service's handlers of ``topic`` (durable ones, or broadcast ones)."""
        return [s for s in self.subscribers if s.service == service and s.topic == topic and s.broadcast == broadcast]

    def topics(self, services: list[str], broadcast: bool) -> dict[str, list[str]]:
        """topic -> services among ``services`` with handlers of that kind."""
        out: dict[str, list[str]] = {}
        for s in self.subscribers:
            if s.service in services and s.broadcast == broadcast and s.service not in out.get(s.topic, []):
                out.setdefault(s.topic, []).append(s.service)
        return out

    def subscribing_services(self, topic: str) -> list[str]:
        """Services with a durable handler of ``topic`` in this registry."""
        return sorted({s.service for s in self.subscribers if s.topic == topic and not s.broadcast})

    def register(self, proc: Procedure) -> None:
        existing = self.procedures.get(proc.name)
        if existing is not None and existing.func.__qualname__ != proc.func.__qualname__:
            raise ValueError(f"procedure {proc.name!r} is already registered by {existing.func!r}")
        self.procedures[proc.name] = proc

    def get(self, name: str) -> Procedure:
        try:
            return self.procedures[name]
        except KeyError:
            raise ProcedureNotFound(f"no procedure {name!r}", procedure=name) from None

    def find(self, name: str) -> Procedure | None:
        return self.procedures.get(name)

    def services(self) -> list[str]:
        """Services with procedures or event handlers here."""
        return sorted({p.spec.service for p in self.procedures.values()} | {s.service for s in self.subscribers})

    def for_service(self, service: str) -> list[Procedure]:
        return [p for p in self.procedures.values() if p.spec.service == service]


default_registry = Registry()


def procedure(
    name: str,
    *,
    timeout: float | None = None,
    idempotent: bool = False,
    lock: str | None = None,
    rate_limit: str | None = None,
    stream: bool = False,
    registry: Registry | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a function as the remote procedure ``name`` (``service.method``)."""
    keys.service_of(name)  # validates the name

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        params = inspect.signature(func).parameters
        for reserved in RESERVED:
            if reserved in params:
                raise TypeError(f"procedure {name!r}: parameter name {reserved!r} is reserved by rpcapp")
        spec = Spec(
            name=name,
            signature=Signature.of(func),
            timeout=timeout,
            idempotent=idempotent,
            stream=stream,
            lock=lock,
            rate_limit=rate_limit,
            doc=inspect.getdoc(func) or "",
        )
        (registry or default_registry).register(Procedure(spec, func))
        func.rpc_spec = spec  # type: ignore[attr-defined]
        return func

    return decorate


def subscriber(
    topic: str, *, service: str | None = None, broadcast: bool = False, registry: Registry | None = None
) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Run the decorated ``handler(payload)`` for every event published on ``topic``.

    ``service`` is the subscribing service whose workers run it (default: the
    name of the package holding the ``rpc.py`` module, e.g. ``demo`` for
    ``demo/rpc.py``). Each subscribing service gets each event once, on one of
    its workers; with ``broadcast=True`` the handler runs in every live worker
    of the service instead."""
    if not topic or any(c.isspace() for c in topic):
        raise ValueError(f"topic {topic!r} must be a non-empty name without spaces")

    def decorate(func: Callable[[Any], Any]) -> Callable[[Any], Any]:
        svc = service or _package_of(func.__module__)
        keys.service_of(f"{svc}.x")  # validates the service name
        (registry or default_registry).subscribe(Subscriber(topic, svc, func, broadcast))
        return func

    return decorate


def _package_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[-1] == "rpc":
        parts.pop()
    return parts[-1]

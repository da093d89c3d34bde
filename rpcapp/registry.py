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
class Registry:
    procedures: dict[str, Procedure] = field(default_factory=dict)

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
        return sorted({p.spec.service for p in self.procedures.values()})

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

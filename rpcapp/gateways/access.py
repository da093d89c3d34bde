"""Layer 3: which procedures a gateway caller may see and call."""

from __future__ import annotations

from typing import Any

from ..errors import ProcedureNotFound, RpcError, ServiceUnavailable
from ..http import Caller, may_call
from ..registry import Spec, default_registry

RESERVED_PREFIXES = ("rpc.", "system.")
"""Method names the gateways keep for themselves: never resolved to a procedure."""


class Refused(Exception):
    """An HTTP-level refusal: (status, code, message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def resolve(client: Any, caller: Caller, name: Any) -> Spec:
    """The spec of a procedure the caller may call. Raises Refused (401/403),
    ProcedureNotFound, or ServiceUnavailable (disabled in the catalog)."""
    if caller.user is None:
        raise Refused(401, "unauthenticated", caller.problem or "authentication required")
    if not isinstance(name, str) or not name or name.startswith(RESERVED_PREFIXES):
        raise ProcedureNotFound(f"no procedure {name!r}", procedure=str(name))
    # Permission first, from the name alone: a caller who may not call the
    # service gets the same answer whether or not the procedure exists, and
    # never makes this process look a name up (or cache it).
    conf = client.governor.config(name.rpartition(".")[0])
    if not may_call(caller.user, conf.allowed_groups):
        raise Refused(403, "forbidden", "not allowed to call this procedure")
    spec = client.describe(name)
    if not conf.enabled or conf.draining or not conf.procedure(name).enabled:
        raise ServiceUnavailable(f"{name} is disabled in the catalog", procedure=name)
    return spec


def callable_specs(client: Any, caller: Caller) -> list[Spec]:
    """Every procedure the caller may call now (enabled, permitted), by name."""
    if caller.user is None:
        return []
    names = set(default_registry.procedures)
    services = set(default_registry.services())
    try:
        services |= set(client.transport.catalog_all())
        for service in services:
            names |= set(client.transport.published_specs(service))
    except RpcError:
        pass  # Redis away: what this code defines
    specs = []
    for name in sorted(names):
        try:
            specs.append(resolve(client, caller, name))
        except (RpcError, Refused):
            continue
    return specs

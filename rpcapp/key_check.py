"""Layer 2: telling a signing-key mismatch from a plain timeout.

Workers reject requests whose signature they cannot verify, so a caller
with another key only ever sees its calls time out. After a timeout (never
on a call that succeeds: no cost on the hot path), :class:`KeyCheck` reads
the key ids that the service's live providers publish (``fingerprints.py``)
and turns the timeout into :class:`SigningKeyMismatch` when none of them
shares keys with this process. Verdicts are cached for a second per service.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from . import keys
from .errors import RpcError, RpcTimeout, SigningKeyMismatch
from .fingerprints import key_ids, mismatched
from .protocol import now_ms
from .providers import parse_all
from .transport import Transport, deadline

VERDICT_TTL = 1.0
LOOKUP_SECONDS = 0.2
"""The lookup runs after a call's deadline: it may make a timeout this much later,
and only when Redis is slow or away (then the verdict "no mismatch" is cached too)."""


class KeyCheck:
    """Explains timeouts caused by a signing key the workers do not share."""

    def __init__(self, transport: Transport, signing_keys: Sequence[bytes], provider_ttl: float) -> None:
        self.transport = transport
        self.own = key_ids(signing_keys)
        self.provider_ttl = provider_ttl
        self._verdicts: dict[str, tuple[float, bool]] = {}

    def explain(self, error: RpcError, procedure: str | None = None) -> RpcError:
        """``error`` itself, or SigningKeyMismatch when it is a timeout and the
        service's live providers all sign with keys this process does not share."""
        procedure = error.procedure or procedure
        if not isinstance(error, RpcTimeout) or not procedure:
            return error
        try:
            service = keys.service_of(procedure)
        except ValueError:
            return error
        if not self.mismatched(service):
            return error
        return SigningKeyMismatch(
            f"the workers of service {service!r} sign with a different key: RPCAPP['SIGNING_KEY']"
            " (or SECRET_KEY when SIGNING_KEY is not set) differs between this process and the workers",
            procedure=procedure,
            call_id=error.call_id,
        )

    def mismatched(self, service: str) -> bool:
        cached = self._verdicts.get(service)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            with deadline(LOOKUP_SECONDS):
                live = set(self.transport.live_consumers(service, now_ms() - int(self.provider_ttl * 1000)))
                infos = self.transport.providers_info(service)
        except RpcError:  # Redis slow or away: a plain timeout, and no second wait for a while
            self._verdicts[service] = (time.monotonic() + VERDICT_TTL, False)
            return False
        verdict = mismatched(self.own, _records(infos, live))
        self._verdicts[service] = (time.monotonic() + VERDICT_TTL, verdict)
        return verdict


def _records(infos: dict[str, bytes], live: set[str]) -> list[dict[str, Any]]:
    return [r.as_dict() for r in parse_all(infos) if r.id in live]

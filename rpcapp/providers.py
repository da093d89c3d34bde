"""Layer 0: a provider record, the one type for what a worker's heartbeat
writes into ``ns:{svc}:providers`` and what callers, the balancer, the key
check, the catalog and the dashboard read back.

The hash is unsigned and anyone with write access to Redis can put anything
in it, so :meth:`ProviderRecord.parse` is the only way in: it returns None
for a record that is not an object with a usable id and finite times, and
coerces every other field to its type (a junk field falls back to its
default). Nothing that reads provider records parses JSON itself.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

STATES = ("live", "draining", "dead")
MAX_ID = 200


@dataclass(frozen=True)
class ProviderRecord:
    """One worker, as its last heartbeat described it."""

    id: str
    heartbeat: float  # seconds since the epoch
    host: str = ""
    pid: int | None = None
    services: tuple[str, ...] = ()
    concurrency: int = 0
    started_at: float | None = None
    state: str = "live"
    pool: bool = False  # a process pool's parent: reads nothing itself
    in_flight: int = 0
    calls_served: int = 0
    key_ids: tuple[str, ...] = field(default=())

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (lists, not tuples) for templates and JSON answers."""
        out = asdict(self)
        out["services"], out["key_ids"] = list(self.services), list(self.key_ids)
        return out

    def fresh(self, now: float, ttl: float) -> bool:
        """Heard from within ``ttl`` seconds of ``now``."""
        return now - self.heartbeat <= ttl

    @classmethod
    def parse(cls, raw: bytes | str | None) -> ProviderRecord | None:
        """The record in ``raw``, or None if it is not one (never raises)."""
        try:
            data = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        ident, heartbeat = data.get("id"), _number(data.get("heartbeat"))
        if not isinstance(ident, str) or not ident or len(ident) > MAX_ID or heartbeat is None:
            return None
        state = data.get("state")
        return cls(
            id=ident,
            heartbeat=heartbeat,
            host=_text(data.get("host")),
            pid=_count(data.get("pid"), None),
            services=_texts(data.get("services")),
            concurrency=_count(data.get("concurrency"), 0) or 0,
            started_at=_number(data.get("started_at")),
            state=state if state in STATES else "dead",
            pool=data.get("pool") is True,
            in_flight=_count(data.get("in_flight"), 0) or 0,
            calls_served=_count(data.get("calls_served"), 0) or 0,
            key_ids=_texts(data.get("key_ids")),
        )


def parse_all(raw: dict[str, bytes]) -> list[ProviderRecord]:
    """The well-formed records of a providers hash, each under its own field
    name only (a record claiming another provider's id is skipped)."""
    out = []
    for name, value in raw.items():
        record = ProviderRecord.parse(value)
        if record is not None and record.id == name:
            out.append(record)
    return out


def _number(value: Any) -> float | None:
    """A finite float within the range of dates (years 1970-9999), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0 <= value < 253_402_300_800 else None


def _count(value: Any, default: int | None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        return default
    return value


def _text(value: Any, limit: int = 255) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _texts(value: Any, limit: int = 1000) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v[:255] for v in value[:limit] if isinstance(v, str))

"""Layer 2: call records, as workers and callers write them to ``ns:history``.

A record is a small JSON object: ``id``, ``procedure``, ``provider``,
``caller``, ``status``, ``queued_ms``, ``run_ms``, ``total_ms``, ``error``,
``args`` (a truncated preview with sensitive values redacted),
``trace_id``, ``parent_id`` and ``at`` (ms since the epoch). The Django side
(``rpcapp.history``) stores them as ``CallRecord`` rows.
"""

from __future__ import annotations

from typing import Any

import orjson

PREVIEW_CHARS = 200
REDACTED = "***"
DEFAULT_REDACT = ("password", "passwd", "secret", "token", "api_key", "apikey", "authorization", "card_number", "cvv")


def _sensitive(name: str, redact: tuple[str, ...]) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in redact)


def _redacted(value: Any, redact: tuple[str, ...], depth: int = 0) -> Any:
    if depth > 8:
        return "…"
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and _sensitive(k, redact) else _redacted(v, redact, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, redact, depth + 1) for v in value[:20]]
    return value


def preview(names: list[str], args: list[Any], kwargs: dict[str, Any], redact: tuple[str, ...]) -> str:
    """``{"a": 1, "password": "***"}``-like text of the arguments, cut to PREVIEW_CHARS.
    Positional arguments are named by ``names`` (the procedure's parameters) when known."""
    named: dict[str, Any] = {}
    for i, value in enumerate(args):
        named[names[i] if i < len(names) else f"*{i}"] = value
    named.update(kwargs)
    safe = {k: REDACTED if _sensitive(k, redact) else _redacted(v, redact) for k, v in named.items()}
    text = orjson.dumps(safe, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def encode(**fields: Any) -> bytes:
    return orjson.dumps(fields, default=str)


def replayable(names: list[str], args: list[Any], kwargs: dict[str, Any], redact: tuple[str, ...]) -> dict[str, Any] | None:
    """A failed call's arguments to keep for a replay, or None if any argument
    (or key inside one) looks secret: those are never stored."""
    named = [*(names[i] if i < len(names) else "" for i in range(len(args))), *kwargs]
    if any(_sensitive(n, redact) for n in named) or _has_secret([*args, *kwargs.values()], redact):
        return None
    return {"args": args, "kwargs": kwargs}


def _has_secret(value: Any, redact: tuple[str, ...], depth: int = 0) -> bool:
    if depth > 8:
        return True
    if isinstance(value, dict):
        return any((isinstance(k, str) and _sensitive(k, redact)) or _has_secret(v, redact, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_secret(v, redact, depth + 1) for v in value)
    return False

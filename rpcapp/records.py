"""Layer 2: call records, as workers and callers write them to ``ns:history``.

A record is a small JSON object: ``id``, ``procedure``, ``provider``,
``caller``, ``status``, ``queued_ms``, ``run_ms``, ``total_ms``, ``error``,
``args`` (a truncated preview with sensitive values redacted),
``trace_id``, ``parent_id`` and ``at`` (ms since the epoch). The Django side
(``rpcapp.history``) stores them as ``CallRecord`` rows.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import orjson

PREVIEW_CHARS = 200
REDACTED = "***"
DEFAULT_REDACT = (
    "password", "passwd", "pwd", "passphrase", "secret", "token", "api_key", "auth", "authorization",
    "credential", "private_key", "cookie", "ssn", "card_number", "cvv",
)  # fmt: skip
WHOLE_WORD_BELOW = 5
"""Entries shorter than this (normalised) must be a whole word of a name."""

_SEPARATORS = re.compile(r"[^a-z0-9]+")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def normalised(name: str) -> str:
    """``name`` lower-cased without separators: ``API-Key``, ``api_key`` and ``ApiKey`` are ``apikey``."""
    return _SEPARATORS.sub("", name.lower())


@functools.lru_cache(maxsize=64)
def _rule(redact: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[str]]:
    """(entries matched anywhere in a name, entries matched as a whole word)."""
    entries = {normalised(str(e)) for e in redact} - {""}
    return tuple(sorted(e for e in entries if len(e) >= WHOLE_WORD_BELOW)), frozenset(e for e in entries if len(e) < WHOLE_WORD_BELOW)


@functools.lru_cache(maxsize=4096)
def sensitive(name: str, redact: tuple[str, ...]) -> bool:
    """True if the argument or key ``name`` looks secret under ``redact``
    (``REDACT_KEYS``). Names and entries are compared lower-cased without
    ``-``, ``_`` or other separators; an entry of five characters or more
    matches anywhere in the name (``db_password``, ``X-Auth-Token``), a
    shorter one only as a whole word of it (``auth``, ``x-auth``, ``basicAuth``,
    ``user_ssn``; not ``author`` or ``classname``)."""
    anywhere, words = _rule(redact)
    flat = normalised(name)
    if any(entry in flat for entry in anywhere):
        return True
    return bool(words) and (flat in words or any(w.lower() in words for w in _WORDS.findall(name)))


def _redacted(value: Any, redact: tuple[str, ...], depth: int = 0) -> Any:
    if depth > 8:
        return "…"
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and sensitive(k, redact) else _redacted(v, redact, depth + 1) for k, v in value.items()}
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
    safe = {k: REDACTED if sensitive(k, redact) else _redacted(v, redact) for k, v in named.items()}
    text = orjson.dumps(safe, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def encode(**fields: Any) -> bytes:
    return orjson.dumps(fields, default=str)


def replayable(names: list[str], args: list[Any], kwargs: dict[str, Any], redact: tuple[str, ...]) -> dict[str, Any] | None:
    """A failed call's arguments to keep for a replay, or None if any argument
    (or key inside one) looks secret: those are never stored."""
    named = [*(names[i] if i < len(names) else "" for i in range(len(args))), *kwargs]
    if any(sensitive(n, redact) for n in named) or _has_secret([*args, *kwargs.values()], redact):
        return None
    return {"args": args, "kwargs": kwargs}


def _has_secret(value: Any, redact: tuple[str, ...], depth: int = 0) -> bool:
    if depth > 8:
        return True
    if isinstance(value, dict):
        return any((isinstance(k, str) and sensitive(k, redact)) or _has_secret(v, redact, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_secret(v, redact, depth + 1) for v in value)
    return False

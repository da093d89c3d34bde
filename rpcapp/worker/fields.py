"""Layer 2: the plain (unsigned) fields of a request stream entry.

``t`` (when a given-back request was first queued, ms) and ``n`` (its
deliveries so far) are written by workers beside the signed frame ``m``.
Anyone with write access to Redis can write them too, so they are read
defensively: a junk value falls back to what the entry itself shows and never
raises.
"""

from __future__ import annotations

Entry = tuple[str, str, dict[bytes, bytes]]


def entry_time(entry_id: str) -> int:
    """The time (ms) in a stream entry id; 0 for a malformed id."""
    try:
        return int(entry_id.split("-", 1)[0])
    except ValueError:
        return 0


def born(entry_id: str, fields: dict[bytes, bytes]) -> int:
    """When a request was first queued (ms): its ``t`` field if that is a
    time no later than the entry itself, else the time in its entry id."""
    stamp = entry_time(entry_id)
    try:
        first = int(fields.get(b"t") or b"")
    except ValueError:
        return stamp
    return first if 0 < first <= stamp else stamp


def deliveries(fields: dict[bytes, bytes], ceiling: int = 1000) -> int:
    """How many times the request was delivered (its ``n`` field; 1 if junk)."""
    try:
        n = int(fields.get(b"n") or b"1")
    except ValueError:
        return 1
    return min(max(n, 1), ceiling)

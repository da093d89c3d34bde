"""Layer 0: short public ids of signing keys, to tell a key mismatch from a timeout.

Each live provider record carries ``key_ids``: the id of the key it signs
with first, then those it still accepts (``OLD_SIGNING_KEYS``). An id is
8 hex digits of HMAC(key, "rpcapp.key-id"): it names a key without
revealing it. A caller and a provider understand each other when each
accepts the key the other signs with.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Any


def key_id(key: bytes) -> str:
    """The public id of a (derived) signing key."""
    return hmac.new(key, b"rpcapp.key-id", hashlib.sha256).hexdigest()[:8]


def key_ids(keys: Sequence[bytes]) -> list[str]:
    """Ids of ``keys``: the signing key's first, then the accepted ones."""
    return [key_id(k) for k in keys]


def understood(own: Sequence[str], theirs: Sequence[str]) -> bool:
    """True when each side accepts the key the other signs with."""
    return bool(own and theirs) and own[0] in theirs and theirs[0] in own


def mismatched(own: Sequence[str], providers: Iterable[dict[str, Any]]) -> bool:
    """True when live providers publish key ids and none understands ``own``
    (providers that publish none, from older versions, prove nothing)."""
    published = [list(p["key_ids"]) for p in providers if isinstance(p.get("key_ids"), list) and p["key_ids"]]
    return bool(published) and not any(understood(own, theirs) for theirs in published)

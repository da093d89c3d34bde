"""Layer 1: Redis locks with fencing tokens; the Redlock algorithm over
several independent masters.

With one master it is a single-instance lock (``SET NX PX`` plus a
compare-and-delete). With N masters it follows Redlock: the lock is held
when a majority (N // 2 + 1) accepted it within its validity time
(``ttl`` minus the time the attempt took minus a clock-drift allowance);
otherwise every master is released and the attempt retried after a random
delay. Release and extend go to every master and act only on the holder's
own random value (Lua compare-and-delete / compare-and-pexpire).

Fencing tokens: each acquisition increments a per-name counter on the
masters it won and then raises those counters to the largest value seen;
any two majorities share a master, so a later holder's token is larger, as
long as a majority of masters keep their data. ``docs/locks.md`` says what
this guarantees and what it does not.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import redis

from .errors import LockNotAcquired

CLOCK_DRIFT_FACTOR = 0.01

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return false
"""

_RAISE_FENCE = """
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if c < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"""

COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_RELEASE = COMPARE_AND_DELETE

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def lock_key(namespace: str, name: str) -> str:
    return f"{namespace}:lock:{{{name}}}"


def fence_key(namespace: str, name: str) -> str:
    return f"{namespace}:lock:{{{name}}}:fence"


class RedLock:
    """A lock named ``name`` over ``masters`` (redis-py clients, one per
    independent server). Not reentrant; one object is one holder."""

    def __init__(self, name: str, ttl: float = 10.0, *, masters: list[Any], namespace: str = "rpcapp", retry_delay: float = 0.2) -> None:
        if not masters:
            raise ValueError("a lock needs at least one Redis master")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.name = name
        self.ttl = float(ttl)
        self.masters = list(masters)
        self.quorum = len(self.masters) // 2 + 1
        self.retry_delay = retry_delay
        self._key = lock_key(namespace, name)
        self._fence = fence_key(namespace, name)
        self._value: str | None = None
        self._valid_until = 0.0
        self.fencing_token: int | None = None

    # -- public API ----------------------------------------------------------
    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; True, or False when not blocking or ``timeout`` ran out."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._attempt():
                return True
            if not blocking:
                return False
            pause = random.uniform(0, self.retry_delay)
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                pause = min(pause, left)
            time.sleep(pause)

    def release(self) -> None:
        """Free the lock if this object holds it (a no-op otherwise)."""
        value, self._value = self._value, None
        self._valid_until = 0.0
        if value is not None:
            self._on_all(_RELEASE, [self._key], [value])

    def extend(self, ttl: float | None = None) -> bool:
        """Renew the lease for ``ttl`` (default: the lock's ttl); False if it was lost."""
        if self._value is None:
            return False
        ttl = self.ttl if ttl is None else float(ttl)
        start = time.monotonic()
        ok = sum(1 for r in self._on_all(_EXTEND, [self._key], [self._value, int(ttl * 1000)]) if r == 1)
        validity = ttl - (time.monotonic() - start) - _drift(ttl)
        if ok >= self.quorum and validity > 0:
            self._valid_until = start + validity
            return True
        self.release()
        return False

    def locked(self) -> bool:
        """Whether the lock is held now (by anyone) on a majority of masters."""
        held = 0
        for master in self.masters:
            try:
                held += bool(master.exists(self._key))
            except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError):
                pass
        return held >= self.quorum

    @property
    def owned(self) -> bool:
        """Whether this object holds the lock and its validity has not run out."""
        return self._value is not None and time.monotonic() < self._valid_until

    def __enter__(self) -> RedLock:
        if not self.acquire(timeout=self.ttl):
            raise LockNotAcquired(f"could not take lock {self.name!r}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- Redlock -------------------------------------------------------------
    def _attempt(self) -> bool:
        value = uuid.uuid4().hex
        ttl_ms = int(self.ttl * 1000)
        start = time.monotonic()
        results = self._on_all(_ACQUIRE, [self._key, self._fence], [value, ttl_ms])
        won = [m for m, c in zip(self.masters, results, strict=True) if isinstance(c, int)]
        if len(won) >= self.quorum:
            token = max(c for c in results if isinstance(c, int))
            # Every master of the majority must carry the token forward, or a
            # later majority could hand out a smaller one.
            if len(self.masters) == 1 or sum(r == 1 for r in self._on_all(_RAISE_FENCE, [self._fence], [token], won)) >= self.quorum:
                validity = self.ttl - (time.monotonic() - start) - _drift(self.ttl)
                if validity > 0:
                    self._value, self._valid_until, self.fencing_token = value, start + validity, token
                    return True
        self._on_all(_RELEASE, [self._key], [value])
        return False

    def _on_all(self, script: str, keys: list[str], args: list[Any], masters: list[Any] | None = None) -> list[Any]:
        """Run a script on every master (or those given); a master that fails counts as a no."""
        out: list[Any] = []
        for master in self.masters if masters is None else masters:
            try:
                out.append(_script(master, script)(keys=keys, args=args))
            except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError):
                out.append(None)
        return out


def _script(master: Any, source: str) -> Any:
    """The master's registered script (EVALSHA; the body is sent only once)."""
    scripts = master.__dict__.setdefault("_rpcapp_lock_scripts", {})
    if source not in scripts:
        scripts[source] = master.register_script(source)
    return scripts[source]


def _drift(ttl: float) -> float:
    return ttl * CLOCK_DRIFT_FACTOR + 0.002

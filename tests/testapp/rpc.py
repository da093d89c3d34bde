"""Procedures the test suite calls: slow, crashing, nested, misbehaving."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import threading
import time
import uuid
from typing import Any

from rpcapp import procedure, rpc

RUNS: dict[str, int] = {}
_lock = threading.Lock()


def _count(key: str) -> int:
    with _lock:
        RUNS[key] = RUNS.get(key, 0) + 1
        return RUNS[key]


@procedure("tests.echo", idempotent=True)
def echo(value: Any) -> Any:
    return value


@procedure("tests.noop", idempotent=True)
def noop() -> None:
    return None


@procedure("tests.sleep", timeout=30.0)
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@procedure("tests.sleep_idem", timeout=30.0, idempotent=True)
def sleep_idem(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@procedure("tests.count")
def count(key: str) -> int:
    """How many times this process ran count(key)."""
    return _count(key)


@procedure("tests.counted", idempotent=True)
def counted(key: str, seconds: float = 0.0) -> str:
    """Counts its runs in Redis-independent process memory, then sleeps."""
    _count(key)
    time.sleep(seconds)
    return f"{key}:{os.getpid()}"


@procedure("tests.pid")
def pid() -> int:
    return os.getpid()


@procedure("tests.crash")
def crash() -> None:
    os._exit(13)


@procedure("tests.crash_idem", idempotent=True)
def crash_idem() -> None:
    os._exit(13)


@procedure("tests.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@procedure("tests.unserialisable")
def unserialisable() -> Any:
    return object()


@procedure("tests.big")
def big(size: int) -> str:
    return "x" * size


@procedure("tests.typed")
def typed(when: dt.datetime, day: dt.date, ident: uuid.UUID, amount: decimal.Decimal, tags: list[str] | None = None) -> dict[str, Any]:
    return {"when": when, "day": day, "ident": ident, "amount": amount, "tags": tags, "types": [type(x).__name__ for x in (when, day, ident, amount)]}


@procedure("tests.when")
def when(days: int) -> dt.datetime:
    return dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=days)


@procedure("tests.nested", timeout=30.0)
def nested(inner_seconds: float) -> float:
    """Calls tests.sleep with no timeout: it inherits what is left of ours."""
    return rpc.call("tests.sleep", inner_seconds)


@procedure("tests.remaining", timeout=30.0)
def remaining() -> float:
    """Seconds left to our own deadline, as the context sees it."""
    from rpcapp import context

    ctx = context.current()
    assert ctx is not None
    return (ctx.deadline_ms - time.time() * 1000) / 1000


@procedure("tests.nested_remaining", timeout=30.0)
def nested_remaining() -> float:
    return rpc.call("tests.remaining")


@procedure("other.ping", idempotent=True)
def ping() -> str:
    return "pong"


@procedure("tests.touch")
def touch(path: str) -> int:
    """Appends this process's pid to the file at ``path``: a side effect a
    test can observe to prove a message was (or was never) run."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return os.getpid()

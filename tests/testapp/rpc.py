"""Procedures the test suite calls: slow, crashing, nested, misbehaving."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from rpcapp import procedure, rpc, subscriber

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


@procedure("tests.typed", idempotent=True)
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


# -- streaming ------------------------------------------------------------
STREAMS: dict[str, dict[str, Any]] = {}  # key -> {"produced": n, "closed": bool} (in-thread workers)


@procedure("tests.count_up", stream=True, timeout=30.0)
def count_up(n: int, delay: float = 0.0) -> Iterator[int]:
    """Yields 0 .. n-1, sleeping ``delay`` before each."""
    for i in range(n):
        if delay:
            time.sleep(delay)
        yield i


@procedure("tests.tracked_stream", stream=True, timeout=60.0)
def tracked_stream(key: str, n: int, delay: float = 0.0) -> Iterator[int]:
    """Like count_up, recording how far the worker got and whether it was closed."""
    state = STREAMS.setdefault(key, {"produced": 0, "closed": False})
    try:
        for i in range(n):
            if delay:
                time.sleep(delay)
            state["produced"] = i + 1
            yield i
    finally:
        state["closed"] = True


@procedure("tests.stream_fail", stream=True)
def stream_fail(n: int) -> Iterator[int]:
    yield from range(n)
    raise ValueError(f"failed after {n}")


@procedure("tests.stream_when", stream=True)
def stream_when(n: int) -> Iterator[dt.datetime]:
    for i in range(n):
        yield dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i)


@procedure("tests.stream_big", stream=True)
def stream_big(size: int) -> Iterator[str]:
    yield "small"
    yield "x" * size


@procedure("tests.stream_short", stream=True, timeout=1.0)
def stream_short(n: int, delay: float) -> Iterator[int]:
    """A stream whose whole deadline (1 s) is shorter than it takes."""
    for i in range(n):
        time.sleep(delay)
        yield i


# -- events -----------------------------------------------------------------
def _record(key: str, field: str) -> int:
    """HINCRBY in the Redis under test: handlers in worker processes report here."""
    from rpcapp import conf

    client = _redis_clients.get(conf.redis_url())
    if client is None:
        from rpcapp.transport import connect

        client = _redis_clients.setdefault(conf.redis_url(), connect(conf.redis_url()))
    return int(client.hincrby(f"{conf.get().NAMESPACE}:test:{key}", field, 1))


_redis_clients: dict[str, Any] = {}


@subscriber("tests.happened", service="audit")
def audit_happened(payload: dict[str, Any]) -> None:
    _record("audit", str(payload["n"]))
    _record("audit-by", str(os.getpid()))


@subscriber("tests.happened", service="mailer")
def mailer_happened(payload: dict[str, Any]) -> None:
    _record("mailer", str(payload["n"]))
    _record("mailer-by", str(os.getpid()))
    time.sleep(float(payload.get("sleep", 0)))


@subscriber("tests.happened", service="mailer", broadcast=True)
def mailer_cache(payload: dict[str, Any]) -> None:
    _record("broadcast", f"{os.getpid()}:{payload['n']}")


@subscriber("tests.flaky", service="audit")
def flaky(payload: dict[str, Any]) -> None:
    """Fails its first ``fails`` attempts for a payload, then succeeds."""
    attempt = _record("flaky", str(payload["n"]))
    if attempt <= int(payload["fails"]):
        raise RuntimeError(f"attempt {attempt} fails")


@subscriber("tests.flaky", service="audit")
def steady(payload: dict[str, Any]) -> None:
    """A second handler of the same topic: must run once, not on every retry."""
    _record("steady", str(payload["n"]))


@subscriber("tests.flaky", service="mailer", broadcast=True)
def flaky_broadcast(payload: dict[str, Any]) -> None:
    attempt = _record("flaky-broadcast", str(payload["n"]))
    if attempt <= int(payload["fails"]):
        raise RuntimeError(f"broadcast attempt {attempt} fails")


@subscriber("tests.crashy", service="audit")
def crashy(payload: dict[str, Any]) -> None:
    """Kills its worker process on the first delivery of each payload."""
    if _record("crashy", str(payload["n"])) == 1:
        os._exit(13)


@procedure("tests.slow_first", idempotent=True, timeout=10.0)
def slow_first(key: str, seconds: float = 2.0) -> int:
    """Sleeps ``seconds`` on its first run for ``key`` only; returns the run number."""
    n = _count(f"slow_first:{key}")
    if n == 1:
        time.sleep(seconds)
    return n


@procedure("tests.where", idempotent=True)
def where(key: str = "") -> str:
    """Which worker process ran it (``--name`` of the worker, else the pid)."""
    from rpcapp import context

    ctx = context.current()
    return ctx.provider if ctx is not None else str(os.getpid())


@procedure("tests.where_slow", idempotent=True, timeout=30.0)
def where_slow(seconds: float) -> str:
    time.sleep(seconds)
    return where()


@procedure("tests.login")
def login(user: str, password: str) -> None:
    """Always refuses: a failing call whose arguments include a secret."""
    raise PermissionError(f"no such user {user}")


# -- local mode (tests/test_local_calls.py): no Redis anywhere -----------------
LOCAL_EVENTS: list[tuple[str, Any]] = []


@subscriber("tests.local_happened", service="audit")
def local_audit(payload: dict[str, Any]) -> None:
    LOCAL_EVENTS.append(("audit", payload))


@subscriber("tests.local_happened", service="mailer")
def local_failing(payload: dict[str, Any]) -> None:
    raise RuntimeError("this handler always fails")


@subscriber("tests.local_happened", service="mailer", broadcast=True)
def local_broadcast(payload: dict[str, Any]) -> None:
    LOCAL_EVENTS.append(("broadcast", payload))


@procedure("tests.locked", lock="tests-local:{key}", timeout=5.0)
def locked(key: str, seconds: float = 0.0) -> str:
    time.sleep(seconds)
    return key


@procedure("tests.publish_then_call")
def publish_then_call(n: int) -> int:
    """Publishes an event, then calls another procedure: both from inside a call."""
    from rpcapp import publish

    publish("tests.local_happened", {"n": n})
    return int(rpc.call("tests.echo", n))


@procedure("tests.touch_idem", idempotent=True)
def touch_idem(path: str) -> int:
    """tests.touch, idempotent (redelivered after a worker's death)."""
    return touch(path)

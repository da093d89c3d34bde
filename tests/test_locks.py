"""The distributed lock (rpcapp.redlock / rpcapp.locks) on real redis-server
processes: mutual exclusion between threads and between processes, expiry,
release and extend only by the holder, fencing tokens, timeouts, the context
manager, the Redlock quorum over three independent masters, and lock-guarded
procedures through an in-thread worker.

Nothing here mocks Redis: every master is a redis-server process (the
session's, or RedisServer instances owned by one test and stopped at its end).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rpcapp import procedure
from rpcapp.errors import LockNotAcquired, RemoteError
from rpcapp.redlock import RedLock
from rpcapp.registry import Registry
from rpcapp.testing import RedisServer, clear_namespace, running_worker

ROOT = Path(__file__).resolve().parent.parent


# -- helpers ------------------------------------------------------------------



def run_threads(target, n: int, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Run ``target`` in ``n`` threads at once; all must finish within ``timeout``."""
    threads = [threading.Thread(target=target) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads)

def uid(prefix: str = "lock") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def connect(server: RedisServer) -> redis.Redis:
    # Short timeouts: a stopped master must fail fast, not stall the quorum.
    return redis.Redis(port=server.port, socket_timeout=1.0, socket_connect_timeout=1.0)


def assert_no_overlap(intervals: list[tuple[float, float]]) -> None:
    """Each (enter, exit) interval ends before the next one begins."""
    ordered = sorted(intervals)
    for (s1, e1), (s2, e2) in zip(ordered, ordered[1:], strict=False):
        assert s1 <= e1
        assert e1 <= s2, f"two holders at once: [{s1:.6f}, {e1:.6f}] overlaps [{s2:.6f}, {e2:.6f}]"


@pytest.fixture
def ns(redis_server: RedisServer) -> Iterator[str]:
    """A fresh namespace on the session's Redis, its keys deleted at the end."""
    namespace = "t" + uuid.uuid4().hex[:10]
    yield namespace
    clear_namespace(redis_server, namespace, f"*{namespace}*")


@pytest.fixture
def single(redis_server: RedisServer) -> Iterator[list[redis.Redis]]:
    """One master: the session's redis-server."""
    client = connect(redis_server)
    yield [client]
    client.close()


@pytest.fixture
def make(single: list[redis.Redis], ns: str) -> Any:
    """RedLock factory on the single master and a fresh namespace."""

    def build(name: str, ttl: float = 10.0, **kw: Any) -> RedLock:
        kw.setdefault("retry_delay", 0.01)
        return RedLock(name, ttl, masters=single, namespace=ns, **kw)

    return build


@pytest.fixture
def three() -> Iterator[list[RedisServer]]:
    """Three independent redis-server processes, all stopped at the end."""
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(RedisServer()) for _ in range(3)]
        yield servers


@pytest.fixture
def three_masters(three: list[RedisServer]) -> Iterator[list[redis.Redis]]:
    clients = [connect(s) for s in three]
    yield clients
    for c in clients:
        c.close()


# -- mutual exclusion ---------------------------------------------------------


def test_mutual_exclusion_between_threads(make, single):
    """8 threads x 50 read-modify-write increments of a counter in Redis and
    one in Python, each under the lock: no lost update, no two holders at once."""
    name, counter_key = uid(), uid("counter")
    r = single[0]
    r.set(counter_key, 0)
    shared = {"n": 0}
    intervals: list[tuple[float, float]] = []
    tokens: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work() -> None:
        try:
            start.wait(timeout=10)
            lock = make(name, ttl=10.0)
            for _ in range(50):
                assert lock.acquire(timeout=20)
                enter = time.monotonic()
                try:
                    tokens.append(lock.fencing_token)
                    value = int(r.get(counter_key))
                    n = shared["n"]
                    time.sleep(0.0005)  # widen the race window
                    r.set(counter_key, value + 1)
                    shared["n"] = n + 1
                finally:
                    intervals.append((enter, time.monotonic()))
                    lock.release()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    run_threads(work, 8, timeout=45)
    assert errors == []
    assert int(r.get(counter_key)) == 400
    assert shared["n"] == 400
    assert len(intervals) == 400
    assert_no_overlap(intervals)
    # Tokens were appended in holding order: strictly increasing.
    assert all(isinstance(t, int) for t in tokens)
    assert all(a < b for a, b in zip(tokens, tokens[1:], strict=False))
    r.delete(counter_key)


_CHILD = r"""
import os, sys, time
import redis
from rpcapp import procedure
from rpcapp.redlock import RedLock
from rpcapp.registry import Registry

port, ns, name, folder, rounds = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
master = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
lock = RedLock(name, 10.0, masters=[master], namespace=ns, retry_delay=0.01)
open(os.path.join(folder, f"ready-{os.getpid()}"), "w").close()
go = os.path.join(folder, "go")
end = time.monotonic() + 20
while not os.path.exists(go):
    if time.monotonic() > end:
        sys.exit(3)
    time.sleep(0.005)
counter = os.path.join(folder, "counter")
log = os.path.join(folder, "log")
for _ in range(rounds):
    if not lock.acquire(timeout=20):
        sys.exit(2)
    enter = time.monotonic()
    with open(counter) as f:
        value = int(f.read())
    time.sleep(0.002)
    with open(counter, "w") as f:
        f.write(str(value + 1))
    leave = time.monotonic()
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {enter!r} {leave!r} {lock.fencing_token}\n")
    lock.release()
sys.exit(0)
"""


def test_mutual_exclusion_between_processes(redis_server, ns, tmp_path):
    """3 processes x 20 rounds: each increments a counter file and appends its
    (enter, exit, fencing token) under the lock. No overlap, no lost update, and
    the fencing tokens increase in the order the holders entered.
    (time.monotonic is CLOCK_MONOTONIC: one clock for every process on a host.)"""
    name, rounds, n = uid(), 20, 3
    (tmp_path / "counter").write_text("0")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # layer 1: no Django in the children
    args = [str(redis_server.port), ns, name, str(tmp_path), str(rounds)]
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, *args], cwd=ROOT, env=env, stderr=subprocess.PIPE) for _ in range(n)]
    try:
        end = time.monotonic() + 30
        while len(list(tmp_path.glob("ready-*"))) < n:
            assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs if p.poll() is not None]
            assert time.monotonic() < end, "children did not start"
            time.sleep(0.02)
        (tmp_path / "go").touch()
        for p in procs:
            _, err = p.communicate(timeout=40)
            assert p.returncode == 0, err.decode(errors="replace")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    assert (tmp_path / "counter").read_text() == str(n * rounds)
    rows = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    assert len(rows) == n * rounds
    assert len({r[0] for r in rows}) == n
    intervals = [(float(r[1]), float(r[2])) for r in rows]
    assert_no_overlap(intervals)
    by_entry = sorted(rows, key=lambda r: float(r[1]))
    tokens = [int(r[3]) for r in by_entry]
    assert all(a < b for a, b in zip(tokens, tokens[1:], strict=False)), tokens


# -- expiry, release, extend ----------------------------------------------------


def test_expired_lock_is_taken_over_and_the_old_holder_cannot_touch_it(make):
    name = uid()
    first = make(name, ttl=0.3)
    second = make(name, ttl=5.0)
    assert first.acquire(blocking=False)
    assert not second.acquire(blocking=False)
    time.sleep(0.5)  # first never released: its lease runs out
    assert second.acquire(timeout=2)
    assert second.fencing_token > first.fencing_token
    first.release()  # not its lock any more: a no-op
    assert second.locked()
    assert not make(name).acquire(blocking=False)
    assert first.extend() is False  # the lease was lost
    assert first.extend(5.0) is False
    assert not make(name).acquire(blocking=False)  # extend did not touch second's lock
    second.release()
    assert not second.locked()
    assert make(name).acquire(blocking=False)


def test_release_by_a_non_holder_is_a_no_op(make):
    name = uid()
    holder = make(name)
    other = make(name)
    other.release()  # never acquired: no-op, no error
    assert holder.acquire(blocking=False)
    assert not other.acquire(blocking=False)
    other.release()  # failed to acquire: still a no-op
    assert holder.locked() and other.locked()
    assert not make(name).acquire(blocking=False)
    assert other.extend() is False  # not the holder
    holder.release()
    assert not holder.locked()
    holder.release()  # released twice: no-op
    assert other.acquire(blocking=False)
    other.release()


def test_release_then_reacquire_with_the_same_object(make):
    name = uid()
    lock = make(name)
    assert lock.fencing_token is None
    assert lock.acquire(blocking=False)
    t1 = lock.fencing_token
    lock.release()
    assert lock.acquire(blocking=False)
    assert lock.fencing_token > t1
    lock.release()


def test_extend_renews_the_lease(make):
    name = uid()
    lock = make(name, ttl=0.5)
    assert lock.acquire(blocking=False)
    assert lock.extend(2.0) is True
    time.sleep(1.0)  # past the original 0.5 s
    assert lock.locked()
    assert not make(name).acquire(blocking=False)
    assert lock.extend() is True  # renews by its own ttl (0.5 s) from now
    lock.release()
    assert not lock.locked()


def test_extend_by_default_ttl_keeps_a_lock_alive(make):
    name = uid()
    lock = make(name, ttl=0.6)
    assert lock.acquire(blocking=False)
    for _ in range(6):  # 1.2 s in all, twice the ttl
        time.sleep(0.2)
        assert lock.extend() is True
    assert not make(name).acquire(blocking=False)
    lock.release()


# -- fencing tokens -------------------------------------------------------------


def test_fencing_tokens_strictly_increase_over_100_holders(make):
    name = uid()
    tokens = []
    for i in range(100):
        lock = make(name)
        assert lock.fencing_token is None
        if i % 2:
            assert lock.acquire(blocking=False)
            tokens.append(lock.fencing_token)
            lock.release()
        else:
            with lock as held:
                tokens.append(held.fencing_token)
    assert all(isinstance(t, int) for t in tokens)
    assert all(a < b for a, b in zip(tokens, tokens[1:], strict=False)), tokens


def test_fencing_tokens_are_per_name_independent_of_other_names(make):
    a, b = uid(), uid()
    t = []
    for name in (a, b, a, b, a):
        lock = make(name)
        assert lock.acquire(blocking=False)
        t.append((name, lock.fencing_token))
        lock.release()
    for name in (a, b):
        seq = [tok for n, tok in t if n == name]
        assert all(x < y for x, y in zip(seq, seq[1:], strict=False))


# -- waiting --------------------------------------------------------------------


def test_non_blocking_acquire_returns_false_at_once(make):
    name = uid()
    holder = make(name)
    assert holder.acquire()
    other = make(name, retry_delay=0.2)
    start = time.monotonic()
    assert other.acquire(blocking=False) is False
    assert time.monotonic() - start < 0.5
    assert other.fencing_token is None
    holder.release()


def test_timeout_acquire_returns_false_after_about_the_timeout(make):
    name = uid()
    holder = make(name)
    assert holder.acquire()
    other = make(name, retry_delay=0.05)
    start = time.monotonic()
    assert other.acquire(timeout=0.5) is False
    elapsed = time.monotonic() - start
    assert 0.45 <= elapsed < 2.0, elapsed
    holder.release()


def test_blocking_acquire_gets_the_lock_once_released(make):
    name = uid()
    holder = make(name)
    assert holder.acquire()
    threading.Timer(0.3, holder.release).start()
    other = make(name, retry_delay=0.05)
    start = time.monotonic()
    assert other.acquire(timeout=5) is True
    assert 0.25 <= time.monotonic() - start < 3.0
    assert other.fencing_token > holder.fencing_token
    other.release()


def test_blocking_acquire_without_timeout_waits_for_expiry(make):
    name = uid()
    assert make(name, ttl=0.4).acquire()  # never released
    other = make(name, retry_delay=0.05)
    start = time.monotonic()
    assert other.acquire() is True
    assert 0.3 <= time.monotonic() - start < 3.0
    other.release()


# -- context manager --------------------------------------------------------------


def test_context_manager_holds_and_releases(make):
    name = uid()
    with make(name) as lock:
        assert isinstance(lock.fencing_token, int)
        assert lock.locked()
        assert not make(name).acquire(blocking=False)
    assert not make(name).locked()
    with pytest.raises(ZeroDivisionError), make(name):
        1 / 0  # noqa: B018
    assert make(name).acquire(blocking=False)  # released on the way out of the error


def test_context_manager_raises_lock_not_acquired(make):
    name = uid()
    holder = make(name, ttl=10.0)
    assert holder.acquire()
    start = time.monotonic()
    with pytest.raises(LockNotAcquired) as info, make(name, ttl=0.3, retry_delay=0.05):
        pytest.fail("the body must not run without the lock")
    assert info.value.code == "lock_not_acquired"
    assert time.monotonic() - start < 2.0  # waited at most its ttl (0.3 s), plus slack
    assert holder.locked()  # the failed attempt left the holder's lock alone
    holder.release()


# -- three independent masters (Redlock) ----------------------------------------


def test_three_masters_all_up(three_masters, ns):
    name = uid()

    def lock(**kw: Any) -> RedLock:
        return RedLock(name, kw.pop("ttl", 5.0), masters=three_masters, namespace=ns, retry_delay=0.02, **kw)

    a = lock()
    assert a.acquire(timeout=2)
    # Written on every master: each one alone sees the lock.
    for m in three_masters:
        assert RedLock(name, 5.0, masters=[m], namespace=ns).locked()
    assert a.locked()
    assert not lock().acquire(blocking=False)
    t1 = a.fencing_token
    a.release()
    for m in three_masters:  # released on every master
        assert not RedLock(name, 5.0, masters=[m], namespace=ns).locked()
    b = lock()
    with b:
        assert b.fencing_token > t1
    assert not b.locked()


def test_three_masters_one_down(three, three_masters, ns):
    name = uid()

    def lock() -> RedLock:
        return RedLock(name, 5.0, masters=three_masters, namespace=ns, retry_delay=0.02)

    held = lock()
    assert held.acquire(timeout=2)
    three[0].stop()
    # The majority that still has the lock keeps it.
    assert held.locked()
    assert not lock().acquire(blocking=False)
    assert held.extend() is True
    held.release()
    assert not held.locked()
    # A quorum of 2 out of 3 is enough for a new holder.
    a = lock()
    assert a.acquire(timeout=2)
    assert a.fencing_token > held.fencing_token
    assert not lock().acquire(blocking=False)
    a.release()
    with lock() as b:
        assert b.locked()


def test_three_masters_two_down_refuses(three, three_masters, ns):
    name = uid()

    def lock(ttl: float = 5.0) -> RedLock:
        return RedLock(name, ttl, masters=three_masters, namespace=ns, retry_delay=0.02)

    three[0].stop()
    three[1].stop()
    a = lock()
    assert a.acquire(blocking=False) is False
    start = time.monotonic()
    assert a.acquire(timeout=0.5) is False
    assert time.monotonic() - start < 3.0
    assert a.fencing_token is None
    assert not a.locked()
    with pytest.raises(LockNotAcquired), lock(ttl=0.3):
        pytest.fail("the body must not run without a quorum")
    # The one master that answered was not left holding a partial lock.
    assert not RedLock(name, 5.0, masters=[three_masters[2]], namespace=ns).locked()
    # Back to a majority: the lock works again.
    three[0].start()
    with lock() as b:
        assert isinstance(b.fencing_token, int)


def test_fencing_token_survives_a_master_restarted_empty(three, three_masters, ns):
    """Fencing tokens keep increasing when one master of three loses its data.

    Case: three masters; a few holders take the lock (the counter behind the
    token is on every master). Master 0 is then stopped and started again
    EMPTY (no persistence: its counter is gone). The other two masters, a
    majority, kept their counters, so the next holders' tokens still come out
    higher than every earlier one: the token must never be derived from a
    single master or from a minority. The same holds while master 0 is down
    and after it is back. (Losing the data of a majority at once is outside
    what Redlock guarantees, and is not tested.)"""
    name = uid()

    def take() -> int:
        lock = RedLock(name, 5.0, masters=three_masters, namespace=ns, retry_delay=0.02)
        assert lock.acquire(timeout=3)
        token = lock.fencing_token
        lock.release()
        return token

    tokens = [take() for _ in range(5)]
    three[0].stop()
    tokens += [take() for _ in range(3)]  # master 0 down
    three[0].start()  # back, empty
    assert redis.Redis(port=three[0].port).dbsize() == 0
    tokens += [take() for _ in range(5)]
    assert all(a < b for a, b in zip(tokens, tokens[1:], strict=False)), tokens
    # And with the empty master in every quorum (master 1 down now): its
    # counter was raised by the acquisitions since its restart, and master 2
    # kept its own, so the tokens go on increasing.
    three[1].stop()
    tokens += [take() for _ in range(3)]
    assert all(a < b for a, b in zip(tokens, tokens[1:], strict=False)), tokens


def test_three_masters_mutual_exclusion_between_threads(three_masters, ns):
    name = uid()
    intervals: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            lock = RedLock(name, 5.0, masters=three_masters, namespace=ns, retry_delay=0.01)
            for _ in range(15):
                assert lock.acquire(timeout=20)
                enter = time.monotonic()
                time.sleep(0.001)
                intervals.append((enter, time.monotonic()))
                lock.release()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    run_threads(work, 4, timeout=40)
    assert errors == []
    assert len(intervals) == 60
    assert_no_overlap(intervals)


# -- the Django-facing name ------------------------------------------------------


def test_django_lock_uses_the_main_redis_by_default(rpc_conf):
    from rpcapp import locks

    name = uid()
    a = locks.RedLock(name, ttl=5)
    assert a.acquire(blocking=False)
    assert not locks.RedLock(name).acquire(blocking=False)
    assert locks.RedLock(name).locked()
    a.release()
    with locks.RedLock(name, ttl=5) as b:
        assert b.fencing_token > a.fencing_token


def test_django_lock_uses_lock_redis_urls(rpc_conf, settings, three, single):
    from rpcapp import locks

    settings.RPCAPP = {**rpc_conf, "LOCK_REDIS_URLS": [s.url for s in three]}
    name = uid()
    a = locks.RedLock(name, ttl=5, retry_delay=0.02)
    assert a.acquire(timeout=2)
    # The lock is on the three lock masters, not on the main Redis.
    for server in three:
        m = connect(server)
        try:
            assert RedLock(name, 5.0, masters=[m], namespace=rpc_conf["NAMESPACE"]).locked()
        finally:
            m.close()
    assert not locks.RedLock(name, masters=single).locked()
    a.release()
    three[0].stop()
    with locks.RedLock(name, ttl=5) as b:  # one down: still a majority
        assert b.locked()
    three[1].stop()
    with pytest.raises(LockNotAcquired), locks.RedLock(name, ttl=0.3, retry_delay=0.05):
        pytest.fail("no quorum")


# -- lock-guarded procedures -------------------------------------------------------

# A lock-guarded procedure that works for a while, in a registry of its own
# (served only by the workers these tests start with it).
GUARDED = Registry()
SPANS: dict[str, list[tuple[float, float]]] = {}
_spans_lock = threading.Lock()


@procedure("locktest.work", timeout=10.0, lock="locktest:{key}", registry=GUARDED)
def guarded_work(key: str, seconds: float) -> float:
    enter = time.monotonic()
    time.sleep(seconds)
    with _spans_lock:
        SPANS.setdefault(key, []).append((enter, time.monotonic()))
    return seconds


@procedure("locktest.fail", timeout=10.0, lock="locktest:{key}", registry=GUARDED)
def guarded_fail(key: str) -> None:
    raise ValueError(f"failed under {key}")


@procedure("locktest.region", timeout=10.0, lock="locktest:{key}:{region}", registry=GUARDED)
def guarded_region(key: str, region: str = "eu") -> str:
    return region


def test_lock_guarded_procedure_calls_serialize(client, rpc_conf):
    """Two concurrent calls of a procedure holding its lock while it works
    (0.4 s) on a worker with 4 free slots: one runs after the other."""
    key = uid("k")
    with running_worker(["locktest"], registry=GUARDED, concurrency=4):
        start = time.monotonic()
        futs = [client.call_async("locktest.work", key, 0.4, timeout=8) for _ in range(2)]
        assert [f.result(timeout=10) for f in futs] == [0.4, 0.4]
        elapsed = time.monotonic() - start
        assert elapsed >= 0.8, elapsed
        assert len(SPANS[key]) == 2
        assert_no_overlap(SPANS[key])
        # Different lock names run in parallel.
        other = [uid("k"), uid("k")]
        start = time.monotonic()
        futs = [client.call_async("locktest.work", k, 0.4, timeout=8) for k in other]
        assert [f.result(timeout=10) for f in futs] == [0.4, 0.4]
        a, b = SPANS[other[0]][0], SPANS[other[1]][0]
        assert a[0] < b[1] and b[0] < a[1], "different locks did not run concurrently"


def test_lock_guarded_procedure_releases_its_lock_when_it_raises(client, rpc_conf):
    from rpcapp import locks

    key = uid("k")
    with running_worker(["locktest"], registry=GUARDED, concurrency=2):
        with pytest.raises(RemoteError) as info:
            client.call("locktest.fail", key, timeout=5)
        assert info.value.remote_type == "ValueError"
        lock = locks.RedLock(f"locktest:{key}", ttl=5)
        assert lock.acquire(blocking=False)  # not left held until its lease ran out
        lock.release()
        # Keyword arguments fill the template as well.
        assert client.call("locktest.work", key=key, seconds=0.0, timeout=5) == 0.0


def test_lock_template_uses_parameter_defaults(client, rpc_conf):
    """A template naming a parameter the caller left to its default is
    filled with the default (as the procedure itself sees it)."""
    from rpcapp import locks

    key = uid("k")
    with running_worker(["locktest"], registry=GUARDED, concurrency=2):
        assert client.call("locktest.region", key, "us", timeout=5) == "us"
        mine = locks.RedLock(f"locktest:{key}:eu", ttl=10)
        assert mine.acquire(timeout=2)
        try:
            with pytest.raises(LockNotAcquired) as info:
                client.call("locktest.region", key, timeout=0.5)
            assert "before the deadline" in info.value.message  # refused for the lock, not the template
        finally:
            mine.release()
        assert client.call("locktest.region", key, timeout=5) == "eu"


def test_inventory_reserve_waits_for_its_lock_and_serializes(client, rpc_conf):
    from rpcapp import locks

    sku = uid("sku")
    with running_worker(concurrency=4):
        first = client.call("inventory.reserve", sku, 1, timeout=5)
        assert first == {"sku": sku, "reserved": 1, "left": 99}
        # Hold the SKU's lock ourselves: both concurrent calls wait for it.
        mine = locks.RedLock(f"inventory:{sku}", ttl=5)
        assert mine.acquire(timeout=2)
        start = time.monotonic()
        futs = [client.call_async("inventory.reserve", sku, 1, timeout=10) for _ in range(2)]
        time.sleep(0.6)
        assert not any(f.done() for f in futs), "a call ran while the lock was held elsewhere"
        mine.release()
        results = [f.result(timeout=12) for f in futs]
        assert time.monotonic() - start >= 0.6
        assert sorted(r["left"] for r in results) == [97, 98]  # no lost update
        assert client.call("inventory.reserve", sku, 2, timeout=5)["left"] == 95


def test_inventory_reserve_lock_not_acquired_before_the_deadline(client, rpc_conf):
    from rpcapp import locks

    sku, other = uid("sku"), uid("sku")
    with running_worker(concurrency=4):
        assert client.call("inventory.reserve", other, 1, timeout=5)["left"] == 99
        mine = locks.RedLock(f"inventory:{sku}", ttl=10)
        assert mine.acquire(timeout=2)
        try:
            start = time.monotonic()
            with pytest.raises(LockNotAcquired) as info:
                client.call("inventory.reserve", sku, 1, timeout=0.5)
            elapsed = time.monotonic() - start
            assert info.value.code == "lock_not_acquired"
            assert info.value.procedure == "inventory.reserve"
            assert elapsed < 2.0, elapsed
            assert mine.locked()  # the failed call did not touch our lock
            with pytest.raises(LockNotAcquired):  # by keyword, the same lock
                client.call("inventory.reserve", sku=sku, qty=1, timeout=0.4)
            # Another SKU is not blocked by this lock.
            assert client.call("inventory.reserve", other, 1, timeout=5)["left"] == 98
        finally:
            mine.release()
        # Nothing was reserved by the refused call.
        assert client.call("inventory.reserve", sku, 1, timeout=5)["left"] == 99

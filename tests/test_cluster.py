"""Redis Cluster: a real cluster of 3 masters and 3 replicas (redis-server
processes on loopback) runs calls, worker processes, streams, events, locks,
catalog propagation and history unchanged, and calls resume after a master
fails over to its replica."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import key_slot

from rpcapp import catalog_store, history, keys, publish, runtime
from rpcapp.locks import RedLock
from rpcapp.models import CallRecord, Service
from rpcapp.registry import default_registry
from rpcapp.testing import RedisClusterServers, running_worker, wait_for
from rpcapp.transport import connect
from tests.conftest import FAST, Callers, Processes

SERVICES = ["tests", "calculator", "math", "audit", "mailer"]


@pytest.fixture(scope="session")  # once, however pytest-django orders the tests
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers(masters=3, replicas=1) as servers:
        yield servers


@pytest.fixture
def cluster_conf(settings: Any, monkeypatch: Any, cluster: RedisClusterServers) -> Iterator[dict[str, Any]]:
    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    conf = {"REDIS_URL": cluster.url, "NAMESPACE": "c" + uuid.uuid4().hex[:8], **FAST, "EVENT_RETRY_DELAY": 0.1}
    settings.RPCAPP = conf
    yield conf
    runtime.reset()


@pytest.fixture
def cluster_client(cluster_conf: dict[str, Any]) -> Any:
    return runtime.get_client()


def slot_of(ns: str, service: str) -> int:
    return key_slot(keys.requests(ns, service).encode())


def test_every_key_of_a_service_shares_one_slot() -> None:
    ns, svc = "rpcapp", "calculator"
    service_keys = [
        keys.requests(ns, svc), keys.requests(ns, keys.inbox_route(svc, "host:1:ab")), keys.inboxes(ns, svc),
        keys.dead_letters(ns, svc), keys.consumers(ns, svc), keys.providers(ns, svc), keys.procedures(ns, svc),
        keys.stats(ns, svc), keys.recovery_lock(ns, svc), keys.delayed(ns, svc), keys.credit(ns, svc, "c1"),
        keys.rate_limit(ns, svc, "calculator.add"),
        keys.idempotency(ns, "calculator.add", "k"), keys.idempotency_waiters(ns, "calculator.add", "k"),
    ]
    assert len({key_slot(k.encode()) for k in service_keys}) == 1
    # ...and the services used below are spread over the masters.
    assert len({slot_of(ns, s) * 3 // 16384 for s in SERVICES}) > 1


def test_calls_to_services_on_different_masters(cluster: RedisClusterServers, cluster_client: Any) -> None:
    ns = cluster_client.transport.ns
    masters = {cluster.master_of_slot(slot_of(ns, s)).port for s in ("tests", "calculator", "math")}
    assert len(masters) >= 2  # one worker reads queues held by different masters
    with running_worker(["tests", "calculator", "math"], concurrency=4) as worker:
        assert worker.transport.clustered
        assert cluster_client.call("calculator.add", 2, 3) == 5
        assert cluster_client.call("math.fib", 10) == 55
        assert cluster_client.call("tests.echo", {"x": [1, 2]}) == {"x": [1, 2]}
        futures = [(i, cluster_client.call_async("tests.echo", i)) for i in range(60)] + [(i, cluster_client.call_async("calculator.add", i, 0)) for i in range(60)]
        for i, fut in futures:
            assert fut.result(timeout=10) == i
        cluster_client.notify("tests.echo", "noted")
        # A slow call on one service does not hold back the others' readers.
        slow = cluster_client.call_async("tests.sleep", 1.0)
        started = time.monotonic()
        assert cluster_client.call("calculator.add", 1, 1) == 2
        assert time.monotonic() - started < 0.5
        assert slow.result(timeout=5) == 1.0
        # Idle services hold one slot each at most: a busy one gets the rest.
        started = time.monotonic()
        sleeps = [cluster_client.call_async("tests.sleep_idem", 1.0) for _ in range(2)]
        assert [f.result(timeout=10) for f in sleeps] == [1.0, 1.0]
        assert time.monotonic() - started < 1.8, "two 1 s calls did not run side by side"


def test_a_worker_process_serves_and_drains(cluster_conf: dict[str, Any], cluster_client: Any, tmp_path: Path) -> None:
    procs = Processes(cluster_conf, tmp_path)
    try:
        proc = procs.start("--service", "tests", "--service", "calculator")
        assert cluster_client.call("calculator.add", 20, 22) == 42
        slow = cluster_client.call_async("tests.sleep_idem", 0.5)
        time.sleep(0.2)
        proc.terminate()  # drains: the call under way still finishes
        assert slow.result(timeout=10) == 0.5
        assert proc.wait(timeout=15) == 0
    finally:
        procs.stop_all()


def test_streams(cluster_client: Any) -> None:
    with running_worker(["tests"]):
        assert list(cluster_client.stream("tests.count_up", 200)) == list(range(200))


def test_events_reach_each_subscribing_service_once(cluster_conf: dict[str, Any], cluster_client: Any) -> None:
    tally = connect(cluster_conf["REDIS_URL"])
    ns = cluster_conf["NAMESPACE"]
    with running_worker(["audit", "mailer"]):
        ids = {publish("tests.happened", {"n": n}) for n in range(30)}

        def counted(key: str) -> dict[bytes, bytes]:
            return tally.hgetall(f"{ns}:test:{key}")

        wait_for(lambda: len(counted("audit")) == 30 and len(counted("mailer")) == 30, 15, message="30 events in each service")
        time.sleep(0.3)
    assert len(ids) == 30
    assert {int(v) for v in counted("audit").values()} == {1} == {int(v) for v in counted("mailer").values()}


def test_failing_event_handlers_are_retried(cluster_conf: dict[str, Any], cluster_client: Any) -> None:
    tally = connect(cluster_conf["REDIS_URL"])
    with running_worker(["audit"]):
        publish("tests.flaky", {"n": 1, "fails": 2})
        wait_for(lambda: tally.hget(f"{cluster_conf['NAMESPACE']}:test:flaky", "1") == b"3", 15, message="the third attempt")


def test_broadcasts_and_recovery_after_a_worker_is_killed(cluster_conf: dict[str, Any], cluster_client: Any, tmp_path: Path) -> None:
    """Broadcast handlers run in every live worker process; an event whose
    worker died mid-handler (kill -9 in the handler) is delivered again to the
    next worker, through recovery of the dead consumer's pending entries."""
    tally = connect(cluster_conf["REDIS_URL"])
    ns = cluster_conf["NAMESPACE"]
    procs = Processes(cluster_conf, tmp_path)
    try:
        a = procs.start("--service", "mailer")
        b = procs.start("--service", "mailer")
        publish("tests.happened", {"n": 7})
        wait_for(lambda: len(tally.hgetall(f"{ns}:test:broadcast")) == 2, 10, message="both broadcast handlers")
        assert {k.decode() for k in tally.hgetall(f"{ns}:test:broadcast")} == {f"{a.pid}:7", f"{b.pid}:7"}
        procs.start("--service", "audit")
        publish("tests.crashy", {"n": 1})
        wait_for(lambda: tally.hget(f"{ns}:test:crashy", "1") == b"1", 10, message="the first delivery")
        procs.start("--service", "audit")
        wait_for(lambda: tally.hget(f"{ns}:test:crashy", "1") == b"2", 15, message="the redelivery")
    finally:
        procs.stop_all()


def test_locks_exclude_and_fence(cluster_conf: dict[str, Any]) -> None:
    name = "stock-" + uuid.uuid4().hex[:6]
    holders: list[int] = []
    inside = threading.Lock()
    overlaps = []

    def work() -> None:
        for _ in range(10):
            with RedLock(name, ttl=5.0) as lock:
                if not inside.acquire(blocking=False):
                    overlaps.append(lock.fencing_token)
                holders.append(lock.fencing_token)
                time.sleep(0.002)
                inside.release()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not overlaps
    assert sorted(holders) == list(range(1, 41))


@pytest.mark.django_db(transaction=True)
def test_catalog_changes_propagate_and_calls_are_recorded(cluster_client: Any) -> None:
    from rpcapp.errors import ServiceUnavailable

    catalog_store.sync_registry(default_registry, ["calculator"])
    catalog_store.push()
    service = Service.objects.get(name="calculator")
    with running_worker(["calculator"]):
        assert cluster_client.call("calculator.add", 1, 2) == 3
        service.enabled = False
        service.save()
        wait_for(lambda: not cluster_client.governor.config("calculator").enabled, 2.0, 0.01, "the change within 2 s")
        with pytest.raises(ServiceUnavailable):
            cluster_client.call("calculator.add", 1, 2)
        service.enabled = True
        service.save()
        wait_for(lambda: cluster_client.governor.config("calculator").enabled, 2.0, 0.01, "the change back")
        assert cluster_client.call("calculator.multiply", 4, 5) == 20
        time.sleep(0.4)  # the worker's record buffer flushes
    wait_for(lambda: history.record_now() or CallRecord.objects.count() >= 2, 5, message="records stored")
    stored = set(CallRecord.objects.values_list("procedure", "status"))
    assert {("calculator.add", "ok"), ("calculator.multiply", "ok")} <= stored


def test_a_batch_over_several_services_is_refused_past_each_queue_limit(cluster_client: Any) -> None:
    """The per-service ENQUEUE script refuses past MAX_QUEUE_LENGTH and never trims."""
    items = [(svc, b"frame") for svc in ("tests", "calculator") for _ in range(5)]
    ids = cluster_client.transport.enqueue(items, 3)
    assert [i is None for i in ids] == [False, False, False, True, True] * 2
    assert cluster_client.transport.enqueue([("tests", b"one more")], 3) == [None]


def test_no_call_begun_after_a_promotion_fails(settings: Any, monkeypatch: Any) -> None:
    """The master holding the ``tests`` queue killed under calling threads: its
    replica is promoted, clients and workers use it at once, so no call begun
    after the promotion fails (DESIGN 14); before it, every call returns its
    own argument or a typed error, never another call's reply. A cluster of
    its own: the test kills one of its masters."""
    with RedisClusterServers(masters=3, replicas=1) as cluster:
        monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
        settings.RPCAPP = {"REDIS_URL": cluster.url, "NAMESPACE": "f" + uuid.uuid4().hex[:8], **FAST}
        try:
            client = runtime.get_client()
            ns = client.transport.ns
            victim = cluster.master_of_slot(slot_of(ns, "tests"))
            with running_worker(["tests"], concurrency=4), Callers(lambda arg: client.call("tests.echo", arg, timeout=3.0)) as callers:
                wait_for(lambda: len(callers.outcomes) > 50, 10, message="calls before the failover")
                victim.stop(kill=True)
                wait_for(lambda: cluster.master_of_slot(slot_of(ns, "tests")) is not victim, 30, 0.02, "the replica's promotion")
                promoted = time.monotonic()
                wait_for(lambda: callers.begun_after(promoted + 1) > 100, 30, message="100 calls after the promotion")
            assert not callers.failed_after(promoted), callers.failed_after(promoted)[:10]
            assert not callers.wrong()
        finally:
            runtime.reset()

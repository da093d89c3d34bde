"""The worker, in threads of the test process, against a real Redis."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from rpcapp import keys, runtime
from rpcapp.errors import RpcTimeout, WorkerLost
from rpcapp.protocol import Request, Signer, derive_key, now_ms
from rpcapp.testing import running_worker, wait_for


def push(client, service: str, frame: bytes) -> None:
    client.transport.redis.xadd(keys.requests(client.transport.ns, service), {"m": frame})


def signed_request(client, procedure: str, *args, deadline_ms: int | None = None, reply_to: str | None = None) -> bytes:
    req = Request(procedure, list(args), {}, deadline=deadline_ms or now_ms() + 5000, reply_to=reply_to)
    return client.signer.pack(req.to_wire())


@pytest.mark.parametrize(
    "frame",
    [b"garbage", b"", b"\x01j" + b"\x00" * 32 + b"{not json", bytes(range(200))],
    ids=["text", "empty", "bad-json", "binary"],
)
def test_garbage_is_rejected_counted_and_dead_lettered(client, worker, frame):
    push(client, "tests", frame)
    wait_for(lambda: client.transport.stats("tests").get("rejected") == 1, 5, message="rejection counted")
    dead = client.transport.dead_letters("tests")
    assert dead and dead[0][1]["m"] == frame and dead[0][1]["reason"].startswith(b"rejected")
    assert client.call("tests.echo", "still alive") == "still alive"


def test_tampered_and_forged_messages_never_run(client, worker):
    key = "tamper-" + uuid.uuid4().hex
    good = bytearray(signed_request(client, "tests.count", key))
    good[-5] ^= 0x01  # flip a bit of the body
    forged = Signer((derive_key("not-the-secret"),)).pack(
        Request("tests.count", [key], {}, deadline=now_ms() + 5000, reply_to=None).to_wire()
    )
    push(client, "tests", bytes(good))
    push(client, "tests", forged)
    wait_for(lambda: client.transport.stats("tests").get("rejected") == 2, 5, message="rejections counted")
    reasons = [f["reason"] for _, f in client.transport.dead_letters("tests")]
    assert all(b"bad signature" in r for r in reasons)
    assert client.call("tests.count", key) == 1  # the tampered ones never ran


def test_expired_request_is_not_run(client, worker):
    key = "expired-" + uuid.uuid4().hex
    push(client, "tests", signed_request(client, "tests.count", key, deadline_ms=now_ms() - 1))
    wait_for(lambda: client.transport.stats("tests").get("expired") == 1, 5, message="expiry counted")
    assert client.call("tests.count", key) == 1


def test_oversize_request_on_the_queue_is_rejected(client, worker, settings):
    limit = client.settings.max_request_bytes
    frame = client.signer.pack(Request("tests.echo", ["x" * limit], {}, deadline=now_ms() + 5000, reply_to=None).to_wire())
    push(client, "tests", frame)
    wait_for(lambda: client.transport.stats("tests").get("rejected") == 1, 5, message="rejection counted")
    assert b"over the limit" in client.transport.dead_letters("tests")[0][1]["reason"]


def test_unknown_procedure_on_worker_answers_not_found(client, worker):
    from rpcapp.errors import ProcedureNotFound

    listener = client._ensure_listener()
    fut = client.call_async("tests.echo", 1)
    fut.result(timeout=5)
    req = Request("tests.nothing_here", [], {}, deadline=now_ms() + 3000, reply_to=listener.reply_key)
    from concurrent.futures import Future

    f2: Future = Future()
    listener.track(req, f2, "any")
    push(client, "tests", client.signer.pack(req.to_wire()))
    with pytest.raises(ProcedureNotFound):
        f2.result(timeout=5)


def test_concurrency_is_never_exceeded(client, rpc_conf):
    with running_worker(["tests"], concurrency=2) as w:
        seen = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                seen.append(w.in_flight)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.monotonic()
        client.gather([("tests.sleep", (0.3,))] * 6, timeout=10)
        elapsed = time.monotonic() - start
        stop.set()
        sampler.join()
        assert max(seen) == 2
        assert elapsed >= 0.85  # three rounds of two
        pending = client.transport.redis.xpending(keys.requests(client.transport.ns, "tests"), keys.GROUP)
        assert pending["pending"] == 0


def test_drain_finishes_in_flight_and_takes_no_new_work(client, rpc_conf):
    w = __import__("rpcapp.runtime", fromlist=["x"]).build_worker(["tests"], concurrency=2)
    w.start()
    futs = [client.call_async("tests.sleep", 0.5) for _ in range(2)]
    wait_for(lambda: w.in_flight == 2, 5, message="calls in flight")
    stopper = threading.Thread(target=w.stop, kwargs={"grace": 5})
    stopper.start()
    assert [f.result(timeout=5) for f in futs] == [0.5, 0.5]
    stopper.join()
    assert w.stopped
    late = client.call_async("tests.sleep", 0.1, timeout=1.0)
    with pytest.raises((RpcTimeout, Exception)) as info:
        late.result(timeout=3)
    assert info.value.code in ("timeout", "unavailable")


def _orphan(client, procedure: str, *args, timeout: float = 10.0):
    """Send a call and have a consumer that then 'dies' take it (never answering)."""
    fut = client.call_async(procedure, *args, timeout=timeout)
    stream = keys.requests(client.transport.ns, keys.service_of(procedure))
    client.transport.ensure_group(keys.service_of(procedure))
    got = client.transport.redis.xreadgroup(keys.GROUP, "ghost", {stream: ">"}, count=1, block=2000)
    assert got, "the ghost consumer took the request"
    return fut


@pytest.fixture
def ghost_live(client):
    """Make 'ghost' look like a live provider so the client sends work."""
    def beat() -> None:
        client.transport.heartbeat(["tests"], "ghost", None, now_ms())
    return beat


def test_dead_consumer_idempotent_work_is_redelivered(client, rpc_conf, ghost_live):
    ghost_live()
    fut = _orphan(client, "tests.counted", "redeliver-" + uuid.uuid4().hex)
    with running_worker(["tests"], concurrency=2):
        result = fut.result(timeout=8)  # ghost stops beating: dead after PROVIDER_TTL
    assert result.startswith("redeliver-")
    assert client.transport.stats("tests").get("redelivered") == 1


def test_dead_consumer_non_idempotent_work_answers_worker_lost(client, rpc_conf, ghost_live):
    ghost_live()
    fut = _orphan(client, "tests.count", "lost-" + uuid.uuid4().hex)
    start = time.monotonic()
    with running_worker(["tests"], concurrency=2):
        with pytest.raises(WorkerLost) as info:
            fut.result(timeout=8)
    assert time.monotonic() - start < 6
    assert "may or may not have run" in info.value.message


def test_poison_is_dead_lettered_after_max_deliveries(client, rpc_conf, ghost_live):
    """Each delivery 'dies' (a consumer takes it and vanishes) until it is parked."""
    ghost_live()
    fut = client.call_async("tests.counted", "poison", timeout=30)
    stream = keys.requests(client.transport.ns, "tests")
    w = __import__("rpcapp.runtime", fromlist=["x"]).build_worker(["tests"], concurrency=1, max_deliveries=3)
    w._setup_redis(first=False)
    for n in range(3):
        got = client.transport.redis.xreadgroup(keys.GROUP, f"ghost{n}", {stream: ">"}, count=1, block=3000)
        assert got, f"delivery {n + 1} happened"
        time.sleep(0.05)
        w.recovery.sweep("tests", dead={f"ghost{n}", "ghost"})
    with pytest.raises(WorkerLost, match="dead-lettered after 3 deliveries"):
        fut.result(timeout=5)
    dead = client.transport.dead_letters("tests")
    assert b"dead-lettered after 3 deliveries" in dead[0][1]["reason"]
    w.transport.close()


def test_redis_restart_empty_recovers(client, own_conf, own_redis):
    from rpcapp import runtime

    c = runtime.get_client()
    with running_worker(["tests"], concurrency=2):
        assert c.call("tests.echo", 1) == 1
        own_redis.restart()
        wait_for(lambda: _try(c), 10, interval=0.2, message="calls work again after the restart")


def _try(c) -> bool:
    try:
        return c.call("tests.echo", 2, timeout=1) == 2
    except Exception:
        return False


@pytest.mark.django_db(transaction=True)
def test_workers_reset_the_query_log_and_close_old_connections_around_calls(settings: Any, rpc_conf: dict[str, Any]) -> None:
    """What Django does around each request, the default worker hook does
    around each call: with DEBUG on the query log would otherwise keep growing."""
    from django.db import connection

    from rpcapp.models import Service

    worker = runtime.build_worker(["tests"])
    hook = next(h for h in worker.executor.hooks if isinstance(h, runtime.DatabaseConnections))
    settings.DEBUG = True
    seen: list[int] = []

    def a_call_thread() -> None:  # a fresh thread opens its own connection, as a worker's do
        try:
            list(Service.objects.all())
            seen.append(len(connection.queries))
            hook.before_call(None)
            seen.append(len(connection.queries))
        finally:
            connection.close()

    thread = threading.Thread(target=a_call_thread)
    thread.start()
    thread.join(10)
    worker.transport.close()
    assert seen[0] > 0 and seen[1] == 0, seen

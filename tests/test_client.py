"""The client against a real Redis and an in-thread worker."""

from __future__ import annotations

import datetime as dt
import decimal
import threading
import time
import uuid
from concurrent.futures import Future

import pytest

from rpcapp import runtime
from rpcapp.errors import (
    InvalidParams,
    PayloadTooLarge,
    ProcedureNotFound,
    RemoteError,
    RpcError,
    RpcTimeout,
    ServiceUnavailable,
)
from rpcapp.testing import running_worker, wait_for


def test_call_positional_keyword_and_proxy(client, worker):
    assert client.call("calculator.add", 10, 5) == 15
    assert client.call("calculator.add", a=10, b=5, timeout=0.5) == 15
    assert client.service("calculator").subtract(10, 5, timeout=1) == 5
    assert client.call("math.fib", 10) == 55


def test_default_client_is_importable(rpc_conf, worker):
    from rpcapp import rpc

    assert rpc.call("calculator.multiply", 6, 7) == 42


def test_call_async_returns_a_future(client, worker):
    fut = client.call_async("calculator.add", 1, 2)
    assert isinstance(fut, Future)
    assert fut.result(timeout=5) == 3


def test_call_async_never_raises(client, worker):
    bad = [
        client.call_async("nope.missing"),
        client.call_async("calculator.add", "x", 1),
        client.call_async("other.ping"),  # no provider for service "other"? the worker serves it
    ]
    with pytest.raises(ProcedureNotFound) as nf:
        bad[0].result(timeout=5)
    assert nf.value.call_id is None and nf.value.procedure == "nope.missing"
    with pytest.raises(InvalidParams):
        bad[1].result(timeout=5)
    assert bad[2].result(timeout=5) == "pong"


def test_gather_in_order_and_return_exceptions(client, worker):
    calls = [("calculator.add", (1, 2)), ("calculator.subtract", (5, 3)), ("math.fib", (), {"n": 12})]
    assert client.gather(calls) == [3, 2, 144]
    out = client.gather([("calculator.divide", (1, 0)), ("calculator.add", (1, 1))], return_exceptions=True)
    assert isinstance(out[0], RemoteError) and out[1] == 2
    with pytest.raises(RemoteError):
        client.gather([("calculator.divide", (1, 0)), ("calculator.add", (1, 1))])


def test_gather_shared_timeout(client, worker):
    start = time.monotonic()
    out = client.gather([("tests.sleep", (2,)), ("calculator.add", (1, 1))], timeout=0.3, return_exceptions=True)
    assert isinstance(out[0], RpcTimeout) and out[1] == 2
    assert time.monotonic() - start < 1.5


def test_remote_error_carries_type_message_traceback(client, worker):
    with pytest.raises(RemoteError) as info:
        client.call("tests.fail", "boom")
    err = info.value
    assert (err.code, err.remote_type, err.remote_message) == ("remote_error", "ValueError", "boom")
    assert "raise ValueError(message)" in err.remote_traceback
    assert str(err) == "ValueError: boom"
    assert err.procedure == "tests.fail" and err.call_id


def test_invalid_params_raised_before_sending(client, worker):
    with pytest.raises(InvalidParams) as info:
        client.call("calculator.add", True, 1)
    assert info.value.call_id is None


def test_timeout_and_late_reply_dropped_and_counted(client, worker):
    start = time.monotonic()
    with pytest.raises(RpcTimeout) as info:
        client.call("tests.sleep", 0.6, timeout=0.2)
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 0.6
    assert info.value.code == "timeout" and info.value.call_id
    wait_for(lambda: client.late_replies >= 1, 5, message="late reply counted")
    assert client.call("calculator.add", 1, 1) == 2


def test_future_completed_by_its_deadline_without_a_waiter(client, worker):
    fut = client.call_async("tests.sleep", 2, timeout=0.3)
    start = time.monotonic()
    wait_for(fut.done, 2, interval=0.01, message="future completed")
    assert time.monotonic() - start < 0.8
    assert isinstance(fut.exception(), RpcTimeout)


def test_no_provider_is_unavailable_quickly(client):
    # None ever registered: the call waits briefly for one to register, then fails.
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        client.call("calculator.add", 1, 2, timeout=5)
    assert time.monotonic() - start < 2.0


def test_dead_providers_only_is_unavailable_at_once(client):
    from rpcapp.protocol import now_ms

    client.transport.heartbeat(["calculator"], "long-gone", None, now_ms() - 60_000)
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="no live provider"):
        client.call("calculator.add", 1, 2, timeout=5)
    assert time.monotonic() - start < 0.5


def test_unknown_procedure(client, worker):
    with pytest.raises(ProcedureNotFound):
        client.call("calculator.power", 2, 3)
    with pytest.raises(ProcedureNotFound):
        client.notify("nosuch.thing")


def test_procedure_known_only_from_redis_spec(client, worker, settings):
    """A caller without the code reads the spec the worker published."""
    from rpcapp.client import Client
    from rpcapp.registry import Registry

    bare = Client(client.transport, client.signer, client.settings, registry=Registry())
    assert bare.call("calculator.add", 2, 3) == 5
    with pytest.raises(InvalidParams):
        bare.call("calculator.add", "2", 3)
    bare.close()


def test_notify_queues_and_runs(client, worker):
    key = uuid.uuid4().hex
    assert client.notify("tests.count", key) is None
    wait_for(lambda: client.call("tests.count", key) >= 2, 5, message="notification ran")


def test_payload_too_large_both_ways(client, worker, settings):
    limit = runtime.client_settings().max_request_bytes
    with pytest.raises(PayloadTooLarge) as info:
        client.call("tests.echo", "x" * (limit + 1))
    assert info.value.call_id is None
    with pytest.raises(PayloadTooLarge) as info:
        client.call("tests.big", limit + 10)
    assert info.value.call_id is not None
    assert client.call("tests.big", 10) == "x" * 10


def test_unserialisable_result_is_a_typed_error_and_worker_survives(client, worker):
    with pytest.raises(RemoteError) as info:
        client.call("tests.unserialisable")
    assert info.value.remote_type == "UnserializableResult"
    assert client.call("calculator.add", 1, 1) == 2


def test_rich_values(client, worker):
    when = dt.datetime(2026, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    out = client.call("tests.typed", when, dt.date(2026, 5, 6), uuid.UUID(int=7), decimal.Decimal("2.50"), tags=["a"])
    assert out["types"] == ["datetime", "date", "UUID", "Decimal"]
    assert out["amount"] == "2.50" and out["tags"] == ["a"]
    assert client.call("tests.when", 1) == dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


def test_nested_call_inherits_remaining_deadline(client, worker):
    left = client.call("tests.nested_remaining", timeout=2.0)
    assert 1.0 < left <= 2.0
    start = time.monotonic()
    with pytest.raises(RpcTimeout):
        client.call("tests.nested", 1.5, timeout=0.5)
    assert time.monotonic() - start < 1.5


def test_idempotency_key_returns_the_first_result(client, worker):
    key = uuid.uuid4().hex
    first = client.call("tests.count", "idem-" + key, idempotency_key=key)
    again = client.call("tests.count", "idem-" + key, idempotency_key=key)
    assert first == again == 1
    assert client.call("tests.count", "idem-" + key) == 2  # without the key it runs


def test_idempotency_duplicates_in_flight_run_once(client, rpc_conf):
    key = uuid.uuid4().hex
    with running_worker(concurrency=4):
        futs = [client.call_async("tests.counted", "dup-" + key, 0.3, idempotency_key=key) for _ in range(4)]
        results = {f.result(timeout=5) for f in futs}
        assert len(results) == 1
        from tests.testapp.rpc import RUNS

        assert RUNS["dup-" + key] == 1


def test_thread_safe_many_threads(client, worker):
    errors: list[Exception] = []

    def run(tid: int) -> None:
        try:
            for i in range(150):
                value = f"{tid}-{i}"
                if (tid + i) % 3 == 0:  # mix Futures (listener thread) with self-reading callers
                    assert client.call_async("tests.echo", value).result(timeout=10) == value
                else:
                    assert client.call("tests.echo", value, timeout=5) == value
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_one_reply_listener_connection_for_many_calls(client, worker, redis_server):
    import redis as redis_py

    futs = [client.call_async("tests.sleep", 0.5) for _ in range(3)]
    futs += [client.call_async("tests.echo", i) for i in range(40)]
    admin = redis_py.Redis(port=redis_server.port)
    try:
        time.sleep(0.1)
        blocked_on_replies = [c for c in admin.client_list() if c["cmd"] == "brpop"]
        assert len(blocked_on_replies) == 1
    finally:
        admin.close()
    assert [f.result(timeout=5) for f in futs[3:]] == list(range(40))


def test_redis_unreachable_is_service_unavailable(settings, monkeypatch):
    from rpcapp.testing import free_port

    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    settings.RPCAPP = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "NAMESPACE": "closed"}
    client = runtime.get_client()
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        client.call("calculator.add", 1, 2, timeout=0.5)
    assert time.monotonic() - start < 1.5
    with pytest.raises(RpcError):
        client.call_async("calculator.add", 1, 2, timeout=0.3).result(timeout=3)
    runtime.reset()


def test_keys_back_to_baseline_after_10000_calls(client, rpc_conf):
    with running_worker(["calculator"], concurrency=8):
        client.call("calculator.add", 0, 0)

        def snapshot() -> set[str]:
            # minus the recovery lock, held for an instant by each sweep, the
            # call-history stream (capped, checked below), and the at-most-once
            # markers of request ids, which expire with their call's deadline (checked below)
            return {k for k in client.transport.scan_keys() if not k.endswith((":recovery", ":history")) and ":ran:" not in k}

        baseline = snapshot()
        for start in range(0, 10_000, 250):
            futs = [client.call_async("calculator.add", i, 1, timeout=30) for i in range(start, start + 250)]
            assert [f.result(timeout=30) for f in futs] == [i + 1 for i in range(start, start + 250)]
        wait_for(lambda: snapshot() == baseline, 5, message="keys back to baseline")
        markers = [k for k in client.transport.scan_keys() if ":ran:" in k]
        assert len(markers) <= 10_001
        ttls = [client.transport.redis.pttl(k) for k in markers[:500]]
        assert all(0 < t <= 31_000 for t in ttls), ttls  # gone by the calls' deadline (30 s) + 1 s
    stream = client.transport.redis.xlen(f"{client.transport.ns}:{{calculator}}:requests")
    assert stream == 0
    records = client.transport.redis.xrange(f"{client.transport.ns}:history")
    assert sum(r[1][b"r"].count(b'"id"') for r in records) == 10_001  # every call recorded, in a few batched entries
    assert len(records) < 10_001


def test_acall_from_asyncio(client, worker):
    import asyncio

    async def main() -> list:
        return await asyncio.gather(*(client.acall("calculator.add", i, i) for i in range(20)))

    assert asyncio.run(main()) == [2 * i for i in range(20)]

    async def fails() -> None:
        await client.acall("calculator.divide", 1, 0)

    with pytest.raises(RemoteError):
        asyncio.run(fails())


def test_unencodable_argument_is_invalid_params_on_the_future(client, worker):
    fut = client.call_async("tests.echo", object())
    with pytest.raises(InvalidParams, match="cannot be encoded"):
        fut.result(timeout=2)
    with pytest.raises(InvalidParams):
        client.call("tests.echo", 2**70)


def test_a_request_redis_refused_is_sent_again_even_if_not_idempotent(own_conf, own_redis):
    """An error reply (here OOM: no write allowed) means nothing was queued,
    so a non-idempotent call is retried until Redis takes it; it then runs once."""
    import redis

    from tests.testapp.rpc import RUNS

    admin = redis.Redis(port=own_redis.port)
    client = runtime.get_client()
    key = uuid.uuid4().hex
    with running_worker(["tests"]):
        assert client.call("tests.echo", 1) == 1  # the spec and a live provider are known
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        threading.Timer(0.6, lambda: admin.config_set("maxmemory", 0)).start()
        started = time.monotonic()
        assert client.call("tests.count", key, timeout=5.0) == 1
        assert time.monotonic() - started >= 0.5
        assert RUNS[key] == 1
        admin.config_set("maxmemory", 1)
        with pytest.raises(ServiceUnavailable):
            client.call("tests.count", key + "x", timeout=0.5)
        admin.config_set("maxmemory", 0)
    assert key + "x" not in RUNS

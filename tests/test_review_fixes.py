"""Regression tests for delivery edge cases: drain, fairness, idempotency release,
per-service failures, closing a client."""

from __future__ import annotations

import time
import uuid

import pytest

from rpcapp import keys, runtime
from rpcapp.errors import ServiceUnavailable
from rpcapp.protocol import now_ms
from rpcapp.testing import running_worker, wait_for


def test_draining_worker_keeps_heartbeating_and_finishes_its_call(client, rpc_conf):
    """A drain longer than PROVIDER_TTL must not get the worker's calls recovered by others."""
    draining = runtime.build_worker(["tests"], concurrency=2)
    draining.start()
    try:
        fut = client.call_async("tests.sleep", 2.5, timeout=10)
        wait_for(lambda: draining.in_flight == 1, 5, message="call taken by the worker that will drain")
        with running_worker(["tests"], concurrency=1):  # a live peer that runs recovery sweeps
            assert draining.stop(grace=5) is True
            assert fut.result(timeout=1) == 2.5  # not WorkerLost: PROVIDER_TTL is 1 s
    finally:
        draining.transport.close()


def test_services_served_fairly_with_fewer_slots_than_services(client, rpc_conf):
    """Oldest first across services: a request is not overtaken by later ones of
    another service, whatever the services' order."""
    with running_worker(["tests", "other"], concurrency=1):
        client.call("other.ping")
        before = [client.call_async("other.ping", timeout=30) for _ in range(100)]
        echo = client.call_async("tests.echo", "me", timeout=30)
        after = []
        echo.add_done_callback(lambda _: after.append(sum(f.done() for f in later)))
        later = [client.call_async("other.ping", timeout=30) for _ in range(100)]
        assert echo.result(timeout=30) == "me"
        wait_for(lambda: after, 2, message="callback")
        assert after[0] <= 5, f"{after[0]} later requests overtook the echo"
        assert all(f.result(timeout=30) == "pong" for f in before + later)


def test_idempotency_release_only_frees_its_own_claim(client, rpc_conf):
    t = client.transport
    waiter = client.signer.pack({"id": "w", "reply_to": "nowhere"})
    assert t.claim_idempotency("tests.count", "k1", "call-a", 5000, waiter)[0] == 0
    assert t.release_idempotency("tests.count", "k1", "call-b") == []  # not its claim
    assert t.claim_idempotency("tests.count", "k1", "call-c", 5000, waiter)[0] == 1  # still held by call-a
    assert len(t.release_idempotency("tests.count", "k1", "call-a")) == 1  # the waiter is handed back
    assert t.claim_idempotency("tests.count", "k1", "call-d", 5000, waiter)[0] == 0


def test_waiters_ttl_is_never_shortened(client, rpc_conf):
    t = client.transport
    waiter = client.signer.pack({"id": "w", "reply_to": "nowhere"})
    t.claim_idempotency("tests.count", "k2", "call-a", 8000, waiter)
    t.claim_idempotency("tests.count", "k2", "call-b", 8000, waiter)
    t.claim_idempotency("tests.count", "k2", "call-c", 500, waiter)
    ttl = t.redis.pttl(keys.idempotency_waiters(t.ns, "tests.count", "k2"))
    assert ttl > 5000


def test_gather_fails_only_the_service_without_providers(client, rpc_conf):
    client.transport.heartbeat(["other"], "long-gone", None, now_ms() - 60_000)
    with running_worker(["tests"], concurrency=2):
        out = client.gather([("tests.echo", (1,)), ("other.ping", ())], return_exceptions=True)
    assert out[0] == 1 and isinstance(out[1], ServiceUnavailable)


def test_close_completes_waiting_calls(rpc_conf):
    from rpcapp.client import Client

    c = Client(runtime.build_transport(), runtime.build_signer(), runtime.client_settings())
    with running_worker(["tests"], concurrency=1):
        fut = c.call_async("tests.sleep", 1.0, timeout=10)
        wait_for(lambda: getattr(fut, "rpc_sent", False), 5, message="sent")
        c.close()
        with pytest.raises(ServiceUnavailable, match="closed"):
            fut.result(timeout=2)
    c.transport.close()


def test_stuck_own_entry_is_resolved(client, rpc_conf, monkeypatch):
    """An entry this worker holds but no thread runs (Redis failed mid-way) is resolved."""
    from rpcapp.worker import consumer

    monkeypatch.setattr(consumer, "STUCK_IDLE_MS", 300)
    monkeypatch.setattr(consumer, "STUCK_CHECK_EVERY", 1)
    with running_worker(["tests"], concurrency=1) as w:
        key = "stuck-" + uuid.uuid4().hex
        busy = client.call_async("tests.sleep", 1.0, timeout=10)  # the only slot is taken
        wait_for(lambda: w.in_flight == 1, 5, message="worker busy")
        fut = client.call_async("tests.counted", key, timeout=10)
        stream = keys.requests(client.transport.ns, "tests")
        got = client.transport.redis.xreadgroup(keys.GROUP, "ghost", {stream: ">"}, count=1, block=2000)
        assert got, "the ghost took the request"
        entry_id = got[0][1][0][0]
        # Hand it to the worker's own name, as if it had read it and then lost it.
        client.transport.redis.xclaim(stream, keys.GROUP, w.name, min_idle_time=0, message_ids=[entry_id])
        assert busy.result(timeout=5) == 1.0
        assert fut.result(timeout=8).startswith(key)


def test_sync_call_from_a_done_callback_does_not_stall_replies(client, rpc_conf):
    """A done-callback runs on the thread reading replies; a call it makes reads its own."""
    results = []
    with running_worker(["tests"], concurrency=2):
        fut = client.call_async("tests.echo", "outer", timeout=5)
        fut.add_done_callback(lambda f: results.append(client.call("tests.echo", "inner", timeout=3)))
        start = time.monotonic()
        assert fut.result(timeout=5) == "outer"
        wait_for(lambda: results, 5, message="inner call done")
        assert results == ["inner"]
        assert time.monotonic() - start < 2.0


def test_calls_made_after_close_fail_at_once(rpc_conf):
    from rpcapp.client import Client

    c = Client(runtime.build_transport(), runtime.build_signer(), runtime.client_settings())
    listener = c._ensure_listener()
    listener.stop()  # as close() would, racing a call that already holds the listener
    from concurrent.futures import Future

    from rpcapp.protocol import Request

    fut: Future = Future()
    listener.track(Request("tests.echo", [1], {}, deadline=now_ms() + 5000, reply_to=listener.reply_key), fut, "any")
    with pytest.raises(ServiceUnavailable, match="closed"):
        fut.result(timeout=1)
    c.transport.close()

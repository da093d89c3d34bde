"""Entries written into Redis by someone with write access but without the
signing key (DESIGN 14): they never stop a worker, and a signed request
cannot send its reply to a key outside the namespace's reply lists."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from rpcapp import keys
from rpcapp.testing import wait_for


def test_junk_t_fields_do_not_stop_the_worker(rpc_conf: dict[str, Any], redis_server: Any, worker: Any, client: Any) -> None:
    # given: unsigned entries with a junk "t" field flooded into the service's request streams
    raw = redis.Redis(port=redis_server.port)
    ns = rpc_conf["NAMESPACE"]
    streams = [keys.requests(ns, "tests"), keys.requests(ns, keys.inbox_route("tests", worker.name))]
    for junk in (b"x", b"", b"1e300", b"-5", b"99999999999999999999999999"):
        for stream in streams:
            for _ in range(10):
                raw.xadd(stream, {b"m": b"junk", b"t": junk, b"n": junk})
    # when / then: legitimate calls are still answered
    for i in range(5):
        assert client.call("tests.echo", i, timeout=5) == i
    # and the junk was dead-lettered, not left pending
    wait_for(lambda: raw.xlen(keys.dead_letters(rpc_conf["NAMESPACE"], "tests")) >= 100, 5)


def test_reply_to_must_be_a_reply_list_of_the_namespace(rpc_conf: dict[str, Any], redis_server: Any, worker: Any, client: Any) -> None:
    # given: a signed request (the client's own, as a worker would get it) re-targeted to another key
    from rpcapp.protocol import Request, now_ms

    raw = redis.Redis(port=redis_server.port)
    ns = rpc_conf["NAMESPACE"]
    victim = f"{ns}:{{tests}}:stats"
    req = Request(procedure="tests.echo", args=[1], kwargs={}, deadline=now_ms() + 5000, reply_to=victim, id="evil-1")
    frame = client.signer.pack(req.to_wire())
    raw.xadd(keys.requests(ns, "tests"), {b"m": frame})
    # when: the worker takes it
    wait_for(lambda: raw.xlen(keys.dead_letters(ns, "tests")) >= 1, 5)
    # then: it never wrote to the key it named, and it never ran
    assert raw.type(victim) in (b"none", b"hash")
    assert worker.executor.calls_served == 0
    assert client.call("tests.echo", 2, timeout=5) == 2


def test_a_stored_idempotent_reply_is_bound_to_its_procedure_and_key(rpc_conf: dict[str, Any], redis_server: Any, worker: Any, client: Any) -> None:
    # given: a genuine stored reply of one procedure and key
    raw = redis.Redis(port=redis_server.port)
    ns = rpc_conf["NAMESPACE"]
    assert client.call("tests.echo", 3, idempotency_key="k-echo") == 3
    genuine = raw.get(keys.idempotency(ns, "tests.echo", "k-echo"))
    assert genuine is not None and genuine.startswith(b"R")
    # when: someone with Redis access copies it under another procedure's key, and under another key
    raw.set(keys.idempotency(ns, "calculator.add", "k-sum"), genuine)
    raw.set(keys.idempotency(ns, "tests.echo", "k-other"), genuine)
    # then: neither copy is taken for a reply; each call runs and answers for itself
    assert client.call("calculator.add", 20, 22, idempotency_key="k-sum") == 42
    assert client.call("tests.echo", 9, idempotency_key="k-other") == 9


JUNK_PROVIDERS = {
    "no-id": b'{"host": "h", "heartbeat": 1e12, "state": "live"}',
    "list": b"[1, 2, 3]",
    "text": b'"live"',
    "not-json": b"{{{",
    "huge-heartbeat": b'{"id": "x1", "heartbeat": 1e300, "state": "live", "services": ["tests"]}',
    "bad-heartbeat": b'{"id": "x2", "heartbeat": "soon", "state": "live"}',
    "bad-types": b'{"id": 5, "services": "tests", "pid": "one", "concurrency": [], "state": {}}',
}


@pytest.mark.django_db(transaction=True)
def test_malformed_provider_records_break_no_page_and_no_routing(rpc_conf: dict[str, Any], redis_server: Any, worker: Any, client: Any, admin_client: Any) -> None:
    # given: junk provider records beside the live worker's own
    raw = redis.Redis(port=redis_server.port)
    raw.hset(keys.providers(rpc_conf["NAMESPACE"], "tests"), mapping=JUNK_PROVIDERS)
    # when / then: the dashboard, its data and the admin's provider list answer
    for url in ("/rpc/dashboard/", "/rpc/dashboard/data.json", "/admin/rpcapp/provider/"):
        assert admin_client.get(url).status_code == 200, url
    # and a call routed by provider (round robin) still reaches the live worker
    from rpcapp.models import Service

    Service.objects.create(name="tests", policy="round_robin")
    wait_for(lambda: client.governor.config("tests").policy == "round_robin", 3)
    assert [client.call("tests.echo", i, timeout=5) for i in range(4)] == [0, 1, 2, 3]


@pytest.mark.django_db(transaction=True)
def test_malformed_history_records_never_stop_the_recorder(rpc_conf: dict[str, Any], redis_server: Any, worker: Any, client: Any) -> None:
    from rpcapp.history import record_now
    from rpcapp.models import CallRecord

    # given: junk records in the history stream, then a real call
    raw = redis.Redis(port=redis_server.port)
    stream = keys.history(rpc_conf["NAMESPACE"])
    for junk in (b'{"id": "j1", "at": 1e300}', b'{"id": "j2", "at": "then"}', b'{"id": "j3", "queued_ms": "x", "total_ms": 1e300}',
                 b'{"at": 5}', b"[[1]]", b'{"id": {"a": 1}}', b'{"id": "j4", "at": -1e300}', b"nan"):
        raw.xadd(stream, {b"r": junk})
    client.call("tests.echo", 1, timeout=5)
    # when: the recorder drains the stream (more than once: the batch must not stay stuck)
    wait_for(lambda: record_now() >= 0 and CallRecord.objects.filter(procedure="tests.echo").exists(), 10)
    # then: later calls are stored too
    client.call("tests.echo", 2, timeout=5)
    wait_for(lambda: record_now() >= 0 and CallRecord.objects.filter(procedure="tests.echo").count() >= 2, 10)


@pytest.mark.parametrize("procedure", ["tests.touch", "tests.touch_idem"])
def test_a_replayed_request_never_runs_twice(rpc_conf: dict[str, Any], redis_server: Any, client: Any, tmp_path: Any, procedure: str) -> None:
    from rpcapp.testing import running_worker

    # given: a request captured from its stream before the (busy) worker took it
    raw = redis.Redis(port=redis_server.port)
    stream = keys.requests(rpc_conf["NAMESPACE"], "tests")
    target = tmp_path / "ran"
    with running_worker(concurrency=1) as worker:
        busy = client.call_async("tests.sleep", 0.5, timeout=10)
        wait_for(lambda: worker.in_flight == 1, 5)
        fut = client.call_async(procedure, str(target), timeout=10)
        captured = wait_for(lambda: [f for _, f in raw.xrange(stream) if target.name.encode() in f[b"m"]], 5)[0]
        busy.result(timeout=10)
        fut.result(timeout=10)
        # when: someone with Redis access adds it again, byte for byte, before its deadline
        raw.xadd(stream, captured)
        raw.xadd(stream, captured)
        wait_for(lambda: not raw.xpending(stream, "workers")["pending"] and not raw.xlen(stream), 5)
        time.sleep(0.3)
        # then: it ran once
        assert len(target.read_text().splitlines()) == 1
        assert worker.executor.calls_served == 2


def test_a_reply_list_of_the_wrong_type_costs_only_its_own_reply(rpc_conf: dict[str, Any], redis_server: Any, worker: Any, client: Any) -> None:
    from rpcapp.protocol import Request, now_ms

    # given: a victim's reply list turned into a string by someone with Redis access
    raw = redis.Redis(port=redis_server.port)
    ns = rpc_conf["NAMESPACE"]
    victim = keys.reply(ns, "victim")
    raw.set(victim, "x")
    # when: the victim's request and other callers' requests are answered, in the same batches
    req = Request(procedure="tests.echo", args=[1], kwargs={}, deadline=now_ms() + 5000, reply_to=victim)
    raw.xadd(keys.requests(ns, "tests"), {b"m": client.signer.pack(req.to_wire())})
    futs = [client.call_async("tests.echo", i, timeout=5) for i in range(20)]
    # then: every other call is answered, and nothing is left to resend forever
    assert [f.result(timeout=5) for f in futs] == list(range(20))
    wait_for(lambda: not raw.xlen(keys.requests(ns, "tests")), 5)
    time.sleep(0.5)
    assert not worker.executor.has_unfinished()
    assert raw.get(victim) == b"x"


def test_finishing_a_batch_skips_only_the_reply_lists_of_the_wrong_type(rpc_conf: dict[str, Any], redis_server: Any, client: Any) -> None:
    raw = redis.Redis(port=redis_server.port)
    ns = rpc_conf["NAMESPACE"]
    bad, good = keys.reply(ns, "bad"), keys.reply(ns, "good")
    raw.set(bad, "x")
    client.transport.finish_many([("tests", "1-1", bad, b"frame-1"), ("tests", "1-2", good, b"frame-2")], 60)
    assert raw.lrange(good, 0, -1) == [b"frame-2"]
    assert raw.get(bad) == b"x"

"""A full queue refuses new requests with ServiceUnavailable ("queue full",
HTTP 503 with Retry-After) and never trims an accepted request away
(DESIGN.md section 14; issue: 200,000 notifications trimmed ~12,000 unread
requests silently)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from rpcapp import keys, runtime
from rpcapp.errors import ServiceUnavailable
from rpcapp.protocol import now_ms
from rpcapp.testing import running_worker, wait_for
from tests.http_helpers import basic, caller  # noqa: F401  (fixture)
from tests.testapp.rpc import RUNS

LIMIT = 50


@pytest.fixture
def small(rpc_conf: dict[str, Any], settings: Any) -> Any:
    """A client whose queues hold LIMIT requests."""
    settings.RPCAPP = {**rpc_conf, "MAX_QUEUE_LENGTH": LIMIT}
    runtime.reset()
    return runtime.get_client()


def queued(client: Any, service: str = "tests") -> int:
    return int(client.transport.redis.xlen(keys.requests(client.transport.ns, service)))


def fill(client: Any, key: str) -> list[BaseException | None]:
    """60 notifications of tests.count(key): what each raised (or None)."""
    outcomes: list[BaseException | None] = []
    for _ in range(LIMIT + 10):
        try:
            client.notify("tests.count", key)
            outcomes.append(None)
        except ServiceUnavailable as exc:
            outcomes.append(exc)
    return outcomes


def fake_provider(client: Any) -> None:
    """A live provider of ``tests`` that reads nothing (every slot busy, say)."""
    client.transport.heartbeat(["tests"], "busy-worker", None, now_ms() + 60_000)


def assert_queue_full(exc: BaseException | None) -> None:
    assert isinstance(exc, ServiceUnavailable), exc
    assert "queue full" in exc.message and exc.call_id is None
    assert exc.retry_after == 1.0


def test_notifications_past_the_limit_are_refused_and_none_accepted_is_lost(small):
    key = uuid.uuid4().hex
    outcomes = fill(small, key)
    assert outcomes[:LIMIT] == [None] * LIMIT
    for exc in outcomes[LIMIT:]:
        assert_queue_full(exc)
    assert queued(small) == LIMIT
    with running_worker(concurrency=4):
        wait_for(lambda: RUNS.get(key) == LIMIT, 15, message="every accepted notification ran")
        time.sleep(0.3)
    assert RUNS[key] == LIMIT and queued(small) == 0


def test_calls_of_every_kind_are_refused_while_the_queue_is_full(small):
    fill(small, uuid.uuid4().hex)
    fake_provider(small)
    began = time.monotonic()
    with pytest.raises(ServiceUnavailable) as refused:
        small.call("tests.echo", 1, timeout=5)  # idempotent: still not retried to the deadline
    assert_queue_full(refused.value)
    assert_queue_full(small.call_async("tests.noop").exception(timeout=5))
    for exc in small.gather([("tests.echo", [1]), ("tests.noop", [])], return_exceptions=True):
        assert_queue_full(exc)
    with pytest.raises(ServiceUnavailable) as refused:
        small.stream("tests.count_up", 3)
    assert_queue_full(refused.value)
    assert time.monotonic() - began < 2.0
    assert queued(small) == LIMIT
    assert small._listener is None or not small._listener._pending  # nothing left waiting for a reply


def test_a_batch_is_cut_at_the_limit(small):
    fake_provider(small)
    results = small.gather([("tests.echo", [i]) for i in range(LIMIT + 5)], timeout=0.5, return_exceptions=True)
    refused = [r for r in results if isinstance(r, ServiceUnavailable) and "queue full" in r.message]
    assert len(refused) == 5 and queued(small) == LIMIT


@pytest.mark.django_db(transaction=True)
def test_http_faces_answer_503_with_retry_after(small, caller):  # noqa: F811
    fill(small, uuid.uuid4().hex)
    fake_provider(small)
    http = HttpClient(HTTP_AUTHORIZATION=basic("carol", "pw"))
    answer = http.post(reverse("rpcapp:call", args=["tests.echo"]), orjson.dumps({"value": 1}), content_type="application/json")
    assert answer.status_code == 503 and answer["Retry-After"] == "1"
    assert "queue full" in orjson.loads(answer.content)["error"]["message"]
    one = {"jsonrpc": "2.0", "method": "tests.echo", "params": [1], "id": 7}
    answer = http.post(reverse("rpcapp:jsonrpc"), orjson.dumps(one), content_type="application/json")
    assert answer.status_code == 503 and answer["Retry-After"] == "1"
    assert orjson.loads(answer.content)["error"]["data"]["code"] == "unavailable"
    note = {"jsonrpc": "2.0", "method": "tests.noop", "params": []}
    answer = http.post(reverse("rpcapp:jsonrpc"), orjson.dumps(note), content_type="application/json")
    assert answer.status_code == 503 and answer["Retry-After"] == "1"
    assert queued(small) == LIMIT


def test_recovery_and_events_never_trim_requests(small):
    """Entries already accepted (recovered, retried, replayed) and published
    events go in without MAXLEN: nothing queued is trimmed away."""
    stream = keys.requests(small.transport.ns, "tests")
    for i in range(250):  # accepted while the limit was higher, say
        small.transport.redis.xadd(stream, {"m": b"%d" % i})
    small.transport.release_due("tests", now_ms(), LIMIT)
    for _ in range(3):
        small.transport.publish_event([("tests", b"junk")], "nothing", None, LIMIT)
    assert queued(small) == 253
    assert small.transport.redis.xrange(stream, count=1)[0][1] == {b"m": b"0"}

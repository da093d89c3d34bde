"""Events: publish / @subscriber, durable per-service delivery, broadcast,
retries and parking, against a real Redis and real workers."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import redis

from rpcapp import publish, runtime
from rpcapp.client import Client
from rpcapp.errors import InvalidParams, PayloadTooLarge, ServiceUnavailable
from rpcapp.registry import Registry
from rpcapp.testing import running_worker, wait_for

EVENTS = {"EVENT_RETRY_DELAY": 0.1, "EVENT_MAX_ATTEMPTS": 3}


class Tally:
    """Reads what the test handlers recorded (HINCRBY in the Redis under test)."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.r = redis.Redis.from_url(conf["REDIS_URL"])
        self.ns = conf["NAMESPACE"]

    def get(self, key: str) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.r.hgetall(f"{self.ns}:test:{key}").items()}

    def wait(self, key: str, count: int, timeout: float = 10.0) -> dict[str, int]:
        wait_for(lambda: len(self.get(key)) >= count, timeout, message=f"{count} entries in {key}")
        return self.get(key)


@pytest.fixture
def tally(rpc_conf: dict[str, Any]) -> Tally:
    return Tally(rpc_conf)


@pytest.fixture
def event_conf(settings: Any, rpc_conf: dict[str, Any]) -> dict[str, Any]:
    conf = {**rpc_conf, **EVENTS}
    settings.RPCAPP = conf
    return conf


def test_each_subscribing_service_gets_every_event_once(client: Any, tally: Tally) -> None:
    with running_worker(), running_worker():
        ids = {publish("tests.happened", {"n": n}) for n in range(50)}
        audit = tally.wait("audit", 50)
        mailer = tally.wait("mailer", 50)
        time.sleep(0.5)  # anything delivered twice would show by now
    assert len(ids) == 50
    assert audit == {str(n): 1 for n in range(50)} == tally.get("audit")
    assert mailer == {str(n): 1 for n in range(50)} == tally.get("mailer")


def test_a_service_events_are_spread_over_its_providers(client: Any, processes: Any, tally: Tally) -> None:
    processes.start("--service", "mailer", "--concurrency", "1")
    processes.start("--service", "mailer", "--concurrency", "1")
    for n in range(20):
        publish("tests.happened", {"n": n, "sleep": 0.05})
    tally.wait("mailer", 20)
    by = tally.get("mailer-by")
    assert len(by) == 2, by
    assert sum(by.values()) == 20
    assert min(by.values()) >= 4, by


def test_events_wait_while_no_worker_is_up(client: Any, tally: Tally) -> None:
    # Given no worker at all: the events wait in the subscribing services' queues
    for n in range(5):
        publish("tests.happened", {"n": n})
    time.sleep(0.3)
    assert tally.get("audit") == {}
    # When a worker starts, each is delivered once
    with running_worker():
        assert tally.wait("audit", 5) == {str(n): 1 for n in range(5)}
        assert tally.wait("mailer", 5) == {str(n): 1 for n in range(5)}


def test_a_publisher_without_the_handlers_code_reaches_the_subscribers(rpc_conf: dict[str, Any], tally: Tally) -> None:
    # Given a worker that ran once (recording its subscriptions) and stopped
    with running_worker(["audit"]):
        pass
    # When a publisher that knows no subscriber in its own code publishes
    bare = Client(runtime.build_transport(), runtime.build_signer(), runtime.client_settings(), registry=Registry())
    bare.publish("tests.happened", {"n": 1})
    bare.close()
    # Then the event waits for the audit service and is delivered when it is back
    with running_worker(["audit"]):
        assert tally.wait("audit", 1) == {"1": 1}


def test_broadcast_handlers_run_in_every_live_worker(client: Any, processes: Any, tally: Tally) -> None:
    a = processes.start("--service", "mailer")
    b = processes.start("--service", "mailer")
    publish("tests.happened", {"n": 7})
    got = tally.wait("broadcast", 2)
    assert got == {f"{a.pid}:7": 1, f"{b.pid}:7": 1}
    assert tally.wait("mailer", 1) == {"7": 1}  # the durable handler: once for the service


def test_a_failing_handler_is_retried_alone_with_backoff(event_conf: dict[str, Any], client: Any, tally: Tally) -> None:
    with running_worker(["audit"]):
        publish("tests.flaky", {"n": 1, "fails": 2})
        wait_for(lambda: tally.get("flaky").get("1") == 3, 10, message="third attempt")
        time.sleep(0.5)
    assert tally.get("flaky") == {"1": 3}
    assert tally.get("steady") == {"1": 1}  # the handler that succeeded is not run again
    assert client.parked_events("audit") == []


def test_a_handler_failing_every_attempt_is_parked_and_can_be_replayed(event_conf: dict[str, Any], client: Any, tally: Tally) -> None:
    with running_worker(["audit"]):
        event_id = publish("tests.flaky", {"n": 2, "fails": 4})
        parked = wait_for(lambda: client.parked_events("audit"), 10, message="the event parked")
        assert tally.get("flaky") == {"2": 3}  # EVENT_MAX_ATTEMPTS
        (entry,) = parked
        assert entry["id"] == event_id and entry["topic"] == "tests.flaky"
        assert entry["payload"] == {"n": 2, "fails": 4}
        assert entry["attempts"] == 3
        assert entry["handlers"] == ["tests.testapp.rpc.flaky"]
        assert "RuntimeError: attempt 3 fails" in entry["reason"]
        assert client.transport.stats("audit")["events_parked"] == 1
        # When an operator replays it (the cause fixed: the 4th and 5th attempts succeed here)
        assert client.replay_event("audit", entry["entry"])
        wait_for(lambda: tally.get("flaky").get("2") == 5, 10, message="the replayed attempts")
        assert client.parked_events("audit") == []
    assert tally.get("steady") == {"2": 1}


def test_a_failing_broadcast_handler_is_retried(event_conf: dict[str, Any], client: Any, tally: Tally) -> None:
    with running_worker(["mailer"]):
        publish("tests.flaky", {"n": 3, "fails": 1})
        wait_for(lambda: tally.get("flaky-broadcast").get("3") == 2, 5, message="the retry")


def test_an_event_whose_worker_died_is_delivered_again(client: Any, processes: Any, tally: Tally) -> None:
    processes.start("--service", "audit")
    publish("tests.crashy", {"n": 1})
    wait_for(lambda: tally.get("crashy").get("1") == 1, 10, message="the first delivery")
    processes.start("--service", "audit")  # recovers the dead worker's pending event
    wait_for(lambda: tally.get("crashy").get("1") == 2, 15, message="the redelivery")


def test_a_malformed_event_is_rejected_and_the_worker_goes_on(client: Any, tally: Tally) -> None:
    with running_worker(["audit"]):
        forged = client.signer.pack({"v": 1, "kind": "event", "id": "x", "topic": 5})
        client.transport.enqueue([("audit", forged)], 1000)
        publish("tests.happened", {"n": 9})
        assert tally.wait("audit", 1) == {"9": 1}
        wait_for(lambda: client.transport.stats("audit").get("rejected") == 1, 5)
    assert "malformed event" in client.transport.dead_letters("audit")[0][1]["reason"].decode()


def test_bad_publications_are_refused(client: Any, settings: Any, rpc_conf: dict[str, Any]) -> None:
    with pytest.raises(InvalidParams):
        publish("tests.happened", {"n": object()})
    with pytest.raises(InvalidParams):
        publish("has space", {})
    settings.RPCAPP = {**rpc_conf, "MAX_REQUEST_BYTES": 1000}
    with pytest.raises(PayloadTooLarge):
        publish("tests.happened", {"n": "x" * 2000})


def test_publishing_while_redis_is_down_fails_after_the_timeout(own_conf: dict[str, Any], own_redis: Any) -> None:
    own_redis.stop()
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        publish("tests.happened", {"n": 1}, timeout=0.5)
    assert time.monotonic() - started < 3.0


def test_the_demo_order_event(client: Any, caplog: Any) -> None:
    from demo import rpc as demo

    with running_worker(["notifications"]):
        publish("orders.created", {"order": 42, "email": "ann@example.com"})
        wait_for(lambda: 42 in demo.CONFIRMATIONS, 5, message="the confirmation")
        wait_for(lambda: demo.RECENT_ORDERS and demo.RECENT_ORDERS[-1] == 42, 5, message="the broadcast")


@pytest.mark.django_db
def test_the_admin_lists_parked_events_and_replays_one(event_conf: dict[str, Any], client: Any, tally: Tally, admin_client: Any) -> None:
    from django.contrib.admin.models import LogEntry
    from django.urls import reverse

    with running_worker(["audit"]):
        publish("tests.flaky", {"n": 4, "fails": 3})
        (parked,) = wait_for(lambda: client.parked_events("audit"), 10, message="the event parked")
        page = admin_client.get(reverse("admin:rpcapp_parked_events"))
        assert page.status_code == 200
        assert parked["id"] in page.content.decode() and "RuntimeError: attempt 3 fails" in page.content.decode()
        answer = admin_client.post(reverse("admin:rpcapp_parked_events"), {"service": "audit", "entry": parked["entry"]})
        assert answer.status_code == 302
        wait_for(lambda: tally.get("flaky").get("4") == 4, 10, message="the replayed attempt")
    assert client.parked_events("audit") == []
    assert LogEntry.objects.get().change_message == f"Replayed parked event {parked['entry']} of service audit."
    assert "No parked events" in admin_client.get(reverse("admin:rpcapp_parked_events")).content.decode()


@pytest.mark.django_db
def test_only_staff_see_parked_events(client: Any, django_user_model: Any) -> None:
    from django.test import Client as HttpClient
    from django.urls import reverse

    user = django_user_model.objects.create_user("ann", password="pw")
    http = HttpClient()
    http.force_login(user)
    assert http.get(reverse("admin:rpcapp_parked_events")).status_code == 302  # to the admin login


def test_a_forged_broadcast_is_ignored_and_the_worker_goes_on(client: Any, tally: Tally) -> None:
    with running_worker(["mailer"]):
        channel = f"{client.transport.ns}:broadcast:tests.happened"
        client.transport.redis.publish(channel, b"\x01jnot signed at all" + b"0" * 40)
        other = client.signer.pack({"v": 1, "kind": "event", "id": "x", "topic": "tests.flaky", "payload": {"n": 1, "fails": 0},
                                    "service": "*", "attempt": 1, "handlers": None})
        client.transport.redis.publish(channel, other)  # signed, but its topic is not the channel's
        time.sleep(0.3)
        publish("tests.happened", {"n": 11})
        assert tally.wait("broadcast", 1) == {f"{os.getpid()}:11": 1}
    assert tally.get("flaky-broadcast") == {}


def _captured_event(client: Any, tally: Tally, n: int) -> dict[bytes, bytes]:
    """A durable event for the service ``audit``, queued while none of its workers runs."""
    with running_worker():  # registers the subscriptions
        pass
    publish("tests.happened", {"n": n})
    stream = f"{tally.ns}:{{audit}}:requests"
    return wait_for(lambda: tally.r.xrange(stream), 5)[-1][1]


def test_a_replayed_event_runs_once(client: Any, tally: Tally) -> None:
    # given: a durable event frame captured by someone with Redis access
    captured = _captured_event(client, tally, 7)
    with running_worker():
        tally.wait("audit", 1)
        # when: it is added again, twice, byte for byte
        tally.r.xadd(f"{tally.ns}:{{audit}}:requests", captured)
        tally.r.xadd(f"{tally.ns}:{{audit}}:requests", captured)
        time.sleep(1.0)
    # then: the handler ran once
    assert tally.get("audit") == {"7": 1}


def test_an_event_not_delivered_within_event_ttl_is_dead_lettered(settings: Any, rpc_conf: dict[str, Any], client: Any, tally: Tally) -> None:
    settings.RPCAPP = {**rpc_conf, "EVENT_TTL": 0.5}
    runtime.reset()
    _captured_event(runtime.get_client(), tally, 8)
    time.sleep(0.8)
    with running_worker():
        wait_for(lambda: tally.r.xlen(f"{tally.ns}:{{audit}}:dead") >= 1, 5)
        time.sleep(0.3)
    assert tally.get("audit") == {}
    assert int(tally.r.hget(f"{tally.ns}:{{audit}}:stats", "events_expired") or 0) == 1


def test_a_replayed_broadcast_runs_once_per_worker(client: Any, tally: Tally) -> None:
    listener = tally.r.pubsub()
    listener.subscribe(f"{tally.ns}:broadcast:tests.happened")
    with running_worker() as worker:
        assert worker.broadcasts.ready.wait(5)
        publish("tests.happened", {"n": 9})
        tally.wait("broadcast", 1)
        captured = wait_for(lambda: listener.get_message(ignore_subscribe_messages=True, timeout=0.1), 5)["data"]
        # when: someone with Redis access publishes it again
        tally.r.publish(f"{tally.ns}:broadcast:tests.happened", captured)
        tally.r.publish(f"{tally.ns}:broadcast:tests.happened", captured)
        time.sleep(0.8)
    listener.close()
    # then: each worker ran it once
    assert list(tally.get("broadcast").values()) == [1]


def test_entries_of_two_services_with_the_same_entry_id_each_run_their_own_event(client: Any, tally: Tally) -> None:
    """Stream entry ids repeat across streams: a worker reading both in one
    read must not mix the two entries up."""
    from rpcapp.protocol import Event, now_ms

    with running_worker():  # registers the services' consumer groups
        pass
    for service, n in (("audit", 1), ("mailer", 2)):
        event = Event("tests.happened", {"n": n}, service, expires=now_ms() + 60_000)
        tally.r.xadd(f"{tally.ns}:{{{service}}}:requests", {b"m": client.signer.pack(event.to_wire())}, id="1-1")
    with running_worker():
        tally.wait("audit", 1)
        tally.wait("mailer", 1)
        time.sleep(0.3)
    assert tally.get("audit") == {"1": 1}
    assert tally.get("mailer") == {"2": 1}

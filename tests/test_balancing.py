"""Load-balancing policies across three real worker processes, provider
draining, and work addressed to a provider that dies."""

from __future__ import annotations

import collections
import signal
import time
from typing import Any

import pytest

from rpcapp.models import Provider, Service
from rpcapp.testing import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

NAMES = ["p1", "p2", "p3"]


@pytest.fixture
def three(processes: Any, client: Any, wait_live: Any) -> dict[str, Any]:
    procs = {name: processes.start("--service", "tests", "--concurrency", "1", "--name", name, wait=False) for name in NAMES}
    for proc in procs.values():
        processes.wait_ready(proc)
    wait_live(client, "tests", 3)
    return procs


def use(client: Any, policy: str, **fields: Any) -> None:
    Service.objects.update_or_create(name="tests", defaults={"policy": policy, **fields})
    wait_for(lambda: client.governor.config("tests").policy == policy, 2.0, interval=0.01, message="the policy")


def spread(client: Any, n: int, *args: Any, name: str = "tests.where") -> collections.Counter[str]:
    return collections.Counter(client.call(name, *args) for _ in range(n))


def test_queue_is_the_default(three: Any, client: Any) -> None:
    got = spread(client, 30)
    assert sum(got.values()) == 30 and set(got) <= set(NAMES)


def test_round_robin_spreads_evenly(three: Any, client: Any) -> None:
    use(client, "round_robin")
    got = spread(client, 30)
    assert set(got) == set(NAMES)
    assert max(got.values()) - min(got.values()) <= 1, got


def test_random_reaches_every_provider(three: Any, client: Any) -> None:
    use(client, "random")
    got = spread(client, 90)
    assert set(got) == set(NAMES) and min(got.values()) >= 15, got


def test_weighted_follows_the_weights(three: Any, client: Any) -> None:
    for name, weight in zip(NAMES, (3, 1, 1), strict=True):
        Provider.objects.update_or_create(id=name, defaults={"weight": weight, "services": ["tests"]})
    use(client, "weighted")
    wait_for(lambda: client.governor.config("tests").provider("p1").weight == 3, 2.0, message="the weights")
    got = spread(client, 100)
    assert abs(got["p1"] / got["p2"] - 3) <= 0.3, got
    assert abs(got["p2"] - got["p3"]) <= 1, got


def test_least_busy_prefers_providers_with_fewer_calls(three: Any, client: Any) -> None:
    use(client, "least_busy")
    futures = [client.call_async("tests.where_slow", 0.6) for _ in range(9)]
    got = collections.Counter(f.result(timeout=10) for f in futures)
    assert got == {"p1": 3, "p2": 3, "p3": 3}, got


def test_consistent_hash_is_sticky_and_remaps_only_a_leaving_providers_keys(three: Any, client: Any, wait_live: Any) -> None:
    use(client, "consistent_hash", hash_argument="key")
    keys = [f"customer-{i}" for i in range(40)]
    first = {k: client.call("tests.where", k) for k in keys}
    assert set(first.values()) == set(NAMES)
    assert {k: client.call("tests.where", key=k) for k in keys} == first  # positional or named: same key
    # When p3 leaves, only its keys move
    three["p3"].send_signal(signal.SIGTERM)
    three["p3"].wait(timeout=15)
    time.sleep(1.1)  # the client's view of the providers is at most a second old
    after = {k: client.call("tests.where", k) for k in keys}
    for k in keys:
        if first[k] != "p3":
            assert after[k] == first[k], k
        else:
            assert after[k] in ("p1", "p2")


def test_a_drained_provider_takes_no_new_work_and_finishes_what_it_has(three: Any, client: Any) -> None:
    use(client, "round_robin")
    running = client.call_async("tests.where_slow", 1.0)  # the first pick: p1
    time.sleep(0.2)
    Provider.objects.update_or_create(id="p1", defaults={"drain": True, "services": ["tests"]})
    wait_for(lambda: client.governor.config("tests").provider("p1").draining, 2.0, message="the drain")
    assert running.result(timeout=5) == "p1"
    time.sleep(1.1)
    got = spread(client, 20)
    assert "p1" not in got and sum(got.values()) == 20
    info = client.transport.providers_info("tests")["p1"]
    assert b'"state":"draining"' in info
    Provider.objects.filter(id="p1").update(drain=False)
    Provider.objects.get(id="p1").save()  # a save publishes the change
    wait_for(lambda: not client.governor.config("tests").provider("p1").draining, 2.0)
    time.sleep(1.1)
    wait_for(lambda: "p1" in spread(client, 6), 5.0, message="p1 back at work")


def test_work_addressed_to_a_provider_that_dies_is_not_stranded(three: Any, client: Any) -> None:
    use(client, "round_robin")
    # Each provider runs one call at a time: most of these wait, unread, in the inboxes
    futures = [client.call_async("tests.counted", f"k{i}", 0.3) for i in range(12)]
    plain = [client.call_async("tests.pid") for _ in range(3)]  # not idempotent: unread ones move too
    time.sleep(0.2)
    three["p2"].kill()
    results = [f.result(timeout=15) for f in futures]
    assert sorted(r.split(":")[0] for r in results) == sorted(f"k{i}" for i in range(12))
    outcomes = [type(f.exception(timeout=15)).__name__ if f.exception(timeout=15) else "ok" for f in plain]
    assert outcomes.count("ok") >= 2 and set(outcomes) <= {"ok", "WorkerLost"}, outcomes

"""Fault 5: a slow procedure saturating the workers (every slot busy).

Workers W (2 slots) and B (1 slot) serve the ``tests`` service. Three
non-idempotent ``tests.sleep(3 s)`` calls take every slot for three times
PROVIDER_TTL; more calls arrive meanwhile.

Expected (DESIGN.md §11 "Workers"):

- a busy worker is not a dead one: its heartbeat goes on, so W and B stay
  live providers (state ``live``, ``in_flight`` equal to their slots)
  throughout, nothing is recovered (``lost``/``redelivered`` stay 0), and the
  slow calls complete with their own results, each run exactly once;
- a worker never takes more than its free slots: calls sent meanwhile wait in
  the queue and are served (with their own results) only once a slot frees;
- a queued call whose deadline (1 s) passes first fails with ``RpcTimeout``
  within its deadline, and is never run (counted ``expired`` instead).
"""

from __future__ import annotations

import time

import pytest

from rpcapp.errors import RpcTimeout
from rpcapp.testing import wait_for
from tests.conftest import SERVICE, live, outcome, pending_of, timed, uid

from .conftest import HEARTBEAT, SLACK, TTL, provider_info, queue_state, runs_by_argument, unique_seconds

pytestmark = pytest.mark.processes

SLOW = 3 * TTL


def test_saturated_workers_queue_calls_and_stay_alive(client, processes, tmp_path):
    w_name, b_name = uid("W"), uid("B")
    w = processes.start("--name", w_name, "--service", SERVICE, "--concurrency", "2")
    b = processes.start("--name", b_name, "--service", SERVICE, "--concurrency", "1")
    wait_for(lambda: {w_name, b_name} <= live(client), 20, message="both workers live")

    slow_args = [unique_seconds(SLOW) for _ in range(3)]
    began = time.monotonic()
    slow = [timed(client.call_async("tests.sleep", s, timeout=SLOW + 7)) for s in slow_args]
    wait_for(
        lambda: (pending_of(client, w_name), pending_of(client, b_name)) == (2, 1), 5, interval=0.01, message="every slot busy"
    )

    # More work while every slot is busy.
    echo_args = [uid("echo") for _ in range(3)]
    queued = [timed(client.call_async("tests.echo", v, timeout=SLOW + 7)) for v in echo_args]
    marker = tmp_path / "expired.txt"
    short = timed(client.call_async("tests.touch", str(marker), timeout=1.0))
    short_sent = time.monotonic()

    # While saturated: both stay live and report every slot in flight.
    samples = 0
    while not all(f.done() for f in slow) and time.monotonic() - began < SLOW + 5:
        assert {w_name, b_name} <= live(client), f"a busy worker was taken for dead after {time.monotonic() - began:.2f}s"
        for name, slots in ((w_name, 2), (b_name, 1)):
            info = provider_info(client, name)
            assert info is not None and info["state"] == "live", info
            assert info["in_flight"] <= slots, info
        samples += 1
        time.sleep(0.1)
    assert samples >= 15, samples

    # The slow calls: their own results, not WorkerLost; nothing recovered.
    assert [outcome(f, 10) for f in slow] == slow_args
    first_slot_free = min(f.done_at for f in slow)
    stats = client.transport.stats(SERVICE)
    assert stats.get("lost", 0) == 0 and stats.get("redelivered", 0) == 0, stats

    # The expired call: RpcTimeout by its deadline, never run.
    err = outcome(short, 10)
    assert isinstance(err, RpcTimeout), err
    assert short.done_at - short_sent <= 1.0 + SLACK, short.done_at - short_sent

    # The queued calls: served after a slot freed, each with its own result.
    assert [outcome(f, 10) for f in queued] == echo_args
    early = [round(first_slot_free - f.done_at, 3) for f in queued if f.done_at < first_slot_free]
    assert not early, f"queued calls served before any slot was free (by {early}s): over the concurrency"
    wait_for(lambda: client.transport.stats(SERVICE).get("expired", 0) == 1, 5, message="the expired call counted")
    assert not marker.exists(), "a call whose deadline had passed was run"
    # Each slow call ran once (one call record each, none from a rerun).
    wait_for(
        lambda: all(runs_by_argument(client, "tests.sleep", "seconds")[s] >= 1 for s in slow_args),
        5,
        message="the slow calls' records",
    )
    time.sleep(3 * HEARTBEAT)
    runs = runs_by_argument(client, "tests.sleep", "seconds")
    assert [runs[s] for s in slow_args] == [1, 1, 1], runs
    assert queue_state(client) == (0, 0)
    assert w.poll() is None and b.poll() is None

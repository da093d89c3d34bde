"""Fault 2: a stalled provider: SIGSTOP, then SIGCONT, of a worker under load.

Two workers A and B serve the ``tests`` service under a mixed call load.

1. A short stall of A (0.4 s, under PROVIDER_TTL 1 s): A is merely slow.
   Expected: nothing is recovered (no call redelivered, none answered
   ``WorkerLost``), every call completes with its own result.
2. A long stall of A (3 s, three times PROVIDER_TTL): A is declared dead and
   its calls are recovered: idempotent ones are served by B, non-idempotent
   ones complete or fail with ``WorkerLost`` / ``RpcTimeout`` within their
   deadline; calls sent during the stall that A did not take are served by B.
   After SIGCONT, A (the same process) goes back to live and serves calls
   again, and nothing non-idempotent has run twice (A finishing what it held
   when stopped must not add a second run to a call already answered).

Throughout: no reply reaches the wrong caller (each result echoes its own
unique argument), the queue ends empty, both processes are still running.
"""

from __future__ import annotations

import random
import time

import psutil
import pytest

from rpcapp.errors import RpcTimeout, WorkerLost
from rpcapp.testing import wait_for
from tests.conftest import SERVICE, live, uid

from .conftest import TTL, Load, duplicate_sleep_runs, queue_state, summary, verdict

pytestmark = pytest.mark.processes


def test_sigstop_sigcont_of_a_worker_under_load(client, processes, tmp_path, seed):
    rng = random.Random(seed)
    a_name, b_name = uid("A"), uid("B")
    a = processes.start("--name", a_name, "--service", SERVICE, "--concurrency", "4")
    b = processes.start("--name", b_name, "--service", SERVICE, "--concurrency", "4")
    wait_for(lambda: {a_name, b_name} <= live(client), 20, message="both workers live")
    pids = {a.pid, b.pid}
    a_ps = psutil.Process(a.pid)

    load = Load(client, tmp_path / "runs", seed, threads=4, timeout=8.0, sleep_base=0.3).start()
    try:
        # 1. A short stall: slow, not dead.
        time.sleep(rng.uniform(0.5, 1.0))
        a_ps.suspend()
        time.sleep(0.4)
        a_ps.resume()
        time.sleep(1.0)
        short_done = time.monotonic()
        stats_short = client.transport.stats(SERVICE)

        # 2. A long stall: declared dead, its calls recovered.
        time.sleep(rng.uniform(0.0, 0.6))
        a_ps.suspend()
        stopped_at = time.monotonic()
        try:
            wait_for(lambda: a_name not in live(client), 5, interval=0.02, message="A no longer live")
            time.sleep(max(0.0, stopped_at + 3 * TTL - time.monotonic()))
            assert a.poll() is None
        finally:
            a_ps.resume()
        resumed_at = time.monotonic()
        wait_for(lambda: a_name in live(client), 5, interval=0.02, message="A live again after SIGCONT")
        back_in = time.monotonic() - resumed_at
        time.sleep(1.0)
    finally:
        calls = load.stop()

    # 1. Nothing recovered during the short stall; every call of that phase succeeded.
    assert stats_short.get("lost", 0) == 0 and stats_short.get("redelivered", 0) == 0, stats_short
    # (a call sent just before the long stall may still be running on A when it
    # stops: that one is phase 2's, judged by the contract below)
    early = [c for c in calls if c.sent_at < short_done and c.done_at is not None and c.done_at < stopped_at]
    assert early and all(c.ok for c in early), summary([c for c in early if not c.ok])

    # 2. Every call as the contract says, whatever phase it was in.
    problems = verdict(calls, pids, allowed_idem=(), allowed_other=(WorkerLost, RpcTimeout))
    assert not problems, "\n".join(problems[:20]) + f"\n({len(problems)} problems; {summary(calls)})"
    dups = duplicate_sleep_runs(client, calls)
    assert not dups, f"non-idempotent tests.sleep calls run more than once: {dups}"
    lost = [c for c in calls if isinstance(c.outcome, WorkerLost)]
    assert client.transport.stats(SERVICE).get("lost", 0) == len(lost)
    assert back_in < 2.0, f"A took {back_in:.2f}s to heartbeat again after SIGCONT"

    # A serves again: twelve 1 s calls at once cannot all be run by B (4 slots).
    futs = [client.call_async("tests.where_slow", 1.0, timeout=10) for _ in range(12)]
    served_by = [f.result(timeout=15) for f in futs]
    assert a_name in served_by and set(served_by) <= {a_name, b_name}, served_by
    assert a.poll() is None and b.poll() is None
    wait_for(lambda: queue_state(client) == (0, 0), 10, message="an empty queue")
    print(summary(calls), "stats", client.transport.stats(SERVICE), "late replies", client.late_replies)

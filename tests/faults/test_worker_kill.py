"""Fault 1: SIGKILL of worker processes at random moments under load.

Two workers serve the ``tests`` service while four client threads call a mix
of idempotent and non-idempotent procedures (see ``conftest.py``). Three
times, at a random moment, one of the two workers is SIGKILLed and a fresh
one started in its place; the other keeps serving meanwhile.

Expected (DESIGN.md §4 "Delivery", §11 "Workers"):

- every idempotent call completes with its own result (redelivered to a
  live worker if the one running it died);
- every non-idempotent call completes with its own result, or fails with
  ``WorkerLost`` (or ``RpcTimeout``), within its deadline;
- no call gets a result meant for another caller;
- no non-idempotent call runs twice;
- each ``WorkerLost`` a caller got matches one request counted ``lost`` by
  recovery, nothing is dead-lettered, and the queue ends empty;
- the surviving workers keep running and serve afterwards.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from rpcapp.errors import RpcTimeout, WorkerLost
from rpcapp.testing import wait_for
from tests.conftest import SERVICE, live, uid

from .conftest import Load, duplicate_sleep_runs, group_consumers, queue_state, summary, verdict

pytestmark = pytest.mark.processes

KILLS = 3


def test_sigkill_workers_at_random_moments_under_load(client, processes, tmp_path, seed):
    rng = random.Random(seed)
    slots = {"A": None, "B": None}  # role -> (name, process)
    pids: set[int] = set()

    def start(role: str, wait_live: bool = True) -> None:
        name = uid(role)
        proc = processes.start("--name", name, "--service", SERVICE, "--concurrency", "4")
        pids.add(proc.pid)
        slots[role] = (name, proc)
        if wait_live:
            wait_for(lambda: name in live(client), 20, message=f"worker {name} live")

    start("A")
    start("B")
    load = Load(client, tmp_path / "runs", seed, threads=4, timeout=8.0, sleep_base=0.3).start()
    killed: list[str] = []
    try:
        time.sleep(1.0)
        for i in range(KILLS):
            role = "A" if i % 2 == 0 else "B"
            name, proc = slots[role]
            # A random moment: most likely with calls in flight on the victim.
            time.sleep(rng.uniform(0.2, 1.2))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            killed.append(name)
            start(role)
            # Its calls are resolved (redelivered or answered) before the next kill,
            # so no idempotent call can be lost MAX_DELIVERIES times in a row.
            wait_for(lambda: name not in group_consumers(client), 15, message=f"recovery of {name}")  # noqa: B023
        recovered_at = time.monotonic()
        time.sleep(1.5)
    finally:
        calls = load.stop()

    assert len(calls) > 40, summary(calls)
    problems = verdict(calls, pids, allowed_idem=(), allowed_other=(WorkerLost, RpcTimeout))
    assert not problems, "\n".join(problems[:20]) + f"\n({len(problems)} problems; {summary(calls)})"
    dups = duplicate_sleep_runs(client, calls)
    assert not dups, f"non-idempotent tests.sleep calls run more than once: {dups}"

    # Once the last kill is recovered, every call succeeds.
    after = load.since(recovered_at)
    assert len(after) >= 5 and all(c.ok for c in after), summary(after)

    # Books balance: one WorkerLost per request recovery counted as lost;
    # nothing dead-lettered (no call was lost MAX_DELIVERIES times).
    lost = [c for c in calls if isinstance(c.outcome, WorkerLost)]
    stats = client.transport.stats(SERVICE)
    assert stats.get("lost", 0) == len(lost), (stats, summary(calls))
    assert stats.get("dead_lettered", 0) == 0 and client.transport.dead_letters(SERVICE) == [], stats
    wait_for(lambda: queue_state(client) == (0, 0), 10, message="an empty queue")
    assert not set(killed) & set(group_consumers(client)), "a killed worker still owns entries"

    # The workers standing at the end serve.
    names = {slots[r][0] for r in slots}
    for r in slots:
        assert slots[r][1].poll() is None, processes.log(slots[r][1])
    wait_for(lambda: names <= live(client), 10, message="both workers live")
    assert [client.call("tests.echo", v, timeout=5) for v in ("x", "y", "z")] == ["x", "y", "z"]
    print(summary(calls), "stats", stats)

"""Fault 4: network cuts: Redis drops connections (``CLIENT KILL``) under load.

One worker serves the ``tests`` service on the test's own redis-server while
four client threads call a mix of procedures.

1. Four times, at random moments, every TCP connection of the worker process
   to Redis (found from the process's sockets, killed by address) is cut:
   its blocked XREADGROUP, its heartbeat, its reply pipeline.
2. Twice, every connection of everybody is cut (``CLIENT KILL TYPE normal``
   and ``TYPE pubsub``): the callers' blocked reply reads and sends as well.

Expected (DESIGN.md §4 "A worker never dies from ... a lost Redis
connection (it reconnects with backoff)", §11 "Redis going away"):

- every call completes with its own result, or fails with a typed error
  (``RpcTimeout``, ``ServiceUnavailable``, ``WorkerLost``) within its
  deadline: never a redis-py exception, never another caller's result;
- no non-idempotent call runs twice;
- the same worker process survives every cut, stays (or is soon again) a
  live provider, and serves every call sent after the last cut.
"""

from __future__ import annotations

import random
import time

import psutil
import pytest
import redis

from rpcapp.errors import RpcTimeout, ServiceUnavailable, WorkerLost
from rpcapp.testing import wait_for
from tests.conftest import SERVICE, live, uid

from .conftest import Load, duplicate_sleep_runs, queue_state, summary, verdict

pytestmark = pytest.mark.processes


def worker_addresses(pid: int, redis_port: int) -> list[str]:
    """The client addresses (as Redis names them) of a process's connections to Redis."""
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return [f"{c.laddr.ip}:{c.laddr.port}" for c in conns if c.raddr and c.raddr.port == redis_port and c.status == "ESTABLISHED"]


def cut(admin: redis.Redis, addresses: list[str]) -> int:
    killed = 0
    for addr in addresses:
        killed += int(admin.execute_command("CLIENT", "KILL", "ADDR", addr, "SKIPME", "yes"))
    return killed


def test_client_kill_of_worker_and_caller_connections_under_load(own_client, own_redis, own_processes, tmp_path, seed):
    client = own_client
    rng = random.Random(seed)
    name = uid("W")
    w = own_processes.start("--name", name, "--service", SERVICE, "--concurrency", "4")
    wait_for(lambda: name in live(client), 20, message="worker live")
    assert client.call("tests.pid", timeout=5) == w.pid
    admin = redis.Redis(port=own_redis.port, socket_timeout=5)

    load = Load(client, tmp_path / "runs", seed, threads=4, timeout=5.0, sleep_base=0.3).start()
    cuts: list[int] = []
    try:
        time.sleep(0.5)
        for _ in range(4):  # 1. the worker's connections
            time.sleep(rng.uniform(0.2, 0.8))
            addresses = worker_addresses(w.pid, own_redis.port)
            assert addresses, "the worker has no connection to Redis to cut"
            cuts.append(cut(admin, addresses))
        for _ in range(2):  # 2. everybody's connections
            time.sleep(rng.uniform(0.2, 0.8))
            cuts.append(
                int(admin.client_kill_filter(_type="normal", skipme=True))
                + int(admin.client_kill_filter(_type="pubsub", skipme=True))
            )
        last_cut = time.monotonic()
        wait_for(lambda: name in live(client), 5, message="worker live after the cuts")
        time.sleep(2.0)
    finally:
        calls = load.stop()
        admin.close()

    assert all(cuts), f"some cut killed no connection: {cuts}"
    problems = verdict(
        calls, {w.pid}, allowed_idem=(RpcTimeout, ServiceUnavailable), allowed_other=(RpcTimeout, ServiceUnavailable, WorkerLost)
    )
    assert not problems, "\n".join(problems[:20]) + f"\n({len(problems)} problems; {summary(calls)})"
    dups = duplicate_sleep_runs(client, calls)
    assert not dups, f"non-idempotent tests.sleep calls run more than once: {dups}"

    # The same process serves on: every call sent a second after the last cut succeeds.
    after = [c for c in calls if c.sent_at >= last_cut + 1.0]
    assert len(after) >= 5 and all(c.ok for c in after), summary(after)
    assert w.poll() is None, own_processes.log(w)
    assert client.call("tests.pid", timeout=5) == w.pid
    print(summary(calls), "cuts", cuts, "queue", queue_state(client), "stats", client.transport.stats(SERVICE))

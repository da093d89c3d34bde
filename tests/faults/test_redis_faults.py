"""Fault 3: redis-server SIGKILLed under load, with calls in flight, then
started again (empty: nothing is persisted) on the same port.

tests/test_processes.py already covers a clean restart with no call in
flight, a single call waiting through an outage, and calls failing with
``ServiceUnavailable`` past their deadline while Redis is down. Here Redis
dies abruptly (SIGKILL) while four client threads have calls in flight on
two workers, some of them already running.

Expected (DESIGN.md §11 "Redis going away"):

- every call, idempotent or not, completes with its own result or fails with
  a typed error (``ServiceUnavailable``, ``RpcTimeout``; ``WorkerLost`` for a
  non-idempotent one) within its deadline: never a redis-py exception, never
  a hang, never another caller's result;
- no non-idempotent call runs twice (e.g. by a worker retrying what it held);
- both worker processes survive, re-register on the new server within a few
  seconds, and every call sent once they have succeeds.
"""

from __future__ import annotations

import random
import threading
import time

import psutil
import pytest

from rpcapp.errors import RpcTimeout, ServiceUnavailable, WorkerLost
from rpcapp.testing import wait_for
from tests.conftest import SERVICE, live, uid

from .conftest import SLACK, Load, expect, summary, verdict

pytestmark = pytest.mark.processes


def try_echo(client, value: str) -> bool:
    try:
        return client.call("tests.echo", value, timeout=1.0) == value
    except (ServiceUnavailable, RpcTimeout):
        return False


def test_redis_sigkilled_under_load_then_back_empty(own_client, own_redis, own_processes, tmp_path, seed):
    client = own_client
    rng = random.Random(seed)
    names = {uid("A"), uid("B")}
    # Two slots each for up to eight calls in flight: some wait in the queue when Redis dies.
    procs = [own_processes.start("--name", n, "--service", SERVICE, "--concurrency", "2") for n in sorted(names)]
    wait_for(lambda: names <= live(client), 20, message="both workers live")
    pids = {p.pid for p in procs}

    load = Load(client, tmp_path / "runs", seed, threads=4, timeout=4.0, sleep_base=0.6).start()
    try:
        time.sleep(rng.uniform(1.0, 2.0))
        own_redis.stop(kill=True)  # SIGKILL: every key, stream and group is gone
        killed_at = time.monotonic()
        time.sleep(rng.uniform(0.5, 1.5))
        own_redis.start()
        back_at = time.monotonic()
        wait_for(lambda: try_echo(client, "after"), 10, interval=0.1, message="a call served after the restart")
        served_at = time.monotonic()
        wait_for(lambda: names <= live(client), 5, message="both workers registered again")
        registered_at = time.monotonic()
        time.sleep(1.5)
    finally:
        calls = load.stop()

    problems = verdict(
        calls, pids, allowed_idem=(ServiceUnavailable, RpcTimeout), allowed_other=(ServiceUnavailable, RpcTimeout, WorkerLost)
    )
    assert not problems, "\n".join(problems[:20]) + f"\n({len(problems)} problems; {summary(calls)})"
    # The fault hit calls in flight: sent before the kill, completed after it.
    in_flight = [c for c in calls if c.sent_at < killed_at < (c.done_at or 0)]
    assert len(in_flight) >= 2, summary(calls)
    assert served_at - back_at < 5.0, f"first call served {served_at - back_at:.2f}s after Redis came back"

    # Once both workers are registered again, every call succeeds.
    after = [c for c in calls if c.sent_at >= registered_at]
    assert len(after) >= 5 and all(c.ok for c in after), summary(after)
    for p in procs:
        assert p.poll() is None, own_processes.log(p)
    assert {client.call("tests.where", timeout=5) for _ in range(20)} <= names
    print(
        summary(calls),
        "| in flight at the kill:",
        summary(in_flight),
        f"| served {served_at - back_at:.2f}s after Redis came back",
    )


# -- Redis frozen: it stops answering but keeps the connections open ------------------
#
# SIGSTOP of redis-server is what a black-holed network path, a stalled VM or
# a Redis busy in a long script looks like to its clients: no refusal, no
# reset, no answer. The contract still holds: a call returns by its deadline
# (DESIGN.md §3 "blocks up to the deadline", §11 "call_async ... completed
# (with RpcTimeout at the latest) by its deadline"; "a call made while Redis
# is unreachable is retried until its deadline and then raises
# ServiceUnavailable").

FROZEN_TIMEOUT = 1.0


def frozen_call(client, own_redis, phase: str, mode: str) -> tuple[object, float]:
    """Freeze Redis before the call is sent (``sending``) or while it waits
    for its reply (``waiting``); the call's outcome and how long it took."""
    server = psutil.Process(own_redis.proc.pid)
    timer = None
    if phase == "sending":
        server.suspend()
        args: tuple = ("tests.echo", "frozen")
    else:  # sent, running on the worker (0.5 s) when Redis freezes
        timer = threading.Timer(0.15, server.suspend)
        timer.start()
        args = ("tests.sleep_idem", 0.5)
    began = time.monotonic()
    try:
        if mode == "sync":
            value: object = client.call(*args, timeout=FROZEN_TIMEOUT)
        else:
            value = client.call_async(*args, timeout=FROZEN_TIMEOUT).result(timeout=30)
    except BaseException as exc:  # judged by the caller
        value = exc
    took = time.monotonic() - began
    if timer is not None:
        timer.join()
    server.resume()
    return value, took


@pytest.fixture
def frozen_setup(own_client, own_redis, own_processes):
    client = own_client
    name = uid("W")
    own_processes.start("--name", name, "--service", SERVICE)
    wait_for(lambda: name in live(client), 20, message="worker live")
    assert client.call("tests.echo", "warm", timeout=5) == "warm"
    yield client
    psutil.Process(own_redis.proc.pid).resume()  # never leave it frozen for the teardown


def test_redis_frozen_call_async_fails_typed_by_its_deadline(frozen_setup, own_redis):
    """call_async's Future completes with a typed error by its deadline
    whether Redis froze before the request was sent or while its reply was
    awaited; calls succeed again once Redis answers."""
    client = frozen_setup
    for phase in ("sending", "waiting"):
        value, took = frozen_call(client, own_redis, phase, "async")
        assert isinstance(value, (ServiceUnavailable, RpcTimeout)), (phase, value)
        assert took <= FROZEN_TIMEOUT + SLACK, f"{phase}: completed {took:.2f}s after the call, deadline {FROZEN_TIMEOUT}s"
        wait_for(lambda: try_echo(client, "thawed"), 10, interval=0.1, message="calls served after Redis thawed")


@pytest.mark.parametrize("phase", ["sending", "waiting"])
def test_redis_frozen_sync_call_fails_typed_by_its_deadline(frozen_setup, own_redis, phase):
    """rpc.call(timeout=1.0) returns a typed error by its deadline (plus
    SLACK) when Redis stops answering before it sends, or while it waits."""
    client = frozen_setup
    value, took = frozen_call(client, own_redis, phase, "sync")
    expect(isinstance(value, (ServiceUnavailable, RpcTimeout)), f"not a typed error: {value!r}")
    expect(
        took <= FROZEN_TIMEOUT + SLACK, f"{phase}: rpc.call returned {took:.2f}s after it was made, deadline {FROZEN_TIMEOUT}s"
    )

"""Fault 6: a caller process SIGKILLed with calls in flight.

A worker W (2 slots) serves the ``tests`` service, with REPLY_TTL 2 s. A
separate caller process sends two slow non-idempotent calls (they take both
slots), four more that queue behind them, and two whose 1 s deadline passes
while they wait; then it is SIGKILLed while they are in flight. The test
process keeps calling meanwhile.

Expected (DESIGN.md §4, §11; keys.py bounds):

- the worker survives, finishes what it took (each call at most once), and
  keeps serving other callers with their own results;
- the two calls whose deadline passed in the queue are never run (counted
  ``expired``);
- the dead caller's replies go to its reply list, which always carries a TTL
  of at most REPLY_TTL and is gone within REPLY_TTL of the last reply;
  every other key of the namespace that can grow is bounded (no reply list
  without a TTL), and the request queue ends empty.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from rpcapp import keys, runtime
from rpcapp.testing import wait_for
from tests.conftest import ROOT, SERVICE, Processes, live, outcome, pending_of, timed, uid

from .conftest import queue_state, unique_seconds

pytestmark = pytest.mark.processes

REPLY_TTL = 2


@pytest.fixture
def short_reply_conf(rpc_conf: dict[str, Any], settings: Any) -> dict[str, Any]:
    conf = {**rpc_conf, "REPLY_TTL": REPLY_TTL}
    settings.RPCAPP = conf
    runtime.reset()
    return conf


@pytest.fixture
def procs(short_reply_conf: dict[str, Any], tmp_path: Any) -> Any:
    p = Processes(short_reply_conf, tmp_path)
    yield p
    p.stop_all()


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"the caller process printed nothing in {timeout}s"
    return proc.stdout.readline().decode()


def test_caller_killed_with_calls_in_flight(short_reply_conf, procs, tmp_path):
    client = runtime.get_client()
    r = client.transport.redis
    ns = client.transport.ns
    name = uid("W")
    w = procs.start("--name", name, "--service", SERVICE, "--concurrency", "2")
    wait_for(lambda: name in live(client), 20, message="worker live")

    slow = [unique_seconds(1.5) for _ in range(2)]
    kept = [tmp_path / f"kept-{i}.txt" for i in range(4)]
    expired = [tmp_path / f"expired-{i}.txt" for i in range(2)]
    spec = [["tests.sleep", [s], 10] for s in slow]
    spec += [["tests.touch", [str(p)], 20] for p in kept]
    spec += [["tests.touch", [str(p)], 1.0] for p in expired]
    caller = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.dying_client", json.dumps(spec)],
        cwd=ROOT,
        env=procs.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        sent = json.loads(read_line(caller, 30))
        assert sent["failed"] == [] and len(sent["ids"]) == len(spec), sent
        wait_for(lambda: pending_of(client, name) == 2, 10, interval=0.01, message="W running the caller's slow calls")
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait(timeout=10)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait(timeout=10)
        if caller.stdout is not None:
            caller.stdout.close()
    dead_reply = sent["reply_key"]

    # Other callers are served, each with its own result, once slots free.
    values = [uid("echo") for _ in range(3)]
    mine = [timed(client.call_async("tests.echo", v, timeout=10)) for v in values]
    assert [outcome(f, 15) for f in mine] == values

    # What the dead caller had queued: run at most once; what expired: never.
    wait_for(lambda: queue_state(client) == (0, 0), 10, message="an empty queue")
    drained_at = time.monotonic()  # the last reply to the dead caller is written by now
    assert [len(p.read_text().split()) if p.exists() else 0 for p in kept] in ([1, 1, 1, 1], [0, 0, 0, 0]), "a call ran twice"
    assert not any(p.exists() for p in expired), "a call whose deadline had passed was run"
    wait_for(lambda: client.transport.stats(SERVICE).get("expired", 0) == 2, 5, message="two expired calls counted")

    # The dead caller's reply list: bounded by REPLY_TTL, then gone.
    seen_ttls = []
    while r.exists(dead_reply) and time.monotonic() < drained_at + REPLY_TTL + 1.0:
        seen_ttls.append(r.pttl(dead_reply))
        time.sleep(0.1)
    assert any(t > 0 for t in seen_ttls), "no reply was written to the dead caller's list: the fault missed"
    assert not r.exists(dead_reply), f"the dead caller's reply list outlived REPLY_TTL: pttl {r.pttl(dead_reply)}"
    assert all(t == -2 or 0 < t <= REPLY_TTL * 1000 for t in seen_ttls), f"reply list TTLs (ms) seen: {sorted(set(seen_ttls))}"

    # No reply list anywhere without a TTL.
    unbounded = [k for k in r.scan_iter(match=f"{ns}:reply:*") if r.ttl(k) == -1]
    assert not unbounded, unbounded
    assert keys.reply(ns, "x").startswith(f"{ns}:reply:")  # the pattern above matches the schema

    assert w.poll() is None
    assert client.call("tests.pid", timeout=5) == w.pid
    assert "Traceback" not in Processes.log(w), Processes.log(w)

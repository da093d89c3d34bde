"""Fault-injection helpers: a mixed call load, its verdict, and a few probes.

Every test in this package runs real ``manage.py runrpcworker`` processes
(the ``processes`` / ``own_processes`` fixtures of ``tests/conftest.py``)
against a real redis-server, and injects real faults: SIGKILL, SIGSTOP,
redis-server killed, connections cut with ``CLIENT KILL``, a caller killed.

The load (:class:`Load`) calls four procedures of ``tests/testapp/rpc.py``,
each with an argument unique to the call, so that a reply delivered to the
wrong caller shows as a result that does not echo the caller's argument:

==============  ===============  ==========================================
kind            procedure        what proves it ran (and how often)
==============  ===============  ==========================================
``echo``        tests.echo       idempotent; returns its unique string
``sleep_idem``  tests.sleep_idem idempotent; sleeps, returns its unique float
``sleep``       tests.sleep      NOT idempotent; sleeps, returns its unique
                                 float; its runs are counted from the call
                                 records workers append to ``ns:history``
``touch``       tests.touch      NOT idempotent; appends the worker's pid to
                                 a file unique to the call: one line per run
==============  ===============  ==========================================

:func:`verdict` lists every broken promise of the contract (DESIGN.md §3,
§4, §11): an idempotent call that failed, a non-idempotent call that failed
with anything but the allowed typed errors, a call completed after its
deadline (plus a slack for a loaded two-core machine), a result that is not
the caller's own, a non-idempotent call run twice, an exception that is not
an ``RpcError`` (a redis-py error reaching the caller).
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from rpcapp import keys
from rpcapp.errors import RpcError
from tests.conftest import FAST, SERVICE, uid

HEARTBEAT = FAST["HEARTBEAT_INTERVAL"]
TTL = FAST["PROVIDER_TTL"]
SLACK = 1.0  # how late past its deadline a call may complete on a loaded 2-core machine

IDEMPOTENT = {"echo": True, "sleep_idem": True, "sleep": False, "touch": False}
PROCEDURE = {"echo": "tests.echo", "sleep_idem": "tests.sleep_idem", "sleep": "tests.sleep", "touch": "tests.touch"}

_seq = itertools.count(1)





def unique_seconds(base: float) -> float:
    """A sleep length unique to this call (the procedure echoes it back)."""
    return round(base + next(_seq) * 1e-6, 6)








def group_consumers(client: Any, service: str = SERVICE) -> dict[str, int]:
    return dict(client.transport.group_consumers(service))


def provider_info(client: Any, name: str, service: str = SERVICE) -> dict[str, Any] | None:
    raw = client.transport.providers_info(service).get(name)
    return orjson.loads(raw) if raw else None


def queue_state(client: Any, service: str = SERVICE) -> tuple[int, int]:
    """(entries in the request stream, entries pending in the group)."""
    r = client.transport.redis
    stream = keys.requests(client.transport.ns, service)
    return int(r.xlen(stream)), int(r.xpending(stream, keys.GROUP)["pending"])





def history_records(client: Any) -> list[dict[str, Any]]:
    """Every call record in ``ns:history`` (nobody consumes it in these tests:
    the worker processes have no database)."""
    out: list[dict[str, Any]] = []
    for _, fields in client.transport.redis.xrange(keys.history(client.transport.ns)):
        data = orjson.loads(fields[b"r"])
        out.extend(data if isinstance(data, list) else [data])
    return out


def runs_by_argument(client: Any, procedure: str, param: str) -> Counter[Any]:
    """How many times workers ran ``procedure`` per value of its argument
    ``param`` (as recorded by the workers: status of a run, not ``expired``)."""
    runs: Counter[Any] = Counter()
    for rec in history_records(client):
        if rec.get("procedure") != procedure or not rec.get("provider") or rec.get("status") in ("expired", "timeout", "late"):
            continue
        try:
            runs[orjson.loads(rec.get("args") or "{}").get(param)] += 1
        except orjson.JSONDecodeError:
            continue
    return runs


# -- the load -------------------------------------------------------------------


@dataclass
class Call:
    kind: str
    arg: Any
    timeout: float
    sent_at: float
    mode: str  # "sync" or "async"
    done_at: float | None = None
    outcome: Any = None
    call_id: str | None = None

    @property
    def procedure(self) -> str:
        return PROCEDURE[self.kind]

    @property
    def idempotent(self) -> bool:
        return IDEMPOTENT[self.kind]

    @property
    def ok(self) -> bool:
        return not isinstance(self.outcome, BaseException)

    def runs(self) -> list[str]:
        """touch: the pids written to its file, one per run."""
        path = Path(self.arg)
        return path.read_text().split() if path.exists() else []


@dataclass
class Load:
    """Client threads calling a mix of procedures until stopped.

    Even threads use ``call`` (the caller reads its own reply), odd threads
    ``call_async`` with three calls in flight at a time (the listener thread
    delivers), all through one client: one reply list shared by all callers,
    so replies must be told apart by correlation id."""

    client: Any
    folder: Path
    seed: int
    threads: int = 4
    kinds: tuple[str, ...] = ("echo", "sleep_idem", "sleep", "touch")
    timeout: float = 6.0
    sleep_base: float = 0.15
    pause: float = 0.02
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    started_at: float = 0.0

    def start(self) -> Load:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.started_at = time.monotonic()
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, args=(i,), name=f"load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> list[Call]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 15)
            assert not t.is_alive(), f"{t.name} still blocked {self.timeout + 15}s after the load stopped"
        return self.calls

    def since(self, t: float) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.sent_at >= t]

    def _new(self, rng: random.Random, mode: str) -> Call:
        kind = rng.choice(self.kinds)
        if kind == "echo":
            arg: Any = uid("echo")
        elif kind in ("sleep", "sleep_idem"):
            arg = unique_seconds(self.sleep_base * rng.uniform(0.3, 1.0))
        else:
            arg = str(self.folder / f"{uid('touch')}.txt")
        call = Call(kind, arg, self.timeout, time.monotonic(), mode)
        with self._lock:
            self.calls.append(call)
        return call

    def _loop(self, index: int) -> None:
        rng = random.Random(self.seed * 100 + index)
        while not self._stop.is_set():
            if index % 2 == 0:
                call = self._new(rng, "sync")
                try:
                    call.outcome = self.client.call(call.procedure, call.arg, timeout=call.timeout)
                except BaseException as exc:  # the verdict judges every exception
                    call.outcome = exc
                call.done_at = time.monotonic()
            else:
                batch = [self._new(rng, "async") for _ in range(3)]
                futures: list[Future[Any]] = []
                for call in batch:
                    fut = self.client.call_async(call.procedure, call.arg, timeout=call.timeout)
                    call.call_id = getattr(fut, "rpc_id", None)
                    fut.add_done_callback(lambda f, c=call: setattr(c, "done_at", time.monotonic()))
                    futures.append(fut)
                for call, fut in zip(batch, futures, strict=True):
                    try:
                        call.outcome = fut.result(timeout=call.timeout + 10)
                    except BaseException as exc:  # judged by the verdict
                        call.outcome = exc
                        if call.done_at is None:  # never completed: a broken promise of call_async
                            call.done_at = float("inf")
            time.sleep(self.pause)


def verdict(
    calls: list[Call],
    worker_pids: set[int],
    allowed_idem: tuple[type[RpcError], ...] = (),
    allowed_other: tuple[type[RpcError], ...] = (),
    slack: float = SLACK,
) -> list[str]:
    """Every broken promise among ``calls`` (empty: all is well)."""
    problems: list[str] = []
    for c in calls:
        what = f"{c.mode} {c.procedure}({c.arg!r})"
        found = [_late(c, slack), _outcome_problem(c, worker_pids, allowed_idem if c.idempotent else allowed_other)]
        problems += [f"{what}: {p}" for p in (*found, *_run_problems(c)) if p]
    return problems


def _late(c: Call, slack: float) -> str | None:
    if c.done_at is not None and c.done_at - c.sent_at <= c.timeout + slack:
        return None
    took = None if c.done_at is None else round(c.done_at - c.sent_at, 2)
    return f"completed after {took}s, deadline {c.timeout}s: {c.outcome!r}"


def _outcome_problem(c: Call, worker_pids: set[int], allowed: tuple[type[RpcError], ...]) -> str | None:
    exc = c.outcome
    if not isinstance(exc, BaseException):
        if c.kind == "touch":
            return None if exc in worker_pids else f"result {exc!r} is not the pid of a worker {sorted(worker_pids)}"
        return None if exc == c.arg else f"got {exc!r}: not its own argument (a reply for another caller?)"
    if not isinstance(exc, RpcError):
        return f"untyped {type(exc).__module__}.{type(exc).__name__}: {exc}"
    if not isinstance(exc, allowed):
        return f"{type(exc).__name__} ({exc.code}): {exc}"
    if exc.procedure not in (None, c.procedure):
        return f"error of another procedure: {exc.procedure}"
    if c.call_id and exc.call_id not in (None, c.call_id):
        return f"error of another call: {exc.call_id} (ours {c.call_id})"
    return None


def _run_problems(c: Call) -> list[str]:
    """touch: at most one run, and the one that answered."""
    if c.kind != "touch":
        return []
    runs = c.runs()
    problems = []
    if len(runs) > 1:
        problems.append(f"a non-idempotent call ran {len(runs)} times (pids {runs})")
    if c.ok and runs != [str(c.outcome)]:
        problems.append(f"answered {c.outcome!r} but its runs were {runs}")
    return problems


def duplicate_sleep_runs(client: Any, calls: list[Call]) -> dict[float, int]:
    """tests.sleep (not idempotent) calls of ``calls`` that workers ran more than once."""
    runs = runs_by_argument(client, "tests.sleep", "seconds")
    ours = {c.arg for c in calls if c.kind == "sleep"}
    return {arg: n for arg, n in runs.items() if arg in ours and n > 1}


def summary(calls: list[Call]) -> str:
    by = Counter((c.kind, "ok" if c.ok else type(c.outcome).__name__) for c in calls)
    return ", ".join(f"{k}/{s}={n}" for (k, s), n in sorted(by.items()))


@pytest.fixture
def seed(request: Any) -> int:
    """The random seed of a test (``RPCAPP_FAULT_SEED`` replays one); printed."""
    value = int(os.environ.get("RPCAPP_FAULT_SEED") or random.SystemRandom().randrange(1, 10**6))
    print(f"\n{request.node.name}: seed {value} (replay with RPCAPP_FAULT_SEED={value})")
    return value











class ContractBroken(AssertionError):
    """A broken promise of the product, as opposed to a test set-up failing."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise ContractBroken(message)

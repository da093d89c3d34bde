#!/usr/bin/env python
"""Where an rpcapp call spends its time.

    .venv/bin/python bench/profile_rpcapp.py [--calls 2000] [--seconds 6]

On its own private redis-server (as bench/run.py) it measures:

1. the floor's sequential round trip, split into its LPUSH and BLPOP, and
   the CPU and context switches of its one client thread;
2. the costs of the pieces in isolation: redis-py round trips of the
   commands rpcapp sends, the Python steps (sign, verify, envelope...), and
   a thread hand-off;
3. a per-call timeline of sequential ``client.call("tests.noop")``: the
   client and two *instrumented* workers (bench/profile_worker.py) stamp
   each step with CLOCK_MONOTONIC; the medians over all calls show which
   round trips, thread hand-offs and CPU steps the latency is made of. Then
   32 calls in flight, for how well the workers batch;
4. the client's threads (caller, reply listener, deadline timer): CPU and
   context switches per sequential call, in the first and the last 5 s of a
   16 s run (answered calls' deadlines come due after 10 s);
5. py-spy ``--gil`` sampling profiles of the bench process and of both plain
   (uninstrumented) workers, sequentially and with 32 calls in flight.

Writes bench/results/profile.json and prints Markdown. Needs py-spy
(requirements.txt) for part 5 (``--skip-spy`` leaves it out).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import floor, procs  # noqa: E402
from bench.harness import Bench, log, run_window  # noqa: E402

mono = time.monotonic_ns
WORKER_ARGS = ["runrpcworker", "--service", "tests", "--log-level", "INFO"]


def med_us(values: list[int]) -> float:
    return round(statistics.median(values) / 1000, 1) if values else float("nan")


def p90_us(values: list[int]) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return round(s[int(0.9 * (len(s) - 1))] / 1000, 1)


def thread_stats() -> dict[str, dict[str, float]]:
    """CPU seconds and context switches of each live thread of this process, by name."""
    out: dict[str, dict[str, float]] = {}
    for t, cpu_s, csw in procs.own_threads():
        name = "caller (main thread)" if t is threading.main_thread() else t.name
        row = out.setdefault(name, {"cpu_s": 0.0, "csw": 0.0})
        row["cpu_s"] += cpu_s
        row["csw"] += csw
    return out


def per_call_threads(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], calls: int) -> dict[str, dict[str, float]]:
    zero = {"cpu_s": 0.0, "csw": 0.0}
    return {
        name: {"cpu_us": round((a["cpu_s"] - before.get(name, zero)["cpu_s"]) / calls * 1e6, 1),
               "csw": round((a["csw"] - before.get(name, zero)["csw"]) / calls, 2)}
        for name, a in after.items()
        if name.startswith(("caller", "rpcapp-"))
    }


@contextlib.contextmanager
def rpcapp_workers(b: Bench, label: str, instrumented: bool = False) -> Iterator[tuple[list[subprocess.Popen[bytes]], list[Path]]]:
    """Two worker processes (plain, or wrapped by profile_worker.py), stopped on exit."""
    from rpcapp import runtime
    from rpcapp.protocol import now_ms

    args = [*WORKER_ARGS, "--concurrency", str(b.args.worker_concurrency)]
    outs = [b.work / f"{label}-{i}.json" for i in range(2)]
    if instrumented:
        argvs = [[sys.executable, str(ROOT / "bench" / "profile_worker.py"), str(outs[i]), *args] for i in range(2)]
    else:
        argvs = [[sys.executable, str(ROOT / "manage.py"), *args] for _ in range(2)]
    workers = [b.P.start(f"{label}-{i}", argv, env=b.worker_env()) for i, argv in enumerate(argvs)]
    try:
        for w in workers:
            b.wait_log(w, "serving", 60, "rpcapp worker")
        runtime.reset()
        client = runtime.get_client()
        procs.wait_until(lambda: client.transport.count_live("tests", now_ms() - 5000)[0] >= 2, 20, "2 live providers")
        yield workers, outs
    finally:
        runtime.reset()
        for w in workers:
            b.P.stop(w, timeout=20)


def submit_noop(client: Any) -> Callable[[Any], None]:
    def submit(done: Any) -> None:
        client.call_async("tests.noop").add_done_callback(lambda f: done(f.exception()))

    return submit


# -- 1. the floor ----------------------------------------------------------------------------
def floor_timeline(b: Bench, calls: int) -> dict[str, Any]:
    queue = f"bench:floor:req:{uuid.uuid4().hex[:8]}"
    workers = [b.P.start(f"floor-worker-{i}", [sys.executable, str(ROOT / "bench" / "floor.py"), "worker", b.url, queue]) for i in range(2)]
    try:
        for w in workers:
            b.wait_log(w, "floor worker ready", 20, "floor worker")
        c = floor.FloorClient(b.url, queue)
        for _ in range(200):
            c.call()
        push, pop, total = [], [], []
        before = thread_stats()
        for _ in range(calls):
            t0 = mono()
            c.conn.lpush(c.queue, c.reply_key + b"|x")
            t1 = mono()
            c.conn.blpop([c.reply_key], timeout=10)
            t2 = mono()
            push.append(t1 - t0)
            pop.append(t2 - t1)
            total.append(t2 - t0)
        main = per_call_threads(before, thread_stats(), calls)["caller (main thread)"]
        c.close()
        return {"lpush_us": med_us(push), "blpop_wait_us": med_us(pop), "total_us": med_us(total),
                "client_cpu_us_per_call": main["cpu_us"], "client_csw_per_call": main["csw"]}
    finally:
        for w in workers:
            b.P.stop(w)


# -- 2. the pieces, in isolation ---------------------------------------------------------------
def _med_loop(fn: Callable[[], Any], n: int) -> float:
    for _ in range(min(200, n)):
        fn()
    out = []
    for _ in range(n):
        t = mono()
        fn()
        out.append(mono() - t)
    return med_us(out)


def redis_costs(url: str, n: int) -> dict[str, float]:
    from rpcapp.transport import connect

    r = connect(url)
    ns = f"micro{uuid.uuid4().hex[:6]}"
    stream, lst, reply = f"{ns}:s", f"{ns}:l", f"{ns}:r"
    frame = b"x" * 330  # about the size of a signed tests.noop request
    r.xgroup_create(stream, "g", id="0", mkstream=True)

    def pipe(*cmds: Callable[[Any], Any]) -> Callable[[], None]:
        def go() -> None:
            p = r.pipeline(transaction=False)
            for c in cmds:
                c(p)
            p.execute()

        return go

    try:
        return {
            "PING": _med_loop(r.ping, n),
            "LPUSH (one command)": _med_loop(lambda: r.lpush(lst, frame), n),
            "RPOP key 256 on an empty list (the listener's extra pop)": _med_loop(lambda: r.rpop(reply, 256), n),
            "ZCOUNT (provider check)": _med_loop(lambda: r.zcount(f"{ns}:z", 0, "+inf"), n),
            "XADD MAXLEN ~ (one command)": _med_loop(lambda: r.xadd(stream, {"m": frame}, maxlen=100_000, approximate=True), n),
            "pipeline[XADD MAXLEN ~] (client enqueue)": _med_loop(pipe(lambda p: p.xadd(stream, {"m": frame}, maxlen=100_000, approximate=True)), n),
            "pipeline[LPUSH]": _med_loop(pipe(lambda p: p.lpush(lst, frame)), n),
            "pipeline[LPUSH, EXPIRE, XACK, XDEL] (worker finish)": _med_loop(
                pipe(lambda p: p.lpush(lst, frame), lambda p: p.expire(lst, 60), lambda p: p.xack(stream, "g", "1-1"), lambda p: p.xdel(stream, "1-1")), n
            ),
        }
    finally:
        r.delete(stream, lst, reply)
        r.close()


def python_costs(n: int) -> dict[str, float]:
    from rpcapp import runtime
    from rpcapp.protocol import Request, now_ms

    signer = runtime.build_signer()
    client = runtime.get_client()
    req = Request(procedure="tests.noop", args=[], kwargs={}, deadline=now_ms() + 10_000, reply_to="bench:reply:{abc}", caller="host:1")
    wire_frame = signer.pack(req.to_wire())
    decoded = signer.unpack(wire_frame)
    reply_frame = signer.pack({"v": 1, "id": req.id, "ok": True, "result": None, "provider": "host:1:abc", "queued_ms": 0, "run_ms": 0.01})

    def spec_bind() -> None:
        client._spec("tests.noop").signature.bind((), {}, "tests.noop")

    def fut() -> None:
        f: Future[Any] = Future()
        f.set_result(None)
        f.result()

    out = {
        "uuid4().hex (call id)": _med_loop(lambda: uuid.uuid4().hex, n),
        "client spec lookup + signature bind": _med_loop(spec_bind, n),
        "Request(...) + to_wire()": _med_loop(lambda: Request(procedure="tests.noop", args=[], kwargs={}, deadline=1, reply_to="r").to_wire(), n),
        "Signer.pack(request) (orjson + HMAC-SHA256)": _med_loop(lambda: signer.pack(req.to_wire()), n),
        "Signer.unpack(request) (HMAC verify + orjson)": _med_loop(lambda: signer.unpack(wire_frame), n),
        "Request.from_wire(decoded)": _med_loop(lambda: Request.from_wire(decoded), n),
        "Signer.unpack(reply)": _med_loop(lambda: signer.unpack(reply_frame), n),
        "Future() + set_result + result (same thread)": _med_loop(fut, n),
    }
    out.update(handoff_costs(n))
    return out


def handoff_costs(n: int) -> dict[str, float]:
    """One thread waking another and back, as listener -> caller and reader -> pool do."""
    ping, pong, stop = threading.Event(), threading.Event(), threading.Event()

    def echo() -> None:
        while not stop.is_set():
            if ping.wait(1):
                ping.clear()
                pong.set()

    threading.Thread(target=echo, daemon=True).start()

    def handoff() -> None:
        pong.clear()
        ping.set()
        pong.wait(1)

    try:
        rt = _med_loop(handoff, n)
    finally:
        stop.set()
    with ThreadPoolExecutor(max_workers=4) as pool:
        submit_rt = _med_loop(lambda: pool.submit(lambda: None).result(), n)
    return {"thread hand-off and back (Event ping-pong, round trip)": rt, "ThreadPoolExecutor.submit(noop).result() (round trip)": submit_rt}


# -- 3. the call timeline -------------------------------------------------------------------------
# (label, from event, to event, on the caller's critical path?)
SEGMENTS = [
    ("client: prepare (spec, bind, envelope, sign, track, provider check)", "call_start", "enqueue_start", True),
    ("request XADDed -> worker's blocked XREADGROUP returns", "enqueue_start", "read_ret", True),
    ("worker: hand-off reader thread -> pool thread", "read_ret", "handle_start", True),
    ("worker: verify + decode request", "handle_start", "run_start", True),
    ("worker: run (hooks, lookup, bind, procedure, envelope)", "run_start", "run_end", True),
    ("worker: encode + sign reply, into the finish pipeline", "run_end", "finish_start", True),
    ("finish pipeline sent -> client's blocked BRPOP returns", "finish_start", "brpop_ret", True),
    ("client: extra RPOP round trip after BRPOP", "brpop_ret", "rpop_ret", True),
    ("client: verify + decode reply, complete the Future", "rpop_ret", "deliver_end", True),
    ("client: hand-off listener thread -> caller thread", "deliver_end", "call_end", True),
    ("(overlapping) client: XADD pipeline round trip", "enqueue_start", "enqueue_end", False),
    ("(overlapping) worker: finish pipeline round trip", "finish_start", "finish_end", False),
    ("(overlapping) worker: Executor.handle in all", "handle_start", "handle_end", False),
]


class ClientStamps:
    """Stamps the client's steps of the call in progress (sequential calls only)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.row: dict[str, Any] | None = None

    def _stamp(self, key: str, fn: Callable[..., Any], after: Callable[[Any, dict[str, Any]], None] | None = None) -> Callable[..., Any]:
        def wrapped(*a: Any, **kw: Any) -> Any:
            t0 = mono()
            res = fn(*a, **kw)
            row = self.row
            if row is not None and (res or key != "brpop_ret"):
                row[key] = mono()
                if after is not None:
                    after(res, {**row, "t0": t0})
            return res

        return wrapped

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from rpcapp.client import _ReplyListener
        from rpcapp.transport import Transport

        orig_enqueue, orig_deliver = Transport.enqueue, _ReplyListener._deliver
        r = self.client.transport.redis
        orig_brpop, orig_rpop = r.brpop, r.rpop

        def after_enqueue(res: Any, row: dict[str, Any]) -> None:
            if self.row is not None:
                self.row.update(enqueue_start=row["t0"], entry=res[0])

        Transport.enqueue = self._stamp("enqueue_end", orig_enqueue, after_enqueue)  # type: ignore[method-assign]
        _ReplyListener._deliver = self._stamp("deliver_end", orig_deliver)  # type: ignore[method-assign]
        r.brpop, r.rpop = self._stamp("brpop_ret", orig_brpop), self._stamp("rpop_ret", orig_rpop)
        try:
            yield
        finally:
            Transport.enqueue = orig_enqueue  # type: ignore[method-assign]
            _ReplyListener._deliver = orig_deliver  # type: ignore[method-assign]
            r.brpop, r.rpop = orig_brpop, orig_rpop

    def call(self) -> dict[str, Any]:
        row: dict[str, Any] = {"call_start": mono()}
        self.row = row
        try:
            self.client.call("tests.noop")
            row["call_end"] = mono()
        finally:
            self.row = None
        return row


def rpcapp_timeline(b: Bench, calls: int, warmup: int) -> dict[str, Any]:
    from rpcapp import runtime

    with rpcapp_workers(b, "instrumented", instrumented=True) as (_workers, outs):
        client = runtime.get_client()
        stamps = ClientStamps(client)
        with stamps.installed():
            rows = [stamps.call() for _ in range(warmup + calls)][warmup:]
        time.sleep(0.3)
        load_start = mono()
        load = run_window(submit_noop(client), 32, 3.0, 10**9)
        load_end = mono()
        time.sleep(0.3)
    wrec: dict[str, dict[str, int]] = {}
    samples = []
    for p in outs:
        if p.exists():
            data = json.loads(p.read_text())
            wrec.update(data["rows"])
            samples.append(data["thread_samples"])
    joined = [{**row, **wrec[row["entry"]]} for row in rows if row.get("entry") in wrec]
    steps = []
    for label, start, end, critical in SEGMENTS:
        d = [r[end] - r[start] for r in joined if start in r and end in r]
        steps.append({"what": label, "from": start, "to": end, "critical": critical, "p50_us": med_us(d), "p90_us": p90_us(d)})
    under_load = [w for w in wrec.values() if load_start <= w.get("read_ret", 0) <= load_end]
    seq_span = (rows[0]["call_start"], rows[-1]["call_end"]) if rows else (0, 0)
    return {
        "calls": len(joined),
        "of": len(rows),
        "steps": steps,
        "total_us": med_us([r["call_end"] - r["call_start"] for r in joined]),
        "batch_sizes": dict(collections.Counter(r.get("batch", 0) for r in joined)),
        "worker_threads_sequential": worker_threads(samples, wrec, *seq_span),
        "worker_threads_32": worker_threads(samples, wrec, load_start, load_end),
        "load_32": {
            "per_s": load["per_s"],
            "calls": len(under_load),
            "read_batch": _dist(under_load, "batch"),
            "finish_batch": _dist(under_load, "finish_batch"),
            "handoff_p50_us": med_us([w["handle_start"] - w["read_ret"] for w in under_load if "handle_start" in w]),
            "handle_p50_us": med_us([w["handle_end"] - w["handle_start"] for w in under_load if "handle_end" in w]),
        },
    }


def worker_threads(samples: list[list[Any]], wrec: dict[str, dict[str, int]], t0: int, t1: int) -> dict[str, dict[str, float]]:
    """Per-thread CPU µs and context switches per call in the two workers, from
    their 4 Hz samples taken inside [t0, t1] (calls: those read in between)."""
    total: dict[str, list[float]] = {}
    calls = 0
    for worker in samples:
        inside = [s for s in worker if t0 <= s[0] <= t1]
        if len(inside) < 2:
            continue
        (a_t, a), (b_t, z) = inside[0], inside[-1]
        calls += sum(1 for w in wrec.values() if a_t <= w.get("read_ret", 0) <= b_t and w.get("read_ret"))
        for name, (cpu, csw) in z.items():
            c0, s0 = a.get(name, [0.0, 0.0])
            row = total.setdefault(name, [0.0, 0.0])
            row[0] += cpu - c0
            row[1] += csw - s0
    # Both workers' calls are counted: each call ran in exactly one of them.
    if not calls:
        return {}
    return {name: {"cpu_us": round(v[0] / calls * 1e6, 1), "csw": round(v[1] / calls, 2)} for name, v in sorted(total.items())}


def _dist(rows: list[dict[str, int]], key: str) -> dict[str, Any]:
    vals = [w[key] for w in rows if key in w]
    if not vals:
        return {}
    c = collections.Counter(vals)
    return {"mean": round(sum(vals) / len(vals), 2), "percent_of_calls": {k: round(v / len(vals) * 100, 1) for k, v in sorted(c.items())}}


# -- 4. the client's threads ---------------------------------------------------------------------
def client_threads(b: Bench, seconds: float) -> dict[str, Any]:
    from rpcapp import runtime

    windows = []
    with rpcapp_workers(b, "rpcapp-worker-t"):
        client = runtime.get_client()
        t_start = time.monotonic()
        for lo, hi in ((0.0, 5.0), (max(5.0, seconds - 5.0), seconds)):
            while time.monotonic() - t_start < lo:
                client.call("tests.noop")
            before, lat = thread_stats(), []
            while time.monotonic() - t_start < hi:
                t0 = mono()
                client.call("tests.noop")
                lat.append(mono() - t0)
            per = per_call_threads(before, thread_stats(), len(lat))
            heap = len(getattr(client._listener, "_deadlines", None) or [])
            windows.append({"from_s": lo, "to_s": hi, "calls": len(lat), "p50_us": med_us(lat), "threads": per, "deadline_heap_len": heap})
    return {"windows": windows}


# -- 5. sampling profiles ---------------------------------------------------------------------------
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
ROLES = [
    ("rpcapp-call", "worker pool threads"),
    ("rpcapp-read", "worker reader thread"),
    ("rpcapp-heartbeat", "worker heartbeat thread"),
    ("rpcapp-replies", "client reply listener thread"),
    ("rpcapp-deadlines", "client deadline timer thread"),
    ("MainThread", "main thread (the caller, in the client)"),
]


def _thread_role(thread: str) -> str:
    name = thread.split(": ", 1)[-1] if ": " in thread else thread
    return next((role for prefix, role in ROLES if name.startswith(prefix)), name or "?")


def _short(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    f = m.group("file")
    for marker in ("site-packages/", "python3.11/", "/work/main/"):
        if marker in f:
            f = f.split(marker, 1)[1]
    return f"{m.group('func')} ({f})"


def parse_raw(path: Path) -> dict[str, Any]:
    """Aggregate py-spy's raw (collapsed) output: per thread, self and inclusive."""
    self_c: collections.Counter[str] = collections.Counter()
    incl_c: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        total += n
        threads[_thread_role(next((f for f in frames if f.startswith("thread (")), ""))] += n
        body = [_short(f) for f in frames if not f.startswith(("thread (", "process "))]
        if body:
            self_c[body[-1]] += n
        for f in set(body):
            incl_c[f] += n
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "threads": {k: round(v / total * 100, 1) for k, v in threads.most_common()},
        "self_top": [(k, round(v / total * 100, 1)) for k, v in self_c.most_common(30)],
        "inclusive_top": [(k, round(v / total * 100, 1)) for k, v in incl_c.most_common(60)],
    }


def start_spies(b: Bench, pids: dict[str, int], seconds: float, rate: int, tag: str) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not spy:
        raise RuntimeError("py-spy is not installed (.venv/bin/pip install -r requirements.txt)")
    out = {}
    for name, pid in pids.items():
        path = b.work / f"spy-{tag}-{name}.txt"
        argv = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
                "--format", "raw", "--function", "--threads", "--gil", "--nonblocking", "--output", str(path)]
        out[name] = (b.P.start(f"py-spy-{tag}-{name}", argv), path)
    return out


def spy_profiles(b: Bench, seconds: float, rate: int) -> dict[str, Any]:
    from rpcapp import runtime

    result: dict[str, Any] = {}
    with rpcapp_workers(b, "rpcapp-worker-s") as (workers, _):
        client = runtime.get_client()
        for _ in range(300):
            client.call("tests.noop")
        pids = {"client": os.getpid(), "worker0": workers[0].pid, "worker1": workers[1].pid}

        def seq_loop(until: float) -> int:
            n = 0
            while time.monotonic() < until:
                client.call("tests.noop")
                n += 1
            return n

        for tag, load in (("sequential", None), ("32 in flight", 32)):
            spies = start_spies(b, pids, seconds, rate, tag.replace(" ", "-"))
            time.sleep(0.5)
            span = seconds + 1.0
            calls = seq_loop(time.monotonic() + span) if load is None else run_window(submit_noop(client), load, span, 10**9)["calls"]
            for proc, _ in spies.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
                b.P.stop(proc)
            result[tag] = {"calls": calls, "seconds": span, "sampled_s": seconds, "rate": rate,
                           "profiles": {name: parse_raw(path) for name, (_, path) in spies.items()}}
            log(f"py-spy {tag}: {calls} calls")
    return result


# -- report -------------------------------------------------------------------------------------
def _md_floor(f: dict[str, Any]) -> list[str]:
    return ["## Floor, sequential (medians)", "", "| step | µs |", "| --- | ---: |",
            f"| LPUSH request | {f['lpush_us']} |", f"| BLPOP until the reply arrives | {f['blpop_wait_us']} |", f"| total | {f['total_us']} |", "",
            f"client thread: {f['client_cpu_us_per_call']} µs CPU and {f['client_csw_per_call']} context switches per call", ""]


def _md_micro(m: dict[str, Any]) -> list[str]:
    out = ["## Costs of the pieces, in isolation (medians, µs)", "", "| redis-py round trip (hiredis, loopback) | µs |", "| --- | ---: |"]
    out += [f"| {k} | {v} |" for k, v in m["redis_py"].items()]
    out += ["", "| Python step | µs |", "| --- | ---: |"]
    out += [f"| {k} | {v} |" for k, v in m["python"].items()]
    return [*out, ""]


def _md_timeline(t: dict[str, Any]) -> list[str]:
    out = [f"## rpcapp, sequential call timeline ({t['calls']} calls; instrumented, so a little slower than uninstrumented)", "",
           "| step | p50 µs | p90 µs |", "| --- | ---: | ---: |"]
    out += [f"| {s['what']} | {s['p50_us']} | {s['p90_us']} |" for s in t["steps"]]
    crit = sum(s["p50_us"] for s in t["steps"] if s["critical"])
    out += [f"| sum of the critical-path medians | {crit:.1f} | |", "",
            f"median total: {t['total_us']} µs; XREADGROUP batch sizes: {t['batch_sizes']}", ""]
    for key, title in (("worker_threads_sequential", "sequential"), ("worker_threads_32", "32 in flight")):
        wt = t.get(key)
        if wt:
            out += [f"Worker threads, {title} (both workers, per call): " + "; ".join(f"{k}: {v['cpu_us']} µs CPU, {v['csw']} context switches" for k, v in wt.items()), ""]
    ld = t.get("load_32")
    if ld:
        out += [f"With 32 in flight ({ld['per_s']:,.0f} calls/s, instrumented): entries per XREADGROUP, per call: {ld['read_batch']}; "
                f"calls per finish pipeline: {ld['finish_batch']}; reader->pool hand-off p50 {ld['handoff_p50_us']} µs; "
                f"Executor.handle p50 {ld['handle_p50_us']} µs.", ""]
    return out


def _md_threads(ct: dict[str, Any]) -> list[str]:
    out = ["## Client threads, sequential calls (per call)", "",
           "| window | calls | p50 µs | thread | CPU µs/call | context switches/call |", "| --- | ---: | ---: | --- | ---: | ---: |"]
    for w in ct["windows"]:
        for name, v in sorted(w["threads"].items()):
            out.append(f"| {w['from_s']:.0f}-{w['to_s']:.0f} s (deadline heap {w['deadline_heap_len']}) | {w['calls']} | {w['p50_us']} | {name} | {v['cpu_us']} | {v['csw']} |")
    return [*out, ""]


def _md_spy(spy: dict[str, Any]) -> list[str]:
    out = []
    for tag, block in spy.items():
        out += [f"## py-spy --gil, {tag} ({block['calls']} calls in {block['seconds']:.0f} s, {block['rate']} Hz; only the thread holding the GIL is sampled)", ""]
        for name, prof in block["profiles"].items():
            if not prof.get("samples"):
                continue
            busy = prof["samples"] / (block["rate"] * block["sampled_s"]) * 100
            out += [f"### {name}: {prof['samples']} samples holding the GIL (~{busy:.0f}% of the time)", "",
                    "threads: " + ", ".join(f"{k} {v}%" for k, v in prof["threads"].items()), "", "| self % | function |", "| ---: | --- |"]
            out += [f"| {v} | {k} |" for k, v in prof["self_top"][:15]]
            out += ["", "| inclusive % | function |", "| ---: | --- |"]
            out += [f"| {v} | {k} |" for k, v in prof["inclusive_top"][:25]]
            out.append("")
    return out


def markdown(res: dict[str, Any]) -> str:
    parts = [("floor_timeline", _md_floor), ("micro", _md_micro), ("rpcapp_timeline", _md_timeline), ("client_threads", _md_threads), ("spy", _md_spy)]
    out = [f"PING round trip now: {res.get('ping_rtt_us')} µs (a noise gauge); redis-server {res.get('redis', {}).get('version')}", ""]
    for key, fn in parts:
        if res.get(key):
            out += fn(res[key])
    return "\n".join(out) + "\n"


def run_all(b: Bench, args: argparse.Namespace, res: dict[str, Any]) -> None:
    res["redis"] = b.start_redis()
    res["ping_rtt_us"] = b.ping_rtt()
    b.setup_django(f"prof{uuid.uuid4().hex[:8]}")
    log("floor timeline")
    res["floor_timeline"] = floor_timeline(b, args.calls)
    log("costs of the pieces")
    res["micro"] = {"redis_py": redis_costs(b.url, args.calls), "python": python_costs(args.calls)}
    log("rpcapp timeline")
    res["rpcapp_timeline"] = rpcapp_timeline(b, args.calls, args.warmup)
    log("client threads")
    res["client_threads"] = client_threads(b, args.thread_seconds)
    if not args.skip_spy:
        log("py-spy profiles")
        res["spy"] = spy_profiles(b, args.seconds, args.rate)


def main() -> int:
    p = argparse.ArgumentParser(description="Profile rpcapp calls: timeline, costs of the pieces, client threads, py-spy.")
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seconds", type=float, default=6.0, help="py-spy sampling time per load")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--thread-seconds", type=float, default=16.0, help="length of the per-thread client run")
    p.add_argument("--worker-concurrency", type=int, default=8)
    p.add_argument("--skip-spy", action="store_true")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "profile.json")
    p.add_argument("--max-seconds", type=int, default=300)
    args = p.parse_args()

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(sig, on_signal)
    signal.alarm(args.max_seconds)
    work = Path(tempfile.mkdtemp(prefix="rpcapp-profile-"))
    b = Bench(args, work)
    res: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_start": os.getloadavg()}
    code = 1
    try:
        run_all(b, args, res)
        code = 0
    except KeyboardInterrupt as exc:
        res["aborted"] = str(exc)
        code = 130
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        b.P.stop_all()
        if code:
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    res["loadavg_end"] = os.getloadavg()
    print(markdown(res))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Soak: N minutes of mixed load on a private redis-server, with workers
restarted along the way, checking that nothing is lost, misrouted or
duplicated and that no process's memory grows.

    .venv/bin/python bench/soak.py                 # 30 minutes: a restart every 3 minutes, the 5th a kill -9
    .venv/bin/python bench/soak.py --minutes 2     # a short run: a restart every 30 s, the 2nd a kill -9

Load (threads of this process, bench/soak_app/load.py): sequential and
concurrent calls echoing a unique token, calls that raise, notifications,
streaming calls, events to two subscribing services, calls of a
lock-guarded procedure, and RedLock sections in this process. Procedures and
subscribers: bench/soak_app/rpc.py. Workers: ``--workers`` ``manage.py
runrpcworker`` processes (settings ``bench.soak_settings``, a private
migrated SQLite file); the first ``--stable-workers`` run throughout, the
others are restarted in turn every ``--restart-every`` seconds (default 180,
or a quarter of a shorter run: SIGTERM, wait for the drain, start a new
one); every ``--kill-every``-th restart is a ``kill -9`` instead (default:
the middle one, so one kill -9 per run). The workers run with DEBUG off, as
in production (``--django-debug`` turns it on).

Each ``--report-every`` seconds (a minute) it logs calls, p50/p99 latency,
errors by type and the RSS of every process; at the end it checks the
totals, prints a Markdown report and writes ``bench/results/soak.json``.
Exit status: 0 PASS (or PASS with warnings), 1 FAIL. Every process it starts
is stopped at the end, also on an error, Ctrl-C, SIGTERM or the
``--max-seconds`` watchdog, and gets SIGTERM from the kernel if this process
is killed outright (bench/procs.py, bench/_guard.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import redis  # noqa: E402

from bench.harness import Bench, log  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MIB = 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Soak rpcapp with mixed load and worker restarts (see docs/benchmarks.md).")
    p.add_argument("--minutes", type=float, default=30.0, help="how long the load runs (default 30)")
    p.add_argument("--report-every", type=float, default=60.0, help="seconds per report line (default 60)")
    p.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    p.add_argument("--stable-workers", type=int, default=1, help="of which never restarted (default 1)")
    p.add_argument("--concurrency", type=int, default=4, help="runrpcworker --concurrency (default 4)")
    p.add_argument("--restart-every", type=float, help="seconds between worker restarts; 0: none (default: 180, or a quarter of a shorter run)")
    p.add_argument("--kill-every", type=int, help="every Nth restart is a kill -9; 0: never (default: one kill -9, the middle restart)")
    p.add_argument("--rate", type=float, default=200.0, help="concurrent calls started per second (default 200)")
    p.add_argument("--inflight", type=int, default=16, help="at most this many concurrent calls in flight (default 16)")
    p.add_argument("--seq-rate", type=float, default=50.0, help="sequential calls per second (default 50)")
    p.add_argument("--notify-rate", type=float, default=20.0)
    p.add_argument("--event-rate", type=float, default=20.0)
    p.add_argument("--stream-rate", type=float, default=2.0)
    p.add_argument("--locked-rate", type=float, default=10.0, help="lock-guarded calls per second, per thread")
    p.add_argument("--locked-threads", type=int, default=2)
    p.add_argument("--lock-rate", type=float, default=10.0, help="RedLock sections per second, per thread")
    p.add_argument("--lock-threads", type=int, default=2)
    p.add_argument("--early-pct", type=float, default=10.0, help="%% of streams the caller leaves half-way")
    p.add_argument("--boom-pct", type=float, default=1.0, help="%% of concurrent calls that raise on the worker")
    p.add_argument("--event-fail-pct", type=float, default=2.0, help="%% of events whose first delivery to one service fails")
    p.add_argument("--bucket", type=float, default=30.0, help="seconds per bucket of notifications/events checked together")
    p.add_argument("--settle", type=float, default=60.0, help="seconds a bucket is given to be fully delivered")
    p.add_argument("--django-debug", action="store_true", help="run the workers and this process with DEBUG = True (off by default, as in production)")
    p.add_argument("--no-db", action="store_true", help="no migrated database: workers neither sync the catalog nor store call records")
    p.add_argument("--json", type=Path, default=RESULTS / "soak.json", help="where to write the JSON result")
    p.add_argument("--max-seconds", type=float, help="watchdog (default: the run plus 10 minutes)")
    p.add_argument("--keep-logs", action="store_true", help="keep the folder with the workers' and redis-server's logs")
    a = p.parse_args(argv)
    if a.workers < 2:
        p.error("--workers must be at least 2")
    a.stable_workers = min(a.stable_workers, a.workers)
    if a.max_seconds is None:
        a.max_seconds = a.minutes * 60 + 600
    duration = a.minutes * 60
    if a.restart_every is None:
        a.restart_every = min(180.0, duration / 4)
    restarts = sum(1 for k in range(1, 10_000) if a.restart_every and k * a.restart_every < duration - 5)
    if a.kill_every is None:
        a.kill_every = restarts // 2 + 1 if restarts >= 2 else 0
    return a


# -- workers ----------------------------------------------------------------------------------
class Fleet:
    """The worker processes: started, restarted, watched for crashes."""

    def __init__(self, bench: Bench, env: dict[str, str], args: argparse.Namespace, r: Any, ns: str, stats: Any, t0: float) -> None:
        self.P = bench.P
        self.env = env
        self.args = args
        self.r = r
        self.ns = ns
        self.stats = stats
        self.t0 = t0
        self.slots: list[Any] = [None] * args.workers
        self.busy: set[int] = set()  # slots being restarted
        self.instances: list[dict[str, Any]] = []
        self.restarts: list[dict[str, Any]] = []
        self.crashes: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.counter = 0
        # Restarts run in one thread that lives as long as this process: a child
        # gets PR_SET_PDEATHSIG's SIGTERM when the *thread* that started it ends.
        self.queue: queue.Queue[tuple[int, bool]] = queue.Queue()
        threading.Thread(target=self._restarter, name="soak-restarter", daemon=True).start()

    def _restarter(self) -> None:
        while True:
            slot, kill = self.queue.get()
            self.restart(slot, kill)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def start(self, slot: int) -> Any:
        from bench.soak_app import rpc as soak

        self.counter += 1
        argv = [sys.executable, str(ROOT / "manage.py"), "runrpcworker", "--concurrency", str(self.args.concurrency), "--log-level", "INFO"]
        argv += [a for s in soak.SERVICES for a in ("--service", s)]
        proc = self.P.start(f"w{slot}-{self.counter}", argv, env=self.env)
        self.slots[slot] = proc
        self.instances.append({"label": f"w{slot}", "slot": slot, "pid": proc.pid, "log": str(proc.log_path), "started_s": self.elapsed()})
        return proc

    def registered(self, pid: int) -> bool:
        from bench.soak_app import rpc as soak
        from rpcapp import keys

        return all(any(f":{pid}:" in m.decode() for m in self.r.zrange(keys.consumers(self.ns, s), 0, -1)) for s in soak.SERVICES)

    def wait_ready(self, proc: Any, timeout: float = 90.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {proc.pid} exited with {proc.returncode}:\n{self.P.log_tail(proc)}")
            if self.registered(proc.pid):
                return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"worker {proc.pid} did not register within {timeout}s:\n{self.P.log_tail(proc)}")

    def restart(self, slot: int, kill: bool) -> None:
        """SIGTERM (or SIGKILL) the slot's worker, wait for it, start a new one."""
        old = self.slots[slot]
        event: dict[str, Any] = {"at_s": self.elapsed(), "slot": slot, "pid": old.pid, "signal": "SIGKILL" if kill else "SIGTERM"}
        try:
            self._stop(old, kill, event)
            new = self.start(slot)
            event["new_pid"] = new.pid
            event["new_ready_s"] = round(self.wait_ready(new), 2)
            if kill:
                event["dead_provider_reaped_s"] = self._reaped(old.pid)
        except Exception as exc:  # noqa: BLE001  (reported; the soak goes on)
            event["error"] = f"{type(exc).__name__}: {exc}"
            self.stats.problem("restart_failed", event["error"])
        finally:
            self.restarts.append(event)
            with self.lock:
                self.busy.discard(slot)
        log(f"restart: {event}")

    def _stop(self, old: Any, kill: bool, event: dict[str, Any]) -> None:
        started = time.monotonic()
        if kill:
            self.stats.kill_times.append(started)
            old.kill()
        else:
            old.terminate()
        try:
            event["exit_code"] = old.wait(timeout=40 if not kill else 10)
        except subprocess.TimeoutExpired:
            event["exit_code"] = None
            self.stats.problem("worker_did_not_exit", f"pid {old.pid} still running 40 s after SIGTERM")
        event["exit_s"] = round(time.monotonic() - started, 2)
        self.P.stop(old)  # forget it (and SIGKILL it if it hung)
        self._ended(old.pid, "killed" if kill else "SIGTERM")
        if not kill:
            if event["exit_code"] != 0:
                self.stats.problem("worker_exit_code", f"pid {old.pid} exited {event['exit_code']} after SIGTERM")
            if self.registered_any(old.pid):
                self.stats.problem("not_deregistered", f"pid {old.pid} still a registered provider after exiting on SIGTERM")
            event["deregistered"] = not self.registered_any(old.pid)

    def registered_any(self, pid: int) -> bool:
        from bench.soak_app import rpc as soak
        from rpcapp import keys

        return any(any(f":{pid}:" in m.decode() for m in self.r.zrange(keys.consumers(self.ns, s), 0, -1)) for s in soak.SERVICES)

    def _reaped(self, pid: int, timeout: float = 60.0) -> float | None:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.registered_any(pid):
                return round(time.monotonic() - started, 1)
            time.sleep(0.5)
        self.stats.problem("dead_provider_not_reaped", f"pid {pid} still registered {timeout:.0f}s after kill -9")
        return None

    def _ended(self, pid: int, how: str) -> None:
        for inst in self.instances:
            if inst["pid"] == pid and "ended_s" not in inst:
                inst.update(ended_s=self.elapsed(), ended=how)

    def check_crashes(self) -> None:
        """A worker that exited without being told to is a crash: report it, replace it."""
        for slot, proc in enumerate(self.slots):
            with self.lock:
                if slot in self.busy or proc is None or proc.poll() is None:
                    continue
                self.busy.add(slot)
            crash = {"at_s": self.elapsed(), "slot": slot, "pid": proc.pid, "exit_code": proc.returncode, "log_tail": self.P.log_tail(proc, 4000)}
            self.crashes.append(crash)
            self.stats.problem("worker_crash", f"pid {proc.pid} exited {proc.returncode}")
            log(f"worker {proc.pid} (slot {slot}) CRASHED with exit code {proc.returncode}:\n{crash['log_tail'][-1500:]}")
            self.P.stop(proc)
            self._ended(proc.pid, f"crashed ({proc.returncode})")
            self.start(slot)
            with self.lock:
                self.busy.discard(slot)

    def restart_in_background(self, number: int) -> bool:
        restartable = list(range(self.args.stable_workers, self.args.workers))
        if not restartable:
            return False
        slot = restartable[(number - 1) % len(restartable)]
        with self.lock:
            if slot in self.busy:
                return False
            self.busy.add(slot)
        kill = bool(self.args.kill_every) and number % self.args.kill_every == 0
        self.queue.put((slot, kill))
        return True

    def log_counts(self) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
        """WARNING / ERROR / Traceback lines in each worker's log, and the
        most frequent such messages (numbers and ids masked)."""
        out, messages = {}, collections.Counter[str]()
        for inst in self.instances:
            try:
                text = Path(inst["log"]).read_text(errors="replace")
            except OSError:
                continue
            out[f"{inst['label']} pid {inst['pid']}"] = {k: text.count(k) for k in (" WARNING ", " ERROR ", "Traceback", " CRITICAL ")}
            for line in text.splitlines():
                level = next((lv for lv in ("WARNING", "ERROR", "CRITICAL") if f" {lv} " in line), None)
                if level:
                    messages[f"{level} " + mask(line.split(f" {level} ", 1)[1])] += 1
        return out, dict(messages.most_common(15))


# -- sampling ----------------------------------------------------------------------------------
def rss(pid: int) -> float | None:
    """The process's own RSS (not its children's: this process is the parent of them all)."""
    try:
        return round(psutil.Process(pid).memory_info().rss / MIB, 2)
    except psutil.Error:
        return None


def mask(text: str) -> str:
    """A message or key with its ids and numbers replaced by ``*``."""
    return re.sub(r"[^\s:{}]*\d[^\s:{}]*", "*", text)


def key_groups(r: Any, ns: str) -> dict[str, int]:
    """rpcapp's keys in the namespace, grouped by shape (to spot a leak);
    `` (no TTL)`` marks those that never expire."""
    names = [k.decode() for k in r.scan_iter(match=f"{ns}:*", count=1000) if b":soak:" not in k]
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.ttl(name)
    groups = collections.Counter[str]()
    for name, ttl in zip(names, pipe.execute(), strict=True):
        groups[mask(name[len(ns):]) + (" (no TTL)" if ttl == -1 else "")] += 1
    return dict(sorted(groups.items()))


def call_history(r: Any, ns: str, args: argparse.Namespace) -> dict[str, Any]:
    """Call records the workers stored in the private database, and the batches still waiting in Redis."""
    from rpcapp import keys

    out: dict[str, Any] = {"waiting_in_redis": int(r.xlen(keys.history(ns)))}
    if not args.no_db:
        try:
            from rpcapp.models import CallRecord

            out["stored"] = CallRecord.objects.count()
            from django.db.models import Count

            out["by_status"] = {row["status"]: row["n"] for row in CallRecord.objects.values("status").annotate(n=Count("pk"))}
        except Exception as exc:  # noqa: BLE001  (informative only)
            out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def redis_sample(r: Any, ns: str) -> dict[str, Any]:
    from bench.soak_app import rpc as soak
    from rpcapp import keys

    names = [k.decode() for k in r.scan_iter(match=keys.pattern(ns), count=1000)]
    own = [k for k in names if ":soak:" not in k]
    pipe = r.pipeline(transaction=False)
    pipe.xlen(keys.history(ns))
    for s in soak.SERVICES:
        pipe.xlen(keys.requests(ns, s))
    history, *queues = pipe.execute()
    return {
        "used_memory_mib": round(int(r.info("memory")["used_memory"]) / MIB, 2),
        "rpcapp_keys": len(own),
        "history_stream": int(history),
        "request_streams": dict(zip(soak.SERVICES, map(int, queues), strict=True)),
    }


def sample(minute: int, elapsed: float, stats: Any, fleet: Fleet, redis_pid: int, r: Any, ns: str, seen: set[int]) -> dict[str, Any]:
    from bench.soak_app.load import pct

    cur = stats.roll()
    lat = cur["latency"]
    ops = dict(cur["ops"])
    workers = {}
    for slot, proc in enumerate(fleet.slots):
        if proc is not None:
            workers[f"w{slot}"] = {"pid": proc.pid, "rss_mib": rss(proc.pid), "new": proc.pid not in seen}
            seen.add(proc.pid)
    row = {
        "minute": minute,
        "elapsed_s": round(elapsed, 1),
        "ops": ops,
        "calls": sum(ops.get(k, 0) for k in ("seq", "async", "boom", "locked")),
        "p50_ms": round(pct(lat, 0.50) * 1000, 2) if lat else None,
        "p99_ms": round(pct(lat, 0.99) * 1000, 2) if lat else None,
        "seq_p50_ms": round(pct(cur["seq_latency"], 0.50) * 1000, 2) if cur["seq_latency"] else None,
        "errors": dict(cur["errors"]),
        "problems": dict(cur["problems"]),
        "served_by": {str(k): v for k, v in cur["served_by"].items()},
        "rss_mib": {"bench": rss(os.getpid()), "redis-server": rss(redis_pid), **{k: v["rss_mib"] for k, v in workers.items()}},
        "workers": workers,
        "redis": redis_sample(r, ns),
        "loadavg": round(os.getloadavg()[0], 2),
    }
    errs = ", ".join(f"{k}×{v}" for k, v in {**row["errors"], **row["problems"]}.items()) or "none"
    mem = " ".join(f"{k}={v}" for k, v in row["rss_mib"].items())
    log(f"minute {minute}: {row['calls']} calls, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, ops {ops}, errors: {errs}; RSS MiB {mem}; "
        f"redis {row['redis']['used_memory_mib']} MiB, {row['redis']['rpcapp_keys']} rpcapp keys; load {row['loadavg']}")
    return row


def memory_growth(minutes: list[dict[str, Any]], fleet: Fleet, stable: int) -> list[dict[str, Any]]:
    """Per process: RSS from minute 2 (or its first full minute) to its last sample."""
    series: dict[tuple[str, int | None], list[tuple[int, float]]] = {}
    for m in minutes:
        for name in ("bench", "redis-server"):
            if m["rss_mib"].get(name) is not None:
                series.setdefault((name, None), []).append((m["minute"], m["rss_mib"][name]))
        for label, w in m["workers"].items():
            if w["rss_mib"] is not None:
                series.setdefault((label, w["pid"]), []).append((m["minute"], w["rss_mib"]))
    out = []
    for (label, pid), samples in series.items():
        if pid is not None:  # a worker: skip the sample of the minute it started in
            samples = samples[1:] if len(samples) > 1 and samples[0][0] > 1 else samples
        usable = [s for s in samples if s[0] >= 2] or samples[-1:]
        first, last = usable[0], usable[-1]
        long_lived = pid is None or (int(label[1:]) < stable)
        out.append({"process": label, "pid": pid, "long_lived": long_lived, "from_minute": first[0], "to_minute": last[0],
                    "rss_from_mib": first[1], "rss_to_mib": last[1], "growth_mib": round(last[1] - first[1], 2),
                    "growth_mib_per_min": round((last[1] - first[1]) / (last[0] - first[0]), 3) if last[0] > first[0] else None,
                    "growth_pct": round((last[1] / first[1] - 1) * 100, 2) if first[1] else None,
                    "samples_mib": [s[1] for s in samples]})
    return out


# -- the run -----------------------------------------------------------------------------------
def machine(redis_info: dict[str, Any]) -> dict[str, Any]:
    commit, changed = "", []
    try:  # read-only git queries: which code was soaked
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--", "rpcapp"], cwd=ROOT, capture_output=True, text=True, timeout=5).stdout
        changed = [line[3:] for line in status.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(), "redis": redis_info.get("version"),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()], "commit": commit, "rpcapp_uncommitted_changes": changed}


def prepare(bench: Bench, args: argparse.Namespace, work: Path) -> tuple[str, dict[str, str]]:
    """The namespace and the environment of this process and the workers (after migrating the private DB)."""
    ns = "soak" + uuid.uuid4().hex[:6]
    overrides = {"REDIS_URL": bench.url, "NAMESPACE": ns}
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.soak_settings", "RPCAPP_TEST_OVERRIDES": json.dumps(overrides),
           "PYTHONPATH": str(ROOT), "RPCAPP_SOAK_DB": str(work / "soak.sqlite3"), "RPCAPP_SOAK_DEBUG": "1" if args.django_debug else "0"}
    env.pop("RPCAPP_REDIS_URL", None)
    if not args.no_db:
        log("migrating the private SQLite database")
        subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=300)
    else:
        env["RPCAPP_SOAK_DB"] = str(work / "unmigrated.sqlite3")
    os.environ.pop("RPCAPP_REDIS_URL", None)
    os.environ.update({k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "RPCAPP_TEST_OVERRIDES", "RPCAPP_SOAK_DB", "RPCAPP_SOAK_DEBUG")})
    import django

    django.setup()
    return ns, env


def soak(bench: Bench, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from bench.soak_app.load import Load, Stats

    redis_info = bench.start_redis()
    ns, env = prepare(bench, args, work)
    r = redis.Redis.from_url(bench.url, socket_timeout=10)
    stats = Stats()
    t0 = time.monotonic()
    fleet = Fleet(bench, env, args, r, ns, stats, t0)
    started = [fleet.start(slot) for slot in range(args.workers)]
    for proc in started:
        fleet.wait_ready(proc)
    log(f"{args.workers} workers ready (pids {[p.pid for p in started]}), namespace {ns}; load for {args.minutes} min")
    load = Load(r, ns, args, stats)
    t0 = fleet.t0 = load.ledger.t0 = time.monotonic()
    load.start()
    minutes: list[dict[str, Any]] = []
    seen = {p.pid for p in started}
    duration = args.minutes * 60
    next_report, restarts = args.report_every, 0
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= next_report or elapsed >= duration:
            minutes.append(sample(len(minutes) + 1, elapsed, stats, fleet, bench.redis_pid, r, ns, seen))
            load.ledger.check(args.settle)
            load.sections.drain()
            next_report += args.report_every
        if elapsed >= duration:
            break
        if args.restart_every and elapsed >= (restarts + 1) * args.restart_every and elapsed < duration - 5:
            restarts += 1
            fleet.restart_in_background(restarts)
        load.watchdog()
        fleet.check_crashes()
        time.sleep(min(1.0, max(0.05, min(next_report, duration) - (time.monotonic() - t0))))
    return finish(load, fleet, stats, args, minutes, r, ns, redis_info, duration)


def finish(load: Any, fleet: Fleet, stats: Any, args: argparse.Namespace, minutes: list[dict[str, Any]], r: Any, ns: str,
           redis_info: dict[str, Any], duration: float) -> dict[str, Any]:
    from bench.soak_app import rpc as soak
    from bench.soak_app.load import LOST_GRACE
    from rpcapp import rpc

    log("load stopped; waiting for calls in flight, notifications and events to settle")
    load.stop()
    load.wait_pending(soak.ECHO_TIMEOUT + LOST_GRACE + 1)
    for _ in range(200):  # wait for a restart under way to finish
        if not fleet.busy:
            break
        time.sleep(0.2)
    fleet.check_crashes()
    settle_started = time.monotonic()
    while time.monotonic() - settle_started < args.settle and load.ledger.outstanding() > 0:
        time.sleep(0.5)
    settled_s = round(time.monotonic() - settle_started, 1)
    time.sleep(2.0)  # anything delivered twice shows by now
    load.ledger.check(None)
    load.sections.drain()
    logs, messages = fleet.log_counts()
    result = {
        "call_history": call_history(r, ns, args),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine(redis_info),
        "duration_s": duration,
        "settled_after_s": settled_s,
        "minutes": minutes,
        "totals": dict(stats.totals),
        "errors": dict(stats.errors),
        "excused_after_kill": dict(stats.excused),
        "problems": dict(stats.problems),
        "examples": dict(stats.examples),
        "served_by": {str(k): v for k, v in stats.served_by.items()},
        "late_replies": rpc.late_replies,
        "rejected_replies": rpc.rejected_replies,
        "streams": dict(load.streams),
        "deliveries": {k: dict(v) for k, v in load.ledger.result.items()},
        "delivery_examples": dict(load.ledger.examples),
        "locked_procedure": {"ok_calls": load.locked_ok, "sections_recorded": load.sections.recorded, "counter": load.sections.counter(),
                             "overlaps": load.sections.overlaps, "duplicate_values": load.sections.duplicate_values,
                             "examples": load.sections.examples},
        "client_lock": {**load.client_lock, "counter": load.client_lock_counter()},
        "restarts": fleet.restarts,
        "crashes": fleet.crashes,
        "workers": fleet.instances,
        "worker_logs": logs,
        "worker_log_messages": messages,
        "rpcapp_keys_at_end": key_groups(r, ns),
        "memory": memory_growth(minutes, fleet, args.stable_workers),
        "kills": len(stats.kill_times),
    }
    return result


# -- verdict and report -------------------------------------------------------------------------
PROBLEMS = {
    "misrouted": "misrouted replies (a result or error for another call)",
    "lost_reply": "lost replies (neither a result nor a typed error by the deadline)",
    "untyped_error": "errors that are not an RpcError",
    "bad_stream": "streams incomplete or out of order",
    "lock_overlap": "overlapping RedLock holders",
    "fence_regression": "fencing tokens that did not increase",
    "boom_returned": "raising calls that returned",
    "load_thread_died": "load threads that died",
    "worker_crash": "worker crashes",
    "worker_exit_code": "workers exiting non-zero on SIGTERM",
    "worker_did_not_exit": "workers not exiting on SIGTERM",
    "not_deregistered": "workers still registered after exiting on SIGTERM",
    "dead_provider_not_reaped": "killed workers never reaped",
    "restart_failed": "failed restarts",
}


def verdict(res: dict[str, Any]) -> tuple[str, list[str], list[str]]:
    fails = [f"{res['problems'][name]} {what}" for name, what in PROBLEMS.items() if res["problems"].get(name)]
    warns: list[str] = []
    if res["errors"]:
        fails.append("unexpected errors: " + ", ".join(f"{k} ×{v}" for k, v in sorted(res["errors"].items())))
    _judge_deliveries(res, fails, warns)
    _judge_locks(res, fails, warns)
    for m in res["memory"]:
        limit = max(4.0, m["rss_from_mib"] * 0.05)
        if m["long_lived"] and m["to_minute"] > m["from_minute"] and m["growth_mib"] > limit:
            warns.append(f"{m['process']} RSS grew {m['growth_mib']} MiB ({m['growth_pct']} %) from minute {m['from_minute']} to {m['to_minute']}")
    if res["excused_after_kill"]:
        warns.append("errors after kill -9 (documented): " + ", ".join(f"{k} ×{v}" for k, v in sorted(res["excused_after_kill"].items())))
    timeouts = sum(v for k, v in res["errors"].items() if k.endswith(":timeout"))
    abandoned = res["streams"].get("abandoned frames", 0)
    if res["late_replies"] > timeouts + abandoned:
        warns.append(f"{res['late_replies']} late replies, more than the {timeouts} timeouts + {abandoned} frames of streams left early")
    return ("FAIL" if fails else "PASS with warnings" if warns else "PASS"), fails, warns


def _judge_deliveries(res: dict[str, Any], fails: list[str], warns: list[str]) -> None:
    """Exactly once per subscribing service (events) / per notification; after a
    kill -9 the docs allow duplicate events and lost notifications, at most one
    per call slot of the killed worker."""
    allow = res["kills"] * res["args"]["concurrency"]
    for target, d in res["deliveries"].items():
        what = "notifications" if target == "note" else f"events to {target.split(':')[1]}"
        for kind, excusable in (("missing", target == "note"), ("duplicates", target != "note"), ("unknown", False)):
            n = d.get(kind, 0)
            if n and excusable and n <= allow:
                warns.append(f"{n} {what} {kind} (allowed after kill -9: at most {allow})")
            elif n:
                fails.append(f"{n} {what} {kind}")


def _judge_locks(res: dict[str, Any], fails: list[str], warns: list[str]) -> None:
    lp = res["locked_procedure"]
    if lp["overlaps"] or lp["duplicate_values"]:
        fails.append(f"lock-guarded procedure: {lp['overlaps']} overlapping sections, {lp['duplicate_values']} counter values written twice")
    diff = lp["counter"] - lp["sections_recorded"]
    if diff and not (0 < diff <= res["kills"]):
        fails.append(f"lock-guarded counter {lp['counter']} != {lp['sections_recorded']} recorded sections")
    elif diff:
        warns.append(f"lock-guarded counter {diff} above the recorded sections (a worker killed inside a section)")
    if lp["ok_calls"] > lp["sections_recorded"]:
        fails.append(f"{lp['ok_calls']} lock-guarded calls succeeded but only {lp['sections_recorded']} sections were recorded")
    cl = res["client_lock"]
    if cl["counter"] != cl["sections"]:
        fails.append(f"RedLock counter {cl['counter']} != {cl['sections']} sections (a lost update)")


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def fmt(n: float | None, digits: int = 1) -> str:
    return "–" if n is None else f"{n:,.{digits}f}"


def minute_table(res: dict[str, Any]) -> list[str]:
    slots = [f"w{i}" for i in range(res["args"]["workers"])]
    head = ["minute", "calls", "p50 (ms)", "p99 (ms)", "notifies", "streams", "events", "RedLock sections", "errors", "restarts"]
    head += [f"RSS {s} (MiB)" for s in ["bench", *slots, "redis-server"]]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---:"] * 8 + ["---", "---"] + ["---:"] * (len(slots) + 2)) + " |"]
    span = res["args"]["report_every"]
    for m in res["minutes"]:
        ops = m["ops"]
        errs = ", ".join(f"{k} ×{v}" for k, v in {**m["errors"], **m["problems"]}.items()) or "–"
        restarts = ", ".join(f"w{e['slot']} {'kill -9' if e['signal'] == 'SIGKILL' else 'SIGTERM'}" for e in res["restarts"]
                             if (m["minute"] - 1) * span <= e["at_s"] < m["minute"] * span) or "–"
        row = [str(m["minute"]), f"{m['calls']:,}", fmt(m["p50_ms"], 2), fmt(m["p99_ms"], 2), f"{ops.get('notify', 0):,}", f"{ops.get('stream', 0):,}",
               f"{ops.get('event', 0):,}", f"{ops.get('lock', 0):,}", errs, restarts, fmt(m["rss_mib"]["bench"])]
        row += [fmt(m["rss_mib"].get(s)) + ("*" if m["workers"].get(s, {}).get("new") and m["minute"] > 1 else "") for s in slots]
        row.append(fmt(m["rss_mib"]["redis-server"]))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def check_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    t, p, d = res["totals"], res["problems"], res["deliveries"]
    lp, cl, st = res["locked_procedure"], res["client_lock"], res["streams"]
    calls = sum(t.get(k, 0) for k in ("seq", "async", "boom", "locked"))
    dups = sum(v.get("duplicates", 0) for v in d.values())
    term = [e for e in res["restarts"] if e["signal"] == "SIGTERM"]
    kills = [e for e in res["restarts"] if e["signal"] == "SIGKILL"]
    logs = {k: sum(v.get(k, 0) for v in res["worker_logs"].values()) for k in (" WARNING ", " ERROR ", "Traceback")}
    rows = [
        ("calls answered correctly", f"{calls:,} (sequential {t.get('seq', 0):,}, concurrent {t.get('async', 0):,}, raising {t.get('boom', 0):,}, "
                                     f"lock-guarded {t.get('locked', 0):,})"),
        ("lost replies", str(p.get("lost_reply", 0))),
        ("misrouted replies", str(p.get("misrouted", 0))),
        ("duplicates", f"{dups} deliveries, {lp['duplicate_values']} lock-guarded counter values, {res['late_replies']} late replies at the client "
                       f"(at most {res['streams'].get('abandoned frames', 0)} expected: frames of streams left early)"),
        ("streams", f"{st.get('complete', 0):,} complete + {st.get('left early', 0):,} left early, {st.get('items', 0):,} items, "
                    f"{p.get('bad_stream', 0)} incomplete or out of order"),
    ]
    for target, v in sorted(d.items()):
        what = "notifications run" if target == "note" else f"events delivered to {target.split(':')[1]}"
        rows.append((what, f"{v.get('delivered', 0):,} of {v.get('sent', 0):,}; missing {v.get('missing', 0)}, duplicates "
                           f"{v.get('duplicates', 0)}, late {v.get('late', 0)}, unknown {v.get('unknown', 0)}"))
    rows += [
        ("lock-guarded procedure", f"{lp['ok_calls']:,} calls ok, {lp['sections_recorded']:,} sections, counter {lp['counter']:,}, "
                                   f"{lp['overlaps']} overlaps"),
        ("RedLock in the bench", f"{cl['sections']:,} sections, counter {cl['counter']:,}, {cl['overlaps']} overlaps, "
                                 f"{cl['fence_regressions']} fencing-token regressions"),
        ("worker restarts", f"{len(term)} SIGTERM (exit codes {sorted({e.get('exit_code') for e in term}) or '–'}, exit after "
                            f"{', '.join(str(e.get('exit_s')) for e in term) or '–'} s), {len(kills)} kill -9 (dead provider reaped after "
                            f"{', '.join(str(e.get('dead_provider_reaped_s')) for e in kills) or '–'} s)"),
        ("worker crashes", str(len(res["crashes"]))),
        ("unexpected errors", ", ".join(f"{k} ×{v}" for k, v in sorted(res["errors"].items())) or "0"),
        ("errors after kill -9 (documented)", ", ".join(f"{k} ×{v}" for k, v in sorted(res["excused_after_kill"].items())) or "0"),
        ("worker log lines", f"{logs[' WARNING ']} WARNING, {logs[' ERROR ']} ERROR, {logs['Traceback']} tracebacks"),
        ("call history", f"{res['call_history'].get('stored', '–')} records in the database "
                         f"{res['call_history'].get('by_status', '')}, {res['call_history']['waiting_in_redis']} batches still in Redis"),
    ]
    return rows


def markdown(res: dict[str, Any], argv: list[str]) -> str:
    m, a = res["machine"], res["args"]
    restarts = f"a restart every {a['restart_every']:g} s (every {ordinal(a['kill_every'])} restart a kill -9)" if a["restart_every"] else "no restarts"
    if a["restart_every"] and not a["kill_every"]:
        restarts = f"a restart every {a['restart_every']:g} s (no kill -9)"
    changed = f" (uncommitted changes in {', '.join(m['rpcapp_uncommitted_changes'])})" if m["rpcapp_uncommitted_changes"] else ""
    out = [f"Soak run: `.venv/bin/python bench/soak.py {' '.join(argv)}`: {a['minutes']:g} minutes, {a['workers']} workers "
           f"(DEBUG {'on' if a['django_debug'] else 'off'}), "
           f"--concurrency {a['concurrency']}, {a['stable_workers']} never restarted; {restarts}; "
           f"commit `{m['commit']}`{changed}; Redis {m['redis']}; {m['cpus']} CPUs, load average {m['loadavg_start'][0]} at the start.", ""]
    out += minute_table(res)
    out += ["", "Latency: `soak.echo` calls, sequential and concurrent together. `*`: a new worker process in that slot.", ""]
    out += ["| check | result |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in check_rows(res)]
    out += ["", "| process | pid | minutes | RSS then (MiB) | RSS at the end (MiB) | growth |", "| --- | ---: | --- | ---: | ---: | ---: |"]
    for g in res["memory"]:
        growth = (f"{g['growth_mib']:+.2f} MiB ({g['growth_pct']:+.1f} %, {g['growth_mib_per_min']:+.2f} MiB/min)"
                  if g["to_minute"] > g["from_minute"] else "– (one sample)")
        out.append(f"| {g['process']}{'' if g['long_lived'] else ' (restarted)'} | {g['pid'] or '–'} | {g['from_minute']}-{g['to_minute']} | "
                   f"{g['rss_from_mib']:.1f} | {g['rss_to_mib']:.1f} | {growth} |")
    keys = res["rpcapp_keys_at_end"]
    out += ["", f"rpcapp's Redis keys at the end: {sum(keys.values())} ({', '.join(f'`{k}` ×{n}' for k, n in keys.items())}); "
            f"per minute: {', '.join(str(m['redis']['rpcapp_keys']) for m in res['minutes'])}."]
    if res["worker_log_messages"]:
        out += ["", "Most frequent WARNING/ERROR lines in the workers' logs (numbers masked): "
                + "; ".join(f"{n} × `{msg[:120]}`" for msg, n in list(res["worker_log_messages"].items())[:6]) + "."]
    v = res["verdict"]
    out += ["", f"**Verdict: {v['status']}**"] + [f"- FAIL: {x}" for x in v["fails"]] + [f"- warning: {x}" for x in v["warnings"]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rpcapp-soak-"))
    bench = Bench(args, work)

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    watchdog = threading.Timer(args.max_seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
    watchdog.daemon = True
    watchdog.start()
    status = 1
    try:
        res = soak(bench, args, work)
        text, fails, warns = verdict(res)
        res["verdict"] = {"status": text, "fails": fails, "warnings": warns}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=str))
        print(markdown(res, argv))
        log(f"verdict {text}; JSON in {args.json}")
        status = 1 if fails else 0
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc}); stopping every process")
        status = 130
    except Exception:  # noqa: BLE001  (report, then clean up)
        log(traceback.format_exc())
    finally:
        watchdog.cancel()
        try:
            from rpcapp import runtime

            runtime.reset()
        except Exception as exc:  # noqa: BLE001
            log(f"closing the client: {exc}")
        bench.P.stop_all()
        if args.keep_logs or status != 0:
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

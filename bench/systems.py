"""The systems measured: the floor, rpcapp and Celery (RQ and gRPC are in bench/peers.py).

Each starts its worker processes on the bench's redis-server, measures a
sequential run and a run with N calls in flight, and stops its workers.
"""

from __future__ import annotations

import collections
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench import floor, procs
from bench.harness import ROOT, Bench, Cpu, Done, log, measure_sequential, run_window


class System:
    name = ""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.args = bench.args
        self.workers: list[Any] = []
        self.cpu: Cpu | None = None

    def close(self) -> None:
        for w in self.workers:
            self.bench.P.stop(w, timeout=15)
        self.workers = []

    def sequential(self) -> dict[str, Any]:
        raise NotImplementedError

    def window(self, n: int, duration: float) -> dict[str, Any]:
        raise NotImplementedError

    def throughput(self, n: int) -> dict[str, Any]:
        """A warm-up window, then a measured one with CPU accounting."""
        self.window(n, self.args.warmup_seconds)
        before = self.cpu.snap() if self.cpu else None
        res = self.window(n, self.args.duration)
        if self.cpu and before:
            res["cpu_per_call"] = Cpu.per_call(before, self.cpu.snap(), res["calls"])
        return res


class Floor(System):
    """Raw LPUSH/BLPOP: two bench/floor.py worker processes."""

    name = "floor"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.queue = f"bench:floor:req:{uuid.uuid4().hex[:8]}"
        argv = [sys.executable, str(ROOT / "bench" / "floor.py"), "worker", bench.url, self.queue]
        self.workers = [bench.P.start(f"floor-worker-{i}", argv) for i in range(2)]
        for w in self.workers:
            bench.wait_log(w, "floor worker ready", 20, "floor worker")
        self.cpu = Cpu([w.pid for w in self.workers], bench.redis_pid)
        self.client = floor.FloorClient(bench.url, self.queue)

    def close(self) -> None:
        self.client.close()
        super().close()

    def sequential(self) -> dict[str, Any]:
        return measure_sequential(self.client.call, self.args.calls, self.args.warmup, self.args.phase_timeout)

    def _mux(self, n: int, duration: float) -> dict[str, Any]:
        m = floor.MuxClient(self.bench.url, self.queue)
        try:
            return run_window(lambda done: m.send(lambda _ok: done(None)), n, duration, self.args.max_calls)
        finally:
            m.close()

    def _threads(self, n: int, duration: float) -> dict[str, Any]:
        res = floor.run_threads(self.bench.url, self.queue, n, duration, self.args.max_calls)
        return {**res, "per_s": round(res["per_s"], 1), "seconds": round(res["seconds"], 3)}

    def throughput(self, n: int) -> dict[str, Any]:
        """Both client shapes; the floor is the better of the two."""
        modes: dict[str, dict[str, Any]] = {}
        for mode, fn in (("mux", self._mux), ("threads", self._threads)):
            fn(n, self.args.warmup_seconds)
            before = self.cpu.snap() if self.cpu else None
            res = fn(n, self.args.duration)
            if self.cpu and before:
                res["cpu_per_call"] = Cpu.per_call(before, self.cpu.snap(), res["calls"])
            modes[mode] = res
        best = max(modes, key=lambda m: modes[m]["per_s"])
        return {"per_s": modes[best]["per_s"], "mode": best, "cpu_per_call": modes[best].get("cpu_per_call"), "modes": modes}


class Rpcapp(System):
    """Two ``manage.py runrpcworker --service tests`` processes; the client is
    ``rpcapp.runtime.get_client()`` in this process."""

    name = "rpcapp"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.namespace = f"bench{uuid.uuid4().hex[:8]}"
        bench.setup_django(self.namespace)
        from rpcapp import runtime
        from rpcapp.protocol import now_ms

        self.runtime = runtime
        argv = [sys.executable, str(ROOT / "manage.py"), "runrpcworker", "--service", "tests",
                "--concurrency", str(self.args.worker_concurrency), "--log-level", "INFO"]
        env = bench.worker_env()
        self.workers = [bench.P.start(f"rpcapp-worker-{i}", argv, env=env) for i in range(2)]
        for w in self.workers:
            bench.wait_log(w, "serving", 60, "rpcapp worker")
        runtime.reset()
        client = runtime.get_client()
        procs.wait_until(lambda: client.transport.count_live("tests", now_ms() - 5000)[0] >= 2, 20, "2 live rpcapp providers")
        self.cpu = Cpu([w.pid for w in self.workers], bench.redis_pid)
        self.counters = {"late_replies": 0, "rejected_replies": 0}
        self.park()

    @property
    def client(self) -> Any:
        return self.runtime.get_client()

    def park(self) -> None:
        """Close the client between rpcapp's measurements: its background
        threads (reply listener, sender, deadline timer) must not run while
        the floor and Celery are measured from this same process."""
        client = self.runtime._client
        if client is not None:
            for k in self.counters:
                self.counters[k] += getattr(client, k, 0)
        self.runtime.reset()

    def close(self) -> None:
        try:
            self.park()
        finally:
            super().close()

    def sequential(self) -> dict[str, Any]:
        client = self.client
        try:
            return measure_sequential(lambda: client.call("tests.noop"), self.args.calls, self.args.warmup, self.args.phase_timeout)
        finally:
            self.park()

    def throughput(self, n: int) -> dict[str, Any]:
        try:
            return super().throughput(n)
        finally:
            self.park()

    def submitter(self) -> Callable[[Done], None]:
        client = self.client

        def submit(done: Done) -> None:
            client.call_async("tests.noop").add_done_callback(lambda f: done(f.exception()))

        return submit

    def window(self, n: int, duration: float) -> dict[str, Any]:
        return run_window(self.submitter(), n, duration, self.args.max_calls)

    def memory(self) -> dict[str, Any]:
        """RSS of each worker every ``mem_every`` calls over ``mem_calls`` calls, 32 in flight."""
        a = self.args
        samples: list[dict[str, Any]] = []

        def sample(calls: int) -> None:
            samples.append({"calls": calls, "rss": [procs.tree_rss(w.pid) for w in self.workers], "redis": self.bench.redis_memory(f"{self.namespace}:*")})

        sample(0)
        done = errors = 0
        submit = self.submitter()
        try:
            while done < a.mem_calls:
                res = run_window(submit, 32, a.phase_timeout, min(a.mem_every, a.mem_calls - done))
                done += res["calls"]
                errors += res.get("errors", 0)
                if res["calls"] == 0 or "stalled" in res:
                    break
                sample(done)
        finally:
            self.park()
        per_worker = []
        for i in range(len(self.workers)):
            s, e = samples[0]["rss"][i], samples[-1]["rss"][i]
            per_worker.append({"start_kib": s // 1024, "end_kib": e // 1024, "growth_kib": (e - s) // 1024,
                               "growth_pct": round((e - s) / s * 100, 2) if s else None, "samples_kib": [smp["rss"][i] // 1024 for smp in samples]})
        log("rpcapp memory: " + "; ".join(f"worker {i}: {w['start_kib'] / 1024:.1f} -> {w['end_kib'] / 1024:.1f} MiB" for i, w in enumerate(per_worker)))
        return {"calls": done, "every": a.mem_every, "errors": errors, "workers": per_worker,
                "redis_used_memory": [s["redis"]["used_memory"] for s in samples], "redis_keys": [s["redis"]["keys"] for s in samples]}

    def diagnostics(self) -> dict[str, Any]:
        """What rpcapp counted itself, and any warning its workers logged."""
        self.park()
        out: dict[str, Any] = dict(self.counters)
        try:
            out["worker_stats"] = self.client.transport.stats("tests")
        except Exception as exc:  # noqa: BLE001
            out["worker_stats"] = {"error": str(exc)}
        finally:
            self.park()
        for i, w in enumerate(self.workers):
            lines = self.bench.P.log_tail(w, 500_000).splitlines()
            warnings = [ln for ln in lines if " WARNING " in ln or " ERROR " in ln or "Traceback" in ln]
            if warnings:
                out.setdefault("worker_warnings", {})[str(i)] = warnings[:10]
        return out


class Celery(System):
    """``noop.delay().get()``: one prefork worker, concurrency 2 (bench/celery_app.py)."""

    name = "celery"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        import os

        os.environ["BENCH_REDIS_URL"] = bench.url
        from bench import celery_app

        self.app = celery_app.app
        self.noop = celery_app.noop
        env = dict(os.environ, PYTHONPATH=str(ROOT), BENCH_REDIS_URL=bench.url)
        argv = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "-Q", celery_app.QUEUE, "-c", "2", "-P", "prefork",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING", "-n", f"bench-{uuid.uuid4().hex[:6]}@localhost"]
        worker = bench.P.start("celery-worker", argv, env=env)
        self.workers = [worker]

        def ready() -> bool:
            if worker.poll() is not None:
                raise RuntimeError(f"celery worker exited:\n{bench.P.log_tail(worker)}")
            try:
                self.noop.delay().get(timeout=2)
                return True
            except Exception:  # noqa: BLE001  (not up yet)
                return False

        procs.wait_until(ready, 60, "celery worker")
        self.cpu = Cpu([worker.pid], bench.redis_pid)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.app.close()

    def sequential(self) -> dict[str, Any]:
        return measure_sequential(lambda: self.noop.delay().get(timeout=10), self.args.celery_calls, self.args.warmup, self.args.phase_timeout)

    def window(self, n: int, duration: float) -> dict[str, Any]:
        """N in flight from one thread: take results oldest first, send one per result."""
        pc = time.perf_counter
        t0 = pc()
        end = t0 + duration
        window: collections.deque[Any] = collections.deque(self.noop.delay() for _ in range(n))
        sent, ok, last = n, 0, t0
        while window:
            window.popleft().get(timeout=10)
            ok += 1
            last = pc()
            if last < end and sent < self.args.max_calls:
                window.append(self.noop.delay())
                sent += 1
        elapsed = last - t0
        return {"calls": ok, "seconds": round(elapsed, 3), "per_s": round(ok / elapsed, 1) if elapsed > 0 else 0.0}


def _rq(bench: Bench) -> System:
    from bench.peers import RQ

    return RQ(bench)


def _grpc(bench: Bench) -> System:
    from bench.peers import GRPC

    return GRPC(bench)


SYSTEMS: dict[str, Callable[[Bench], System]] = {"floor": Floor, "rpcapp": Rpcapp, "celery": Celery, "rq": _rq, "grpc": _grpc}

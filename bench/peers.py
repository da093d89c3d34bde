"""The other peers of the comparison, beside the floor, rpcapp and Celery:

- **RQ**: ``q.enqueue(noop)`` then ``job.latest_result(timeout=...)`` (RQ's
  blocking result wait), two ``rq worker`` processes on the bench's Redis
  (``rq worker --worker-class rq.worker.SimpleWorker``: no fork per job, its
  fastest mode);
- **gRPC**: a unary call to a no-op method of a ``grpcio`` server on
  loopback (a generic handler on raw bytes: no protobuf step), one server
  process with 8 threads. It does not go through Redis at all: it shows what
  a direct connection between caller and callee costs.

``python bench/peers.py grpc-server PORT`` runs the gRPC server.
"""

from __future__ import annotations

import collections
import sys
import time
import uuid
from concurrent import futures
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the grpc server

from bench import procs  # noqa: E402
from bench.harness import ROOT, Bench, Cpu, Done, measure_sequential, run_window  # noqa: E402
from bench.systems import System  # noqa: E402


def noop() -> None:
    """The RQ job."""
    return None


class RQ(System):
    name = "rq"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        import redis
        from rq import Queue

        self.conn = redis.Redis.from_url(bench.url)
        self.queue_name = f"bench-{uuid.uuid4().hex[:6]}"
        self.queue = Queue(self.queue_name, connection=self.conn)
        import os

        env = dict(os.environ, PYTHONPATH=str(ROOT))
        rq_bin = str(Path(sys.executable).parent / "rq")
        argv = [rq_bin, "worker", "--url", bench.url, "--worker-class", "rq.worker.SimpleWorker", "--logging_level", "WARNING", self.queue_name]
        self.workers = [bench.P.start(f"rq-worker-{i}", argv, env=env) for i in range(2)]

        def ready() -> bool:
            for w in self.workers:
                if w.poll() is not None:
                    raise RuntimeError(f"rq worker exited:\n{bench.P.log_tail(w)}")
            try:
                return self._call(2.0)
            except Exception:  # noqa: BLE001  (not up yet)
                return False

        procs.wait_until(ready, 60, "rq workers")
        self.cpu = Cpu([w.pid for w in self.workers], bench.redis_pid)

    def _call(self, timeout: float = 10.0) -> bool:
        job = self.queue.enqueue(noop)
        result = job.latest_result(timeout=int(max(1, timeout)))
        if result is None:
            raise TimeoutError("no RQ result")
        return True

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.conn.close()

    def sequential(self) -> dict[str, Any]:
        return measure_sequential(self._call, self.args.celery_calls, self.args.warmup, self.args.phase_timeout)

    def window(self, n: int, duration: float) -> dict[str, Any]:
        """N in flight from one thread, oldest result first (as for Celery)."""
        pc = time.perf_counter
        t0 = pc()
        end = t0 + duration
        window: collections.deque[Any] = collections.deque(self.queue.enqueue(noop) for _ in range(n))
        sent, ok, last = n, 0, t0
        while window:
            if window.popleft().latest_result(timeout=10) is None:
                raise TimeoutError("no RQ result")
            ok += 1
            last = pc()
            if last < end and sent < self.args.max_calls:
                window.append(self.queue.enqueue(noop))
                sent += 1
        elapsed = last - t0
        return {"calls": ok, "seconds": round(elapsed, 3), "per_s": round(ok / elapsed, 1) if elapsed > 0 else 0.0}


METHOD = "/bench.Bench/Noop"


def serve(port: int) -> None:
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler("bench.Bench", {"Noop": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("grpc server ready", flush=True)
    server.wait_for_termination()


class GRPC(System):
    name = "grpc"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        import grpc

        from bench.harness import free_port

        port = free_port()
        self.workers = [bench.P.start("grpc-server", [sys.executable, str(ROOT / "bench" / "peers.py"), "grpc-server", str(port)])]
        bench.wait_log(self.workers[0], "grpc server ready", 30, "grpc server")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.noop = self.channel.unary_unary(METHOD)
        procs.wait_until(lambda: self.noop(b"", timeout=2) == b"", 20, "grpc server answering")
        self.cpu = Cpu([w.pid for w in self.workers], bench.redis_pid)

    def close(self) -> None:
        try:
            self.channel.close()
        finally:
            super().close()

    def sequential(self) -> dict[str, Any]:
        return measure_sequential(lambda: self.noop(b"", timeout=10), self.args.calls, self.args.warmup, self.args.phase_timeout)

    def window(self, n: int, duration: float) -> dict[str, Any]:
        def submit(done: Done) -> None:
            self.noop.future(b"", timeout=10).add_done_callback(lambda f: done(f.exception()))

        return run_window(submit, n, duration, self.args.max_calls)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "grpc-server":
        serve(int(sys.argv[2]))

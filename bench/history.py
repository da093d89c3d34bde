"""What recording call history costs a call: the sequential no-op round trip
with recording on and off, in the same run (two pairs of worker processes,
one recording, one not, each in its own namespace), interleaved in blocks;
plus 32 calls in flight on each.

    .venv/bin/python bench/history.py [--calls 6000] [--block 250]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import workers  # noqa: E402
from rpcapp.testing import RedisServer, wait_for  # noqa: E402


def start_workers(url: str, ns: str, record: bool) -> list[subprocess.Popen[bytes]]:
    env = workers.env_for(url, ns, RECORD_CALLS=record)
    return [workers.start(env, ["tests"]) for _ in range(2)]


def in_flight(client: Any, n: int, seconds: float) -> float:
    """Calls/s with ``n`` calls always in flight."""
    done = 0
    lock = threading.Lock()
    end = time.monotonic() + seconds
    finished = threading.Event()

    def submit() -> None:
        if time.monotonic() >= end:
            return
        client.call_async("tests.noop").add_done_callback(on_done)

    def on_done(_: Any) -> None:
        nonlocal done
        with lock:
            done += 1
        if time.monotonic() < end:
            submit()
        else:
            finished.set()

    started = time.monotonic()
    for _ in range(n):
        submit()
    finished.wait(seconds + 10)
    time.sleep(0.2)
    return done / (time.monotonic() - started)


def sequential(clients: dict[str, Any], calls: int, block: int) -> dict[str, list[float]]:
    """Round trips (µs) of each client, in interleaved blocks (order reversed every other block)."""
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for b in range(calls // block):
        order = list(clients.items())
        if b % 2:
            order.reverse()
        for name, client in order:
            for _ in range(block):
                t = time.perf_counter_ns()
                client.call("tests.noop")
                samples[name].append((time.perf_counter_ns() - t) / 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--block", type=int, default=250)
    args = parser.parse_args()
    with RedisServer() as server:
        os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
        os.environ["RPCAPP_TEST_OVERRIDES"] = json.dumps({"REDIS_URL": server.url, "NAMESPACE": "unused"})
        import django

        django.setup()
        from rpcapp.client import Client, ClientSettings
        from rpcapp.runtime import build_signer
        from rpcapp.transport import Transport, connect

        spaces = {"recording on": "hon" + uuid.uuid4().hex[:6], "recording off": "hoff" + uuid.uuid4().hex[:6]}
        procs = [w for name, ns in spaces.items() for w in start_workers(server.url, ns, name == "recording on")]
        clients = {name: Client(Transport(connect(server.url), ns), build_signer(), ClientSettings()) for name, ns in spaces.items()}
        try:
            for c in clients.values():
                wait_for(lambda c=c: c.transport.count_live("tests", 0)[0] >= 2, 30, message="workers")
                for _ in range(300):
                    c.call("tests.noop")
            samples = sequential(clients, args.calls, args.block)
            rounds: dict[str, list[float]] = {name: [] for name in clients}
            for r in range(6):  # alternating, 3 s each; the median of 3 per side
                for name, c in (list(clients.items()) if r % 2 == 0 else list(clients.items())[::-1]):
                    if len(rounds[name]) < 3:
                        rounds[name].append(in_flight(c, 32, 3.0))
            throughput = {name: round(statistics.median(v)) for name, v in rounds.items()}
            stored = clients["recording on"].transport.redis.xlen(f"{spaces['recording on']}:history")
        finally:
            workers.stop(procs)
    off = statistics.median(samples["recording off"])
    on = statistics.median(samples["recording on"])
    print(json.dumps({
        "p50_us": {name: round(statistics.median(v), 1) for name, v in samples.items()},
        "p50_overhead_pct": round((on / off - 1) * 100, 2),
        "calls_per_s_32_in_flight": throughput,
        "throughput_overhead_pct": round((1 - throughput["recording on"] / throughput["recording off"]) * 100, 2),
        "records_waiting_in_redis": stored,
    }, indent=2))


if __name__ == "__main__":
    main()

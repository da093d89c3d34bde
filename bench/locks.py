"""Uncontended lock cost: RedLock acquire + release on one Redis, against
the round trip of a PING on the same connection, interleaved (the target: at
most two round trips' worth of time).

    .venv/bin/python bench/locks.py [--n 5000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from rpcapp.redlock import RedLock  # noqa: E402
from rpcapp.testing import RedisServer  # noqa: E402


def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t) / 1000)
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    with RedisServer() as server:
        client = redis.Redis(port=server.port)

        def lock_cycle() -> None:
            lock = RedLock("bench", ttl=5, masters=[client], namespace="bench")
            assert lock.acquire(blocking=False)
            lock.release()

        timed(client.ping, 500)  # warm-up
        timed(lock_cycle, 500)
        # Interleaved in blocks of 100, so that both see the same (noisy) machine.
        ping: list[float] = []
        cycle: list[float] = []
        for _ in range(max(1, args.n // 100)):
            ping += timed(client.ping, 100)
            cycle += timed(lock_cycle, 100)
        ping.sort()
        cycle.sort()
        client.close()
    p50_ping, p50_cycle = statistics.median(ping), statistics.median(cycle)

    print("| measure | p50 (µs) | p99 (µs) |")
    print("| --- | ---: | ---: |")
    print(f"| PING round trip | {p50_ping:.1f} | {ping[int(len(ping) * 0.99)]:.1f} |")
    print(f"| RedLock acquire + release (uncontended) | {p50_cycle:.1f} | {cycle[int(len(cycle) * 0.99)]:.1f} |")
    ratio = p50_cycle / p50_ping
    print(f"\nacquire + release = {ratio:.2f} round trips (target: at most 2) -> {'met' if ratio <= 2.0 else 'MISSED'}")


if __name__ == "__main__":
    main()

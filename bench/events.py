"""Event fan-out: N events published to two subscribing services (``ledger``
and ``search``, one worker process each), checked delivered exactly once to
each, with the publish rate and the end-to-end delivery throughput.

    .venv/bin/python bench/events.py [--events 10000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench import workers  # noqa: E402
from rpcapp.testing import RedisServer, wait_for  # noqa: E402

SERVICES = ("ledger", "search")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with RedisServer() as server:
        ns = "fan" + uuid.uuid4().hex[:8]
        env = workers.env_for(server.url, ns)
        os.environ.update({k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "RPCAPP_TEST_OVERRIDES")})
        import django

        django.setup()
        from rpcapp import publish

        r = redis.Redis(port=server.port)
        procs = [workers.start(env, [svc], "--concurrency", str(args.concurrency)) for svc in SERVICES]
        try:
            wait_for(lambda: all(r.zcard(f"{ns}:{{{s}}}:consumers") for s in SERVICES), 30, message="workers")
            publish("bench.fanout", {"n": -1})  # warm-up (connections, subscriber lookup)
            wait_for(lambda: all(r.hlen(f"{ns}:fanout:{s}") for s in SERVICES), 10, message="warm-up")
            r.delete(*[f"{ns}:fanout:{s}" for s in SERVICES])
            t0 = time.perf_counter()
            for n in range(args.events):
                publish("bench.fanout", {"n": n, "order": {"id": n, "total": "12.50", "lines": [1, 2, 3]}})
            published = time.perf_counter() - t0
            wait_for(lambda: all(r.hlen(f"{ns}:fanout:{s}") >= args.events for s in SERVICES), 300, interval=0.01, message="delivery")
            delivered = time.perf_counter() - t0
            time.sleep(1.0)  # anything delivered twice would show by now
            counts = {s: [int(v) for v in r.hgetall(f"{ns}:fanout:{s}").values()] for s in SERVICES}
        finally:
            workers.stop(procs)
    exact = all(len(c) == args.events and set(c) == {1} for c in counts.values())
    result = {
        "events": args.events,
        "services": len(SERVICES),
        "deliveries": sum(len(c) for c in counts.values()),
        "exactly_once": exact,
        "duplicates": sum(sum(c) - len(c) for c in counts.values()),
        "publish_per_s": round(args.events / published),
        "deliveries_per_s": round(args.events * len(SERVICES) / delivered),
        "seconds_to_deliver_all": round(delivered, 2),
    }
    print(json.dumps(result, indent=2))
    sys.exit(0 if exact else 1)


if __name__ == "__main__":
    main()

"""What the service catalog costs a call: the sequential no-op round trip of
``tests.noop`` with the catalog applied and ignored (``RPCAPP["CATALOG"]``),
in the same run, interleaved in blocks, on two worker processes; plus the
same call under the ``round_robin`` policy (routed to a provider's inbox).

    .venv/bin/python bench/catalog.py [--calls 5000] [--block 250]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import workers  # noqa: E402
from rpcapp.testing import RedisServer, wait_for  # noqa: E402


def measure(clients: dict[str, Any], rr: Any, entry: Any, args: argparse.Namespace) -> dict[str, list[float]]:
    """Blocks of sequential calls from each client in turn (order reversed every other block)."""
    rr_ns = "catalog on (round_robin)"
    samples: dict[str, list[float]] = {name: [] for name in [*clients, rr_ns]}

    def switch(policy: str) -> None:
        rr.transport.catalog_put({"tests": dataclasses.replace(entry, policy=policy).to_wire()})
        for c in [x for x in [*clients.values(), rr] if x.governor.enabled]:
            wait_for(lambda c=c: c.governor.config("tests").policy == policy, 5)

    for b in range(args.calls // args.block):
        order = [*clients.items(), (rr_ns, rr)]
        if b % 2:
            order.reverse()
        for name, client in order:
            if name == rr_ns:
                switch("round_robin")
            for _ in range(args.block):
                t = time.perf_counter_ns()
                client.call("tests.noop")
                samples[name].append((time.perf_counter_ns() - t) / 1000)
            if name == rr_ns:
                switch("queue")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--block", type=int, default=250)
    args = parser.parse_args()
    with RedisServer() as server:
        ns = "cat" + uuid.uuid4().hex[:8]
        env = workers.env_for(server.url, ns)
        os.environ.update({k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "RPCAPP_TEST_OVERRIDES")})
        import django

        django.setup()
        from rpcapp import runtime
        from rpcapp.catalog import ProcedureConfig, ServiceConfig
        from rpcapp.client import Client

        procs = [workers.start(env, ["tests"]) for _ in range(2)]
        try:
            base = runtime.client_settings()
            clients = {
                "catalog off": Client(runtime.build_transport(), runtime.build_signer(), dataclasses.replace(base, catalog=False)),
                "catalog on (queue)": Client(runtime.build_transport(), runtime.build_signer(), dataclasses.replace(base, catalog=True)),
            }
            entry = ServiceConfig(known=True, policy="queue", procedures={"tests.noop": ProcedureConfig(timeout=5.0)})
            clients["catalog off"].transport.catalog_put({"tests": entry.to_wire()})
            wait_for(lambda: clients["catalog off"].transport.count_live("tests", 0)[0] >= 2, 30, message="workers")
            rr = Client(runtime.build_transport(), runtime.build_signer(), dataclasses.replace(base, catalog=True))
            for client in [*clients.values(), rr]:
                for _ in range(300):
                    client.call("tests.noop")  # warm-up: connections, specs, catalog cache
            samples = measure(clients, rr, entry, args)
            # The lookup alone, in-process: what admitting one call costs
            on = clients["catalog on (queue)"]
            spec = on._spec("tests.noop")
            t = time.perf_counter_ns()
            for _ in range(100_000):
                on.governor.admit(spec, [], {}, None)
            admit_us = (time.perf_counter_ns() - t) / 100_000 / 1000
        finally:
            workers.stop(procs)
    off = statistics.median(samples["catalog off"])
    result: dict[str, object] = {name: {"p50_us": round(statistics.median(v), 1), "mean_us": round(statistics.fmean(v), 1), "calls": len(v),
                     "p50_vs_off_pct": round((statistics.median(v) / off - 1) * 100, 2)} for name, v in samples.items()}
    result["admit_alone_us"] = round(admit_us, 2)
    result["admit_vs_off_p50_pct"] = round(admit_us / off * 100, 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

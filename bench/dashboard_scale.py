"""The dashboard at scale: 1,000,000 call records (a week of 20 procedures)
generated straight into the database, rolled up, then the overview, its
live data and the history pages rendered through Django (medians of 5).

    .venv/bin/python bench/dashboard_scale.py --db sqlite            # a fresh SQLite file
    .venv/bin/python bench/dashboard_scale.py --db postgres          # a fresh database on the local PostgreSQL
    [--records 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpcapp.testing import RedisServer  # noqa: E402

PROCEDURES = [f"svc{i // 4}.method{i % 4}" for i in range(20)]
STATUSES = ["ok"] * 97 + ["remote_error", "timeout", "unavailable"]


def database_url(kind: str) -> tuple[str, str]:
    if kind == "sqlite":
        path = Path(tempfile.mkdtemp(prefix="rpcbench-")) / "bench.sqlite3"
        return f"sqlite:///{path}", str(path)
    name = "rpcapp_bench_" + uuid.uuid4().hex[:6]
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return f"postgres://postgres@127.0.0.1:5432/{name}", name


def generate(n: int) -> float:
    """Insert n records over the last 7 days; returns seconds."""
    from django.db import connection, transaction
    from django.utils import timezone

    rng = random.Random(7)
    now = timezone.now()
    span = 7 * 24 * 3600
    started = time.perf_counter()
    sql = (
        "INSERT INTO rpcapp_callrecord (id, procedure, provider, caller, status, queued_ms, run_ms, total_ms, error, args_preview, trace_id, parent_id, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )
    batch = []
    with transaction.atomic(), connection.cursor() as cursor:
        for i in range(n):
            call_id = f"{i:032x}"
            status = rng.choice(STATUSES)
            run = rng.lognormvariate(0, 1.2)
            batch.append((call_id, rng.choice(PROCEDURES), f"host{i % 6}:1:abc", "web:1", status, rng.random(), run, run + rng.random() * 2,
                          "" if status == "ok" else f"{status}: simulated", '{"a":1,"b":2}', call_id, "",
                          now - __import__("datetime").timedelta(seconds=rng.random() * span)))
            if len(batch) == 10_000:
                cursor.executemany(sql, batch)
                batch = []
        if batch:
            cursor.executemany(sql, batch)
    return time.perf_counter() - started


def timed(http: object, url: str, n: int = 5) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        response = http.get(url)  # type: ignore[attr-defined]
        samples.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return round(statistics.median(samples), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    url, name = database_url(args.db)
    os.environ["DATABASE_URL"] = url
    with RedisServer() as server:
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        os.environ["RPCAPP_TEST_OVERRIDES"] = json.dumps({"REDIS_URL": server.url, "NAMESPACE": "scale"})
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.test import Client

        from rpcapp import history
        from rpcapp.models import CallRecord

        call_command("migrate", verbosity=0)
        generated = generate(args.records)
        t = time.perf_counter()
        rollups = history.roll_up()
        rolled = time.perf_counter() - t
        staff = get_user_model().objects.create_user("staff", password="pw", is_staff=True)
        http = Client()
        http.force_login(staff)
        deep = CallRecord.objects.order_by("-created_at", "-id").values_list("created_at", "id")[500_000]
        result = {
            "database": args.db,
            "records": CallRecord.objects.count(),
            "rollup_rows": rollups,
            "generate_s": round(generated, 1),
            "roll_up_s": round(rolled, 1),
            "overview_ms": timed(http, "/rpc/dashboard/"),
            "overview_week_ms": timed(http, "/rpc/dashboard/?range=week"),
            "live_data_ms": timed(http, "/rpc/dashboard/data.json?range=day"),
            "history_ms": timed(http, "/rpc/dashboard/calls/"),
            "history_filtered_ms": timed(http, "/rpc/dashboard/calls/?procedure=svc3.method1&status=remote_error"),
            "history_slower_than_ms": timed(http, "/rpc/dashboard/calls/?slower_than=20"),
            "history_page_500k_deep_ms": timed(http, f"/rpc/dashboard/calls/?before={deep[0].isoformat()}|{deep[1]}".replace("+", "%2B")),
        }
    print(json.dumps(result, indent=2))
    if args.db == "postgres":
        from django.db import connections

        connections.close_all()
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE {name}"], capture_output=True)


if __name__ == "__main__":
    main()

"""The maintenance without Celery: workers take turns at it, ``rpcmaintain``
runs it from cron or systemd; a worker writes its own Provider row."""

from __future__ import annotations

import datetime as dt
import io
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from rpcapp import maintenance, runtime
from rpcapp.history import Recorder
from rpcapp.locks import RedLock
from rpcapp.models import CallRecord, CallRollup, OutboxMessage, Provider
from rpcapp.testing import wait_for

from .conftest import ROOT, Processes

pytestmark = pytest.mark.django_db(transaction=True)

SHORT = {"reap_providers": 1.0, "relay_outbox": 1.0, "roll_up_calls": 1.0, "prune_history": 1.0}


@pytest.fixture
def short(settings: Any, rpc_conf: dict[str, Any]) -> dict[str, Any]:
    settings.RPCAPP = {**rpc_conf, "MAINTENANCE_PERIODS": SHORT, "DASHBOARD_CACHE_TTL": 0}
    return settings.RPCAPP  # type: ignore[no-any-return]


def _chart_points(admin_client: Any) -> int:
    data = admin_client.get(reverse("rpcapp:dashboard-data")).json()
    return sum(1 for v in data["series"]["throughput"] if v) if data["procedures"] else 0


def test_a_running_worker_rolls_up_for_the_dashboard_and_keeps_its_provider_row(short: dict[str, Any], admin_client: Any) -> None:
    # Given a worker that owns its process (as runrpcworker runs it), and no Celery
    worker = runtime.build_worker(concurrency=2)
    recorder = Recorder(runtime.build_transport(), worker.name)  # runrpcworker starts one too
    thread = threading.Thread(target=worker.run)
    thread.start()
    recorder.start()
    try:
        row = wait_for(lambda: Provider.objects.filter(id=worker.name).first(), 10, message="the worker's Provider row")
        assert row.state == "live" and row.pid and set(row.services) == set(worker.services)
        # When calls are made
        client = runtime.get_client()
        for i in range(5):
            client.call("calculator.add", i, 1)
        # Then within a minute the rollups exist and the dashboard's charts show them
        wait_for(lambda: CallRollup.objects.filter(procedure="calculator.add", period=1).exists(), 60, 0.2, "rollups")
        wait_for(lambda: _chart_points(admin_client), 60, 0.5, "chart points")
        data = admin_client.get(reverse("rpcapp:dashboard-data")).json()
        assert any(p["procedure"] == "calculator.add" and p["calls"] == 5 for p in data["procedures"])
    finally:
        worker.stop(5.0)
        thread.join(10)
        recorder.stop()
        worker.transport.close()
    # And at stop its row is marked dead
    assert Provider.objects.get(id=worker.name).state == "dead"


def test_rpcmaintain_once_runs_every_job(short: dict[str, Any]) -> None:
    now = timezone.now()
    CallRecord.objects.create(id="old", procedure="p.x", status="ok", total_ms=1.0, created_at=now - dt.timedelta(days=30))
    CallRecord.objects.create(id="new", procedure="p.x", status="ok", total_ms=1.0, created_at=now)
    Provider.objects.create(id="ghost:1:abc", state="live", services=["calculator"])
    OutboxMessage.objects.create(kind=OutboxMessage.EVENT, name="orders.created", payload={"n": 1}, event_id="e1")
    out = io.StringIO()
    call_command("rpcmaintain", "--once", stdout=out)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == list(maintenance.JOBS)
    assert "1 message(s) sent" in lines[1] and "1 record(s) and 0 rollup(s) deleted" in lines[3]
    assert list(CallRecord.objects.values_list("id", flat=True)) == ["new"]  # pruned
    assert CallRollup.objects.filter(procedure="p.x").exists()  # rolled up
    assert Provider.objects.get(id="ghost:1:abc").state == "dead"  # reaped
    assert not OutboxMessage.objects.exists()  # relayed


def test_a_job_under_way_elsewhere_is_skipped(short: dict[str, Any]) -> None:
    held = RedLock("rpcapp:task:roll_up_calls", ttl=10)
    assert held.acquire(blocking=False)
    try:
        assert maintenance.run_exclusive("roll_up_calls") == (False, None)
        assert maintenance.run("roll_up_calls").summary() == "roll_up_calls: skipped (running elsewhere)"
    finally:
        held.release()
    assert maintenance.run("roll_up_calls").ran


def test_two_maintainers_take_turns_and_never_run_a_job_at_once(short: dict[str, Any], settings: Any, monkeypatch: Any) -> None:
    settings.RPCAPP = {**short, "MAINTENANCE_PERIODS": {**SHORT, "roll_up_calls": 0.5}}
    running, most, runs = [0], [0], []
    guard = threading.Lock()

    def slow_job() -> int:
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
            runs.append(time.monotonic())
        time.sleep(0.2)
        with guard:
            running[0] -= 1
        return 0

    monkeypatch.setitem(maintenance.JOBS, "roll_up_calls", slow_job)
    stop = threading.Event()
    maintainers = [threading.Thread(target=maintenance.Schedule().loop, args=(stop, 0.02)) for _ in range(3)]
    started = time.monotonic()
    for t in maintainers:
        t.start()
    time.sleep(2.6)
    stop.set()
    for t in maintainers:
        t.join(5)
    elapsed = time.monotonic() - started
    assert most[0] == 1  # never two at once
    assert 3 <= len(runs) <= elapsed / 0.5 + 1  # about once a period over all three, not once each
    assert all(b - a >= 0.45 for a, b in zip(runs, runs[1:], strict=False))


def test_nothing_is_claimed_without_rpcapp_tables(short: dict[str, Any], monkeypatch: Any) -> None:
    monkeypatch.setattr(maintenance, "migrated", lambda: False)
    assert maintenance.Schedule().run_due() == []
    assert RedLock("rpcapp:turn:roll_up_calls", ttl=1).acquire(blocking=False)  # no turn was taken


def test_the_celery_tasks_need_the_celery_extra(monkeypatch: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setitem(sys.modules, "celery", None)
    monkeypatch.delitem(sys.modules, "rpcapp.tasks", raising=False)
    with pytest.raises(ImproperlyConfigured, match=r"rpcapp\[celery\]"):
        __import__("rpcapp.tasks")


# -- real runrpcworker processes, their own migrated database ---------------------------------
def _query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db, timeout=5) as conn:
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []


def test_runrpcworker_processes_do_the_maintenance_and_their_provider_rows(processes: Processes, tmp_path: Path, monkeypatch: Any) -> None:
    db = tmp_path / "workers.sqlite3"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{db}")
    processes.conf["MAINTENANCE_PERIODS"] = SHORT
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v", "0"], cwd=ROOT, env=processes.env(), check=True, timeout=120)
    # Given two worker processes and no Celery
    first = processes.start("--service", "calculator")
    processes.start("--service", "calculator")
    names = wait_for(lambda: [r[0] for r in _query(db, "select id from rpcapp_provider where state = 'live'")] or None, 20, message="Provider rows")
    assert len(names) >= 1
    wait_for(lambda: len(_query(db, "select id from rpcapp_provider where state = 'live'")) == 2, 20, message="both Provider rows")
    # When calls are made
    client = runtime.get_client()
    for i in range(6):
        client.call("calculator.add", i, 2)
    # Then the rollups appear within a minute
    wait_for(lambda: _query(db, "select sum(count) from rpcapp_callrollup where procedure = 'calculator.add' and period = 1") == [(6,)], 60, 0.5, "rollups")
    # And a worker stopped marks its own row dead
    pid = first.pid
    first.send_signal(signal.SIGTERM)
    first.wait(30)
    rows = _query(db, "select state from rpcapp_provider where pid = ?", pid)
    assert rows == [("dead",)], processes.log(first)
    info = [orjson.loads(v) for v in client.transport.providers_info("calculator").values()]
    assert pid not in [i["pid"] for i in info]


# -- the dashboard's aggregates in Django's cache ----------------------------------------------
def _add_rollup(procedure: str) -> None:
    CallRollup.objects.create(procedure=procedure, minute=timezone.now().replace(second=0, microsecond=0), count=3, b0=3)


def test_the_dashboard_aggregates_are_kept_briefly_in_the_django_cache(settings: Any, rpc_conf: dict[str, Any], admin_client: Any) -> None:
    from django.core.cache import caches

    settings.CACHES = {**settings.CACHES, "rpc": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "rpc-test"}}
    settings.RPCAPP = {**rpc_conf, "CACHE_ALIAS": "rpc", "DASHBOARD_CACHE_TTL": 60}
    url = reverse("rpcapp:dashboard-data")
    assert admin_client.get(url).json()["procedures"] == []
    _add_rollup("p.cached")
    assert admin_client.get(url).json()["procedures"] == []  # the cached answer, for a few seconds
    assert [p["procedure"] for p in admin_client.get(url, {"range": "day", "sort": "calls"}).json()["procedures"]] == []  # hourly rows: none
    assert [p["procedure"] for p in admin_client.get(url, {"sort": "calls"}).json()["procedures"]] == ["p.cached"]  # another filter
    caches["rpc"].clear()
    assert [p["procedure"] for p in admin_client.get(url).json()["procedures"]] == ["p.cached"]


def test_a_cache_whose_server_is_away_does_not_break_the_dashboard(settings: Any, rpc_conf: dict[str, Any], admin_client: Any) -> None:
    from rpcapp.testing import free_port

    settings.CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": f"redis://127.0.0.1:{free_port()}/1"}}
    settings.RPCAPP = {**rpc_conf, "DASHBOARD_CACHE_TTL": 5}
    _add_rollup("p.nocache")
    answer = admin_client.get(reverse("rpcapp:dashboard-data"))
    assert answer.status_code == 200 and [p["procedure"] for p in answer.json()["procedures"]] == ["p.nocache"]


def test_rpcmaintain_runs_until_sigterm(processes: Processes, tmp_path: Path, monkeypatch: Any) -> None:
    db = tmp_path / "cron.sqlite3"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{db}")
    processes.conf["MAINTENANCE_PERIODS"] = SHORT
    env = processes.env()
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120)
    log = tmp_path / "rpcmaintain.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-u", str(ROOT / "manage.py"), "rpcmaintain", "--tick", "0.1"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "roll_up_calls:" in log.read_text(), 20, 0.1, "a first round")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "rpcmaintain stopped" in text and all(f"{job}:" in text for job in maintenance.JOBS), text

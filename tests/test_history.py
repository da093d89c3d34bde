"""Call history: records from workers and callers, merged and stored off the
call path; rollups, percentiles, pruning, the Celery tasks and /metrics."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from django.utils import timezone

from rpcapp import history, runtime
from rpcapp.errors import RemoteError, RpcTimeout
from rpcapp.models import CallRecord, CallRollup
from rpcapp.testing import running_worker, wait_for
from tests.conftest import provoke_late_reply

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_kind_of_call_is_recorded(client: Any, worker: Any, admin_user: Any) -> None:
    import asyncio
    import base64

    from django.test import Client as HttpClient

    assert client.call("calculator.add", 1, 2) == 3
    client.call_async("tests.echo", {"x": 1}).result(timeout=5)
    client.notify("tests.echo", "noted")
    assert asyncio.run(client.acall("math.fib", 10)) == 55
    basic = "Basic " + base64.b64encode(b"admin:password").decode()
    gateway = HttpClient(HTTP_AUTHORIZATION=basic).post("/rpc/call/calculator.multiply/", {"a": 2, "b": 3}, content_type="application/json")
    assert gateway.json() == {"result": 6}
    with pytest.raises(RemoteError):
        client.call("calculator.divide", 1, 0)
    time.sleep(0.3)
    assert history.record_now() == 6
    rows = {r.procedure + ":" + r.status: r for r in CallRecord.objects.all()}
    assert {"math.fib:ok", "calculator.multiply:ok"} <= set(rows)
    ok = rows["calculator.add:ok"]
    assert ok.provider == worker.name and ok.run_ms is not None and ok.queued_ms is not None and ok.total_ms >= 0
    assert ok.args_preview == '{"a":1,"b":2}' and ok.trace_id == ok.id
    failed = rows["calculator.divide:remote_error"]
    assert "ZeroDivisionError" in failed.error and "Traceback" in failed.error
    assert sum(1 for r in CallRecord.objects.filter(procedure="tests.echo")) == 2  # the call and the notification


def test_nested_calls_share_the_trace(client: Any, worker: Any) -> None:
    client.call("tests.nested", 0.01)
    time.sleep(0.3)
    history.record_now()
    outer = CallRecord.objects.get(procedure="tests.nested")
    inner = CallRecord.objects.get(procedure="tests.sleep")
    assert inner.trace_id == outer.trace_id == outer.id and inner.parent_id == outer.id


def test_secrets_are_redacted_and_previews_truncated(client: Any, worker: Any) -> None:
    client.call("tests.echo", {"user": "ann", "password": "hunter2", "nested": {"api_token": "t0k3n"}, "long": "x" * 1000})
    time.sleep(0.3)
    history.record_now()
    preview = CallRecord.objects.get(procedure="tests.echo").args_preview
    assert "hunter2" not in preview and "t0k3n" not in preview and '"password":"***"' in preview
    assert len(preview) <= 200


def test_a_timeout_at_the_caller_and_a_late_reply(client: Any, worker: Any) -> None:
    provoke_late_reply(client)
    row = CallRecord.objects.get(procedure="tests.sleep")
    assert row.status == "late" and row.provider == worker.name and row.run_ms >= 500


def test_expired_before_running(client: Any, rpc_conf: dict[str, Any]) -> None:
    with running_worker(concurrency=1):
        slow = client.call_async("tests.sleep", 0.6)
        time.sleep(0.15)  # the slow call holds the only slot
        with pytest.raises(RpcTimeout):
            client.call("tests.noop", timeout=0.2)  # queued behind the slow call, expires before it runs
        slow.result(timeout=5)
        time.sleep(0.3)
    history.record_now()
    assert CallRecord.objects.get(procedure="tests.noop").status == "expired"


def test_a_failure_to_record_never_costs_a_reply(client: Any, worker: Any, rpc_conf: dict[str, Any]) -> None:
    # The history key is taken by a value of the wrong type: every XADD to it fails
    client.transport.redis.set(f"{rpc_conf['NAMESPACE']}:history", "not a stream")
    for i in range(20):
        assert client.call("tests.echo", i) == i
    wait_for(lambda: worker.executor.calls_served == 20, 2)


def test_recording_can_be_turned_off(settings: Any, rpc_conf: dict[str, Any]) -> None:
    settings.RPCAPP = {**rpc_conf, "RECORD_CALLS": False}
    with running_worker():
        runtime.get_client().call("tests.noop")
        time.sleep(0.2)
    assert history.record_now() == 0


def test_rollups_and_percentiles() -> None:
    now = timezone.now().replace(second=0, microsecond=0)
    for i in range(100):
        CallRecord.objects.create(id=f"c{i}", procedure="p.x", status="ok" if i % 10 else "remote_error", total_ms=float(i + 1), created_at=now - dt.timedelta(minutes=i % 3, seconds=1))
    history.roll_up(since=now - dt.timedelta(hours=1))
    rows = list(CallRollup.objects.filter(period=1).order_by("minute"))
    assert len(rows) == 3
    hourly = list(CallRollup.objects.filter(period=60))
    assert sum(h.count for h in hourly) == 100 and sum(h.errors for h in hourly) == 10
    assert sum(r.count for r in rows) == 100 and sum(r.errors for r in rows) == 10
    merged = [sum(r.buckets[i] for r in rows) for i in range(len(history.BUCKETS_MS) + 1)]
    assert sum(merged) == 100
    p50 = history.percentile(merged, 0.5)
    assert p50 is not None and 20 <= p50 <= 100  # the true median is 50.5, within its bucket (50, 100]
    assert history.percentile(merged, 0.99) >= 50
    history.roll_up(since=now - dt.timedelta(hours=1))  # idempotent
    assert CallRollup.objects.filter(period=1).count() == 3 and CallRollup.objects.filter(period=60).count() == len(hourly)


def test_pruning_keeps_what_is_within_retention(settings: Any, rpc_conf: dict[str, Any]) -> None:
    settings.RPCAPP = {**rpc_conf, "HISTORY_RETENTION_DAYS": 1, "ROLLUP_RETENTION_DAYS": 10}
    now = timezone.now()
    CallRecord.objects.create(id="old", procedure="p.x", status="ok", created_at=now - dt.timedelta(days=2))
    CallRecord.objects.create(id="new", procedure="p.x", status="ok", created_at=now)
    CallRollup.objects.create(procedure="p.x", minute=now - dt.timedelta(days=20), count=1)
    assert history.prune(now) == (1, 1)
    assert list(CallRecord.objects.values_list("id", flat=True)) == ["new"]


def test_the_maintenance_tasks_run_once_at_a_time(client: Any) -> None:
    from rpcapp.locks import RedLock
    from rpcapp.tasks import prune_history, roll_up_calls

    CallRecord.objects.create(id="a", procedure="p.x", status="ok", total_ms=3.0, created_at=timezone.now())
    held = RedLock("rpcapp:task:roll_up_calls", ttl=10)
    assert held.acquire(blocking=False)
    try:
        assert roll_up_calls() is None  # another run holds the lock: skipped
    finally:
        held.release()
    assert roll_up_calls() == 2  # a minute row and its hour
    assert prune_history() == (0, 0)


def test_metrics_endpoint(client: Any, worker: Any, admin_client: Any) -> None:
    for _ in range(3):
        client.call("calculator.add", 1, 2)
    time.sleep(0.3)
    history.record_now()
    text = admin_client.get("/rpc/metrics").content.decode()
    assert 'rpcapp_calls_total{procedure="calculator.add",status="ok"} 3.0' in text
    assert 'rpcapp_call_duration_seconds_count{procedure="calculator.add"} 3.0' in text
    assert 'rpcapp_call_duration_seconds_bucket{le="+Inf",procedure="calculator.add"} 3.0' in text


def test_a_record_reaches_the_database_within_5_seconds(client: Any, worker: Any) -> None:
    recorder = history.Recorder(runtime.build_transport(), "test-recorder")
    recorder.start()
    try:
        started = time.monotonic()
        client.call("calculator.add", 2, 2)
        wait_for(lambda: CallRecord.objects.filter(procedure="calculator.add").exists(), 5, message="the record stored")
        assert time.monotonic() - started < 5
    finally:
        recorder.stop()
        recorder.join(timeout=5)

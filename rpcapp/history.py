"""Layer 3: call history: storing call records, rolling them up, pruning.

Workers append a record per call to the Redis stream ``ns:history`` in the
same pipeline as the reply (no extra round trip; a failed append is logged
and never touches the reply); callers append timeouts and late replies.
:class:`Recorder` (a thread of every ``runrpcworker``; competing consumers of
the group ``recorders``) reads them in batches and bulk-writes
``CallRecord`` rows, merging the caller's and the worker's view of a call,
and keeps the Prometheus counters of ``/metrics`` in Redis. The maintenance
(``rpcapp.maintenance``: the workers in turn, ``rpcmaintain`` or Celery
beat) runs :func:`roll_up` (per-minute ``CallRollup`` rows with a latency
histogram) and :func:`prune`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Iterable
from typing import Any

import orjson
from django.db import DatabaseError, reset_queries, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncHour, TruncMinute
from django.utils import timezone

from . import conf
from .errors import RpcError
from .models import CallRecord, CallRollup

log = logging.getLogger("rpcapp.history")

BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]
"""Upper bounds (ms) of the latency histogram; one more bucket above the last."""

CALLER_STATUSES = ("late", "expired", "timeout")  # the caller's verdict wins, in this order
FIELDS = ("procedure", "provider", "caller", "status", "queued_ms", "run_ms", "total_ms", "error", "args_preview", "payload", "trace_id", "parent_id")


def _ms(value: Any) -> float | None:
    """A duration in ms as stored: a finite, non-negative number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and 0 <= value < 1e12 else None


def _row(data: dict[str, Any]) -> dict[str, Any]:
    """A CallRecord's fields from a history record. The stream is unsigned:
    an id must be a non-empty string, a bad time is now, a bad duration None."""
    if not isinstance(data.get("id"), str) or not data["id"]:
        raise ValueError("a call record needs a string id")
    at = data.get("at")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at) or not 0 < at < 253_402_300_800_000:
        at = time.time() * 1000
    return {
        "id": data["id"][:64],
        "procedure": str(data.get("procedure") or "")[:300],
        "provider": str(data.get("provider") or "")[:200],
        "caller": str(data.get("caller") or "")[:200],
        "status": str(data.get("status") or "ok")[:30],
        "queued_ms": _ms(data.get("queued_ms")),
        "run_ms": _ms(data.get("run_ms")),
        "total_ms": _ms(data.get("total_ms")),
        "error": str(data.get("error") or ""),
        "args_preview": str(data.get("args") or "")[:500],
        "payload": data.get("payload"),
        "trace_id": str(data.get("trace_id") or "")[:64],
        "parent_id": str(data.get("parent_id") or "")[:64],
        "created_at": dt.datetime.fromtimestamp(float(at) / 1000, tz=dt.UTC),
    }


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """One call seen twice (its worker, its caller): fill what one side lacks;
    the caller's verdict (late, expired, timeout) wins over the worker's."""
    out = dict(old)
    for key in FIELDS:
        if key != "status" and new.get(key) not in (None, "") and out.get(key) in (None, ""):
            out[key] = new[key]
    statuses = {old.get("status"), new.get("status")}
    out["status"] = next((s for s in CALLER_STATUSES if s in statuses), new.get("status") or old.get("status"))
    out["created_at"] = min(old["created_at"], new["created_at"])
    return out


def parse(entries: Iterable[bytes]) -> list[dict[str, Any]]:
    """The records of stream entries (a record, or an array of them: a worker
    writes one entry per batch of replies)."""
    out: list[dict[str, Any]] = []
    for raw in entries:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            log.warning("skipping a malformed call record: %s", exc)
            continue
        out.extend(d for d in (data if isinstance(data, list) else [data]) if isinstance(d, dict))
    return out


def store(records: Iterable[dict[str, Any]]) -> int:
    """Write a batch of records to the database; returns how many calls."""
    rows: dict[str, dict[str, Any]] = {}
    for data in records:
        try:
            row = _row(data)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("skipping a malformed call record: %s", exc)
            continue
        rows[row["id"]] = merge(rows[row["id"]], row) if row["id"] in rows else row
    if not rows:
        return 0
    with transaction.atomic():
        existing = CallRecord.objects.in_bulk(list(rows))
        create, update = [], []
        for call_id, row in rows.items():
            if call_id in existing:
                old = existing[call_id]
                merged = merge({f: getattr(old, f) for f in (*FIELDS, "created_at")}, row)
                for key, value in merged.items():
                    setattr(old, key, value)
                update.append(old)
            else:
                create.append(CallRecord(**row))
        CallRecord.objects.bulk_create(create, batch_size=500)
        if update:
            CallRecord.objects.bulk_update(update, [*FIELDS, "created_at"], batch_size=500)
    return len(rows)


def metric_increments(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Prometheus counter increments for a batch: per procedure and status, and
    the latency histogram (cumulative ``le`` buckets, in seconds)."""
    out: dict[str, float] = {}
    for data in records:
        proc, status = data.get("procedure") or "?", data.get("status") or "ok"
        key = f"calls|{proc}|{status}"
        out[key] = out.get(key, 0) + 1
        total = data.get("total_ms")
        if isinstance(total, (int, float)):
            out[f"sum|{proc}"] = out.get(f"sum|{proc}", 0) + total / 1000
            out[f"count|{proc}"] = out.get(f"count|{proc}", 0) + 1
            for bound in [*BUCKETS_MS, None]:
                if bound is None or total <= bound:
                    le = "+Inf" if bound is None else str(bound / 1000)
                    out[f"bucket|{proc}|{le}"] = out.get(f"bucket|{proc}|{le}", 0) + 1
    return out


class Recorder(threading.Thread):
    """Moves call records from Redis to the database, in batches."""

    def __init__(self, transport: Any, name: str, batch: int = 500) -> None:
        super().__init__(name="rpcapp-recorder", daemon=True)
        self.transport = transport
        self.consumer = name
        self.batch = batch
        self.stopping = threading.Event()
        self.stored = 0  # calls written (a call seen twice counts once per batch)
        self.records = 0  # records read

    def drain_once(self, block_ms: int = 1000) -> int:
        """One batch: read, store, count, acknowledge. Returns the stream
        entries handled (a worker's entry holds a batch of records)."""
        self.transport.ensure_recorders()
        entries = self.transport.take_records(self.consumer, self.batch, block_ms)
        if not entries:
            return 0
        records = parse(r for _, r in entries)
        self.stored += store(records)
        try:
            self.transport.bump_metrics(metric_increments(records))
        except RpcError as exc:
            log.warning("metrics not updated: %s", exc)
        self.transport.records_stored([eid for eid, _ in entries])
        self.records += len(records)
        return len(entries)

    def run(self) -> None:
        delay = 0.1
        while not self.stopping.is_set():
            try:
                self.drain_once()
                delay = 0.1
                reset_queries()  # with DEBUG on, Django would keep every query of this thread
            except (RpcError, DatabaseError) as exc:  # Redis or the database away: records wait in Redis
                log.warning("call history: %s; retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:  # the recorder never dies
                log.exception("call history recorder failed")
                time.sleep(1.0)

    def stop(self) -> None:
        self.stopping.set()


def record_now(transport: Any | None = None) -> int:
    """Store every call record waiting in Redis now (tests, shells); returns how many records."""
    from .runtime import get_client

    recorder = Recorder(transport or get_client().transport, "inline")
    while recorder.drain_once(block_ms=1):
        pass
    return recorder.records


# -- rollups and pruning (rpcapp.maintenance) -------------------------------------------
def roll_up(since: dt.datetime | None = None) -> int:
    """Recompute the per-minute rollups from ``since`` (default: a few minutes
    before the last rollup, or the oldest record); returns the rows written."""
    if since is None:
        last = CallRollup.objects.filter(period=1).order_by("-minute").values_list("minute", flat=True).first()
        since = last - dt.timedelta(minutes=3) if last else CallRecord.objects.order_by("created_at").values_list("created_at", flat=True).first()
        if since is None:
            return 0
    since = since.replace(second=0, microsecond=0)
    bucket_counts = {f"b{i}": Count("id", filter=Q(total_ms__lte=bound)) for i, bound in enumerate(BUCKETS_MS)}
    rows = (
        CallRecord.objects.filter(created_at__gte=since)
        .annotate(minute=TruncMinute("created_at"))
        .values("procedure", "minute")
        .annotate(count=Count("id"), errors=Count("id", filter=~Q(status="ok")), total=Sum("total_ms"), timed=Count("total_ms"), **bucket_counts)
    )
    out = []
    for r in rows:
        cumulative = [r[f"b{i}"] for i in range(len(BUCKETS_MS))] + [r["timed"]]
        buckets = [cumulative[0]] + [cumulative[i] - cumulative[i - 1] for i in range(1, len(cumulative))]
        columns = dict(zip(CallRollup.BUCKET_FIELDS, buckets, strict=True))
        out.append(CallRollup(procedure=r["procedure"], minute=r["minute"], count=r["count"], errors=r["errors"], total_ms_sum=r["total"] or 0.0, **columns))
    with transaction.atomic():
        CallRollup.objects.filter(period=1, minute__gte=since).delete()
        CallRollup.objects.bulk_create(out, batch_size=1000)
        hours = _roll_up_hours(since.replace(minute=0))
    return len(out) + hours


def _roll_up_hours(since: dt.datetime) -> int:
    """Hourly sums of the minute rows from ``since`` (the week's charts read these)."""
    sums = {f: Sum(f) for f in CallRollup.BUCKET_FIELDS}
    rows = (
        CallRollup.objects.filter(period=1, minute__gte=since)
        .annotate(hour=TruncHour("minute"))
        .values("procedure", "hour")
        .annotate(n=Sum("count"), e=Sum("errors"), t=Sum("total_ms_sum"), **sums)
    )
    out = [
        CallRollup(procedure=r["procedure"], minute=r["hour"], period=60, count=r["n"], errors=r["e"], total_ms_sum=r["t"] or 0.0,
                   **{f: r[f] or 0 for f in CallRollup.BUCKET_FIELDS})
        for r in rows
    ]
    CallRollup.objects.filter(period=60, minute__gte=since).delete()
    CallRollup.objects.bulk_create(out, batch_size=1000)
    return len(out)


def prune(now: dt.datetime | None = None) -> tuple[int, int]:
    """Delete records past HISTORY_RETENTION_DAYS and rollups past ROLLUP_RETENTION_DAYS."""
    now = now or timezone.now()
    c = conf.get()
    records, _ = CallRecord.objects.filter(created_at__lt=now - dt.timedelta(days=c.HISTORY_RETENTION_DAYS)).delete()
    rollups, _ = CallRollup.objects.filter(minute__lt=now - dt.timedelta(days=c.ROLLUP_RETENTION_DAYS)).delete()
    return records, rollups


def percentile(buckets: list[int], q: float) -> float | None:
    """Estimate the q-quantile (0..1) of latency (ms) from histogram bucket counts,
    interpolating linearly inside the bucket."""
    total = sum(buckets)
    if total == 0:
        return None
    target = q * total
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= target:
            low = BUCKETS_MS[i - 1] if i > 0 else 0
            high = BUCKETS_MS[i] if i < len(BUCKETS_MS) else BUCKETS_MS[-1] * 2
            return round(low + (high - low) * (target - seen) / n, 2)
        seen += n
    return float(BUCKETS_MS[-1] * 2)


def histogram(values: Iterable[float | None]) -> list[int]:
    """Bucket counts of raw latencies (for the minutes not rolled up yet)."""
    out = [0] * (len(BUCKETS_MS) + 1)
    for v in values:
        if v is None:
            continue
        i = next((i for i, b in enumerate(BUCKETS_MS) if v <= b), len(BUCKETS_MS))
        out[i] += 1
    return out

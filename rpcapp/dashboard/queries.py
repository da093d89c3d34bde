"""Layer 3: the dashboard's numbers, computed in the database.

"Now" (the overview cards) comes from the raw records of the last five
minutes (an indexed range); the charts and the procedure table come from
the per-minute rollups, summed by the database per minute (last hour), per
ten minutes (last day, from per-minute sums) or per hour (last week).
:func:`cached` keeps each answer a few seconds (``DASHBOARD_CACHE_TTL``) in
the project's Django cache (``CACHE_ALIAS``), keyed by the filter, so many
open dashboards cost the database one query set per filter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.cache import caches
from django.db.models import Count, F, Q, QuerySet, Sum
from django.utils import timezone

from .. import conf
from ..history import BUCKETS_MS, percentile
from ..models import CallRecord, CallRollup

RANGES = {"hour": (dt.timedelta(hours=1), 1), "day": (dt.timedelta(days=1), 10), "week": (dt.timedelta(days=7), 60)}
"""range -> (span, minutes per chart point)."""
NOW_WINDOW = dt.timedelta(minutes=5)
BUCKETS = CallRollup.BUCKET_FIELDS

log = logging.getLogger("rpcapp.dashboard")
T = TypeVar("T")


def cached(name: str, compute: Callable[[], T], *filters: Any) -> T:
    """``compute()``, kept ``DASHBOARD_CACHE_TTL`` seconds in the Django cache
    ``CACHE_ALIAS`` under the namespace, ``name`` and ``filters``. A cache that
    fails (its server away) is logged and skipped: the page is computed."""
    c = conf.get()
    if not c.DASHBOARD_CACHE_TTL:
        return compute()
    digest = hashlib.sha1(repr(filters).encode()).hexdigest()[:16]
    key = f"rpcapp:{c.NAMESPACE}:dashboard:{name}:{digest}"
    try:
        cache = caches[c.CACHE_ALIAS]
        value = cache.get(key)
    except Exception as exc:  # any backend's error (django-redis: a Redis error)
        log.warning("dashboard cache %r unusable: %s", c.CACHE_ALIAS, exc)
        return compute()
    if value is None:
        value = compute()
        try:
            cache.set(key, value, c.DASHBOARD_CACHE_TTL)
        except Exception as exc:
            log.warning("dashboard cache %r unusable: %s", c.CACHE_ALIAS, exc)
    return value  # type: ignore[no-any-return]


def now_cards(now: dt.datetime | None = None) -> dict[str, Any]:
    """Calls per minute, error rate and latency percentiles over the last five minutes."""
    now = now or timezone.now()
    recent = CallRecord.objects.filter(created_at__gte=now - NOW_WINDOW)
    bounds = {f"le{i}": Count("id", filter=Q(total_ms__lte=b)) for i, b in enumerate(BUCKETS_MS)}
    row = recent.aggregate(count=Count("id"), errors=Count("id", filter=~Q(status="ok")), timed=Count("total_ms"), **bounds)
    cumulative = [row[f"le{i}"] for i in range(len(BUCKETS_MS))] + [row["timed"]]
    buckets = [cumulative[0]] + [cumulative[i] - cumulative[i - 1] for i in range(1, len(cumulative))]
    count = row["count"] or 0
    return {
        "calls_per_min": round(count / (NOW_WINDOW.total_seconds() / 60), 1),
        "error_rate": round(100 * (row["errors"] or 0) / count, 1) if count else 0.0,
        "p50_ms": percentile(buckets, 0.50),
        "p95_ms": percentile(buckets, 0.95),
        "p99_ms": percentile(buckets, 0.99),
        "calls": count,
    }


def _rollups(since: dt.datetime, procedure: str | None, period: int = 1) -> QuerySet[CallRollup]:
    qs = CallRollup.objects.filter(period=period, minute__gte=since)
    return qs.filter(procedure=procedure) if procedure else qs


def series(range_name: str, procedure: str | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """Chart points: calls/min, error rate (%) and p50/p95/p99 (ms) per point."""
    span, step = RANGES.get(range_name, RANGES["hour"])
    now = (now or timezone.now()).replace(second=0, microsecond=0)
    since = now - span
    sums = {f: Sum(f) for f in BUCKETS}
    rows = _rollups(since - dt.timedelta(minutes=since.minute) if step == 60 else since, procedure, 60 if step == 60 else 1).annotate(t=F("minute")).values("t").annotate(count=Sum("count"), errors=Sum("errors"), **sums).order_by("t")
    points: dict[dt.datetime, list[Any]] = {}
    for r in rows:
        t = r["t"]
        key = t - dt.timedelta(minutes=t.minute % step) if step not in (1, 60) else t
        acc = points.setdefault(key, [0, 0, [0] * len(BUCKETS)])
        acc[0] += r["count"] or 0
        acc[1] += r["errors"] or 0
        acc[2] = [a + (r[f] or 0) for a, f in zip(acc[2], BUCKETS, strict=True)]
    labels, throughput, errors, p50, p95, p99 = [], [], [], [], [], []
    first = since.replace(minute=0) if step == 60 else since - dt.timedelta(minutes=since.minute % step)
    keys = [first + dt.timedelta(minutes=step * i) for i in range(int(span.total_seconds() // 60 // step) + 1)]
    for key in keys:  # every point of the range, empty ones too: the x axis is the whole range
        count, errs, buckets = points.get(key, (0, 0, [0] * len(BUCKETS)))
        labels.append(timezone.localtime(key).strftime("%H:%M" if step < 60 else "%a %H:%M"))
        throughput.append(round(count / step, 2))
        errors.append(round(100 * errs / count, 2) if count else 0)
        p50.append(percentile(buckets, 0.5))
        p95.append(percentile(buckets, 0.95))
        p99.append(percentile(buckets, 0.99))
    return {"labels": labels, "throughput": throughput, "error_rate": errors, "p50": p50, "p95": p95, "p99": p99, "step_minutes": step}


def procedure_table(range_name: str, sort: str = "p95", now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Per procedure over the range: calls, errors, error rate, p50/p95/p99, sorted."""
    span, _ = RANGES.get(range_name, RANGES["hour"])
    since = (now or timezone.now()) - span
    sums = {f: Sum(f) for f in BUCKETS}
    hourly = range_name != "hour"  # a day or a week: the hourly rows (whole hours)
    rows = _rollups(since.replace(minute=0, second=0, microsecond=0) if hourly else since, None, 60 if hourly else 1).values("procedure").annotate(count=Sum("count"), errors=Sum("errors"), total=Sum(F("total_ms_sum")), **sums)
    out = []
    for r in rows:
        buckets = [r[f] or 0 for f in BUCKETS]
        count = r["count"] or 0
        out.append({
            "procedure": r["procedure"],
            "calls": count,
            "errors": r["errors"] or 0,
            "error_rate": round(100 * (r["errors"] or 0) / count, 1) if count else 0.0,
            "p50": percentile(buckets, 0.5),
            "p95": percentile(buckets, 0.95),
            "p99": percentile(buckets, 0.99),
        })
    key = {"errors": lambda r: (r["errors"], r["error_rate"]), "calls": lambda r: r["calls"]}.get(sort, lambda r: r["p95"] or 0)
    return sorted(out, key=key, reverse=True)


def procedures_seen() -> list[str]:
    since = timezone.now() - RANGES["week"][0]
    return list(CallRollup.objects.filter(period=60, minute__gte=since).values_list("procedure", flat=True).distinct().order_by("procedure"))

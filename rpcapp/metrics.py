"""Layer 3: ``/metrics`` for Prometheus (``reverse("rpcapp:metrics")``).

The counters live in Redis (``ns:metrics``), kept by the recorders as they
store call records, so every web process serves the same totals:
``rpcapp_calls_total{procedure, status}`` and the histogram
``rpcapp_call_duration_seconds{procedure}`` (seconds from the caller's send
to the worker's reply). Staff only, by session or HTTP Basic (Prometheus's
``basic_auth``), unless ``RPCAPP["METRICS_PUBLIC"]``. Needs the
``rpcapp[prometheus]`` extra, imported when the page is asked for (so the rest
of the app, which mounts this view, works without it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse

from . import conf
from .errors import RpcError
from .extras import require
from .http import identify, refusal
from .runtime import get_client

if TYPE_CHECKING:
    from prometheus_client.core import Metric


class _Collector:
    def __init__(self, values: dict[str, float]) -> None:
        self.values = values

    def collect(self) -> Iterator[Metric]:
        core = require("prometheus_client.core", "/metrics")
        CounterMetricFamily, HistogramMetricFamily = core.CounterMetricFamily, core.HistogramMetricFamily  # noqa: N806
        calls = CounterMetricFamily("rpcapp_calls", "Calls recorded, by procedure and status.", labels=["procedure", "status"])
        buckets: dict[str, list[tuple[str, float]]] = {}
        sums: dict[str, float] = {}
        for field, value in sorted(self.values.items()):
            kind, _, rest = field.partition("|")
            if kind == "calls":
                procedure, _, status = rest.rpartition("|")
                calls.add_metric([procedure, status], value)
            elif kind == "bucket":
                procedure, _, le = rest.rpartition("|")
                buckets.setdefault(procedure, []).append((le, value))
            elif kind == "sum":
                sums[rest] = value
        yield calls
        durations = HistogramMetricFamily("rpcapp_call_duration_seconds", "Call latency, from the send to the reply.", labels=["procedure"])
        for procedure, points in sorted(buckets.items()):
            points.sort(key=lambda p: float("inf") if p[0] == "+Inf" else float(p[0]))
            durations.add_metric([procedure], points, sum_value=sums.get(procedure, 0.0))
        yield durations


def metrics(request: HttpRequest) -> HttpResponse:
    if not conf.get().METRICS_PUBLIC:
        caller = identify(request)
        if caller.user is None:
            return refusal(401, "unauthenticated", caller.problem)
        if not caller.user.is_staff:
            return refusal(403, "forbidden", "staff only")
    prometheus = require("prometheus_client", "/metrics")
    try:
        values: dict[str, Any] = get_client().transport.metrics()
    except RpcError as exc:
        return refusal(503, "unavailable", exc.message)
    registry = prometheus.CollectorRegistry()
    registry.register(_Collector(values))
    return HttpResponse(prometheus.generate_latest(registry), content_type="text/plain; version=0.0.4; charset=utf-8")

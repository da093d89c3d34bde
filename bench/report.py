"""Summaries over rounds, the ratios, the targets and the Markdown report."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

LEVELS = (1, 8, 32)
NAMES = {"floor": "floor (raw LPUSH/BLPOP)", "rpcapp": "rpcapp", "celery": "Celery", "rq": "RQ", "grpc": "gRPC (loopback, no Redis)"}
TARGETS = {
    "rpcapp_p50_vs_floor_max": 1.5,
    "celery_vs_rpcapp_min": 4.0,
    "rpcapp_per_s_at_32_min": 8000.0,
    "rpcapp_vs_floor_per_s_at_32_min": 0.5,
}


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def _median_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for d in dicts for k in d}
    return {k: v for k in sorted(keys) if (v := _median([d[k] for d in dicts if k in d])) is not None}


def summarize(system: dict[str, Any]) -> dict[str, Any]:
    """Medians over the rounds of one system (each round's p50/p99/calls/s)."""
    rounds = [r for r in system.get("rounds", []) if r.get("sequential")]
    if not rounds:
        return {}
    seq = [r["sequential"] for r in rounds]
    out: dict[str, Any] = {
        "sequential": {
            "p50_us": _median([s.get("p50_us") for s in seq]),
            "p99_us": _median([s.get("p99_us") for s in seq]),
            "p50_us_rounds": [s.get("p50_us") for s in seq],
            "calls": sum(s.get("calls", 0) for s in seq),
        },
        "throughput": {},
    }
    for n in LEVELS:
        runs = [r["throughput"][str(n)] for r in rounds if str(n) in r.get("throughput", {})]
        if not runs:
            continue
        modes = [t.get("mode") for t in runs if t.get("mode")]
        out["throughput"][str(n)] = {
            "per_s": _median([t["per_s"] for t in runs]),
            "per_s_rounds": [t["per_s"] for t in runs],
            "mode": max(set(modes), key=modes.count) if modes else None,
            "cpu_per_call": _median_dicts([t["cpu_per_call"] for t in runs if t.get("cpu_per_call")]),
            "errors": sum(t.get("errors", 0) for t in runs),
        }
    return out


def _get(r: dict[str, Any], *path: str) -> float | None:
    node: Any = r
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return float(node) if isinstance(node, (int, float)) else None


def _div(x: float | None, y: float | None) -> float | None:
    return round(x / y, 2) if x is not None and y else None


RATIOS: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "rpcapp/floor, sequential p50": lambda r: _div(_get(r, "rpcapp", "sequential", "p50_us"), _get(r, "floor", "sequential", "p50_us")),
    "rpcapp/floor, calls/s at 32": lambda r: _div(_get(r, "rpcapp", "throughput", "32", "per_s"), _get(r, "floor", "throughput", "32", "per_s")),
    "celery/rpcapp, sequential p50": lambda r: _div(_get(r, "celery", "sequential", "p50_us"), _get(r, "rpcapp", "sequential", "p50_us")),
    "rpcapp/celery, calls/s at 32": lambda r: _div(_get(r, "rpcapp", "throughput", "32", "per_s"), _get(r, "celery", "throughput", "32", "per_s")),
    "rq/rpcapp, sequential p50": lambda r: _div(_get(r, "rq", "sequential", "p50_us"), _get(r, "rpcapp", "sequential", "p50_us")),
    "rpcapp/rq, calls/s at 32": lambda r: _div(_get(r, "rpcapp", "throughput", "32", "per_s"), _get(r, "rq", "throughput", "32", "per_s")),
    "grpc/rpcapp, sequential p50": lambda r: _div(_get(r, "grpc", "sequential", "p50_us"), _get(r, "rpcapp", "sequential", "p50_us")),
    "rpcapp/grpc, calls/s at 32": lambda r: _div(_get(r, "rpcapp", "throughput", "32", "per_s"), _get(r, "grpc", "throughput", "32", "per_s")),
}


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Each ratio computed within each round (systems measured seconds apart), then the median."""
    systems = results.get("systems", {})
    n_rounds = max((len(s.get("rounds", [])) for s in systems.values()), default=0)
    out = {}
    for name, fn in RATIOS.items():
        per_round = []
        for i in range(n_rounds):
            view = {k: s["rounds"][i] for k, s in systems.items() if i < len(s.get("rounds", []))}
            per_round.append(fn(view))
        out[name] = {"median": _median(per_round), "rounds": per_round}
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    r = results["ratios"]
    t32 = _get(results.get("systems", {}), "rpcapp", "summary", "throughput", "32", "per_s")
    T = TARGETS
    rows = [
        ("rpcapp sequential p50 <= 1.5x floor", r["rpcapp/floor, sequential p50"]["median"], "x floor", lambda v: v <= T["rpcapp_p50_vs_floor_max"]),
        (">= 4x faster than Celery: sequential p50", r["celery/rpcapp, sequential p50"]["median"], "x", lambda v: v >= T["celery_vs_rpcapp_min"]),
        (">= 4x faster than Celery: calls/s at 32 in flight", r["rpcapp/celery, calls/s at 32"]["median"], "x", lambda v: v >= T["celery_vs_rpcapp_min"]),
        (">= 8,000 calls/s at 32 in flight", t32, "calls/s", lambda v: v >= T["rpcapp_per_s_at_32_min"]),
        (">= 50% of the floor's calls/s at 32 in flight", r["rpcapp/floor, calls/s at 32"]["median"], "x floor", lambda v: v >= T["rpcapp_vs_floor_per_s_at_32_min"]),
    ]
    return [{"target": name, "value": v, "unit": unit, "status": "n/a" if v is None else ("met" if ok(v) else "MISSED")} for name, v, unit, ok in rows]


# -- Markdown ------------------------------------------------------------------------------
def fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _span(values: list[Any]) -> str:
    vals = [v for v in values if v is not None]
    return f"{min(vals):,.0f}-{max(vals):,.0f}" if len(vals) > 1 else ""


def _results_table(results: dict[str, Any]) -> list[str]:
    rounds = results["settings"]["rounds"]
    head = "medians of the rounds' values; the range over the rounds in brackets" if rounds > 1 else "one round"
    lines = [f"## Results ({head})", "", "| system | seq p50 (µs) | seq p99 (µs) | calls/s, 1 in flight | calls/s, 8 | calls/s, 32 |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for system, name in NAMES.items():
        s = results.get("systems", {}).get(system)
        if not s:
            continue
        if s.get("error"):
            lines.append(f"| {name} | error: {s['error'].splitlines()[0][:90]} | | | | |")
        summ = s.get("summary") or {}
        if not summ:
            continue
        seq, tp = summ["sequential"], summ["throughput"]
        cells = [fmt(seq["p50_us"]) + (f" ({_span(seq['p50_us_rounds'])})" if rounds > 1 else ""), fmt(seq["p99_us"])]
        for n in LEVELS:
            t = tp.get(str(n))
            if not t:
                cells.append("-")
                continue
            extra = [x for x in (t.get("mode"), _span(t["per_s_rounds"]) if rounds > 1 else "") if x]
            cells.append(fmt(t["per_s"]) + (f" ({', '.join(extra)})" if extra else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _ratio_tables(results: dict[str, Any]) -> list[str]:
    out = ["## Ratios (computed within each round, then the median)", "", "| ratio | median | per round |", "| --- | ---: | --- |"]
    for name, v in results["ratios"].items():
        out.append(f"| {name} | {fmt(v['median'], 2)} | {', '.join(fmt(x, 2) for x in v['rounds'])} |")
    out += ["", "## Targets", "", "| target | measured | status |", "| --- | ---: | --- |"]
    for t in results["targets"]:
        out.append(f"| {t['target']} | {fmt(t['value'], 0 if t['unit'] == 'calls/s' else 2)} {t['unit']} | {t['status']} |")
    return [*out, ""]


def _cpu_table(results: dict[str, Any]) -> list[str]:
    rows = []
    for system in NAMES:
        tp = (results.get("systems", {}).get(system, {}).get("summary") or {}).get("throughput", {})
        for n in LEVELS:
            c = (tp.get(str(n)) or {}).get("cpu_per_call")
            if not c:
                continue
            label = f"floor ({tp[str(n)].get('mode')})" if system == "floor" else system
            rows.append(
                f"| {label} | {n} | {fmt(c.get('client_us'))} ({fmt(c.get('client_sys_us'))}) | {fmt(c.get('workers_us'))} ({fmt(c.get('workers_sys_us'))}) "
                f"| {fmt(c.get('redis_us'))} ({fmt(c.get('redis_sys_us'))}) | {fmt(c.get('total_us'))} | {fmt(c.get('client_csw'), 1)} | {fmt(c.get('workers_csw'), 1)} |"
            )
    if not rows:
        return []
    return ["## CPU per call during the throughput runs", "",
            "µs of CPU time per call, of which kernel time in brackets, and context switches per call (all threads). "
            "On 2 cores, 2,000,000 µs of CPU per second is all there is: calls/s can't exceed 2,000,000 / total.", "",
            "| system | in flight | client process | worker processes | redis-server | total µs | client csw | worker csw |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", *rows, ""]


def _memory_table(results: dict[str, Any]) -> list[str]:
    mem = results.get("systems", {}).get("rpcapp", {}).get("memory")
    if not mem:
        return []
    out = [f"## rpcapp worker memory (RSS over {mem['calls']:,} calls at 32 in flight, sampled every {mem['every']:,})", "",
           "| worker | start (MiB) | end (MiB) | growth (KiB) | growth | samples (MiB) |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for i, w in enumerate(mem["workers"]):
        samples = ", ".join(f"{x / 1024:.1f}" for x in w["samples_kib"])
        out.append(f"| {i} | {w['start_kib'] / 1024:.1f} | {w['end_kib'] / 1024:.1f} | {w['growth_kib']:+,} | {w['growth_pct']:+.2f}% | {samples} |")
    out += ["", f"Redis keys at each sample: {mem['redis_keys']}; Redis used_memory (KiB): {[m // 1024 for m in mem['redis_used_memory']]}; "
            f"errors: {mem['errors']}", ""]
    return out


def markdown(results: dict[str, Any]) -> str:
    return "\n".join([*_results_table(results), *_ratio_tables(results), *_cpu_table(results), *_memory_table(results)])

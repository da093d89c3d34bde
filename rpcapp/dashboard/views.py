"""Layer 3: the dashboard pages (staff only; anyone else is sent to log in)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.contenttypes.models import ContentType
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from ..errors import RpcError
from ..models import CallRecord
from ..runtime import get_client
from . import queries

PAGE = 50
STATUSES = ["ok", "remote_error", "timeout", "expired", "late", "unavailable", "invalid_params", "not_found", "rate_limited", "lock_not_acquired", "worker_lost", "payload_too_large"]


def _providers() -> list[dict[str, Any]]:
    from ..catalog_store import live_providers

    try:
        return sorted(live_providers().values(), key=lambda p: p["id"])
    except RpcError:
        return []


def _range(request: HttpRequest) -> str:
    value = request.GET.get("range", "hour")
    return value if value in queries.RANGES else "hour"


def _data(request: HttpRequest) -> dict[str, Any]:
    range_name = _range(request)
    procedure = request.GET.get("procedure") or None
    sort = request.GET.get("sort", "p95")
    return {
        "cards": queries.cached("cards", queries.now_cards),
        "series": queries.cached("series", lambda: queries.series(range_name, procedure), range_name, procedure),
        "procedures": queries.cached("procedures", lambda: queries.procedure_table(range_name, sort), range_name, sort),
        "providers": _providers(),
        "range": range_name,
        "procedure": procedure or "",
        "generated_at": timezone.now().isoformat(),
    }


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    context = {**_data(request), "ranges": list(queries.RANGES), "all_procedures": queries.cached("procedures_seen", queries.procedures_seen), "sort": request.GET.get("sort", "p95")}
    return render(request, "rpcapp/dashboard/overview.html", context)


@staff_member_required
def dashboard_data(request: HttpRequest) -> JsonResponse:
    """What the overview page polls every few seconds to refresh itself."""
    return JsonResponse(_data(request))


def _filtered(request: HttpRequest) -> tuple[Any, dict[str, str]]:
    f = {k: request.GET.get(k, "").strip() for k in ("procedure", "status", "provider", "since", "until", "slower_than")}
    qs = CallRecord.objects.all()
    if f["procedure"]:
        qs = qs.filter(procedure=f["procedure"])
    if f["status"]:
        qs = qs.filter(status=f["status"])
    if f["provider"]:
        qs = qs.filter(provider=f["provider"])
    for key, lookup in (("since", "created_at__gte"), ("until", "created_at__lte")):
        when = parse_datetime(f[key]) if f[key] else None
        if when is not None:
            qs = qs.filter(**{lookup: timezone.make_aware(when) if timezone.is_naive(when) else when})
    try:
        if f["slower_than"]:
            qs = qs.filter(total_ms__gte=float(f["slower_than"]))
    except ValueError:
        f["slower_than"] = ""
    return qs, f


@staff_member_required
def history(request: HttpRequest) -> HttpResponse:
    """Newest first, 50 a page; "older" pages by keyset (created_at, id), so a
    page costs the same on the millionth record as on the first."""
    qs, filters = _filtered(request)
    before = request.GET.get("before", "")
    if before:
        when_text, _, call_id = before.partition("|")
        when = parse_datetime(when_text)
        if when is not None:  # a range on the (created_at, id) index, not an OR
            qs = qs.filter(created_at__lte=when).exclude(created_at=when, id__gte=call_id)
    rows = list(qs.order_by("-created_at", "-id")[: PAGE + 1])
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    older = f"{rows[-1].created_at.isoformat()}|{rows[-1].id}" if more and rows else ""
    query = "&".join(f"{k}={v}" for k, v in filters.items() if v)
    context = {"rows": rows, "filters": filters, "older": older, "query": query, "statuses": STATUSES, "first_page": not before}
    return render(request, "rpcapp/dashboard/history.html", context)


@staff_member_required
def call_detail(request: HttpRequest, pk: str) -> HttpResponse:
    record = get_object_or_404(CallRecord, pk=pk)
    trace = list(CallRecord.objects.filter(trace_id=record.trace_id).exclude(pk=record.pk).order_by("created_at")[:200]) if record.trace_id else []
    can_replay = record.status != "ok" and request.user.has_perm("rpcapp.replay_call") and replay_payload(record) is not None
    return render(request, "rpcapp/dashboard/detail.html", {"record": record, "trace": trace, "can_replay": can_replay})


def replay_payload(record: CallRecord) -> dict[str, Any] | None:
    """The record's replay arguments if a worker of this project signed them
    for this very call and procedure (the history stream is unsigned: a record
    written into it by anyone else is never replayed)."""
    payload = record.payload
    if not isinstance(payload, dict) or not isinstance(payload.get("args"), list) or not isinstance(payload.get("kwargs"), dict):
        return None
    if not get_client().signer.verify_tag(payload.get("sig"), "replay", record.pk, record.procedure, payload["args"], payload["kwargs"]):
        return None
    return payload


@staff_member_required
@require_POST
def call_replay(request: HttpRequest, pk: str) -> HttpResponse:
    """Call the procedure again with the failed call's arguments; the outcome is
    shown and kept in the admin history."""
    record = get_object_or_404(CallRecord, pk=pk)
    payload = replay_payload(record)
    if not request.user.has_perm("rpcapp.replay_call") or payload is None:
        return HttpResponseForbidden("not allowed to replay this call")
    try:
        result = get_client().call(record.procedure, *payload["args"], **payload["kwargs"])
        outcome = f"ok: {result!r}"[:500]
        messages.success(request, f"Replayed: {outcome}")
    except RpcError as exc:
        outcome = f"{exc.code}: {exc.message}"[:500]
        messages.error(request, f"Replayed: {outcome}")
    LogEntry.objects.create(
        user_id=request.user.pk,
        content_type=ContentType.objects.get_for_model(CallRecord),
        object_id=record.pk,
        object_repr=str(record)[:200],
        action_flag=CHANGE,
        change_message=f"Replayed call {record.pk} of {record.procedure}: {outcome}",
    )
    return redirect("rpcapp:call-detail", pk=record.pk)



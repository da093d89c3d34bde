"""The dashboard, with the Django test client: real calls, recorded and
rolled up, shown in the overview, the history and the call detail."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from rpcapp import history
from rpcapp.errors import RemoteError
from rpcapp.models import CallRecord

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def calls(client: Any, worker: Any) -> dict[str, Any]:
    for i in range(12):
        client.call("calculator.add", i, 1)
    for _ in range(3):
        with pytest.raises(RemoteError):
            client.call("calculator.divide", 1, 0)
    client.call("tests.nested", 0.01)
    time.sleep(0.3)
    history.record_now()
    history.roll_up()
    return {"worker": worker.name}


@pytest.fixture
def staff(django_user_model: Any) -> HttpClient:
    user = django_user_model.objects.create_user("sam", password="pw", is_staff=True)
    http = HttpClient()
    http.force_login(user)
    return http


def test_only_staff_see_the_dashboard(django_user_model: Any) -> None:
    user = django_user_model.objects.create_user("bob", password="pw")
    http = HttpClient()
    http.force_login(user)
    for name, args in (("dashboard", []), ("history", []), ("dashboard-data", []), ("call-detail", ["x"])):
        answer = http.get(reverse(f"rpcapp:{name}", args=args))
        assert answer.status_code == 302 and "/admin/login/" in answer["Location"], name
    assert HttpClient().get(reverse("rpcapp:dashboard")).status_code == 302


def test_the_overview_shows_real_calls(calls: Any, staff: HttpClient) -> None:
    page = staff.get(reverse("rpcapp:dashboard")).content.decode()
    assert "calculator.add" in page and "calculator.divide" in page and calls["worker"] in page
    data = staff.get(reverse("rpcapp:dashboard-data")).json()
    assert data["cards"]["calls"] == 17 and data["cards"]["calls_per_min"] == 3.4
    assert data["cards"]["error_rate"] == round(100 * 3 / 17, 1)
    assert data["cards"]["p95_ms"] is not None
    assert sum(data["series"]["throughput"]) == 17 and data["series"]["labels"]
    table = {row["procedure"]: row for row in data["procedures"]}
    assert table["calculator.divide"]["errors"] == 3 and table["calculator.add"]["calls"] == 12
    by_errors = staff.get(reverse("rpcapp:dashboard-data"), {"sort": "errors"}).json()["procedures"]
    assert by_errors[0]["procedure"] == "calculator.divide"
    one = staff.get(reverse("rpcapp:dashboard-data"), {"procedure": "calculator.add", "range": "week"}).json()
    assert sum(one["series"]["throughput"]) == pytest.approx(12 / 60, abs=0.01)  # one hourly point: 12 calls / 60 min
    assert [p["id"] for p in data["providers"]] == [calls["worker"]]


def test_the_admin_links_to_the_dashboard(admin_client: Any) -> None:
    assert reverse("rpcapp:dashboard") in admin_client.get(reverse("admin:index")).content.decode()


def test_history_filters_and_pages(calls: Any, staff: HttpClient) -> None:
    url = reverse("rpcapp:history")
    assert staff.get(url, {"procedure": "calculator.divide"}).content.decode().count("remote_error") >= 3
    page = staff.get(url, {"status": "remote_error"}).content.decode()
    assert "calculator.divide" in page and "calculator.add" not in page
    assert "calculator.add" in staff.get(url, {"provider": calls["worker"]}).content.decode()
    assert "No calls match" in staff.get(url, {"slower_than": "100000"}).content.decode()
    future = (timezone.now() + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert "No calls match" in staff.get(url, {"since": future}).content.decode()
    # Keyset pages: 120 more records, 50 a page, none twice
    base = timezone.now() - dt.timedelta(days=1)
    CallRecord.objects.bulk_create(CallRecord(id=f"bulk{i:03d}", procedure="bulk.x", status="ok", created_at=base + dt.timedelta(seconds=i)) for i in range(120))
    seen: list[str] = []
    params: dict[str, str] = {"procedure": "bulk.x"}
    for _ in range(5):
        answer = staff.get(url, params)
        seen += re.findall(r"/dashboard/calls/bulk(\d{3})/", answer.content.decode())
        older = answer.context["older"]
        if not older:
            break
        params = {"procedure": "bulk.x", "before": older}
    assert len(seen) == len(set(seen)) == 120


def test_call_detail_shows_timings_error_and_trace(calls: Any, staff: HttpClient) -> None:
    failed = CallRecord.objects.filter(procedure="calculator.divide").first()
    page = staff.get(reverse("rpcapp:call-detail", args=[failed.pk])).content.decode()
    assert "ZeroDivisionError" in page and "Traceback" in page and " ms" in page
    outer = CallRecord.objects.get(procedure="tests.nested")
    page = staff.get(reverse("rpcapp:call-detail", args=[outer.pk])).content.decode()
    assert "tests.sleep" in page  # the call it made, same trace
    assert staff.get(reverse("rpcapp:call-detail", args=["nope"])).status_code == 404


def test_replaying_a_failed_call_needs_the_permission_and_is_logged(calls: Any, staff: HttpClient, django_user_model: Any) -> None:
    failed = CallRecord.objects.filter(procedure="calculator.divide").first()
    assert {k: v for k, v in failed.payload.items() if k != "sig"} == {"args": [1, 0], "kwargs": {}} and failed.payload["sig"]
    url = reverse("rpcapp:call-replay", args=[failed.pk])
    assert 'id="replay"' not in staff.get(reverse("rpcapp:call-detail", args=[failed.pk])).content.decode()
    assert staff.post(url).status_code == 403
    sam = django_user_model.objects.get(username="sam")
    sam.user_permissions.add(Permission.objects.get(codename="replay_call"))
    staff.force_login(django_user_model.objects.get(username="sam"))
    assert 'id="replay"' in staff.get(reverse("rpcapp:call-detail", args=[failed.pk])).content.decode()
    answer = staff.post(url, follow=True)
    assert "Replayed: remote_error" in answer.content.decode()
    assert LogEntry.objects.get().change_message.startswith(f"Replayed call {failed.pk} of calculator.divide: remote_error")


def test_secret_arguments_are_never_kept_for_replay(client: Any, worker: Any) -> None:
    with pytest.raises(RemoteError):
        client.call("tests.login", "ann", "hunter2")
    with pytest.raises(RemoteError):
        client.call("tests.fail", "boom")
    time.sleep(0.3)
    history.record_now()
    login = CallRecord.objects.get(procedure="tests.login")
    assert login.payload is None and "hunter2" not in login.args_preview and '"password":"***"' in login.args_preview
    assert {k: v for k, v in CallRecord.objects.get(procedure="tests.fail").payload.items() if k != "sig"} == {"args": ["boom"], "kwargs": {}}


def test_a_forged_history_record_cannot_be_replayed(client: Any, worker: Any, rpc_conf: dict[str, Any], django_user_model: Any, tmp_path: Any) -> None:
    import orjson

    # given: a failed-call record written into the unsigned history stream by
    # someone with Redis access: a harmless preview, a chosen payload
    target = tmp_path / "ran"
    forged = {"id": "forged-1", "procedure": "tests.touch", "status": "remote_error", "error": "remote_error: x",
              "args": "('harmless',)", "payload": {"args": [str(target)], "kwargs": {}}, "at": time.time() * 1000}
    client.transport.redis.xadd(f"{rpc_conf['NAMESPACE']}:history", {"r": orjson.dumps(forged)})
    history.record_now()
    assert CallRecord.objects.filter(pk="forged-1").exists()
    # when: a user allowed to replay presses "Replay this call"
    sam = django_user_model.objects.create_user("sam2", password="pw", is_staff=True)
    sam.user_permissions.add(Permission.objects.get(codename="replay_call"))
    browser = HttpClient()
    browser.force_login(sam)
    answer = browser.post(reverse("rpcapp:call-replay", args=["forged-1"]))
    # then: it is refused and nothing ran
    assert answer.status_code == 403
    assert not target.exists()
    assert 'id="replay"' not in browser.get(reverse("rpcapp:call-detail", args=["forged-1"])).content.decode()

"""The catalog in the Django admin: every action, with the Django test client;
each change reaches callers and is in the admin history (LogEntry)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from rpcapp import catalog_store
from rpcapp.models import Procedure, Provider, Service
from rpcapp.registry import default_registry
from rpcapp.testing import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def synced(client: Any) -> Service:
    catalog_store.sync_registry(default_registry, ["tests", "other"])
    catalog_store.push()
    return Service.objects.get(name="tests")


def act(admin_client: Any, model: str, action: str, *pks: Any) -> Any:
    url = reverse(f"admin:rpcapp_{model}_changelist")
    answer = admin_client.post(url, {"action": action, "_selected_action": [str(pk) for pk in pks]})
    assert answer.status_code == 302, answer.content[:500]
    return answer


def logged(obj: Any) -> list[str]:
    return [e.get_change_message() for e in LogEntry.objects.filter(object_id=str(obj.pk)).order_by("id")]


def test_service_actions(admin_client: Any, synced: Service, client: Any) -> None:
    for action, field, value in [
        ("disable", "enabled", False),
        ("enable", "enabled", True),
        ("start_draining", "draining", True),
        ("stop_draining", "draining", False),
    ]:
        act(admin_client, "service", action, synced.pk)
        synced.refresh_from_db()
        assert getattr(synced, field) is value
        wait_for(lambda f=field, v=value: getattr(client.governor.config("tests"), f) is v, 2.0, message=f"{field} propagated")
    assert logged(synced) == ["Disabled", "Enabled", "Draining", "Stopped draining"]


def test_procedure_actions(admin_client: Any, synced: Service, client: Any) -> None:
    echo = Procedure.objects.get(name="tests.echo")
    act(admin_client, "procedure", "disable", echo.pk)
    wait_for(lambda: not client.governor.config("tests").procedure("tests.echo").enabled, 2.0)
    act(admin_client, "procedure", "enable", echo.pk)
    wait_for(lambda: client.governor.config("tests").procedure("tests.echo").enabled, 2.0)
    assert logged(echo) == ["Disabled", "Enabled"]


def test_editing_a_procedure_in_the_change_form(admin_client: Any, synced: Service, client: Any) -> None:
    proc = Procedure.objects.get(name="tests.sleep_idem")
    url = reverse("admin:rpcapp_procedure_change", args=[proc.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and "(seconds: float) -&gt; float" in page.content.decode()
    form = {
        "service": synced.pk, "name": proc.name, "enabled": "on", "timeout": "2.5", "rate_limit": "10/s",
        "retries": "2", "retry_backoff": "0.1", "hedge_after": "",
    }
    answer = admin_client.post(url, form)
    assert answer.status_code == 302, answer.content.decode()[:2000]
    wait_for(lambda: client.governor.config("tests").procedure("tests.sleep_idem").timeout == 2.5, 2.0)
    conf = client.governor.config("tests").procedure("tests.sleep_idem")
    assert (conf.rate_limit, conf.retries) == ("10/s", 2)
    assert "Changed" in logged(proc)[-1]
    # A bad rate limit, and retries on a non-idempotent procedure, are refused
    count = Procedure.objects.get(name="tests.count")
    bad = admin_client.post(reverse("admin:rpcapp_procedure_change", args=[count.pk]), {**form, "name": count.name, "rate_limit": "fast", "retries": "1"})
    assert bad.status_code == 200
    text = bad.content.decode()
    assert "not like" in text and "Only idempotent procedures may be retried or hedged." in text


def test_registering_a_service_by_hand(admin_client: Any, client: Any) -> None:
    add = reverse("admin:rpcapp_service_add")
    form = {
        "name": "billing", "description": "served by the Go team", "enabled": "on", "policy": "round_robin",
        "hash_argument": "", "default_timeout": "3", "rate_limit": "50/s",
        "procedures-TOTAL_FORMS": "1", "procedures-INITIAL_FORMS": "0", "procedures-MIN_NUM_FORMS": "0", "procedures-MAX_NUM_FORMS": "1000",
        "procedures-0-name": "billing.charge", "procedures-0-enabled": "on", "procedures-0-timeout": "1.5",
        "procedures-0-rate_limit": "", "procedures-0-retries": "0",
    }
    answer = admin_client.post(add, form)
    assert answer.status_code == 302, answer.content.decode()[:3000]
    service = Service.objects.get(name="billing")
    assert service.procedures.get().name == "billing.charge"
    wait_for(lambda: client.governor.config("billing").known, 2.0)
    conf = client.governor.config("billing")
    assert (conf.policy, conf.default_timeout, conf.rate_limit) == ("round_robin", 3.0, "50/s")
    assert conf.procedure("billing.charge").timeout == 1.5
    assert logged(service) == ["Added. Added procedure “billing.charge”."]
    # A procedure registered by hand is edited in full (its code lives elsewhere)
    page = admin_client.get(reverse("admin:rpcapp_procedure_change", args=[service.procedures.get().pk]))
    assert 'name="signature"' in page.content.decode()


def test_the_provider_list_shows_live_state_and_drains(admin_client: Any, client: Any, worker: Any) -> None:
    Service.objects.create(name="tests")
    page = admin_client.get(reverse("admin:rpcapp_provider_changelist"))
    text = page.content.decode()
    assert page.status_code == 200 and worker.name in text
    assert "live" in text and " s</td>" in text  # heartbeat age
    provider = Provider.objects.get(id=worker.name)
    act(admin_client, "provider", "drain_providers", provider.pk)
    wait_for(lambda: worker.drained, 2.0, message="the worker sees its drain")
    wait_for(lambda: "draining" in admin_client.get(reverse("admin:rpcapp_provider_changelist")).content.decode(), 5.0)
    act(admin_client, "provider", "undrain_providers", provider.pk)
    wait_for(lambda: not worker.drained, 2.0)
    assert logged(provider) == ["Drained", "Stopped draining"]


def test_changing_weights_in_the_provider_list(admin_client: Any, client: Any, worker: Any) -> None:
    Service.objects.create(name="tests")
    admin_client.get(reverse("admin:rpcapp_provider_changelist"))  # creates the row from Redis
    provider = Provider.objects.get(id=worker.name)
    url = reverse("admin:rpcapp_provider_changelist")
    form = {
        "form-TOTAL_FORMS": "1", "form-INITIAL_FORMS": "1", "form-MIN_NUM_FORMS": "0", "form-MAX_NUM_FORMS": "1000",
        "form-0-id": provider.pk, "form-0-weight": "5", "_save": "Save",
    }
    answer = admin_client.post(url, form)
    assert answer.status_code == 302, answer.content.decode()[:2000]
    wait_for(lambda: client.governor.config("tests").provider(worker.name).weight == 5, 2.0)
    assert "Changed Weight." in logged(provider)


def test_catalog_pages_render_with_filters_and_search(admin_client: Any, synced: Service) -> None:
    for model in ("service", "procedure", "provider"):
        assert admin_client.get(reverse(f"admin:rpcapp_{model}_changelist")).status_code == 200
    page = admin_client.get(reverse("admin:rpcapp_procedure_changelist"), {"q": "sleep", "enabled__exact": "1"})
    text = page.content.decode()
    assert "tests.sleep_idem" in text and "tests.echo" not in text
    assert admin_client.get(reverse("admin:rpcapp_service_change", args=[synced.pk])).status_code == 200


def test_non_staff_cannot_reach_the_catalog(client: Any, django_user_model: Any) -> None:
    from django.test import Client as HttpClient

    http = HttpClient()
    http.force_login(django_user_model.objects.create_user("bob", password="pw"))
    assert http.get(reverse("admin:rpcapp_service_changelist")).status_code == 302

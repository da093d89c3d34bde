"""Small defects of issue 13, item 10: the standard library's MultiCall against
the XML-RPC gateway, late replies counted under their procedure in /metrics,
and the code fields of a procedure read-only in the admin."""

from __future__ import annotations

import xmlrpc.client
from typing import Any

import pytest
from django.urls import reverse

from rpcapp import catalog_store
from rpcapp.models import Procedure, Service
from rpcapp.registry import default_registry
from rpcapp.testing import wait_for
from tests.conftest import provoke_late_reply
from tests.http_helpers import caller, nobody  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


def _proxy(live_server: Any, user: str) -> xmlrpc.client.ServerProxy:
    host = live_server.url.split("://", 1)[1]
    return xmlrpc.client.ServerProxy(f"http://{user}:pw@{host}/rpc/xmlrpc/", allow_none=True)


# -- system.multicall --------------------------------------------------------------
def test_the_standard_librarys_multicall_works(live_server: Any, caller: Any, worker: Any) -> None:  # noqa: F811
    proxy = _proxy(live_server, "carol")
    multi = xmlrpc.client.MultiCall(proxy)
    multi.calculator.add(10, 5)
    multi.calculator.divide(1, 0)
    multi.nope.nothing()
    multi.math.fib(10)
    multi.calculator.add("x", 1)
    multi.system.listMethods()
    results = multi()
    assert results[0] == 15 and results[3] == 55
    for index, code, prefix in [(1, -32003, "remote_error:"), (2, -32601, "not_found:"), (4, -32602, "invalid_params:")]:
        with pytest.raises(xmlrpc.client.Fault) as info:
            results[index]
        assert info.value.faultCode == code and info.value.faultString.startswith(prefix)
    assert {"calculator.add", "system.multicall"} <= set(results[5])


def test_multicall_refuses_nesting_bad_items_and_too_many_calls(live_server: Any, caller: Any, worker: Any) -> None:  # noqa: F811
    proxy = _proxy(live_server, "carol")
    answers = proxy.system.multicall([
        {"methodName": "system.multicall", "params": [[{"methodName": "calculator.add", "params": [1, 2]}]]},
        {"methodName": "calculator.add"},  # no params: an empty list
        {"params": [1]},
        "not a struct",
    ])
    nested, no_params, nameless, junk = answers
    assert nested["faultCode"] == -32600 and "nested" in nested["faultString"]
    assert no_params["faultCode"] == -32602  # add() needs a and b
    assert nameless["faultCode"] == -32600 and junk["faultCode"] == -32600
    with pytest.raises(xmlrpc.client.Fault) as info:
        proxy.system.multicall([{"methodName": "tests.noop", "params": []}] * 101)
    assert info.value.faultCode == -32600 and "101" in info.value.faultString
    with pytest.raises(xmlrpc.client.Fault):
        proxy.system.multicall("not a list")
    assert worker.executor.calls_served == 0


def test_multicall_checks_each_calls_permission(live_server: Any, client: Any, worker: Any, nobody: Any, caller: Any) -> None:  # noqa: F811
    refused = _proxy(live_server, "dave").system.multicall([{"methodName": "calculator.add", "params": [1, 2]}])
    assert refused[0]["faultCode"] == -32012 and refused[0]["faultString"].startswith("forbidden:")
    Procedure.objects.create(service=Service.objects.create(name="calculator"), name="calculator.add", enabled=False)
    wait_for(lambda: not client.governor.config("calculator").procedure("calculator.add").enabled, 2)
    disabled, allowed = _proxy(live_server, "carol").system.multicall([
        {"methodName": "calculator.add", "params": [1, 2]},
        {"methodName": "calculator.subtract", "params": [5, 3]},
    ])
    assert disabled["faultString"].startswith("unavailable:") and allowed == [2]
    wait_for(lambda: worker.executor.calls_served == 1, 2)  # subtract, not the refused calls


# -- late replies in /metrics ------------------------------------------------------
def test_a_late_reply_is_counted_under_its_procedure(client: Any, worker: Any, admin_client: Any) -> None:
    provoke_late_reply(client)
    text = admin_client.get("/rpc/metrics").content.decode()
    assert 'rpcapp_calls_total{procedure="tests.sleep",status="late"} 1.0' in text
    assert 'procedure="?"' not in text


# -- code fields read-only in the admin --------------------------------------------
@pytest.fixture
def synced(client: Any) -> Service:
    catalog_store.sync_registry(default_registry, ["tests", "other"])
    catalog_store.push()
    return Service.objects.get(name="tests")


def test_code_fields_of_a_procedure_are_read_only(admin_client: Any, synced: Service) -> None:
    proc = Procedure.objects.get(name="tests.sleep_idem")
    other = Service.objects.get(name="other")
    url = reverse("admin:rpcapp_procedure_change", args=[proc.pk])
    page = admin_client.get(url).content.decode()
    for field in ("name", "service", "signature", "doc", "idempotent", "lock", "stream"):
        assert f'name="{field}"' not in page, field
    assert 'name="enabled"' in page and 'name="timeout"' in page and "tests.sleep_idem" in page
    form = {
        "service": other.pk, "name": "tests.renamed", "signature": "()", "idempotent": "", "enabled": "",
        "timeout": "2.5", "rate_limit": "", "retries": "0", "retry_backoff": "0.05", "hedge_after": "",
    }
    assert admin_client.post(url, form).status_code == 302
    proc.refresh_from_db()
    assert (proc.name, proc.service_id, proc.idempotent, proc.signature) == ("tests.sleep_idem", synced.pk, True, "(seconds: float) -> float")
    assert (proc.enabled, proc.timeout) == (False, 2.5)


def test_the_service_inline_keeps_code_procedure_names(admin_client: Any, synced: Service) -> None:
    procs = list(synced.procedures.order_by("pk"))
    url = reverse("admin:rpcapp_service_change", args=[synced.pk])
    form: dict[str, Any] = {
        "name": "tests", "description": "", "enabled": "on", "policy": synced.policy, "hash_argument": "",
        "default_timeout": "", "rate_limit": "",
        "procedures-TOTAL_FORMS": str(len(procs)), "procedures-INITIAL_FORMS": str(len(procs)),
        "procedures-MIN_NUM_FORMS": "0", "procedures-MAX_NUM_FORMS": "1000",
    }
    for i, proc in enumerate(procs):
        form.update({
            f"procedures-{i}-id": proc.pk, f"procedures-{i}-service": synced.pk, f"procedures-{i}-name": f"renamed.{i}",
            f"procedures-{i}-enabled": "on", f"procedures-{i}-timeout": "", f"procedures-{i}-rate_limit": "",
            f"procedures-{i}-retries": "0", f"procedures-{i}-hedge_after": "",
            **({} if proc.idempotent else {f"procedures-{i}-idempotent": "on"}),
        })
    answer = admin_client.post(url, form)
    assert answer.status_code == 302, answer.content.decode()[:3000]
    assert sorted(synced.procedures.values_list("name", "idempotent")) == sorted((p.name, p.idempotent) for p in procs)

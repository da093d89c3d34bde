"""The client's spec cache stays bounded whatever names it is asked for
(issue: 15,000 unknown 9 KB names grew a web process by 130 MiB)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from rpcapp.errors import ProcedureNotFound
from rpcapp.registry import Spec
from rpcapp.signature import Signature

pytestmark = pytest.mark.django_db(transaction=True)


def _cached(client: Any) -> int:
    """Entries held by the client's spec caches (hits and misses)."""
    return len(client._spec_cache) + len(getattr(client, "_spec_misses", ()))


def _count_lookups(client: Any, monkeypatch: Any) -> list[str]:
    """The names the client looks up in Redis from now on."""
    seen: list[str] = []
    real = client.transport.get_spec

    def get_spec(name: str) -> Any:
        seen.append(name)
        return real(name)

    monkeypatch.setattr(client.transport, "get_spec", get_spec)
    return seen


def test_twenty_thousand_unknown_names_keep_the_caches_bounded(client):
    for i in range(20_000):
        with pytest.raises(ProcedureNotFound):
            client.describe(f"nosuch{i % 13}.method_{i}")
    assert _cached(client) <= 2 * 1024
    assert len(client._spec_misses) <= client._spec_misses.maxsize


def test_a_miss_is_remembered_briefly(client, monkeypatch):
    seen = _count_lookups(client, monkeypatch)
    for _ in range(5):
        with pytest.raises(ProcedureNotFound):
            client.describe("nosuch.again")
    assert seen == ["nosuch.again"]  # Redis asked once, not five times


def test_published_specs_are_cached_in_a_bounded_lru(client):
    signer = client.signer
    specs = {f"many.p{i}": signer.pack(Spec(f"many.p{i}", Signature((), "any")).to_wire()) for i in range(1500)}
    client.transport.publish_specs("many", specs)
    for name in specs:
        assert client.describe(name).name == name
        client.describe("many.p0")  # kept in use: never the one evicted
    assert len(client._spec_cache) <= client._spec_cache.maxsize <= 1024
    assert "many.p0" in client._spec_cache and "many.p1" not in client._spec_cache


@pytest.mark.parametrize("name", ["x" * 9000 + ".m", "svc." + "m" * 300, "nodot", "a{b}.c", ".m", "svc.", "svc. m", "svc.m\n"])
def test_absurd_names_are_refused_without_a_lookup(client, monkeypatch, name):
    seen = _count_lookups(client, monkeypatch)
    with pytest.raises(ProcedureNotFound):
        client.describe(name)
    with pytest.raises(ProcedureNotFound):
        client.call(name)
    assert seen == [] and _cached(client) == 0


def test_jsonrpc_names_of_9_kb_leave_nothing_behind(client, django_user_model):
    django_user_model.objects.create_superuser("root", password="pw")
    http = HttpClient(HTTP_AUTHORIZATION="Basic cm9vdDpwdw==")  # root:pw
    for i in range(30):
        body = {"jsonrpc": "2.0", "method": f"svc{i}." + "m" * 9000, "id": i}
        answer = http.post(reverse("rpcapp:jsonrpc"), orjson.dumps(body), content_type="application/json")
        assert orjson.loads(answer.content)["error"]["code"] == -32601
    assert _cached(client) == 0
    for i in range(3000):  # names of unknown services, each looked up in the catalog
        client.governor.config(f"svc{i}")
    assert len(client.governor.catalog._entries) <= 1024

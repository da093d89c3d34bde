"""The HTTP faces against a hostile web page and a curious user (DESIGN 11
"HTTP"): Basic credentials a browser cached cannot be used by a form of
another site (415 for a body type a form can send), a GET never runs a
non-idempotent procedure, and "not permitted" reads the same whether or not
the procedure exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from django.test import Client as HttpClient
from django.urls import include, path

from rpcapp.views import rpc_view
from tests.http_helpers import basic, caller, nobody  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)

urlpatterns = [
    path("touch/", rpc_view("tests.touch")),
    path("echo/", rpc_view("tests.echo")),
    path("rpc/", include("rpcapp.urls")),
]

FORM_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]


@pytest.fixture
def urls(settings: Any) -> None:
    settings.ROOT_URLCONF = __name__


@pytest.fixture
def carol(caller: Any) -> HttpClient:  # noqa: F811
    return HttpClient(enforce_csrf_checks=True, HTTP_AUTHORIZATION=basic("carol", "pw"))


def _touched(target: Path) -> int:
    return len(target.read_text().splitlines()) if target.exists() else 0


@pytest.mark.parametrize("content_type", FORM_TYPES)
def test_basic_credentials_with_a_form_body_type_are_refused_and_nothing_runs(urls: Any, worker: Any, carol: HttpClient, tmp_path: Path, content_type: str) -> None:
    # given: what a cross-site form auto-submitted with the browser's cached Basic credentials looks like
    target = tmp_path / "ran"
    call = orjson.dumps({"jsonrpc": "2.0", "method": "tests.touch", "params": [str(target)], "id": 1})
    rest = orjson.dumps([str(target)])
    for url, body in (("/rpc/jsonrpc/", call), ("/rpc/call/tests.touch/", rest), ("/touch/", rest)):
        # when
        answer = carol.generic("POST", url, body, content_type=content_type)
        # then
        assert answer.status_code == 415, (url, answer.status_code, answer.content)
    assert _touched(target) == 0


def test_basic_credentials_with_json_bodies_still_work(urls: Any, worker: Any, carol: HttpClient, tmp_path: Path) -> None:
    target = tmp_path / "ran"
    call = orjson.dumps({"jsonrpc": "2.0", "method": "tests.touch", "params": [str(target)], "id": 1})
    assert carol.generic("POST", "/rpc/jsonrpc/", call, content_type="application/json; charset=utf-8").status_code == 200
    assert carol.generic("POST", "/rpc/call/tests.touch/", orjson.dumps([str(target)]), content_type="application/json").status_code == 200
    assert carol.generic("POST", "/touch/", orjson.dumps([str(target)]), content_type="application/json").status_code == 200
    assert _touched(target) == 3


def test_xmlrpc_with_basic_credentials_needs_an_xml_body_type(urls: Any, worker: Any, carol: HttpClient, tmp_path: Path) -> None:
    target = tmp_path / "ran"
    body = f"<?xml version='1.0'?><methodCall><methodName>tests.touch</methodName><params><param><value><string>{target}</string></value></param></params></methodCall>"
    assert carol.generic("POST", "/rpc/xmlrpc/", body, content_type="text/plain").status_code == 415
    assert _touched(target) == 0
    assert carol.generic("POST", "/rpc/xmlrpc/", body, content_type="text/xml").status_code == 200
    assert _touched(target) == 1


def test_get_never_runs_a_non_idempotent_procedure(urls: Any, worker: Any, caller: Any, carol: HttpClient, tmp_path: Path) -> None:  # noqa: F811
    # given: a logged-in browser (a GET is not CSRF-checked) and a Basic caller
    target = tmp_path / "ran"
    browser = HttpClient()
    browser.force_login(caller)
    for who in (browser, carol):
        # when
        answer = who.get("/touch/", {"path": str(target)})
        # then
        assert answer.status_code == 405, answer.content
        assert "POST" in answer["Allow"]
    assert _touched(target) == 0
    assert carol.get("/echo/", {"value": "3"}).json() == {"result": 3}  # idempotent: GET is fine


def test_not_permitted_reads_the_same_whether_or_not_the_procedure_exists(urls: Any, worker: Any, nobody: Any) -> None:  # noqa: F811
    dave = HttpClient(HTTP_AUTHORIZATION=basic("dave", "pw"))
    answers = []
    for name in ("tests.echo", "tests.no_such_thing", "nosuchservice.method"):
        rest = dave.generic("POST", f"/rpc/call/{name}/", b"[1]", content_type="application/json")
        call = orjson.dumps({"jsonrpc": "2.0", "method": name, "params": [1], "id": 1})
        jsonrpc = dave.generic("POST", "/rpc/jsonrpc/", call, content_type="application/json")
        answers.append((rest.status_code, rest.content.replace(name.encode(), b"NAME"), jsonrpc.status_code, jsonrpc.content.replace(name.encode(), b"NAME")))
    assert answers[0][0] == 403
    assert answers[0] == answers[1] == answers[2], answers

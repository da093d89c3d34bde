"""The XML-RPC endpoint, called by the standard library's ServerProxy over
real HTTP (the live server), and hostile XML."""

from __future__ import annotations

import xmlrpc.client
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from rpcapp.models import Procedure, Service
from rpcapp.testing import wait_for
from tests.http_helpers import basic, caller, nobody  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def proxy(live_server: Any, caller: Any, worker: Any) -> xmlrpc.client.ServerProxy:  # noqa: F811
    host = live_server.url.split("://", 1)[1]
    return xmlrpc.client.ServerProxy(f"http://carol:pw@{host}/rpc/xmlrpc/", allow_none=True, use_datetime=True)


def test_server_proxy_calls_demo_procedures(proxy: xmlrpc.client.ServerProxy) -> None:
    assert proxy.calculator.add(10, 5) == 15
    assert proxy.calculator.divide(1, 4) == 0.25
    assert proxy.math.fib(92) == 7540113804746346429  # beyond 32 bits: sent as <i8>
    assert proxy.tests.echo({"a": [1, "b", None]}) == {"a": [1, "b", None]}


def test_remote_errors_become_faults(proxy: xmlrpc.client.ServerProxy) -> None:
    with pytest.raises(xmlrpc.client.Fault) as info:
        proxy.calculator.divide(1, 0)
    assert info.value.faultCode == -32003 and info.value.faultString.startswith("remote_error:")
    with pytest.raises(xmlrpc.client.Fault) as info:
        proxy.calculator.add("x", 1)
    assert info.value.faultCode == -32602
    with pytest.raises(xmlrpc.client.Fault) as info:
        proxy.nope.nothing()
    assert info.value.faultCode == -32601


def test_list_methods_shows_what_the_caller_may_call(proxy: xmlrpc.client.ServerProxy, client: Any) -> None:
    methods = proxy.system.listMethods()
    assert {"calculator.add", "math.fib", "tests.echo"} <= set(methods)
    assert proxy.system.methodHelp("calculator.add") == "Return a + b."
    assert proxy.system.methodSignature("calculator.add") == "(a: float, b: float) -> float"
    Service.objects.create(name="calculator")
    Procedure.objects.create(service=Service.objects.get(name="calculator"), name="calculator.add", enabled=False)
    wait_for(lambda: not client.governor.config("calculator").procedure("calculator.add").enabled, 2)
    methods = proxy.system.listMethods()
    assert "calculator.add" not in methods and "calculator.subtract" in methods
    with pytest.raises(xmlrpc.client.Fault) as info:
        proxy.calculator.add(1, 2)
    assert info.value.faultString.startswith("unavailable:")


def test_anonymous_and_unpermitted_callers_are_refused(live_server: Any, worker: Any, nobody: Any) -> None:  # noqa: F811
    host = live_server.url.split("://", 1)[1]
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        xmlrpc.client.ServerProxy(f"http://{host}/rpc/xmlrpc/").calculator.add(1, 2)
    assert info.value.errcode == 401
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        xmlrpc.client.ServerProxy(f"http://dave:pw@{host}/rpc/xmlrpc/").calculator.add(1, 2)
    assert info.value.errcode == 403
    assert worker.executor.calls_served == 0


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<methodCall><methodName>tests.echo</methodName><params><param><value><string>&lol3;</string></value></param></params></methodCall>"""

EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]>
<methodCall><methodName>tests.echo</methodName><params><param><value><string>&ext;</string></value></param></params></methodCall>"""


@pytest.mark.parametrize("payload", [BOMB, EXTERNAL, b"<methodCall><methodName>tests.echo", b"not xml at all", b""])
def test_hostile_xml_is_a_fault_not_a_crash(caller: Any, worker: Any, payload: bytes) -> None:  # noqa: F811
    http = HttpClient(HTTP_AUTHORIZATION=basic("carol", "pw"))
    answer = http.generic("POST", reverse("rpcapp:xmlrpc"), payload, content_type="text/xml")
    assert answer.status_code == 200
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(answer.content)
    assert info.value.faultCode == -32700
    assert worker.executor.calls_served == 0


def test_an_oversize_body_is_refused_before_parsing(caller: Any, worker: Any, settings: Any, rpc_conf: dict[str, Any]) -> None:  # noqa: F811
    settings.RPCAPP = {**rpc_conf, "MAX_REQUEST_BYTES": 500}
    http = HttpClient(HTTP_AUTHORIZATION=basic("carol", "pw"))
    big = xmlrpc.client.dumps(("x" * 1000,), "tests.echo").encode()
    assert http.generic("POST", reverse("rpcapp:xmlrpc"), big, content_type="text/xml").status_code == 413

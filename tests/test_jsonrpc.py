"""The JSON-RPC 2.0 endpoint: every example of the specification's examples
section, adapted to the demo's procedures, plus batches, auth and limits."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from rpcapp.models import Service
from rpcapp.testing import wait_for
from tests.http_helpers import basic, caller, nobody  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rpc(caller: Any, worker: Any) -> Any:  # noqa: F811
    http = HttpClient(HTTP_AUTHORIZATION=basic("carol", "pw"))

    def send(body: Any, raw: bool = False) -> Any:
        data = body if raw else orjson.dumps(body)
        answer = http.generic("POST", reverse("rpcapp:jsonrpc"), data, content_type="application/json")
        return answer

    return send


def body(answer: Any) -> Any:
    return orjson.loads(answer.content) if answer.content else None


# -- the specification's examples (section 7) ------------------------------------
def test_positional_parameters(rpc: Any) -> None:
    assert body(rpc({"jsonrpc": "2.0", "method": "calculator.subtract", "params": [42, 23], "id": 1})) == {"jsonrpc": "2.0", "result": 19, "id": 1}
    assert body(rpc({"jsonrpc": "2.0", "method": "calculator.subtract", "params": [23, 42], "id": 2})) == {"jsonrpc": "2.0", "result": -19, "id": 2}


def test_named_parameters(rpc: Any) -> None:
    assert body(rpc({"jsonrpc": "2.0", "method": "calculator.subtract", "params": {"b": 23, "a": 42}, "id": 3})) == {"jsonrpc": "2.0", "result": 19, "id": 3}
    assert body(rpc({"jsonrpc": "2.0", "method": "calculator.subtract", "params": {"a": 42, "b": 23}, "id": 4})) == {"jsonrpc": "2.0", "result": 19, "id": 4}


def test_notifications_get_no_response_but_run(rpc: Any, tmp_path: Any) -> None:
    marker = tmp_path / "ran"
    answer = rpc({"jsonrpc": "2.0", "method": "tests.touch", "params": [str(marker)]})
    assert answer.status_code == 204 and answer.content == b""
    wait_for(marker.exists, 5, message="the notification ran")
    assert rpc({"jsonrpc": "2.0", "method": "nope.foobar"}).status_code == 204  # even an unknown method


def test_a_non_existent_method(rpc: Any) -> None:
    got = body(rpc({"jsonrpc": "2.0", "method": "foobar", "id": "1"}))
    assert got["error"]["code"] == -32601 and got["error"]["message"] == "Method not found" and got["id"] == "1"
    got = body(rpc({"jsonrpc": "2.0", "method": "nope.foobar", "id": "1"}))
    assert got["error"]["code"] == -32601


def test_invalid_json(rpc: Any) -> None:
    got = body(rpc(b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]', raw=True))
    assert got == {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}


def test_an_invalid_request_object(rpc: Any) -> None:
    got = body(rpc({"jsonrpc": "2.0", "method": 1, "params": "bar"}))
    assert got == {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}


def test_a_batch_with_invalid_json(rpc: Any) -> None:
    raw = b'[{"jsonrpc": "2.0", "method": "calculator.add", "params": [1,2,4], "id": "1"},{"jsonrpc": "2.0", "method"]'
    assert body(rpc(raw, raw=True)) == {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}


def test_an_empty_array(rpc: Any) -> None:
    assert body(rpc([])) == {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}


def test_an_invalid_batch_but_not_empty(rpc: Any) -> None:
    assert body(rpc([1])) == [{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}]


def test_an_invalid_batch(rpc: Any) -> None:
    assert body(rpc([1, 2, 3])) == [{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}] * 3


def test_a_mixed_batch(rpc: Any, tmp_path: Any) -> None:
    got = body(rpc([
        {"jsonrpc": "2.0", "method": "calculator.add", "params": [1, 2], "id": "1"},
        {"jsonrpc": "2.0", "method": "tests.touch", "params": [str(tmp_path / "hello")]},
        {"jsonrpc": "2.0", "method": "calculator.subtract", "params": [42, 23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "math.fib", "params": [10], "id": "9"},
    ]))
    assert got[0] == {"jsonrpc": "2.0", "result": 3, "id": "1"}
    assert got[1] == {"jsonrpc": "2.0", "result": 19, "id": "2"}
    assert got[2] == {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}
    assert got[3]["error"]["code"] == -32601 and got[3]["id"] == "5"
    assert got[4] == {"jsonrpc": "2.0", "result": 55, "id": "9"}
    assert len(got) == 5


def test_a_batch_of_notifications_returns_nothing(rpc: Any, tmp_path: Any) -> None:
    answer = rpc([
        {"jsonrpc": "2.0", "method": "tests.touch", "params": [str(tmp_path / "a")]},
        {"jsonrpc": "2.0", "method": "tests.touch", "params": [str(tmp_path / "b")]},
    ])
    assert answer.status_code == 204 and answer.content == b""


# -- beyond the examples -----------------------------------------------------------------
def test_batch_calls_run_concurrently(rpc: Any) -> None:
    started = time.monotonic()
    got = body(rpc([{"jsonrpc": "2.0", "method": "tests.sleep", "params": [0.5], "id": i} for i in range(4)]))
    assert [r["result"] for r in got] == [0.5] * 4
    assert time.monotonic() - started < 1.5  # four half-second calls on a 4-slot worker


def test_our_errors_are_in_the_server_range_with_their_code(rpc: Any, settings: Any) -> None:
    got = body(rpc({"jsonrpc": "2.0", "method": "calculator.divide", "params": [1, 0], "id": 7}))
    assert got["error"]["code"] == -32003 and got["error"]["data"]["code"] == "remote_error"
    assert got["error"]["data"]["type"] == "ZeroDivisionError" and "traceback" not in got["error"]["data"]
    got = body(rpc({"jsonrpc": "2.0", "method": "tests.sleep", "params": {"seconds": 2, "timeout": 0.1}, "id": 8}))
    assert got["error"]["code"] == -32602  # "timeout" is not a parameter
    got = body(rpc({"jsonrpc": "2.0", "method": "calculator.add", "params": ["x", 1], "id": 9}))
    assert got["error"]["code"] == -32602 and got["error"]["data"]["code"] == "invalid_params"


def test_a_timeout_and_an_unavailable_service(rpc: Any, client: Any) -> None:
    Service.objects.create(name="tests", default_timeout=0.3)
    wait_for(lambda: client.governor.config("tests").default_timeout == 0.3, 2)
    got = body(rpc({"jsonrpc": "2.0", "method": "tests.sleep", "params": [2], "id": 1}))
    assert got["error"]["code"] == -32000 and got["error"]["data"]["code"] == "timeout"
    Service.objects.create(name="calculator", enabled=False)
    wait_for(lambda: not client.governor.config("calculator").enabled, 2)
    got = body(rpc({"jsonrpc": "2.0", "method": "calculator.add", "params": [1, 2], "id": 2}))
    assert got["error"]["code"] == -32001 and got["error"]["data"]["code"] == "unavailable"


def test_reserved_names_never_resolve(rpc: Any) -> None:
    for name in ("rpc.discover", "system.listMethods", "rpc.calculator.add"):
        got = body(rpc({"jsonrpc": "2.0", "method": name, "id": 1}))
        assert got["error"]["code"] == -32601, name


def test_limits(rpc: Any, settings: Any, rpc_conf: dict[str, Any]) -> None:
    got = body(rpc([{"jsonrpc": "2.0", "method": "calculator.add", "params": [1, 2], "id": i} for i in range(101)]))
    assert got["error"]["code"] == -32600 and "over the limit of 100" in got["error"]["message"]
    deep = b"[" * 50_000 + b"]" * 50_000
    assert body(rpc(deep, raw=True))["error"]["code"] == -32700
    settings.RPCAPP = {**rpc_conf, "MAX_REQUEST_BYTES": 200}
    answer = rpc({"jsonrpc": "2.0", "method": "tests.echo", "params": ["x" * 500], "id": 1})
    assert answer.status_code == 413 and body(answer)["error"]["data"]["code"] == "payload_too_large"


def test_authentication_and_permission(worker: Any, nobody: Any) -> None:  # noqa: F811
    call = orjson.dumps({"jsonrpc": "2.0", "method": "calculator.add", "params": [1, 2], "id": 1})
    anonymous = HttpClient().generic("POST", reverse("rpcapp:jsonrpc"), call, content_type="application/json")
    assert anonymous.status_code == 401 and body(anonymous)["error"]["code"] == -32011
    dave = HttpClient(HTTP_AUTHORIZATION=basic("dave", "pw")).generic("POST", reverse("rpcapp:jsonrpc"), call, content_type="application/json")
    assert dave.status_code == 403 and body(dave)["error"]["code"] == -32012
    assert worker.executor.calls_served == 0
    assert HttpClient().get(reverse("rpcapp:jsonrpc")).status_code == 405

"""rpc_view, call_or_error and the template tag; authentication, permissions,
CSRF and hostile input on the HTTP faces."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.template import Context, Template
from django.test import AsyncClient
from django.test import Client as HttpClient
from django.urls import path

from rpcapp import catalog_store
from rpcapp.models import Procedure, Service
from rpcapp.registry import default_registry
from rpcapp.testing import wait_for
from rpcapp.views import call_or_error, rpc_view
from tests.http_helpers import basic, caller, nobody  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)

urlpatterns = [
    path("add/", rpc_view("tests.echo")),
    path("typed/", rpc_view("tests.typed")),
    path("fail/", rpc_view("tests.fail")),
    path("slow/", rpc_view("tests.sleep", timeout=0.3)),
    path("public/", rpc_view("tests.echo", public=True)),
    path("async/", rpc_view("tests.echo", use_async=True)),
    path("calc/<str:a>/", rpc_view("calculator.add", public=True)),
]


@pytest.fixture
def urls(settings: Any) -> None:
    settings.ROOT_URLCONF = __name__


@pytest.fixture
def carol(caller: Any) -> HttpClient:  # noqa: F811
    return HttpClient(HTTP_AUTHORIZATION=basic("carol", "pw"))


def test_rpc_view_takes_a_json_object_or_array(urls: Any, worker: Any, carol: HttpClient) -> None:
    answer = carol.post("/add/", {"value": {"x": [1, 2]}}, content_type="application/json")
    assert answer.status_code == 200 and answer.json() == {"result": {"x": [1, 2]}}
    answer = carol.post("/add/", [7], content_type="application/json")
    assert answer.json() == {"result": 7}


def test_rpc_view_coerces_query_parameters_on_get(urls: Any, worker: Any, carol: HttpClient) -> None:
    answer = carol.get("/typed/", {"when": "2026-01-02T03:04:05+00:00", "day": "2026-01-02", "ident": "12345678-1234-5678-1234-567812345678",
                                   "amount": "12.50", "tags": ["a", "b"]})
    assert answer.status_code == 200, answer.content
    assert answer.json()["result"]["types"] == ["datetime", "date", "UUID", "Decimal"]
    assert answer.json()["result"]["tags"] == ["a", "b"]
    assert carol.get("/add/", {"value": "12"}).json() == {"result": 12}
    assert carol.get("/typed/", {"when": "not a date", "day": "x", "ident": "y", "amount": "z"}).status_code == 400


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/add/", {"nope": 1}, 400, "invalid_params"),
        ("/fail/", {"message": "boom"}, 502, "remote_error"),
        ("/slow/", {"seconds": 2}, 504, "timeout"),
        ("/add/", {"value": 1, "timeout": 5}, 400, "invalid_params"),
    ],
)
def test_rpc_view_maps_errors_to_statuses(urls: Any, worker: Any, carol: HttpClient, path: str, body: Any, status: int, code: str) -> None:
    answer = carol.post(path, body, content_type="application/json")
    assert answer.status_code == status, answer.content
    assert answer.json()["error"]["code"] == code
    assert "traceback" not in answer.json()["error"]


def test_unknown_procedures_and_unavailable_services(urls: Any, settings: Any, carol: HttpClient, client: Any) -> None:
    settings.ROOT_URLCONF = "project.urls"
    assert carol.post("/rpc/call/nope.nothing/", {}, content_type="application/json").status_code == 404
    answer = carol.post("/rpc/call/tests.echo/", {"value": 1}, content_type="application/json")  # no worker running
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "unavailable"


def test_a_rate_limited_call_is_429(urls: Any, worker: Any, carol: HttpClient, client: Any) -> None:
    catalog_store.sync_registry(default_registry, ["tests"])
    Procedure.objects.filter(name="tests.echo").update(rate_limit="1/m")
    catalog_store.push(["tests"])
    wait_for(lambda: client.governor.config("tests").procedure("tests.echo").rate_limit == "1/m", 2)
    assert carol.post("/add/", [1], content_type="application/json").status_code == 200
    answer = carol.post("/add/", [2], content_type="application/json")
    assert answer.status_code == 429 and answer.json()["error"]["code"] == "rate_limited"


def test_the_remote_traceback_is_shown_only_to_staff_with_debug(urls: Any, settings: Any, worker: Any, admin_user: Any) -> None:
    staff = HttpClient(HTTP_AUTHORIZATION=basic("admin", "password"))
    assert "traceback" not in staff.post("/fail/", {"message": "x"}, content_type="application/json").json()["error"]
    settings.DEBUG = True
    error = staff.post("/fail/", {"message": "x"}, content_type="application/json").json()["error"]
    assert "Traceback (most recent call last)" in error["traceback"] and error["type"] == "ValueError"


def test_anonymous_and_unpermitted_callers_are_refused_and_nothing_runs(urls: Any, worker: Any, nobody: Any, tmp_path: Any) -> None:  # noqa: F811
    answer = HttpClient().post("/add/", [1], content_type="application/json")
    assert answer.status_code == 401 and answer["WWW-Authenticate"].startswith("Basic")
    assert HttpClient(HTTP_AUTHORIZATION=basic("carol", "wrong")).post("/add/", [1], content_type="application/json").status_code == 401
    assert HttpClient(HTTP_AUTHORIZATION="Basic !!!").post("/add/", [1], content_type="application/json").status_code == 401
    dave = HttpClient(HTTP_AUTHORIZATION=basic("dave", "pw"))
    answer = dave.post("/add/", [1], content_type="application/json")
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"
    assert worker.executor.calls_served == 0


def test_allowed_groups_narrow_the_permission(urls: Any, worker: Any, caller: Any, client: Any, carol: HttpClient) -> None:  # noqa: F811
    service = Service.objects.create(name="tests")
    ops = Group.objects.create(name="ops")
    service.allowed_groups.add(ops)
    wait_for(lambda: client.governor.config("tests").allowed_groups == ("ops",), 2)
    assert carol.post("/add/", [1], content_type="application/json").status_code == 403
    caller.groups.add(ops)
    assert carol.post("/add/", [1], content_type="application/json").status_code == 200


def test_a_disabled_procedure_is_never_reachable(urls: Any, settings: Any, worker: Any, admin_user: Any, client: Any) -> None:
    Service.objects.create(name="tests", enabled=False)
    wait_for(lambda: not client.governor.config("tests").enabled, 2)
    staff = HttpClient(HTTP_AUTHORIZATION=basic("admin", "password"))
    assert staff.post("/add/", [1], content_type="application/json").status_code == 503
    assert staff.post("/public/", [1], content_type="application/json").status_code == 503
    assert worker.executor.calls_served == 0


def test_session_posts_need_a_csrf_token_basic_ones_do_not(urls: Any, worker: Any, caller: Any) -> None:  # noqa: F811
    browser = HttpClient(enforce_csrf_checks=True)
    browser.force_login(caller)
    refused = browser.post("/add/", [1], content_type="application/json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf"
    browser.get("/add/", {"value": "1"})  # any page that sets the cookie
    from django.middleware.csrf import get_token
    from django.test import RequestFactory

    token_request = RequestFactory().get("/")
    token = get_token(token_request)
    browser.cookies["csrftoken"] = token_request.META["CSRF_COOKIE"]
    accepted = browser.post("/add/", [1], content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 200, accepted.content
    machine = HttpClient(enforce_csrf_checks=True, HTTP_AUTHORIZATION=basic("carol", "pw"))
    assert machine.post("/add/", [2], content_type="application/json").status_code == 200


def test_oversize_and_malformed_bodies(urls: Any, settings: Any, worker: Any, carol: HttpClient, rpc_conf: dict[str, Any]) -> None:
    settings.RPCAPP = {**rpc_conf, "MAX_REQUEST_BYTES": 1000}
    big = b"[" + b'"x",' * 400 + b'"x"]'
    assert carol.generic("POST", "/add/", big, content_type="application/json").status_code == 413
    # Content-Length understated: the body is still read no further than the limit
    answer = carol.generic("POST", "/add/", big, content_type="application/json", CONTENT_LENGTH="10")
    assert answer.status_code == 400  # what was read (10 bytes) is not JSON
    assert carol.generic("POST", "/add/", b"{not json", content_type="application/json").status_code == 400
    assert carol.generic("POST", "/add/", b'"a string"', content_type="application/json").status_code == 400
    deep = b"[" * 100_000 + b"]" * 100_000
    settings.RPCAPP = {**rpc_conf, "MAX_REQUEST_BYTES": 1 << 20}
    assert carol.generic("POST", "/add/", deep, content_type="application/json").status_code == 400


def test_async_views_use_acall(urls: Any, worker: Any, caller: Any) -> None:  # noqa: F811
    async def run() -> Any:
        # (per request: AsyncClient(headers=...) defaults reach the view as HTTP_HTTP_AUTHORIZATION)
        return await AsyncClient().post("/async/", {"value": [1, 2]}, content_type="application/json", headers={"Authorization": basic("carol", "pw")})

    answer = asyncio.run(run())
    assert answer.status_code == 200 and answer.json() == {"result": [1, 2]}


def test_url_keyword_arguments_join_the_call(urls: Any, worker: Any) -> None:
    answer = HttpClient().post("/calc/2/", {"b": 3}, content_type="application/json")
    assert answer.status_code == 400  # a is a URL string: "2" is not a float
    assert HttpClient().get("/calc/x/").status_code == 400


def test_call_or_error_and_the_template_tag(worker: Any, client: Any) -> None:
    assert call_or_error("calculator.add", 1, 2).value == 3
    failed = call_or_error("calculator.divide", 1, 0, fallback="n/a")
    assert not failed.ok and failed.error.code == "remote_error" and str(failed) == "n/a"
    page = Template('{% load rpc %}{% rpc_call "calculator.add" 2 3 as s %}{{ s }}|{% rpc_call "nope.x" fallback="?" as f %}{{ f }}:{{ f.error.code }}').render(Context())
    assert page == "5|?:not_found"


def test_non_finite_floats_are_refused_both_ways(worker: Any, client: Any) -> None:
    from rpcapp.errors import InvalidParams, RemoteError

    with pytest.raises(InvalidParams):
        client.call("calculator.add", float("inf"), 1)
    with pytest.raises(InvalidParams):
        client.call("calculator.add", float("nan"), 1)
    with pytest.raises(RemoteError) as info:
        client.call("calculator.multiply", 1e308, 10)  # overflows to inf, which JSON cannot carry
    assert info.value.remote_type == "UnserializableResult"


def _asgi_post(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> int:
    """POST through Django's ASGI handler with exactly these headers and body chunks."""
    from django.core.asgi import get_asgi_application

    app = get_asgi_application()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)  # the client stays connected (Django cancels this wait)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    starts = [m["status"] for m in sent if m["type"] == "http.response.start"]
    assert starts, sent
    return int(starts[0])


def test_an_understated_or_missing_content_length_under_asgi_is_still_bounded(urls: Any, settings: Any, worker: Any, caller: Any, rpc_conf: dict[str, Any]) -> None:  # noqa: F811
    settings.RPCAPP = {**rpc_conf, "MAX_REQUEST_BYTES": 1000}
    chunks = [b"[" + b'"x",' * 200, b'"x",' * 200 + b'"x"]']  # 1,606 bytes in two chunks
    auth = [(b"authorization", basic("carol", "pw").encode()), (b"content-type", b"application/json")]
    assert _asgi_post("/async/", chunks, [*auth, (b"content-length", b"10")]) == 413  # says 10 bytes
    assert _asgi_post("/async/", chunks, auth) == 413  # says nothing
    assert _asgi_post("/add/", chunks, [*auth, (b"content-length", b"10")]) == 413  # the sync view under ASGI
    assert _asgi_post("/async/", [b'{"value": 5}'], auth) == 200
    assert worker.executor.calls_served == 1

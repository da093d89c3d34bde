"""The OpenAPI document generated from the catalog, and schemathesis run
against it: no server error other than the documented 502/503/504."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.test import Client as HttpClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import ignored_auth

from tests.http_helpers import basic, caller  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

AUTH = {"Authorization": basic("carol", "pw")}
DEMO = r"^(calculator|math|inventory)\."  # the demo's procedures (the test app's include crashing ones)


def test_the_document_describes_procedures_from_their_signatures(caller: Any, worker: Any) -> None:  # noqa: F811
    doc = HttpClient(HTTP_AUTHORIZATION=AUTH["Authorization"]).get("/rpc/openapi.json").json()
    assert doc["openapi"].startswith("3.0")
    add = doc["paths"]["/rpc/call/calculator.add/"]["post"]
    body = add["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"] == {"a": {"type": "number"}, "b": {"type": "number"}} and body["required"] == ["a", "b"]
    assert add["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["result"] == {"type": "number"}
    assert {"400", "401", "403", "404", "429", "502", "503", "504"} <= set(add["responses"])
    typed = doc["paths"]["/rpc/call/tests.typed/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert typed["properties"]["when"] == {"type": "string", "format": "date-time"}
    assert typed["properties"]["tags"] == {"type": "array", "items": {"type": "string"}, "nullable": True}
    assert "/rpc/call/math.fib_sequence/" not in doc["paths"]  # streams are not plain calls
    assert HttpClient().get("/rpc/openapi.json").status_code == 401


@pytest.fixture
def api(caller: Any, worker: Any) -> Any:  # noqa: F811
    return schemathesis.openapi.from_wsgi("/rpc/openapi.json", get_wsgi_application(), headers=AUTH)


def test_no_server_errors(api: Any) -> None:
    """Each demo operation, with schemathesis's generated cases (valid and not):
    the only 5xx allowed are the documented 502, 503 and 504."""
    operations = [result.ok() for result in api.include(operation_id_regex=DEMO).get_all_operations()]
    assert len(operations) >= 6
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            response = case.call(headers=AUTH)
            assert response.status_code < 500 or response.status_code in (502, 503, 504), (case.operation.label, response.status_code, response.text)
            # ignored_auth is left out: it replays the call with the scheme's credentials
            # replaced, but ours ride in an explicit header (test_http checks 401/403).
            case.validate_response(response, excluded_checks=[not_a_server_error, ignored_auth])

        check()

"""Layer 3: an OpenAPI 3 document of the procedures the caller may call,
generated from their signatures (``reverse("rpcapp:openapi")``).

Each procedure is ``POST <call url>/<name>/`` with a JSON object of its
keyword arguments; ``200`` carries ``{"result": ...}``, every error
``{"error": {"code", "message"}}`` with the statuses of
``rpcapp.errors.HTTP_MAPPING``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from ..http import identify, json_response, refusal
from ..registry import Spec
from ..runtime import get_client
from .access import callable_specs

INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
SCALARS: dict[str, dict[str, Any]] = {
    "int": INT64,
    "float": {"type": "number"},
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
    "null": {"nullable": True},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "uuid": {"type": "string", "format": "uuid"},
    "decimal": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"},
    "any": {},
}
ERROR_STATUSES = {
    "400": "invalid arguments (invalid_params)",
    "401": "not authenticated",
    "403": "not allowed to call this procedure (or a missing CSRF token)",
    "404": "no such procedure (not_found)",
    "413": "request body too large (payload_too_large)",
    "429": "over a rate limit (rate_limited)",
    "502": "the procedure raised (remote_error) or its worker was lost (worker_lost)",
    "503": "no live provider, or disabled in the catalog (unavailable)",
    "504": "no reply before the deadline (timeout)",
}


def schema_of(desc: Any) -> dict[str, Any]:
    """A JSON Schema (OpenAPI 3.0 dialect) for a signature type descriptor."""
    if isinstance(desc, str):
        return dict(SCALARS.get(desc, {}))
    kind = desc[0]
    if kind == "list":
        return {"type": "array", "items": schema_of(desc[1])}
    if kind == "dict":
        return {"type": "object", "additionalProperties": schema_of(desc[1])}
    options = [d for d in desc[1:] if d != "null"]
    schema: dict[str, Any] = schema_of(options[0]) if len(options) == 1 else {"anyOf": [schema_of(d) for d in options]}
    if "null" in desc[1:]:
        schema["nullable"] = True
    return schema


def _operation(spec: Spec) -> dict[str, Any]:
    params = [p for p in spec.signature.params if p.kind in ("pos", "kw")]
    body: dict[str, Any] = {
        "type": "object",
        "properties": {p.name: schema_of(p.type) for p in params},
        "additionalProperties": any(p.kind == "var_kw" for p in spec.signature.params),
    }
    required = [p.name for p in params if not p.has_default]
    if required:
        body["required"] = required
    result = {"type": "object", "properties": {"result": schema_of(spec.signature.returns)}, "required": ["result"]}
    responses: dict[str, Any] = {"200": {"description": "the result", "content": {"application/json": {"schema": result}}}}
    for status, text in ERROR_STATUSES.items():
        responses[status] = {"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "operationId": spec.name,
        "summary": spec.signature.text(),
        "description": spec.doc,
        "tags": [spec.service],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": responses,
    }


def document(specs: list[Spec], base: str) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "rpcapp procedures", "version": "1", "description": "Every procedure the authenticated caller may call."},
        "paths": {f"{base}{spec.name}/": {"post": _operation(spec)} for spec in specs if not spec.stream},
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}, "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                }
            },
        },
        "security": [{"basic": []}, {"session": []}],
    }


def openapi(request: HttpRequest) -> HttpResponse:
    caller = identify(request)
    if caller.user is None:
        return refusal(401, "unauthenticated", caller.problem)
    base = reverse("rpcapp:call", args=["x"])[: -len("x/")]
    return json_response(document(callable_specs(get_client(), caller), base))

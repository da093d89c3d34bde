"""Layer 3: view helpers: ``rpc_view`` (a view for one procedure) and
``call_or_error`` (a remote value for a page, with a fallback).

``rpc_view(name)``: a JSON object body is keyword arguments, a JSON array
positional ones; on GET, query parameters are keyword arguments coerced to
the hinted types. It answers ``{"result": value}``, or ``{"error": {"code",
"message"}}`` with the status of ``rpcapp.errors.HTTP_MAPPING`` (400, 404,
429, 502, 503, 504, ...). By default the caller must be authenticated and
permitted, as for the gateways; ``public=True`` opens it to anyone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from .errors import InvalidParams, RpcError
from .gateways.access import Refused, resolve
from .http import SAFE_METHODS, BodyTooLarge, Caller, error_response, forgery_refusal, identify, json_response, read_body, refusal
from .registry import RESERVED
from .runtime import get_client
from .signature import _Mismatch, coerce


@dataclass
class Outcome:
    """A remote value for a template: renders as the value (or the fallback)."""

    value: Any = None
    error: RpcError | None = None
    fallback: Any = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def shown(self) -> Any:
        return self.value if self.error is None else self.fallback

    def __str__(self) -> str:
        shown = self.shown
        return "" if shown is None else str(shown)


def call_or_error(name: str, /, *args: Any, fallback: Any = None, timeout: float | None = None, **kwargs: Any) -> Outcome:
    """Call ``name``; on any RpcError return an Outcome carrying the error and
    ``fallback`` instead of raising (a page renders, with the fallback)."""
    try:
        return Outcome(get_client().call(name, *args, timeout=timeout, **kwargs), None, fallback)
    except RpcError as exc:
        return Outcome(None, exc, fallback)


@dataclass
class _Prepared:
    caller: Caller
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    response: HttpResponse | None = None  # set when refused before calling


def _prepare(request: HttpRequest, name: str, public: bool) -> _Prepared:
    caller = identify(request)
    out = _Prepared(caller)
    try:
        if not public:
            resolve(get_client(), caller, name)
            refused = forgery_refusal(request, caller)
            if refused:
                raise Refused(*refused)
        if request.method in SAFE_METHODS:
            out.kwargs = _query_kwargs(request, _safe_spec(name))
        else:
            out.args, out.kwargs = _body_arguments(request, name)
        if set(out.kwargs) & set(RESERVED):
            raise InvalidParams(f"{sorted(set(out.kwargs) & set(RESERVED))} are not parameters of {name}", procedure=name)
    except Refused as exc:
        out.response = refusal(exc.status, exc.code, exc.message)
    except _NotSafe:
        out.response = HttpResponseNotAllowed(["POST"], content=b'{"error": {"code": "method_not_allowed", "message": "GET runs idempotent procedures only: use POST"}}', content_type="application/json")
    except BodyTooLarge as exc:
        out.response = refusal(413, "payload_too_large", str(exc))
    except orjson.JSONDecodeError:
        out.response = refusal(400, "invalid_params", "the body is not valid JSON")
    except RpcError as exc:
        out.response = error_response(exc, caller.user)
    return out


class _NotSafe(Exception):
    """A GET (or HEAD) for a procedure that is not idempotent: answered 405."""


def _safe_spec(name: str) -> Any:
    """The spec of ``name`` if a GET may run it: a GET must be safe to repeat
    and is not CSRF-checked, so only idempotent procedures answer it."""
    spec = get_client().describe(name)
    if not spec.idempotent:
        raise _NotSafe(name)
    return spec


def _body_arguments(request: HttpRequest, name: str) -> tuple[list[Any], dict[str, Any]]:
    body = read_body(request)
    data = orjson.loads(body) if body.strip() else {}
    if isinstance(data, list):
        return data, {}
    if isinstance(data, dict):
        return [], data
    raise InvalidParams("the body must be a JSON object (keyword arguments) or array (positional ones)", procedure=name)


def _query_kwargs(request: HttpRequest, spec: Any) -> dict[str, Any]:
    """Query parameters as keyword arguments, coerced to the hinted types
    (``?a=1&b=2.5``; a list parameter takes repeated keys, ``?tag=x&tag=y``)."""
    params = {p.name: p for p in spec.signature.params}
    out: dict[str, Any] = {}
    for key in request.GET:
        values = request.GET.getlist(key)
        hinted = params.get(key)
        desc = hinted.type if hinted is not None else "any"
        listed = _list_of(desc)
        out[key] = _from_text(values, listed, key, spec.name) if listed else _from_text(values[-1], desc, key, spec.name)
    return out


def _list_of(desc: Any) -> Any:
    """The list descriptor inside ``desc`` (``list[str]``, ``list[str] | None``), else None."""
    if isinstance(desc, list) and desc[0] == "list":
        return desc
    if isinstance(desc, list) and desc[0] == "union":
        return next((d for d in desc[1:] if isinstance(d, list) and d[0] == "list"), None)
    return None


def _from_text(raw: Any, desc: Any, key: str, procedure: str) -> Any:
    if isinstance(raw, list):
        return [_from_text(v, desc[1], key, procedure) for v in raw]
    for candidate in _readings(raw, desc):
        try:
            return coerce(candidate, desc)
        except _Mismatch:
            continue
    raise InvalidParams(f"query parameter {key!r} does not fit {desc}", procedure=procedure)


def _readings(raw: str, desc: Any) -> list[Any]:
    """The ways to read a query string value: as JSON (numbers, true, null), then as text."""
    try:
        return [orjson.loads(raw), raw]
    except orjson.JSONDecodeError:
        return [raw]


def _answer(prepared: _Prepared, call: Callable[[], Any]) -> HttpResponse:
    try:
        return json_response({"result": call()})
    except RpcError as exc:
        return error_response(exc, prepared.caller.user)


def rpc_view(name: str, *, methods: tuple[str, ...] = ("GET", "POST"), timeout: float | None = None, public: bool = False, use_async: bool = False) -> Callable[..., Any]:
    """A Django view calling procedure ``name``; ``use_async=True`` gives an
    async view (``await rpc.acall``) for ASGI servers."""

    if use_async:

        async def async_view(request: HttpRequest, **url_kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return HttpResponseNotAllowed(list(methods))
            prepared = await sync_to_async(_prepare)(request, name, public)
            if prepared.response is not None:
                return prepared.response
            try:
                result = await get_client().acall(name, *prepared.args, timeout=timeout, **{**prepared.kwargs, **url_kwargs})
            except RpcError as exc:
                return error_response(exc, prepared.caller.user)
            return json_response({"result": result})

        async_view.csrf_exempt = True  # type: ignore[attr-defined]  (checked above for session callers)
        return async_view

    @csrf_exempt
    def view(request: HttpRequest, **url_kwargs: Any) -> HttpResponse:
        if request.method not in methods:
            return HttpResponseNotAllowed(list(methods))
        prepared = _prepare(request, name, public)
        if prepared.response is not None:
            return prepared.response
        return _answer(prepared, lambda: get_client().call(name, *prepared.args, timeout=timeout, **{**prepared.kwargs, **url_kwargs}))

    return view


@csrf_exempt
def call(request: HttpRequest, procedure: str) -> HttpResponse:
    """``POST /rpc/call/<procedure>/``: the REST face of every procedure the
    caller may call (what the OpenAPI document describes)."""
    return rpc_view(procedure, methods=("POST",))(request)

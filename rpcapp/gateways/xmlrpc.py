"""Layer 3: the XML-RPC endpoint (``reverse("rpcapp:xmlrpc")``).

``xmlrpc.client.ServerProxy("https://user:password@host/rpc/xmlrpc/")``
works against it (HTTP Basic). Requests are parsed with defusedxml (no
entity expansion, no external entities, no DTDs); errors come back as
Faults whose ``faultCode`` is the error's JSON-RPC code and whose
``faultString`` starts with the error's code string. ``system.listMethods``
lists what the caller may call; ``system.methodHelp`` and
``system.methodSignature`` describe one procedure; ``system.multicall`` (what
``xmlrpc.client.MultiCall`` sends) runs up to ``MAX_BATCH`` calls, sent
together, each checked and answered as a single call would be: ``[result]``
or a fault struct.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
import xmlrpc.client
from concurrent.futures import Future
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.xmlrpc import DefusedExpatParser
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from ..errors import RpcError, jsonrpc_code
from ..http import MAX_BATCH, XML_TYPES, BodyTooLarge, Caller, forgery_refusal, identify, read_body
from ..runtime import get_client
from .access import Refused, callable_specs, resolve

INT64 = (-(2**63), 2**63 - 1)


class _Marshaller(xmlrpc.client.Marshaller):
    """Integers beyond XML-RPC's 32 bits as ``<i8>`` (which Python's client reads)."""

    dispatch = dict(xmlrpc.client.Marshaller.dispatch)

    def dump_long(self, value: int, write: Any) -> None:
        if -(2**31) <= value < 2**31:
            write(f"<value><int>{value}</int></value>\n")
        elif INT64[0] <= value <= INT64[1]:
            write(f"<value><i8>{value}</i8></value>\n")
        else:
            write(f"<value><string>{value}</string></value>\n")

    dispatch[int] = dump_long


def _xmlable(value: Any) -> Any:
    """Values XML-RPC has no type for, as strings (Decimal, UUID, date, time)."""
    if isinstance(value, dict):
        return {str(k): _xmlable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_xmlable(v) for v in value]
    if isinstance(value, (decimal.Decimal, uuid.UUID)) or (isinstance(value, (dt.date, dt.time)) and not isinstance(value, dt.datetime)):
        return str(value)
    return value


def _dump(params: Any) -> bytes:
    m = _Marshaller("utf-8", allow_none=True)
    if isinstance(params, xmlrpc.client.Fault):
        body = f"<fault>\n{m.dumps(params)}</fault>\n"
    else:
        body = f"<params>\n{m.dumps((_xmlable(params),))}</params>\n"
    return f"<?xml version='1.0'?>\n<methodResponse>\n{body}</methodResponse>\n".encode()


def _respond(result: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(_dump(result), status=status, content_type="text/xml; charset=utf-8")


def _fault(code: int, message: str) -> HttpResponse:
    return _respond(xmlrpc.client.Fault(code, message))


def _parse(body: bytes) -> tuple[tuple[Any, ...], str]:
    target = xmlrpc.client.Unmarshaller(use_datetime=True)
    parser = DefusedExpatParser(target, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    parser.feed(body)
    parser.close()
    params, method = target.close(), target.getmethodname()
    if not isinstance(method, str):
        raise ValueError("no methodName")
    return params, method


SYSTEM = {
    "system.listMethods": ("The procedures you may call.", "() -> list"),
    "system.methodHelp": ("A procedure's docstring.", "(name: str) -> str"),
    "system.methodSignature": ("A procedure's signature.", "(name: str) -> str"),
    "system.multicall": ("Several calls in one request: [{methodName, params}] -> [[result] or fault].", "(calls: list) -> list"),
}


def _system(method: str, params: tuple[Any, ...], caller: Caller) -> Any:
    client = get_client()
    if method == "system.listMethods":
        return [spec.name for spec in callable_specs(client, caller)] + sorted(SYSTEM)
    if method in ("system.methodHelp", "system.methodSignature") and len(params) == 1:
        which = 0 if method == "system.methodHelp" else 1
        if params[0] in SYSTEM:
            return SYSTEM[params[0]][which]
        spec = resolve(client, caller, params[0])
        return spec.doc if which == 0 else spec.signature.text()
    if method == "system.multicall":
        return _multicall(params, caller)
    raise xmlrpc.client.Fault(-32601, f"not_found: no method {method!r}")


def _as_fault(exc: Exception) -> xmlrpc.client.Fault:
    """The fault a failed call answers with (the same for single and multicall)."""
    if isinstance(exc, xmlrpc.client.Fault):
        return exc
    if isinstance(exc, Refused):
        return xmlrpc.client.Fault(-32011 if exc.status == 401 else -32012, f"{exc.code}: {exc.message}")
    if isinstance(exc, RpcError):
        return xmlrpc.client.Fault(jsonrpc_code(exc), f"{exc.code}: {exc.message}")
    raise exc


def _start(item: Any, caller: Caller) -> Future[Any]:
    """One call of a multicall, sent (or already answered: a system method, an error)."""
    fut: Future[Any] = Future()
    try:
        if not isinstance(item, dict) or not isinstance(item.get("methodName"), str):
            raise xmlrpc.client.Fault(-32600, "invalid_request: each call is a struct {methodName, params}")
        method, params = item["methodName"], item.get("params", [])
        if not isinstance(params, list):
            raise xmlrpc.client.Fault(-32600, "invalid_request: params must be an array")
        if method == "system.multicall":
            raise xmlrpc.client.Fault(-32600, "invalid_request: system.multicall may not be nested")
        if method.startswith("system."):
            fut.set_result(_system(method, tuple(params), caller))
            return fut
        resolve(get_client(), caller, method)
        return get_client().call_async(method, *params)
    except (xmlrpc.client.Fault, Refused, RpcError) as exc:
        fut.set_exception(exc)
    return fut


def _multicall(params: tuple[Any, ...], caller: Caller) -> list[Any]:
    """``system.multicall``: every call sent before any is awaited; answers in order."""
    if len(params) != 1 or not isinstance(params[0], list):
        raise xmlrpc.client.Fault(-32602, "invalid_params: system.multicall takes one array of {methodName, params} structs")
    if len(params[0]) > MAX_BATCH:
        raise xmlrpc.client.Fault(-32600, f"invalid_request: {len(params[0])} calls is over the limit of {MAX_BATCH}")
    answers: list[Any] = []
    for fut in [_start(item, caller) for item in params[0]]:
        try:
            answers.append([fut.result()])
        except (xmlrpc.client.Fault, Refused, RpcError) as exc:
            fault = _as_fault(exc)
            answers.append({"faultCode": fault.faultCode, "faultString": fault.faultString})
    return answers


@csrf_exempt
def xmlrpc_endpoint(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    caller = identify(request)
    if caller.user is None:
        response = _fault(-32011, f"unauthenticated: {caller.problem}")
        response.status_code = 401
        response["WWW-Authenticate"] = 'Basic realm="rpcapp"'
        return response
    refused = forgery_refusal(request, caller, XML_TYPES)
    if refused:
        status, code, message = refused
        response = _fault(-32012 if status == 403 else -32600, f"{code}: {message}")
        response.status_code = status
        return response
    try:
        params, method = _parse(read_body(request))
    except BodyTooLarge as exc:
        response = _fault(-32600, f"payload_too_large: {exc}")
        response.status_code = 413
        return response
    except (DefusedXmlException, ValueError, TypeError, xmlrpc.client.ResponseError, Exception) as exc:  # noqa: BLE001  (expat raises many kinds)
        return _fault(-32700, f"parse error: {type(exc).__name__}")
    try:
        if method.startswith("system."):
            return _respond(_system(method, params, caller))
        resolve(get_client(), caller, method)
        return _respond(get_client().call(method, *params))
    except (xmlrpc.client.Fault, Refused, RpcError) as exc:
        response = _respond(_as_fault(exc))
        if isinstance(exc, Refused):
            response.status_code = exc.status
        return response

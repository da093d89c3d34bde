"""Layer 3: the XML-RPC endpoint (``reverse("rpcapp:xmlrpc")``).

``xmlrpc.client.ServerProxy("https://user:password@host/rpc/xmlrpc/")``
works against it (HTTP Basic). Requests are parsed with defusedxml (no
entity expansion, no external entities, no DTDs); errors come back as
Faults whose ``faultCode`` is the error's JSON-RPC code and whose
``faultString`` starts with the error's code string. ``system.listMethods``
lists what the caller may call; ``system.methodHelp`` and
``system.methodSignature`` describe one procedure.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
import xmlrpc.client
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.xmlrpc import DefusedExpatParser
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from ..errors import RpcError, jsonrpc_code
from ..http import BodyTooLarge, Caller, csrf_problem, identify, read_body
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


def _system(method: str, params: tuple[Any, ...], caller: Caller) -> Any:
    client = get_client()
    if method == "system.listMethods":
        return [spec.name for spec in callable_specs(client, caller)]
    if method in ("system.methodHelp", "system.methodSignature") and len(params) == 1:
        spec = resolve(client, caller, params[0])
        return spec.doc if method == "system.methodHelp" else spec.signature.text()
    raise xmlrpc.client.Fault(-32601, f"not_found: no method {method!r}")


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
    problem = csrf_problem(request, caller)
    if problem:
        response = _fault(-32012, f"csrf: {problem}")
        response.status_code = 403
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
    except xmlrpc.client.Fault as fault:
        return _respond(fault)
    except Refused as exc:
        response = _fault(-32011 if exc.status == 401 else -32012, f"{exc.code}: {exc.message}")
        response.status_code = exc.status
        return response
    except RpcError as exc:
        return _fault(jsonrpc_code(exc), f"{exc.code}: {exc.message}")

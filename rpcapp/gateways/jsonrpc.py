"""Layer 3: the JSON-RPC 2.0 endpoint (``reverse("rpcapp:jsonrpc")``).

POST only. Single requests, batches (up to ``MAX_BATCH`` calls, sent together
and answered in one response, in order), notifications (no ``id``: run, never
answered; a request of notifications only gets ``204 No Content``). Errors
use the specification's codes; our own errors are in the server range with
their code string in ``data.code`` (see ``rpcapp.errors.HTTP_MAPPING``).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from ..errors import InvalidParams, ProcedureNotFound, RpcError, http_status, jsonrpc_code
from ..http import MAX_BATCH, BodyTooLarge, Caller, error_body, forgery_refusal, identify, json_response, read_body, retry_after
from ..registry import RESERVED
from ..runtime import get_client
from .access import Refused, resolve

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
UNAUTHENTICATED, FORBIDDEN = -32011, -32012

_NO_ID = object()
log = logging.getLogger("rpcapp.http")


def _error(call_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": call_id}


def _rpc_error(call_id: Any, exc: RpcError, caller: Caller) -> dict[str, Any]:
    if isinstance(exc, ProcedureNotFound):
        return _error(call_id, METHOD_NOT_FOUND, "Method not found", error_body(exc))
    return _error(call_id, jsonrpc_code(exc), exc.message, error_body(exc, caller.user))


def _valid_id(value: Any) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _shape(item: Any) -> tuple[Any, str | None, Any]:
    """(id, method, params) of a well-formed request; method None if it is not
    (the id is then what to answer with: the request's if valid, else null)."""
    if not isinstance(item, dict):
        return None, None, None
    call_id = item.get("id", _NO_ID)
    method, params = item.get("method"), item.get("params", [])
    id_ok = call_id is _NO_ID or _valid_id(call_id)
    if item.get("jsonrpc") != "2.0" or not isinstance(method, str) or not isinstance(params, (list, dict)) or not id_ok:
        return (call_id if id_ok and call_id is not _NO_ID else None), None, None
    return call_id, method, params


class Batch:
    """The calls of one HTTP request, prepared, sent together, then answered."""

    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self.client = get_client()
        self.answers: list[Any] = []  # a response dict, or a (call id, Future) to wait for
        self.status = 200  # a lone call refused for want of credentials or rights: 401/403
        self.headers: dict[str, str] = {}  # a lone call refused for a full queue: 503 with Retry-After

    def add(self, item: Any) -> None:
        call_id, method, params = _shape(item)
        if method is None:
            self.answers.append(_error(call_id, INVALID_REQUEST, "Invalid Request"))
            return
        notify = call_id is _NO_ID
        answer = self._send(call_id, method, params, notify)
        if answer is not None and not notify:
            self.answers.append(answer)

    def _send(self, call_id: Any, method: str, params: Any, notify: bool) -> Any:
        """A response dict for an error found now, the (id, Future) of a call, or None."""
        try:
            resolve(self.client, self.caller, method)
            args, kwargs = (params, {}) if isinstance(params, list) else ([], params)
            if set(kwargs) & set(RESERVED):
                raise InvalidParams(f"{sorted(set(kwargs) & set(RESERVED))} are not parameters of {method}", procedure=method)
            if notify:
                self.client.notify(method, *args, **kwargs)
                return None
            return (call_id, self.client.call_async(method, *args, **kwargs))
        except Refused as exc:
            self.status = exc.status
            return _error(call_id, UNAUTHENTICATED if exc.status == 401 else FORBIDDEN, exc.message, {"code": exc.code})
        except InvalidParams as exc:
            return _error(call_id, INVALID_PARAMS, "Invalid params", error_body(exc))
        except RpcError as exc:
            self._overloaded(exc)
            return _rpc_error(call_id, exc, self.caller)
        except Exception:  # a bug of ours must not become an HTML 500 page
            log.exception("JSON-RPC call to %s failed", method)
            return _error(call_id, INTERNAL_ERROR, "Internal error")

    def _overloaded(self, exc: RpcError) -> None:
        """A full queue: the HTTP status (503) and Retry-After, for a lone call."""
        headers = retry_after(exc)
        if headers:
            self.status, self.headers = http_status(exc), headers

    def responses(self) -> list[dict[str, Any]]:
        out = []
        for answer in self.answers:
            if isinstance(answer, tuple):
                call_id, fut = answer
                out.append(self._wait(call_id, fut))
            else:
                out.append(answer)
        return out

    def _wait(self, call_id: Any, fut: Future[Any]) -> dict[str, Any]:
        try:
            return {"jsonrpc": "2.0", "result": fut.result(), "id": call_id}
        except RpcError as exc:
            if exc.code == "invalid_params":
                return _error(call_id, INVALID_PARAMS, "Invalid params", error_body(exc))
            self._overloaded(exc)
            return _rpc_error(call_id, exc, self.caller)
        except Exception:  # a bug of ours must not become an HTML 500 page
            log.exception("JSON-RPC call %r failed", call_id)
            return _error(call_id, INTERNAL_ERROR, "Internal error")


@csrf_exempt
def jsonrpc(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    caller = identify(request)
    if caller.user is None:
        return json_response(_error(None, UNAUTHENTICATED, caller.problem, {"code": "unauthenticated"}), 401, {"WWW-Authenticate": 'Basic realm="rpcapp"'})
    refused = forgery_refusal(request, caller)
    if refused:
        status, code, message = refused
        return json_response(_error(None, FORBIDDEN if status == 403 else INVALID_REQUEST, message, {"code": code}), status)
    try:
        data = orjson.loads(read_body(request))
    except BodyTooLarge as exc:
        return json_response(_error(None, INVALID_REQUEST, str(exc), {"code": "payload_too_large"}), 413)
    except orjson.JSONDecodeError:  # also JSON nested too deeply to parse
        return json_response(_error(None, PARSE_ERROR, "Parse error"))
    return _run(Batch(caller), data)


def _run(batch: Batch, data: Any) -> HttpResponse:
    if isinstance(data, list):
        if not data:
            return json_response(_error(None, INVALID_REQUEST, "Invalid Request"))
        if len(data) > MAX_BATCH:
            return json_response(_error(None, INVALID_REQUEST, f"a batch of {len(data)} calls is over the limit of {MAX_BATCH}"))
        for item in data:
            batch.add(item)
        responses = batch.responses()
        return json_response(responses) if responses else HttpResponse(status=204)
    batch.add(data)
    responses = batch.responses()
    if not responses:
        return HttpResponse(status=batch.status, headers=batch.headers) if batch.headers else HttpResponse(status=204)
    return json_response(responses[0], status=batch.status, headers=batch.headers)

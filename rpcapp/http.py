"""Layer 3: what every HTTP face of rpcapp shares: authentication (session or
HTTP Basic), the permission to call, CSRF for session requests, bounded body
reading, and errors as JSON.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

from . import conf
from .errors import RemoteError, RpcError, http_status
from .protocol import encode_body

MAX_BATCH = 100
"""Calls in one JSON-RPC batch at most."""

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")
JSON_TYPES = ("application/json",)
XML_TYPES = ("text/xml", "application/xml")
"""Body types a cross-site HTML form cannot send (it sends text/plain,
application/x-www-form-urlencoded or multipart/form-data only)."""


class BodyTooLarge(Exception):
    """The request body is over the limit (nothing of it was parsed)."""


@dataclass
class Caller:
    user: Any  # a Django user, or None
    via: str  # "session", "basic" or "" (anonymous)
    problem: str = ""  # why it was refused: "" if authenticated


def identify(request: HttpRequest) -> Caller:
    """The caller from HTTP Basic credentials if sent (they must be right),
    else from the session."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:6].lower() == "basic ":
        try:
            username, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return Caller(None, "basic", "malformed Basic credentials")
        user = authenticate(request, username=username, password=password)
        if user is None or not user.is_active:
            return Caller(None, "basic", "wrong username or password")
        return Caller(user, "basic")
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return Caller(user, "session")
    return Caller(None, "", "authentication required (a session, or HTTP Basic)")


def may_call(user: Any, allowed_groups: tuple[str, ...] | list[str] = ()) -> bool:
    """A superuser may; else the permission ``rpcapp.call_procedure`` is needed,
    and membership of one of the service's allowed groups if it has any."""
    if user is None or not user.is_active:
        return False
    if user.is_superuser:
        return True
    if not user.has_perm("rpcapp.call_procedure"):
        return False
    if allowed_groups:
        return bool(user.groups.filter(name__in=list(allowed_groups)).exists())
    return True


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> Any:
        return reason


def csrf_problem(request: HttpRequest, caller: Caller) -> str | None:
    """Why a session-authenticated unsafe request fails Django's CSRF check, or None."""
    if caller.via != "session" or request.method in SAFE_METHODS:
        return None
    return _CsrfCheck(lambda r: HttpResponse()).process_view(request, lambda r: None, (), {})


def forgery_refusal(request: HttpRequest, caller: Caller, body_types: tuple[str, ...] = JSON_TYPES) -> tuple[int, str, str] | None:
    """(status, code, message) when an unsafe request may come from another
    site's page, else None. A session request needs its CSRF token (403). A
    Basic one needs no token, since a browser re-sends cached Basic
    credentials to any page's form, but must carry a body type that no HTML
    form can send (415)."""
    if request.method in SAFE_METHODS:
        return None
    if caller.via == "basic":
        sent = (request.content_type or "").lower()
        if not sent and request.META.get("CONTENT_LENGTH") in (None, "", "0"):
            return None  # no body at all: nothing a form could have sent, nothing to run
        if sent not in body_types:
            wanted = " or ".join(body_types)
            return 415, "unsupported_media_type", f"HTTP Basic requests must send Content-Type {wanted} (got {sent or 'none'})"
        return None
    problem = csrf_problem(request, caller)
    return (403, "csrf", f"CSRF check failed: {problem}") if problem else None


def max_body() -> int:
    return conf.get().MAX_REQUEST_BYTES


def read_body(request: HttpRequest, limit: int | None = None) -> bytes:
    """The body, read no further than the limit whatever Content-Length says
    (missing or understated under ASGI, where the body may be longer)."""
    limit = max_body() if limit is None else limit
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise BodyTooLarge(f"request body of {declared} bytes is over the limit of {limit}")
    data = request.read(limit + 1)
    if len(data) > limit:
        raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
    return data


def dumps(data: Any) -> bytes:
    """JSON as everywhere else in rpcapp (Decimal as text, datetime, date, UUID)."""
    return encode_body(data)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(dumps(data), status=status, content_type="application/json")
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def error_body(error: RpcError, user: Any = None) -> dict[str, Any]:
    """``{"code", "message"}`` (plus the remote type and message); the remote
    traceback only for staff when DEBUG is on."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if isinstance(error, RemoteError):
        body["type"] = error.remote_type
        body["remote_message"] = error.remote_message
        if settings.DEBUG and user is not None and getattr(user, "is_staff", False):
            body["traceback"] = error.remote_traceback
    return body


def retry_after(error: BaseException) -> dict[str, str]:
    """A ``Retry-After`` header for an error that says when to try again (a
    full queue), else none."""
    seconds = getattr(error, "retry_after", None)
    return {"Retry-After": str(max(1, round(seconds)))} if seconds else {}


def error_response(error: RpcError, user: Any = None) -> HttpResponse:
    return json_response({"error": error_body(error, user)}, status=http_status(error), headers=retry_after(error))


def refusal(status: int, code: str, message: str) -> HttpResponse:
    headers = {"WWW-Authenticate": 'Basic realm="rpcapp"'} if status == 401 else None
    return json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)

"""Layer 0: the error root and every typed error raised to users.

Each error has a stable ``code`` string; the same codes travel on the wire and
drive the HTTP and JSON-RPC mappings.
"""

from __future__ import annotations

from typing import Any


class RpcError(Exception):
    """Raised for every failure of a remote call; the root of rpcapp's errors."""

    code = "rpc_error"

    def __init__(
        self,
        message: str = "",
        *,
        procedure: str | None = None,
        call_id: str | None = None,
    ) -> None:
        self.message = message or self.__class__.__doc__ or self.code
        self.procedure = procedure
        self.call_id = call_id
        super().__init__(self.message)

    def to_wire(self) -> dict[str, Any]:
        """The error as it travels in a reply envelope."""
        return {"code": self.code, "message": self.message}


class RpcTimeout(RpcError):
    """Raised when no reply arrived before the call's deadline."""

    code = "timeout"


class ProcedureNotFound(RpcError):
    """Raised when the procedure is not known to the catalog."""

    code = "not_found"


class ServiceUnavailable(RpcError):
    """Raised when no live provider serves the procedure, or it is disabled or draining."""

    code = "unavailable"


class InvalidParams(RpcError):
    """Raised when the arguments do not fit the procedure's signature."""

    code = "invalid_params"


class RemoteError(RpcError):
    """Raised when the procedure raised an exception on the worker."""

    code = "remote_error"

    def __init__(
        self,
        message: str = "",
        *,
        remote_type: str = "Exception",
        remote_message: str = "",
        remote_traceback: str = "",
        procedure: str | None = None,
        call_id: str | None = None,
    ) -> None:
        self.remote_type = remote_type
        self.remote_message = remote_message or message
        self.remote_traceback = remote_traceback
        super().__init__(
            message or f"{remote_type}: {remote_message}",
            procedure=procedure,
            call_id=call_id,
        )

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.remote_message}"

    def to_wire(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "type": self.remote_type,
            "remote_message": self.remote_message,
            "traceback": self.remote_traceback,
        }


class PayloadTooLarge(RpcError):
    """Raised when a request or a reply is over the configured size limit."""

    code = "payload_too_large"


class RateLimited(RpcError):
    """Raised when a call is over its procedure's or service's rate limit."""

    code = "rate_limited"


class LockNotAcquired(RpcError):
    """Raised when a lock-guarded call could not take its lock in time."""

    code = "lock_not_acquired"


class WorkerLost(RpcError):
    """Raised when the worker running a call died, or its request was dead-lettered."""

    code = "worker_lost"


class SigningKeyMismatch(RpcError):
    """Raised when the workers of a service sign with a different key than this process."""

    code = "signing_key_mismatch"


class ConfigurationError(RpcError, ValueError):
    """Raised when rpcapp's configuration is invalid, e.g. a malformed Redis URL."""

    code = "configuration_error"


class TransportError(RpcError):
    """Raised inside rpcapp when Redis cannot be reached; callers see ServiceUnavailable."""

    code = "unavailable"
    maybe_sent = True
    """False when the connection failed before anything was sent (safe to send again)."""


class ProtocolError(RpcError):
    """Raised when a message cannot be decoded or fails its signature check."""

    code = "protocol_error"


ERRORS_BY_CODE: dict[str, type[RpcError]] = {
    cls.code: cls
    for cls in (
        RpcTimeout,
        ProcedureNotFound,
        ServiceUnavailable,
        InvalidParams,
        RemoteError,
        PayloadTooLarge,
        RateLimited,
        LockNotAcquired,
        WorkerLost,
        SigningKeyMismatch,
    )
}


def error_from_wire(
    data: dict[str, Any], *, procedure: str | None = None, call_id: str | None = None
) -> RpcError:
    """Rebuild a typed error from its wire form; unknown codes become RemoteError."""
    code = str(data.get("code", "remote_error"))
    message = str(data.get("message", ""))
    cls = ERRORS_BY_CODE.get(code)
    if cls is None or cls is RemoteError:
        return RemoteError(
            message,
            remote_type=str(data.get("type", "Exception")),
            remote_message=str(data.get("remote_message", message)),
            remote_traceback=str(data.get("traceback", "")),
            procedure=procedure,
            call_id=call_id,
        )
    return cls(message, procedure=procedure, call_id=call_id)


# One table for every HTTP face of an error: code -> (HTTP status, JSON-RPC code).
# The JSON-RPC codes of our own errors are in the spec's server range (-32000..-32099);
# the error object's ``data.code`` carries the code string itself.
HTTP_MAPPING: dict[str, tuple[int, int]] = {
    "invalid_params": (400, -32602),
    "not_found": (404, -32601),
    "rate_limited": (429, -32002),
    "remote_error": (502, -32003),
    "unavailable": (503, -32001),
    "timeout": (504, -32000),
    "payload_too_large": (413, -32006),
    "lock_not_acquired": (409, -32004),
    "worker_lost": (502, -32005),
    "signing_key_mismatch": (503, -32007),
    "configuration_error": (500, -32603),
}


def http_status(error: RpcError) -> int:
    return HTTP_MAPPING.get(error.code, (502, -32003))[0]


def jsonrpc_code(error: RpcError) -> int:
    return HTTP_MAPPING.get(error.code, (502, -32003))[1]

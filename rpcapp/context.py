"""Layer 2: the context of the call a worker is running.

A call made from inside a procedure inherits the remaining deadline and the
trace id of the call it runs in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class CallContext:
    call_id: str
    procedure: str
    trace_id: str
    deadline_ms: int
    provider: str = ""


_current: ContextVar[CallContext | None] = ContextVar("rpcapp_call", default=None)


def current() -> CallContext | None:
    """The call being run by this thread (or task), if any."""
    return _current.get()


@contextlib.contextmanager
def running(ctx: CallContext) -> Iterator[CallContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)

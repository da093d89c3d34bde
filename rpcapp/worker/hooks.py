"""Layer 2: hooks around every call a worker runs.

A hook has ``before_call(req)``, ``after_call(req, reply)`` and
``on_error(req, exc)``; hooks run in order and unwind in reverse. A failing
hook is logged and never breaks the call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from ..protocol import Request

log = logging.getLogger("rpcapp.hooks")


class Hook(Protocol):
    def before_call(self, req: Request) -> None: ...

    def after_call(self, req: Request, reply: dict[str, Any]) -> None: ...

    def on_error(self, req: Request, exc: BaseException) -> None: ...


def run_hooks(hooks: Sequence[Any], method: str, *args: Any, reverse: bool = False) -> None:
    for hook in reversed(hooks) if reverse else hooks:
        fn = getattr(hook, method, None)
        if fn is None:
            continue
        try:
            fn(*args)
        except Exception:
            log.exception("hook %r.%s failed", hook, method)

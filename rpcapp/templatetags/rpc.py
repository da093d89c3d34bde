"""``{% load rpc %}``: remote values in templates.

``{% rpc_call "math.fib" 10 fallback="?" as fib %}`` calls the procedure
while rendering and stores an Outcome: ``{{ fib }}`` shows the value (or the
fallback if the call failed), ``{{ fib.ok }}``, ``{{ fib.error.code }}`` and
``{{ fib.error.message }}`` tell what went wrong. A failing call never
breaks the page.
"""

from __future__ import annotations

from typing import Any

from django import template

from ..views import Outcome, call_or_error

register = template.Library()


@register.simple_tag
def rpc_call(name: str, *args: Any, fallback: Any = None, timeout: float | None = None, **kwargs: Any) -> Outcome:
    return call_or_error(name, *args, fallback=fallback, timeout=timeout, **kwargs)

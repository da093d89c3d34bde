"""Layer 3: system checks for the RPCAPP setting."""

from __future__ import annotations

import os
from typing import Any

from django.core.checks import Error, Tags, Warning, register
from django.urls import NoReverseMatch, reverse

from . import conf
from .protocol import CODECS


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    problems: list[Any] = []
    for key in conf.unknown_keys():
        problems.append(Warning(f"RPCAPP[{key!r}] is not a known setting", id="rpcapp.W001"))
    c = conf.get()
    if c.CODEC not in CODECS:
        problems.append(Error(f"RPCAPP['CODEC'] must be one of {sorted(CODECS)}", id="rpcapp.E001"))
    durations_ok = True
    for name in ("DEFAULT_TIMEOUT", "HEARTBEAT_INTERVAL", "PROVIDER_TTL", "DRAIN_GRACE", "CATALOG_REFRESH"):
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            durations_ok = False
            problems.append(Error(f"RPCAPP[{name!r}] must be a positive number of seconds", id="rpcapp.E002"))
    if durations_ok and c.PROVIDER_TTL <= c.HEARTBEAT_INTERVAL:
        problems.append(Error("RPCAPP['PROVIDER_TTL'] must be longer than HEARTBEAT_INTERVAL", id="rpcapp.E003"))
    for name in ("MAX_REQUEST_BYTES", "MAX_REPLY_BYTES", "MAX_DELIVERIES", "MAX_QUEUE_LENGTH", "REPLY_TTL", "IDEMPOTENCY_TTL", "DEAD_LETTER_MAX"):
        value = getattr(c, name)
        if not isinstance(value, int) or value < 1:
            problems.append(Error(f"RPCAPP[{name!r}] must be a positive integer", id="rpcapp.E004"))
    url = os.environ.get("RPCAPP_REDIS_URL") or c.REDIS_URL
    if url and url.split("://", 1)[0] not in ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"):
        problems.append(Error(f"the Redis URL has an unsupported scheme: {url.split('://', 1)[0]!r}", id="rpcapp.E005"))
    return problems


@register(Tags.urls)
def check_urls(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """rpcapp.W010: ``rpcapp.urls`` is not included (under the namespace ``rpcapp``)."""
    try:
        reverse("rpcapp:dashboard")
    except NoReverseMatch:
        return [
            Warning(
                "rpcapp.urls is not included under the namespace 'rpcapp': the dashboard and the JSON-RPC/XML-RPC gateways are not mounted",
                hint='add path("rpc/", include("rpcapp.urls")) to your ROOT_URLCONF\'s urlpatterns',
                id="rpcapp.W010",
            )
        ]
    except Exception:  # a broken URLconf: Django's own checks report it
        return []
    return []

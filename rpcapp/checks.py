"""Layer 3: system checks: the RPCAPP setting and the URLconf (ids in docs/configuration.md)."""

from __future__ import annotations

import difflib
import importlib.util
import os
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.urls import NoReverseMatch, reverse

from . import conf
from .errors import ConfigurationError
from .protocol import CODECS
from .transport.address import parse_url


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """rpcapp.E001-E009 and W001: the RPCAPP setting (see docs/configuration.md)."""
    raw = getattr(settings, "RPCAPP", None)
    if raw is not None and not isinstance(raw, dict):
        return [
            Error(
                f"settings.RPCAPP must be a dict, not {type(raw).__name__}",
                hint='e.g. RPCAPP = {"REDIS_URL": "redis://127.0.0.1:6379/0"}',
                id="rpcapp.E006",
            )
        ]
    c = conf.get()
    return [*_unknown_keys(), *_values(c), *_redis_urls(c)]


def _unknown_keys() -> list[Any]:
    """W001 for an unknown key, with the nearest known one; E007 for a misspelt REDIS_URL."""
    problems: list[Any] = []
    for key in conf.unknown_keys():
        near = difflib.get_close_matches(str(key), list(conf.DEFAULTS), n=1)
        if near == ["REDIS_URL"] and "REDIS_URL" not in conf.user_settings():
            problems.append(
                Error(
                    f"RPCAPP[{key!r}] is not a known setting; did you mean 'REDIS_URL'? As it is, no Redis address is set,"
                    " so rpcapp uses the embedded Redis server under var/ instead",
                    id="rpcapp.E007",
                )
            )
            continue
        hint = f"; did you mean {near[0]!r}?" if near else ""
        problems.append(Warning(f"RPCAPP[{key!r}] is not a known setting{hint}", id="rpcapp.W001"))
    return problems


def _values(c: conf.Conf) -> list[Any]:
    problems: list[Any] = []
    if c.CODEC not in CODECS:
        problems.append(Error(f"RPCAPP['CODEC'] must be one of {sorted(CODECS)}", id="rpcapp.E001"))
    elif c.CODEC == "msgpack" and importlib.util.find_spec("msgpack") is None:
        problems.append(Error("RPCAPP['CODEC'] is 'msgpack' but msgpack is not installed", hint="pip install 'rpcapp[msgpack]'", id="rpcapp.E009"))
    durations_ok = True
    for name in ("DEFAULT_TIMEOUT", "HEARTBEAT_INTERVAL", "PROVIDER_TTL", "DRAIN_GRACE", "CATALOG_REFRESH", "EVENT_TTL"):
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
    return problems


def _redis_urls(c: conf.Conf) -> list[Any]:
    """E005: the Redis URL (``$RPCAPP_REDIS_URL`` or REDIS_URL); E008: LOCK_REDIS_URLS."""
    problems: list[Any] = []
    env = os.environ.get("RPCAPP_REDIS_URL")
    url = env or c.REDIS_URL
    where = "$RPCAPP_REDIS_URL" if env else "RPCAPP['REDIS_URL']"
    if url is not None:
        try:
            parse_url(url)
        except ConfigurationError as exc:
            problems.append(Error(f"{where}: {exc.message}", id="rpcapp.E005"))
    urls = c.LOCK_REDIS_URLS
    if not isinstance(urls, (list, tuple)):
        return [*problems, Error("RPCAPP['LOCK_REDIS_URLS'] must be a list of Redis URLs", id="rpcapp.E008")]
    for i, entry in enumerate(urls):
        try:
            parse_url(entry)
        except ConfigurationError as exc:
            problems.append(Error(f"RPCAPP['LOCK_REDIS_URLS'][{i}]: {exc.message}", id="rpcapp.E008"))
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

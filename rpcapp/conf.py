"""Layer 3: rpcapp's settings: ``settings.RPCAPP`` merged over the defaults.

Read through :func:`get`, cached, and cleared when Django's settings change
(so ``override_settings`` works). Never read at import time.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    "REDIS_URL": None,  # None: the embedded server (or $RPCAPP_REDIS_URL)
    "NAMESPACE": "rpcapp",
    "DEFAULT_TIMEOUT": 10.0,
    "HEARTBEAT_INTERVAL": 1.0,
    "PROVIDER_TTL": 5.0,
    "MAX_DELIVERIES": 3,
    "DRAIN_GRACE": 30.0,
    "MAX_REQUEST_BYTES": 1 << 20,
    "MAX_REPLY_BYTES": 1 << 20,
    "CODEC": "json",
    "SIGNING_KEY": None,  # None: derived from SECRET_KEY
    "OLD_SIGNING_KEYS": [],  # still accepted, for rotation
    "REPLY_TTL": 60,
    "IDEMPOTENCY_TTL": 3600,
    "MAX_QUEUE_LENGTH": 100_000,
    "DEAD_LETTER_MAX": 10_000,
    "EMBEDDED_DIR": None,  # None: <BASE_DIR>/var
    "CATALOG": True,
    "CATALOG_REFRESH": 10.0,
    "LOCK_REDIS_URLS": [],
    "EVENT_MAX_ATTEMPTS": 5,
    "EVENT_RETRY_DELAY": 1.0,
    "EVENT_TTL": 3600.0,
    "STREAM_WINDOW": 64,
    "OUTBOX_BATCH": 500,
    "RECORD_CALLS": True,
    "METRICS_PUBLIC": False,
    "HISTORY_STREAM_MAX": 100_000,
    "HISTORY_RETENTION_DAYS": 7,
    "ROLLUP_RETENTION_DAYS": 90,
    "REDACT_KEYS": [
        "password", "passwd", "pwd", "passphrase", "secret", "token", "api_key", "auth", "authorization",
        "credential", "private_key", "cookie", "ssn", "card_number", "cvv",
    ],  # fmt: skip
    "WORKER_MAINTENANCE": True,  # runrpcworker processes take turns at the maintenance (rpcapp.maintenance)
    "MAINTENANCE_PERIODS": {},  # job name -> seconds, over rpcapp.maintenance.PERIODS
    "CACHE_ALIAS": "default",  # the Django cache rpcapp uses (the dashboard's aggregates)
    "DASHBOARD_CACHE_TTL": 5.0,  # seconds the dashboard's aggregates are cached; 0: not cached
}


@dataclass(frozen=True)
class Conf:
    REDIS_URL: str | None
    NAMESPACE: str
    DEFAULT_TIMEOUT: float
    HEARTBEAT_INTERVAL: float
    PROVIDER_TTL: float
    MAX_DELIVERIES: int
    DRAIN_GRACE: float
    MAX_REQUEST_BYTES: int
    MAX_REPLY_BYTES: int
    CODEC: str
    SIGNING_KEY: str | None
    OLD_SIGNING_KEYS: list[str]
    REPLY_TTL: int
    IDEMPOTENCY_TTL: int
    MAX_QUEUE_LENGTH: int
    DEAD_LETTER_MAX: int
    EMBEDDED_DIR: str | None
    CATALOG: bool
    CATALOG_REFRESH: float
    LOCK_REDIS_URLS: list[str]
    EVENT_MAX_ATTEMPTS: int
    EVENT_RETRY_DELAY: float
    EVENT_TTL: float
    STREAM_WINDOW: int
    OUTBOX_BATCH: int
    RECORD_CALLS: bool
    METRICS_PUBLIC: bool
    HISTORY_STREAM_MAX: int
    HISTORY_RETENTION_DAYS: float
    ROLLUP_RETENTION_DAYS: float
    REDACT_KEYS: list[str]
    WORKER_MAINTENANCE: bool
    MAINTENANCE_PERIODS: dict[str, float]
    CACHE_ALIAS: str
    DASHBOARD_CACHE_TTL: float

    @property
    def embedded_dir(self) -> Path:
        if self.EMBEDDED_DIR:
            return Path(self.EMBEDDED_DIR)
        base = getattr(settings, "BASE_DIR", None) or Path.cwd()
        return Path(base) / "var"


def user_settings() -> dict[str, Any]:
    """``settings.RPCAPP`` when it is a dict, else ``{}`` (the check rpcapp.E006 says so)."""
    user = getattr(settings, "RPCAPP", None)
    return user if isinstance(user, dict) else {}


def unknown_keys() -> list[str]:
    return sorted(set(user_settings()) - set(DEFAULTS))


@functools.cache
def get() -> Conf:
    """The merged settings (cached until Django's settings change)."""
    user = user_settings()
    merged = {**DEFAULTS, **{k: v for k, v in user.items() if k in DEFAULTS}}
    return Conf(**{f.name: merged[f.name] for f in fields(Conf)})


def redis_url() -> str:
    """The Redis address: $RPCAPP_REDIS_URL, else RPCAPP["REDIS_URL"], else the
    embedded server (started on first use)."""
    url = os.environ.get("RPCAPP_REDIS_URL") or get().REDIS_URL
    if url:
        return url
    from . import embedded

    return embedded.ensure(get().embedded_dir)


@receiver(setting_changed)
def _clear(setting: str, **_: Any) -> None:
    if setting in ("RPCAPP", "SECRET_KEY", "BASE_DIR"):
        get.cache_clear()
        from . import runtime

        runtime.reset()

"""Settings of the rpcapp demo project.

SQLite by default; ``DATABASE_URL`` switches to PostgreSQL (or any database
dj-database-url understands). ``RPCAPP_REDIS_URL`` points at a Redis server;
without it the embedded one under ``var/`` is used. The cache (django-redis)
lives on the same Redis, in database 1 (``DJANGO_CACHE_URL`` overrides it).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-insecure-key-change-me-in-production-0123456789")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rpcapp",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=60,
    )
}

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "admin:login"

RPCAPP = {
    "NAMESPACE": os.environ.get("RPCAPP_NAMESPACE", "rpcapp"),
    "CACHE_ALIAS": "default",  # the dashboard's short-lived aggregates
}


def _cache_url(redis_url: str) -> str | None:
    """rpcapp's Redis URL, database 1 (rpcapp uses 0; ``cache.clear()`` flushes
    only the cache's own database); None for Sentinel and Cluster URLs, which
    django-redis does not take as they are."""
    parts = urlsplit(redis_url)
    if "+" in parts.scheme:
        return None
    if parts.scheme == "unix":
        query = urlencode({**dict(parse_qsl(parts.query)), "db": "1"})
        return f"unix://{parts.netloc}{parts.path}?{query}"
    return urlunsplit(parts._replace(path="/1"))


# The address only: nothing here starts the embedded server (rpcapp starts it
# on first use; until then the cache misses quietly, IGNORE_EXCEPTIONS).
CACHE_URL = os.environ.get("DJANGO_CACHE_URL") or _cache_url(os.environ.get("RPCAPP_REDIS_URL") or f"unix://{BASE_DIR / 'var' / 'redis.sock'}")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": CACHE_URL,
        "KEY_PREFIX": "demo",
        "OPTIONS": {"IGNORE_EXCEPTIONS": True, "SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
    }
    if CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

# Celery reads its broker from rpcapp's Redis (see project/celery.py). Celery is
# optional: without beat, the runrpcworker processes run the same maintenance.
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE = {
    "rpcapp-reap-providers": {"task": "rpcapp.tasks.reap_providers", "schedule": 10.0},
    "rpcapp-relay-outbox": {"task": "rpcapp.tasks.relay_outbox", "schedule": 5.0},
    "rpcapp-roll-up-calls": {"task": "rpcapp.tasks.roll_up_calls", "schedule": 30.0},
    "rpcapp-prune-history": {"task": "rpcapp.tasks.prune_history", "schedule": 3600.0},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "rpcapp": {"handlers": ["console"], "level": os.environ.get("RPCAPP_LOG_LEVEL", "INFO"), "propagate": False},
    },
}

"""Settings for the test suite: the demo project plus a test app.

``RPCAPP_TEST_OVERRIDES`` (JSON) is merged into ``RPCAPP`` so that worker
processes started by tests get the same settings as the test process.
"""

import json
import os
import tempfile

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, RPCAPP

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]
RPCAPP = {**RPCAPP, **json.loads(os.environ.get("RPCAPP_TEST_OVERRIDES", "{}"))}
# A file, not ":memory:": the browser tests' live server reads it from its own threads.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(tempfile.gettempdir(), "rpcapp-tests.sqlite3"),
        "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"rpcapp-test-{os.getpid()}.sqlite3")},
    }
}
if os.environ.get("DATABASE_URL"):
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {"version": 1, "disable_existing_loggers": False}

# The tests call the Celery tasks as functions: no broker, and above all no
# embedded Redis started just to configure Celery.
CELERY_BROKER_URL = "memory://"

# No cache server for the tests: the demo's django-redis cache becomes a local one.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

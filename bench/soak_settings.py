"""Settings of the soak benchmark (bench/soak.py): the tests' settings plus
``bench.soak_app``, and the bench's own SQLite file when it names one
(``RPCAPP_SOAK_DB``), so the workers' catalog sync and call recording run
against a private, migrated database."""

import os

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.soak_app"]

if os.environ.get("RPCAPP_SOAK_DB"):
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["RPCAPP_SOAK_DB"]}}

# Production-like by default: with DEBUG on, Django keeps every SQL statement
# of a worker's call-history recorder in ``connection.queries`` (up to 9000
# per connection; nothing resets it outside a request), which a soak would
# report as worker memory growth. ``bench/soak.py --django-debug`` turns it on.
DEBUG = os.environ.get("RPCAPP_SOAK_DEBUG") == "1"

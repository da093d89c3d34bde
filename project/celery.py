"""Celery for the demo project: the broker is rpcapp's Redis (embedded or not).

Beat runs rpcapp's maintenance here (settings.CELERY_BEAT_SCHEDULE); without
Celery the runrpcworker processes run the same jobs under the same locks.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_configure.connect
def _broker_from_rpcapp(sender: Celery, **kwargs: object) -> None:
    import django

    django.setup()
    from django.conf import settings

    if getattr(settings, "CELERY_BROKER_URL", None):  # set explicitly (the test settings do)
        return
    from rpcapp.conf import redis_url

    url = redis_url()
    if "+cluster://" in url:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("Celery's Redis broker cannot use a Redis Cluster: set CELERY_BROKER_URL to a single Redis")
    if url.startswith("unix://"):
        url = "redis+socket://" + url[len("unix://") :]
    sender.conf.broker_url = url

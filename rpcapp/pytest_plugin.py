"""Layer 3: rpcapp's pytest plugin (entry point ``pytest11``), loaded in every
pytest run where rpcapp is installed.

Fixtures, all named ``rpcapp_*`` (none autouse; see docs/testing.md):

- ``rpcapp_redis`` (session): a private ``redis-server`` on a free loopback
  port: ``$RPCAPP_TEST_REDIS_SERVER``, else ``redis-server`` on PATH, else the
  embedded package's binary; the tests using it are skipped if there is none.
- ``rpcapp_settings``: ``settings.RPCAPP`` pointed at that server under a
  fresh namespace (the project's other keys kept), cleaned afterwards.
- ``rpcapp_worker``: a worker serving the project's procedures in threads of
  the test process, on ``rpcapp_settings``.
- ``rpcapp_local``: local mode (``rpcapp.testing.local_calls``), no Redis.

Nothing from Django or rpcapp's Django layer is imported until a fixture runs,
so the plugin costs nothing in a project that does not use it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def rpcapp_redis() -> Iterator[Any]:
    """A private redis-server for the test session (a ``rpcapp.testing.RedisServer``)."""
    from rpcapp.testing import RedisServer, redis_binary

    try:
        binary = redis_binary()
    except Exception as exc:  # noqa: BLE001  (ImproperlyConfigured or MissingExtra, naming the extra)
        pytest.skip(f"rpcapp_redis: {exc} (or set $RPCAPP_TEST_REDIS_SERVER, or put redis-server on PATH)")
    if not os.path.isfile(binary):
        pytest.fail(f"rpcapp_redis: no redis-server at {binary!r} ($RPCAPP_TEST_REDIS_SERVER)", pytrace=False)
    with RedisServer(binary) as server:
        yield server


@pytest.fixture
def rpcapp_settings(request: pytest.FixtureRequest, rpcapp_redis: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """``settings.RPCAPP`` for this test: the session's Redis, a fresh namespace."""
    from django.conf import settings as django_settings
    from django.test import override_settings

    from rpcapp import runtime
    from rpcapp.testing import clear_namespace

    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    conf = {**(getattr(django_settings, "RPCAPP", None) or {}), "REDIS_URL": rpcapp_redis.url, "NAMESPACE": "test" + uuid.uuid4().hex[:12]}
    if request.config.pluginmanager.hasplugin("django"):
        request.getfixturevalue("settings").RPCAPP = conf  # pytest-django's, restored by it
        yield conf
    else:
        with override_settings(RPCAPP=conf):
            yield conf
    runtime.reset()
    clear_namespace(rpcapp_redis, conf["NAMESPACE"])


@pytest.fixture
def rpcapp_worker(rpcapp_settings: dict[str, Any]) -> Iterator[Any]:
    """A worker serving every discovered procedure, in threads of this process."""
    from rpcapp.testing import running_worker

    with running_worker() as worker:
        yield worker


@pytest.fixture
def rpcapp_local() -> Iterator[Any]:
    """Local mode for this test: calls run in this process, no Redis; the
    ``rpcapp.local.LocalClient`` (``.calls``, ``.events``)."""
    from rpcapp.testing import local_calls

    with local_calls() as client:
        yield client


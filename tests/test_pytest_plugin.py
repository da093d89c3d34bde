"""The pytest plugin shipped in the package, as a user's project meets it: a
small Django project in a temporary folder whose tests use the ``rpcapp_*``
fixtures (a real redis-server and an in-thread worker), run by an inner
pytest in a subprocess."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

SETTINGS = """
SECRET_KEY = "user-project-secret"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.admin", "rpcapp", "shop"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
RPCAPP = {"NAMESPACE": "shop", "DEFAULT_TIMEOUT": 5.0}
"""

SHOP_RPC = """
import datetime as dt
import decimal

from rpcapp import procedure, subscriber

ORDERS = []


@procedure("shop.add", idempotent=True)
def add(a: int, b: int) -> int:
    return a + b


@procedure("shop.total")
def total(prices: list[decimal.Decimal]) -> decimal.Decimal:
    return sum(prices, decimal.Decimal(0))


@procedure("shop.refuse")
def refuse(reason: str) -> None:
    raise PermissionError(reason)


@subscriber("shop.ordered")
def ordered(payload: dict) -> None:
    ORDERS.append(payload)
"""

USER_TESTS = """
import decimal

import pytest
import redis
from rpcapp import publish, rpc
from rpcapp.errors import InvalidParams, RemoteError

SEEN = {}


def test_a_real_call_through_redis(rpcapp_worker, rpcapp_settings, rpcapp_redis):
    assert rpc.call("shop.add", 2, 3) == 5
    assert rpc.service("shop").add(a=1, b=1) == 2
    assert rpcapp_settings["REDIS_URL"] == rpcapp_redis.url
    assert rpcapp_settings["DEFAULT_TIMEOUT"] == 5.0  # the project's other keys kept
    assert rpcapp_worker.services == ["shop"]
    server = redis.Redis(port=rpcapp_redis.port)
    assert list(server.scan_iter(match=rpcapp_settings["NAMESPACE"] + ":*"))
    SEEN["namespace"] = rpcapp_settings["NAMESPACE"]


def test_the_namespace_was_cleaned_and_a_new_one_given(rpcapp_settings, rpcapp_redis):
    server = redis.Redis(port=rpcapp_redis.port)
    assert not list(server.scan_iter(match=SEEN["namespace"] + ":*"))
    assert rpcapp_settings["NAMESPACE"] != SEEN["namespace"]


def test_errors_from_the_worker(rpcapp_worker):
    with pytest.raises(RemoteError) as info:
        rpc.call("shop.refuse", "closed")
    assert info.value.remote_type == "PermissionError"
    with pytest.raises(InvalidParams):
        rpc.call("shop.add", 1)
    assert rpc.call("shop.total", ["1.10", "2.20"]) == decimal.Decimal("3.30")


def test_local_mode_needs_no_worker(rpcapp_local, settings):
    settings.RPCAPP = {"REDIS_URL": "redis://127.0.0.1:1/0"}
    from shop import rpc as shop

    assert rpc.call("shop.add", 20, 22) == 42
    publish("shop.ordered", {"id": 7})
    assert shop.ORDERS == [{"id": 7}]
    assert rpcapp_local.calls == [("shop.add", [20, 22], {})]
"""


@pytest.fixture(autouse=True)
def own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner pytest is the user's: not our suite's settings module or Redis."""
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(user_settings=SETTINGS)
    pytester.mkpydir("shop")
    pytester.path.joinpath("shop", "rpc.py").write_text(textwrap.dedent(SHOP_RPC))
    return pytester


def test_the_fixtures_in_a_user_project_with_pytest_django(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nDJANGO_SETTINGS_MODULE = user_settings\npythonpath = .\n")
    project.makepyfile(test_shop=USER_TESTS)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", timeout=120)
    result.assert_outcomes(passed=4)


def test_the_fixtures_without_pytest_django(project: pytest.Pytester) -> None:
    """Settings are switched with override_settings when pytest-django is absent."""
    project.makeini("[pytest]\npythonpath = .\n")
    project.makeconftest(
        """
        import django
        from django.conf import settings

        import user_settings

        settings.configure(**{k: v for k, v in vars(user_settings).items() if k.isupper()})
        django.setup()
        """
    )
    project.makepyfile(
        test_shop="""
        from django.conf import settings
        from rpcapp import rpc


        def test_call(rpcapp_worker, rpcapp_settings):
            assert settings.RPCAPP["NAMESPACE"] == rpcapp_settings["NAMESPACE"] != "shop"
            assert rpc.call("shop.add", 1, 2) == 3


        def test_restored():
            assert settings.RPCAPP["NAMESPACE"] == "shop"
        """
    )
    result = project.runpytest_subprocess("-p", "no:django", "-p", "no:cacheprovider", "-p", "no:randomly", timeout=120)
    result.assert_outcomes(passed=2)


def test_the_plugin_is_harmless_where_unused(pytester: pytest.Pytester) -> None:
    """No Django settings at all: the plugin loads, imports nothing of Django,
    adds no autouse fixture, and its fixtures are listed."""
    pytester.makepyfile(
        test_plain="""
        import sys


        def test_nothing_imported(request):
            assert not [m for m in sys.modules if m == "django.conf" or m.startswith("rpcapp.runtime")]
            assert not [f for f in request.fixturenames if f.startswith("rpcapp")]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:django", "-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    listed = pytester.runpytest_subprocess("-p", "no:django", "--fixtures")
    listed.stdout.fnmatch_lines(["rpcapp_redis*session*", "rpcapp_settings*", "rpcapp_worker*", "rpcapp_local*"])


def test_a_wrong_server_binary_is_named(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPCAPP_TEST_REDIS_SERVER", "/nowhere/redis-server")
    project.makeini("[pytest]\nDJANGO_SETTINGS_MODULE = user_settings\npythonpath = .\n")
    project.makepyfile(test_shop="def test_call(rpcapp_worker):\n    pass\n")
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", timeout=120)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*rpcapp_redis: no redis-server at '/nowhere/redis-server'*"])

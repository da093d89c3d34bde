"""Configuration mistakes found at ``manage.py check`` time, each with a
stable id, and the one form of "Redis is unreachable"."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest
from django.core import checks

from rpcapp import checks as rpcapp_checks
from rpcapp import conf
from rpcapp.errors import ConfigurationError, RpcError, ServiceUnavailable
from rpcapp.transport import Transport, TransportError, connect
from rpcapp.transport.address import mask_url, parse_url

from .conftest import ROOT


def ids(settings: Any, value: Any) -> list[tuple[str, str]]:
    settings.RPCAPP = value
    return [(m.id, m.msg) for m in rpcapp_checks.check_settings(None)]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- RPCAPP itself -------------------------------------------------------------
def test_rpcapp_not_a_dict_is_an_error_and_conf_falls_back(settings: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    settings.RPCAPP = "redis://127.0.0.1:6379/0"
    assert conf.get().NAMESPACE == "rpcapp"  # the defaults, no AttributeError
    assert conf.unknown_keys() == []
    found = [(m.id, m.level) for m in rpcapp_checks.check_settings(None)]
    assert found == [("rpcapp.E006", checks.ERROR)]
    assert "dict" in rpcapp_checks.check_settings(None)[0].msg


def test_unknown_key_suggests_the_nearest(settings: Any) -> None:
    found = ids(settings, {"DEFAULT_TIMOUT": 3})
    assert found == [("rpcapp.W001", "RPCAPP['DEFAULT_TIMOUT'] is meant? RPCAPP['DEFAULT_TIMOUT']")] or (
        len(found) == 1 and found[0][0] == "rpcapp.W001" and "'DEFAULT_TIMEOUT'" in found[0][1] and "did you mean" in found[0][1]
    )
    assert ids(settings, {"SOMETHING_ELSE": 1})[0][0] == "rpcapp.W001"


def test_misspelt_redis_url_is_an_error_naming_the_consequence(settings: Any) -> None:
    found = ids(settings, {"REDIS_ULR": "redis://127.0.0.1:6379/0"})
    assert [i for i, _ in found] == ["rpcapp.E007"]
    message = found[0][1]
    assert "'REDIS_URL'" in message and "embedded" in message and "var" in message


# -- Redis URLs ------------------------------------------------------------------
VALID = [
    "redis://127.0.0.1:6379/0",
    "redis://:secret@localhost/3",
    "redis://user:pw@[::1]:6380",
    "rediss://redis.example.com:6380/1",
    "unix:///tmp/redis.sock?db=2",
    "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/1",
    "rediss+sentinel://:pw@s1:26379/mymaster",
    "redis+cluster://n1:7000,n2:7001",
    "rediss+cluster://user:pw@n1:7000",
]
INVALID = [
    ("http://127.0.0.1:6379", "scheme"),
    ("127.0.0.1:6379", "scheme"),
    ("redis://127.0.0.1:notaport/0", "port"),
    ("redis://127.0.0.1:70000/0", "port"),
    ("redis:///0", "host"),
    ("redis://127.0.0.1:6379/x", "database"),
    ("redis://127.0.0.1:6379/-1", "database"),
    ("rediss://a:1,b:2/0", "one host"),
    ("unix://", "path"),
    ("unix:///tmp/redis.sock?db=two", "database"),
    ("redis+sentinel://10.0.0.1/mymaster", "host:port"),
    ("redis+sentinel://10.0.0.1:26379", "master"),
    ("redis+sentinel://10.0.0.1:26379,:26380/mymaster", "host"),
    ("rediss+sentinel://s1:x/mymaster", "port"),
    ("redis+sentinel://s1:26379/mymaster/db", "database"),
    ("redis+sentinel:///mymaster", "host"),
    ("redis+cluster://n1", "host:port"),
    ("rediss+cluster://n1:7000,n2/0", "host:port"),
    ("redis+cluster://n1:7000/3", "database"),
    ("redis+cluster://", "host"),
]


@pytest.mark.parametrize("url", VALID)
def test_valid_urls_parse(url: str, settings: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    assert parse_url(url).scheme == url.split("://", 1)[0]
    assert ids(settings, {"REDIS_URL": url, "LOCK_REDIS_URLS": [url]}) == []


@pytest.mark.parametrize(("url", "word"), INVALID)
def test_invalid_urls_are_errors_at_check_time(url: str, word: str, settings: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    with pytest.raises(ConfigurationError) as caught:
        parse_url(url)
    assert word in str(caught.value)
    assert isinstance(caught.value, RpcError) and isinstance(caught.value, ValueError)
    assert [i for i, _ in ids(settings, {"REDIS_URL": url})] == ["rpcapp.E005"]
    assert [i for i, _ in ids(settings, {"LOCK_REDIS_URLS": ["redis://127.0.0.1:6379/0", url]})] == ["rpcapp.E008"]


def test_the_environment_url_is_checked_too(settings: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("RPCAPP_REDIS_URL", "redis+sentinel://s1/mymaster")
    assert [i for i, _ in ids(settings, {})] == ["rpcapp.E005"]


def test_lock_urls_must_be_a_list(settings: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    assert [i for i, _ in ids(settings, {"LOCK_REDIS_URLS": "redis://a:1/0"})] == ["rpcapp.E008"]


def test_connect_raises_the_same_typed_error() -> None:
    # a Sentinel URL without a port used to fail at call time with a bare IndexError
    with pytest.raises(ConfigurationError, match="host:port"):
        connect("redis+sentinel://10.0.0.1/mymaster")
    with pytest.raises(ConfigurationError, match="host:port"):
        connect("redis+cluster://n1")


def test_masking_hides_passwords() -> None:
    assert mask_url("redis://user:s3cret@h:1/0") == "redis://user:***@h:1/0"
    assert mask_url("redis://:s3cret@h:1/0") == "redis://:***@h:1/0"
    assert mask_url("redis+sentinel://:pw@a:1,b:2/m") == "redis+sentinel://:***@a:1,b:2/m"
    assert mask_url("redis://h:1/0") == "redis://h:1/0"


# -- Redis unreachable: one message form -----------------------------------------
def test_unreachable_message_names_address_and_cause() -> None:
    port = closed_port()
    transport = Transport(connect(f"redis://:hunter2@127.0.0.1:{port}/0"), "t")
    with pytest.raises(TransportError) as caught:
        transport.count_live("svc", 0)
    assert str(caught.value) == f"Redis at redis://:***@127.0.0.1:{port}/0 is unreachable: Connection refused"


def test_a_call_with_redis_unreachable_says_so_once(settings: Any, monkeypatch: Any) -> None:
    from rpcapp import runtime

    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    port = closed_port()
    settings.RPCAPP = {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "NAMESPACE": "tunreach"}
    try:
        with pytest.raises(ServiceUnavailable) as caught:
            runtime.get_client().call("tests.echo", "x", timeout=0.3)
        message = str(caught.value)
        assert message.count("unreachable") == 1, message
        assert f"Redis at redis://127.0.0.1:{port}/0 is unreachable" in message
    finally:
        runtime.reset()


# -- runrpcworker start-up failures ----------------------------------------------
def run_worker(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    import json
    import os

    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONPATH=str(ROOT))
    env.pop("RPCAPP_REDIS_URL", None)
    env["RPCAPP_TEST_OVERRIDES"] = json.dumps({"REDIS_URL": url})
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), "runrpcworker", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str, label: str = "CommandError") -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and label in line]
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], done.stderr


def test_runrpcworker_redis_unreachable_is_one_line() -> None:
    port = closed_port()
    done = run_worker("--service", "tests", url=f"redis://127.0.0.1:{port}/0")
    assert_one_line_error(done, f"Redis at redis://127.0.0.1:{port}/0 is unreachable")


def test_runrpcworker_bad_url_is_one_line() -> None:
    # the system checks stop it first (rpcapp.E005) ...
    done = run_worker("--service", "tests", url="redis+sentinel://10.0.0.1/mymaster")
    assert_one_line_error(done, "host:port", label="rpcapp.E005")
    assert "SystemCheckError" in done.stderr
    # ... and without them, connecting does
    done = run_worker("--service", "tests", "--skip-checks", url="redis+sentinel://10.0.0.1/mymaster")
    assert_one_line_error(done, "host:port")


def test_runrpcworker_unknown_service_is_one_line(redis_server: Any) -> None:
    done = run_worker("--service", "no-such-service", url=redis_server.url)
    assert_one_line_error(done, "no-such-service")


def test_the_msgpack_codec_without_msgpack_is_an_error(settings: Any) -> None:
    code = (
        "import sys; sys.modules['msgpack'] = None\n"
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings'\n"
        "from django.conf import settings; django.setup()\n"
        "settings.RPCAPP = {**settings.RPCAPP, 'CODEC': 'msgpack', 'REDIS_URL': 'redis://127.0.0.1:1/0'}\n"
        "from rpcapp.checks import check_settings\n"
        "print(sorted(p.id for p in check_settings()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rpcapp.E009" in done.stdout

"""Secrets in call arguments: redacted in the CallRecord's preview and never
kept in a replay payload, whatever the spelling of their name (case, ``-``
or ``_``), in nested dicts and lists (issue: ``pwd``, ``passphrase``,
``private_key``, ``credentials``, ``api-key``, ``auth``, ``ssn`` and
``session_cookie`` were stored in clear)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from rpcapp import conf, history, procedure
from rpcapp.models import CallRecord
from rpcapp.records import DEFAULT_REDACT, preview, replayable, sensitive
from rpcapp.registry import Registry
from rpcapp.testing import running_worker

pytestmark = pytest.mark.django_db(transaction=True)

MISSED = ["pwd", "passphrase", "private_key", "credentials", "api-key", "auth", "ssn", "session_cookie"]
SPELLINGS = ["API-Key", "api_key", "ApiKey", "X-API-KEY", "db_password", "x-auth-token", "Authorization", "userPassword", "AUTH", "user_ssn", "sshPrivateKey", "Credentials", "PWD"]
HARMLESS = ["author", "authored_at", "classname", "username", "keyboard", "passage", "monkey", "session_count"]


OWN = Registry()  # kept out of the default registry (other tests list it)


@procedure("redaction.fail", registry=OWN)
def fail(data: Any) -> None:
    raise ValueError("refused")


def test_the_default_setting_and_the_fallback_agree() -> None:
    assert tuple(conf.DEFAULTS["REDACT_KEYS"]) == DEFAULT_REDACT


@pytest.mark.parametrize("name", MISSED + SPELLINGS)
def test_sensitive_names(name: str) -> None:
    assert sensitive(name, DEFAULT_REDACT)


@pytest.mark.parametrize("name", HARMLESS)
def test_harmless_names(name: str) -> None:
    assert not sensitive(name, DEFAULT_REDACT)


@pytest.mark.parametrize("name", MISSED + SPELLINGS)
def test_nested_values_are_redacted_and_never_replayable(name: str) -> None:
    args = [{"outer": [{"inner": {name: "S3CRET"}}]}]
    assert "S3CRET" not in preview(["data"], args, {}, DEFAULT_REDACT)
    assert replayable(["data"], args, {}, DEFAULT_REDACT) is None
    assert "S3CRET" not in preview([], [], {name: "S3CRET"}, DEFAULT_REDACT)
    assert replayable([], [], {name: "S3CRET"}, DEFAULT_REDACT) is None


def test_harmless_arguments_stay_replayable() -> None:
    args = [{name: "visible" for name in HARMLESS}]
    assert replayable(["data"], args, {}, DEFAULT_REDACT) == {"args": args, "kwargs": {}}


@pytest.mark.parametrize("name", MISSED)
def test_recorded_calls_keep_no_secret(client: Any, name: str) -> None:
    secret = "S3CRET-" + name
    with running_worker(["redaction"], registry=OWN), pytest.raises(Exception, match="refused"):
        client.call("redaction.fail", {"list": [{"nested": {name: secret}}], name.upper(): secret})
    time.sleep(0.3)
    history.record_now()
    row = CallRecord.objects.get(procedure="redaction.fail")
    assert secret not in row.args_preview and "***" in row.args_preview
    assert row.payload is None or secret not in orjson.dumps(row.payload).decode()

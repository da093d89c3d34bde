"""A caller whose signing key differs from the workers' is told so by name
(``SigningKeyMismatch``), not by a plain ``RpcTimeout``; key rotation with
OLD_SIGNING_KEYS is not a mismatch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings as django_settings

from rpcapp import runtime
from rpcapp.errors import RpcTimeout, SigningKeyMismatch, http_status
from rpcapp.fingerprints import key_id
from rpcapp.protocol import CODECS, Signer, derive_key
from rpcapp.registry import default_registry
from rpcapp.testing import wait_for
from rpcapp.worker import Worker


@contextmanager
def worker_with_keys(*secrets: str) -> Iterator[Worker]:
    """An in-thread worker of the service ``tests`` signing with ``secrets[0]``
    and accepting each of ``secrets``."""
    signer = Signer(tuple(derive_key(s) for s in secrets), CODECS["json"])
    worker = Worker(runtime.build_transport(calls=False), signer, default_registry, runtime.worker_settings(), services=["tests"])
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(2.0)
        worker.transport.close()


def test_key_id_is_short_and_reveals_nothing() -> None:
    key = derive_key("s3cret")
    assert len(key_id(key)) == 8
    assert key_id(key) != key_id(derive_key("other"))
    assert key_id(key) not in key.hex()


def test_a_different_key_is_named(rpc_conf: dict[str, Any], client: Any) -> None:
    # given workers that sign with another secret
    with worker_with_keys("not the web's secret"):
        # when this process calls, then it is told why no reply came
        with pytest.raises(SigningKeyMismatch) as caught:
            client.call("tests.echo", 1, timeout=1.0)
    error = caught.value
    assert error.code == "signing_key_mismatch"
    assert error.procedure == "tests.echo"
    assert "'tests'" in str(error) and "SIGNING_KEY" in str(error) and "SECRET_KEY" in str(error)
    assert http_status(error) == 503


def test_a_different_key_is_named_for_async_callers(rpc_conf: dict[str, Any], client: Any) -> None:
    with worker_with_keys("not the web's secret"), pytest.raises(SigningKeyMismatch):
        asyncio.run(client.acall("tests.echo", 1, timeout=1.0))


def test_a_different_key_is_named_on_call_async_futures(rpc_conf: dict[str, Any], client: Any) -> None:
    with worker_with_keys("not the web's secret"):
        fut = client.call_async("tests.echo", 1, timeout=1.0)
        with pytest.raises(SigningKeyMismatch):
            fut.result(timeout=5)


def test_the_same_key_times_out_plainly(rpc_conf: dict[str, Any], client: Any) -> None:
    with worker_with_keys(django_settings.SECRET_KEY), pytest.raises(RpcTimeout) as caught:
        client.call("tests.sleep", 2.0, timeout=0.5)
    assert not isinstance(caught.value, SigningKeyMismatch)


def test_rotation_is_not_a_mismatch(rpc_conf: dict[str, Any], settings: Any) -> None:
    # given workers already signing with the new key and still accepting the old one,
    # and callers told of the new key (OLD_SIGNING_KEYS) while signing with the old
    settings.RPCAPP = {**rpc_conf, "OLD_SIGNING_KEYS": ["the new secret"]}
    with worker_with_keys("the new secret", django_settings.SECRET_KEY):
        assert runtime.get_client().call("tests.echo", 7, timeout=3.0) == 7
        with pytest.raises(RpcTimeout) as caught:
            runtime.get_client().call("tests.sleep", 2.0, timeout=0.5)
        assert not isinstance(caught.value, SigningKeyMismatch)


def test_providers_publish_key_ids_not_keys(rpc_conf: dict[str, Any], client: Any) -> None:
    import orjson

    with worker_with_keys("a", "b") as worker:
        info = wait_for(lambda: client.transport.providers_info("tests").get(worker.name), 2.0)
    record = orjson.loads(info)
    assert record["key_ids"] == [key_id(derive_key("a")), key_id(derive_key("b"))]
    assert derive_key("a").hex() not in info.decode()

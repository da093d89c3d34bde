"""Layer 2: publishing events.

``publish(topic, payload)`` puts one copy of the event in the request stream
of every subscribing service (so each service's consumer group hands it to
exactly one of its workers, and it waits there while no worker is up), and
publishes one copy on the topic's broadcast channel for ``broadcast=True``
handlers, all in one round trip.

The subscribing services are those of this process's registry plus those
that workers recorded in Redis (``ns:topic:{topic}``), cached for a second.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .errors import InvalidParams, PayloadTooLarge, ProtocolError, ServiceUnavailable, TransportError
from .protocol import Event, now_ms

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("rpcapp.events")

SUBSCRIBERS_CACHE_TTL = 1.0


class Publisher:
    def __init__(self, client: Client) -> None:
        self.client = client
        self._cache: dict[str, tuple[float, set[str]]] = {}
        self._lock = threading.Lock()

    def publish(self, topic: str, payload: Any, timeout: float | None = None, caller: str = "", event_id: str | None = None) -> str:
        """Queue the event for every subscriber; returns its id.

        Redis being unreachable is retried for ``timeout`` seconds (default:
        the client's default timeout), then ``ServiceUnavailable``."""
        if not isinstance(topic, str) or not topic or any(c.isspace() for c in topic):
            raise InvalidParams(f"topic {topic!r} must be a non-empty name without spaces")
        budget = self.client.settings.default_timeout if timeout is None else timeout
        deadline = now_ms() + int(budget * 1000)
        event_id = event_id or uuid.uuid4().hex
        services = sorted(self._subscribers(topic, deadline))
        expires = now_ms() + int(self.client.settings.event_ttl * 1000)
        frames = [(svc, self._pack(Event(topic, payload, svc, id=event_id, publisher=caller, expires=expires))) for svc in services]
        broadcast = self._pack(Event(topic, payload, "*", id=event_id, publisher=caller, expires=expires))
        transport = self.client.transport
        delay = 0.05
        while True:
            try:
                transport.publish_event(frames, topic, broadcast, self.client.settings.max_queue_length)
                return event_id
            except TransportError as exc:
                left = (deadline - now_ms()) / 1000
                if left <= 0:
                    raise ServiceUnavailable(exc.message) from exc
                time.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)

    def _pack(self, event: Event) -> bytes:
        try:
            return self.client.signer.pack(event.to_wire(), self.client.settings.max_request_bytes)
        except (TypeError, ValueError) as exc:
            raise InvalidParams(f"event payload cannot be encoded: {exc}") from None

    def _subscribers(self, topic: str, deadline: int) -> set[str]:
        local = set(self.client.registry.subscribing_services(topic))
        with self._lock:
            cached = self._cache.get(topic)
        if cached and cached[0] > time.monotonic():
            return local | cached[1]
        delay = 0.05
        while True:
            try:
                remote = self.client.transport.subscribers(topic)
                break
            except TransportError as exc:
                if now_ms() >= deadline:
                    raise ServiceUnavailable(exc.message) from exc
                time.sleep(min(delay, max(0.0, (deadline - now_ms()) / 1000)))
                delay = min(delay * 2, 1.0)
        with self._lock:
            self._cache[topic] = (time.monotonic() + SUBSCRIBERS_CACHE_TTL, remote)
        return local | remote

    def parked(self, service: str, count: int = 100) -> list[dict[str, Any]]:
        """The service's parked events, newest first: entry, id, topic, payload,
        attempts, handlers still to run, reason, parked_at (ms)."""
        out = []
        for entry_id, fields in self.client.transport.dead_letters(service, count):
            try:
                event = Event.from_wire(self.client.signer.unpack(fields.get("m", b"")))
            except (ProtocolError, PayloadTooLarge):
                continue  # a rejected request, not an event
            reason = fields.get("reason", b"")
            out.append(
                {
                    "entry": entry_id,
                    "id": event.id,
                    "topic": event.topic,
                    "payload": event.payload,
                    "attempts": event.attempt - 1,
                    "handlers": event.handlers,
                    "reason": reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason),
                    "parked_at": int(fields.get("at", b"0") or 0),
                }
            )
        return out

    def replay(self, service: str, entry: str) -> bool:
        """Queue a parked event again (its failed handlers, attempts counted afresh)."""
        for parked in self.parked(service, 10_000):
            if parked["entry"] == entry:
                event = Event(
                    parked["topic"], parked["payload"], service, id=parked["id"], handlers=parked["handlers"],
                    expires=now_ms() + int(self.client.settings.event_ttl * 1000), replay=uuid.uuid4().hex,
                )  # an operator's decision: it runs again, once
                frame = self.client.signer.pack(replace(event, attempt=1).to_wire())
                return self.client.transport.replay_dead(service, entry, frame, self.client.settings.max_queue_length)
        return False

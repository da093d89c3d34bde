"""Layer 2: running event handlers on the worker.

A durable event arrives in the service's request stream. Every handler of
the service for its topic runs; if all succeed the entry is retired. The
handlers that failed are retried (only them) after a backoff, through the
service's ``delayed`` set that the heartbeat moves back to the queue; after
``event_max_attempts`` attempts the event is parked in the service's
dead-letter stream with the errors (see ``rpcapp.events.parked``).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..protocol import Event, now_ms
from ..registry import Subscriber

if TYPE_CHECKING:
    from .executor import Executor

log = logging.getLogger("rpcapp.events")

MAX_RETRY_DELAY = 60.0


def retry_delay(base: float, attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: ``base`` doubled each time, capped."""
    return min(base * (2 ** (attempt - 1)), MAX_RETRY_DELAY)


def run_handlers(subs: list[Subscriber], payload: Any) -> list[tuple[str, str]]:
    """Run each handler; (name, error text) for those that raised."""
    failed = []
    for sub in subs:
        try:
            sub.func(payload)
        except Exception as exc:
            log.warning("handler %s of %s failed: %s: %s", sub.name, sub.topic, type(exc).__name__, exc)
            failed.append((sub.name, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    return failed


def parked_reason(event: Event, failed: list[tuple[str, str]]) -> str:
    lines = [f"event {event.id} on {event.topic!r} parked after {event.attempt} attempt(s)"]
    lines += [f"{name}: {error}" for name, error in failed]
    return "\n".join(lines)


def select(subs: list[Subscriber], names: list[str] | None) -> list[Subscriber]:
    return subs if names is None else [s for s in subs if s.name in names]


class EventRunner:
    def __init__(self, executor: Executor) -> None:
        self.ex = executor
        self.handled = 0

    def handle(self, service: str, entry_id: str, event: Event, claimed: Callable[[], bool]) -> None:
        """Run the event's handlers, unless it expired or ``claimed()`` says
        another entry already ran this delivery (a replay)."""
        ex = self.ex
        expires = event.expiry(int(ex.limits.event_ttl * 1000))
        if now_ms() >= expires:
            reason = f"event {event.id} on {event.topic!r} expired before it was delivered"
            ex.transport.dead_letter(service, entry_id, ex.signer.pack(event.to_wire()), reason, ex.limits.dead_letter_max)
            ex.transport.incr(service, "events_expired")
            log.warning("%s", reason)
            return
        if not claimed():
            ex.finish(service, entry_id, None, None)  # this delivery already ran: a replay
            ex.transport.incr(service, "replayed")
            log.warning("event %s on %r dropped: already run by this service (a replay)", event.id, event.topic)
            return
        subs = select(ex.registry.handlers(service, event.topic), event.handlers)
        if not subs:
            log.warning("no handler of %r in service %s here; event %s dropped", event.topic, service, event.id)
            ex.transport.incr(service, "events_unhandled")
            ex.finish(service, entry_id, None, None)
            return
        failed = run_handlers(subs, event.payload)
        self.handled += 1
        if not failed:
            ex.finish(service, entry_id, None, None)
            return
        again = replace(event, attempt=event.attempt + 1, handlers=[name for name, _ in failed])
        frame = ex.signer.pack(again.to_wire())
        if event.attempt < ex.limits.event_max_attempts:
            due = now_ms() + int(retry_delay(ex.limits.event_retry_delay, event.attempt) * 1000)
            ex.transport.retry_later(service, entry_id, frame, due)
            ex.transport.incr(service, "events_retried")
        else:
            reason = parked_reason(event, failed)
            ex.transport.dead_letter(service, entry_id, frame, reason, ex.limits.dead_letter_max)
            ex.transport.incr(service, "events_parked")
            log.error("%s", reason.splitlines()[0])



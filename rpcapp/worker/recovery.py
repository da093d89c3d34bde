"""Layer 2: recovering the work of providers that died.

A provider that stops heartbeating for ``provider_ttl`` is dead. Any live
worker of the service (one at a time, under a short lock) takes over the dead
consumer's pending requests and, for each: drops it if its deadline passed,
dead-letters it after ``max_deliveries``, puts it back on the queue if the
procedure is idempotent, or answers ``WorkerLost`` otherwise.

The inbox of a provider that went silent (requests addressed to it by a
load-balancing policy) is handed over the same way: its pending entries are
resolved as above (redelivered to the service's shared queue), and the
entries it never read are moved to the shared queue as they are. An inbox
silent for ``INBOX_RETENTION_MS`` is deleted.
"""

from __future__ import annotations

import logging
import uuid

from .. import keys
from ..errors import PayloadTooLarge, ProtocolError, WorkerLost
from ..keys import base, inbox_route, provider_of
from ..protocol import Event, Request, decode_message, now_ms, reply_error
from ..transport import MissingGroup
from . import fields as fields_
from .executor import Executor

log = logging.getLogger("rpcapp.recovery")

INBOX_RETENTION_MS = 60_000  # no client addresses a provider this long after its last heartbeat


class Recovery:
    def __init__(self, executor: Executor, me: str, provider_ttl: float, max_deliveries: int, max_queue_length: int) -> None:
        self.ex = executor
        self.transport = executor.transport
        self.me = me
        self.provider_ttl_ms = int(provider_ttl * 1000)
        self.max_deliveries = max_deliveries
        self.max_queue_length = max_queue_length

    def sweep(self, service: str, dead: set[str] | None = None) -> int:
        """Recover the service's dead consumers (plus ``dead``); returns entries handled."""
        token = uuid.uuid4().hex
        lock = keys.recovery_lock(self.transport.ns, service)
        if not self.transport.try_lock(lock, token, 3000):
            return 0
        try:
            return self._sweep(service, dead or set())
        finally:
            self.transport.unlock(lock, token)

    def _sweep(self, service: str, dead: set[str]) -> int:
        since = now_ms() - self.provider_ttl_ms
        live = set(self.transport.live_consumers(service, since)) - dead
        handled = self._take_over(service, live)
        stale = set(self.transport.providers_info(service)) - live - {self.me}
        self.transport.forget_consumers(service, stale)
        for provider, last in self.transport.silent_inboxes(service, since):
            if provider != self.me:
                handled += self.hand_over(service, provider, forget=last < now_ms() - INBOX_RETENTION_MS)
        for provider in dead - {self.me}:
            handled += self.hand_over(service, provider)
        return handled

    def _take_over(self, route: str, live: set[str]) -> int:
        """Resolve the pending entries of every consumer of ``route`` not in ``live``."""
        handled = 0
        for name, pending in self.transport.group_consumers(route):
            if name in live or name == self.me:
                continue
            while pending:
                batch = self.transport.claim_pending(route, name, self.me)
                if not batch:
                    break
                for entry_id, _times, fields in batch:
                    self.resolve(route, entry_id, fields)
                    handled += 1
                pending = len(batch) == 100
            self.transport.remove_consumer(route, name)
        return handled

    def hand_over(self, service: str, provider: str, forget: bool = False) -> int:
        """Move what is in ``provider``'s inbox to the service's shared queue."""
        route = inbox_route(service, provider)
        try:
            handled = self._take_over(route, {self.me} if provider == self.me else set())
            handled += self.move_unread(route, self.me)
        except MissingGroup:  # never created, or already deleted
            handled = 0
        if forget:
            self.transport.close_inbox(service, provider)
        return handled

    def move_unread(self, route: str, reader: str) -> int:
        """Move the entries nobody read from ``route`` to its service's shared queue."""
        moved = 0
        while True:
            batch = self.transport.take_unread(route, reader)
            for entry_id, fields in batch:
                deliveries = fields_.deliveries(fields)
                self.transport.requeue_to(route, base(route), entry_id, fields.get(b"m", b""), deliveries, self.max_queue_length)
                moved += 1
            if len(batch) < 100:
                return moved

    def resolve(self, service: str, entry_id: str, fields: dict[bytes, bytes] | None) -> None:
        """Decide the fate of one orphaned request."""
        if fields is None:  # already deleted from the stream
            self.transport.ack(service, entry_id)
            return
        raw = fields.get(b"m", b"")
        deliveries = fields_.deliveries(fields)
        try:
            req = decode_message(self.ex.signer.unpack(raw, self.ex.limits.max_request_bytes))
        except (ProtocolError, PayloadTooLarge) as exc:
            self.ex.reject(service, entry_id, raw, f"rejected: {exc.message}")
            return
        if isinstance(req, Event):
            self._resolve_event(service, entry_id, raw, req, deliveries)
        elif req.expired:
            self.transport.ack(service, entry_id)
            self.transport.incr(service, "expired")
            if req.idempotency_key:  # free the key; waiters get the same answer as a lost call
                self._answer_lost(req, f"{req.procedure} expired while its worker was lost", reply=False)
        elif deliveries >= self.max_deliveries:
            reason = f"dead-lettered after {deliveries} deliveries without an answer"
            self.transport.dead_letter(service, entry_id, raw, reason, self.ex.limits.dead_letter_max)
            self.transport.incr(service, "dead_lettered")
            self._answer_lost(req, f"{req.procedure} {reason}")
            log.error("call %s to %s %s", req.id, req.procedure, reason)
        elif req.idempotent:
            self.transport.forget_run(service, req.id)  # its redelivery may run (idempotent)
            self._requeue(service, entry_id, raw, deliveries + 1)
            self.transport.incr(service, "redelivered")
            log.warning("redelivering call %s to %s (delivery %d)", req.id, req.procedure, deliveries + 1)
        else:
            self.transport.ack(service, entry_id)
            self.transport.incr(service, "lost")
            self._answer_lost(req, f"the worker running {req.procedure} died; it may or may not have run")

    def _resolve_event(self, service: str, entry_id: str, raw: bytes, event: Event, deliveries: int) -> None:
        """An event whose worker died while handling it: delivered again (its
        handlers may see it twice), parked after ``max_deliveries``."""
        if deliveries >= self.max_deliveries:
            reason = f"event {event.id} on {event.topic!r} parked: its worker was lost {deliveries} times"
            self.transport.dead_letter(service, entry_id, raw, reason, self.ex.limits.dead_letter_max)
            self.transport.incr(service, "events_parked")
            log.error("%s", reason)
        else:
            self.transport.forget_run(service, event.marker)  # delivered again: its handlers may run twice
            self._requeue(service, entry_id, raw, deliveries + 1)
            self.transport.incr(service, "redelivered")

    def _requeue(self, route: str, entry_id: str, raw: bytes, deliveries: int) -> None:
        """Back on the queue: the shared one (a dead provider's inbox is read by no one)."""
        if provider_of(route) is None:
            self.transport.requeue(route, entry_id, raw, deliveries, self.max_queue_length)
        else:
            self.transport.requeue_to(route, base(route), entry_id, raw, deliveries, self.max_queue_length)

    def _answer_lost(self, req: Request, message: str, reply: bool = True) -> None:
        answer = reply_error(req.id, WorkerLost(message).to_wire(), provider=self.me)
        if reply and req.reply_to and keys.is_reply(self.transport.ns, req.reply_to):
            self.transport.send_replies([(req.reply_to, self.ex.signer.pack(answer))], self.ex.limits.reply_ttl)
        if req.idempotency_key:
            waiters = self.transport.release_idempotency(req.procedure, req.idempotency_key, req.id)
            self.ex.answer_waiters(waiters, answer)

"""Layer 2: running one request: verify, check, run, reply.

Nothing a message carries can kill the worker: every failure becomes a typed
error reply, a dead letter, or a counted rejection.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import context
from ..combiner import Combiner
from ..errors import (
    InvalidParams,
    LockNotAcquired,
    PayloadTooLarge,
    ProcedureNotFound,
    ProtocolError,
    RemoteError,
    RpcError,
    TransportError,
)
from ..keys import is_reply
from ..protocol import Event, Request, Signer, decode_message, now_ms, reply_error, reply_ok
from ..records import DEFAULT_REDACT, encode, preview, replayable
from ..registry import Registry
from ..transport import Transport
from ..transport.core import Finish
from .claims import Taken
from .events import EventRunner
from .hooks import run_hooks
from .recording import RecordBuffer
from .streaming import Pump, StreamCancelled

log = logging.getLogger("rpcapp.worker")


@dataclass
class Limits:
    max_request_bytes: int
    max_reply_bytes: int
    reply_ttl: int
    idempotency_ttl: int
    dead_letter_max: int
    event_max_attempts: int = 5
    event_retry_delay: float = 1.0
    record_calls: bool = True
    history_max: int = 100_000
    redact: tuple[str, ...] = DEFAULT_REDACT
    event_ttl: float = 3600.0


class Runner:
    """Runs a request's procedure and encodes its reply: the part of a worker
    that needs no Redis, shared with the in-process local mode (``rpcapp.local``)."""

    def __init__(
        self,
        signer: Signer,
        registry: Registry,
        limits: Limits,
        provider: str,
        hooks: list[Any] | None = None,
        lock_factory: Callable[[str, float], Any] | None = None,
    ) -> None:
        self.lock_factory = lock_factory
        self.signer = signer
        self.registry = registry
        self.limits = limits
        self.provider = provider
        self.hooks = hooks or []

    def pump(self, req: Request, items: Any) -> int:
        """Hand a streaming procedure's items to the caller; how many."""
        raise NotImplementedError

    def run(self, req: Request, taken_at: int) -> dict[str, Any]:
        """Run the procedure; the reply envelope, success or typed error."""
        meta = {"provider": self.provider, "queued_ms": max(0, taken_at - req.sent_at)}
        started = time.perf_counter()
        run_hooks(self.hooks, "before_call", req)
        try:
            proc = self.registry.find(req.procedure)
            if proc is None:
                raise ProcedureNotFound(f"no procedure {req.procedure!r} on this worker", procedure=req.procedure)
            args, kwargs = proc.spec.signature.bind(req.args, req.kwargs, req.procedure)
            ctx = context.CallContext(req.id, req.procedure, req.trace_id, req.deadline, self.provider)
            if proc.spec.stream != req.stream:
                how = "rpc.stream()" if proc.spec.stream else "rpc.call()"
                raise InvalidParams(f"{req.procedure} must be called with {how}", procedure=req.procedure)
            with context.running(ctx), self._guard(proc, req, args, kwargs):
                result = proc.func(*args, **kwargs)
                if req.stream:
                    result = self.pump(req, result)
            if isinstance(result, float) and not math.isfinite(result):
                raise _NotJson(f"{result} is not a JSON number")
            reply = reply_ok(req.id, result, **meta)
        except _NotJson as exc:
            reply = reply_error(req.id, _remote(exc, "", "UnserializableResult"), **meta)
        except StreamCancelled:
            reply = reply_error(req.id, {"code": "cancelled", "message": "the caller stopped iterating"}, **meta)
        except RpcError as exc:
            run_hooks(self.hooks, "on_error", req, exc, reverse=True)
            reply = reply_error(req.id, exc.to_wire(), **meta)
        except Exception as exc:
            run_hooks(self.hooks, "on_error", req, exc, reverse=True)
            reply = reply_error(req.id, _remote(exc, traceback.format_exc()), **meta)
        reply["run_ms"] = round((time.perf_counter() - started) * 1000, 3)
        run_hooks(self.hooks, "after_call", req, reply, reverse=True)
        return reply

    @contextlib.contextmanager
    def _guard(self, proc: Any, req: Request, args: list[Any], kwargs: dict[str, Any]) -> Iterator[None]:
        """Hold the procedure's lock (``@procedure(lock="inventory:{sku}")``) while it runs,
        waiting for it at most until the call's deadline."""
        template = proc.spec.lock
        if not template:
            yield
            return
        if self.lock_factory is None:
            raise LockNotAcquired("this worker has no lock backend", procedure=req.procedure)
        bound = inspect.signature(proc.func).bind_partial(*args, **kwargs)
        bound.apply_defaults()  # a template may name a parameter the caller left to its default
        named = dict(bound.arguments)
        named.update(named.pop(next((p.name for p in proc.spec.signature.params if p.kind == "var_kw"), ""), {}) or {})
        try:
            name = template.format_map(named)
        except (KeyError, IndexError, ValueError) as exc:
            raise LockNotAcquired(f"lock template {template!r} does not fit the arguments: {exc}", procedure=req.procedure) from None
        left = max(0.0, (req.deadline - now_ms()) / 1000)
        lock = self.lock_factory(name, max(left, 1.0))
        # Give up a little before the deadline, so that the refusal still reaches the caller.
        if not lock.acquire(timeout=max(0.0, left - min(0.05, left * 0.2))):
            raise LockNotAcquired(f"lock {name!r} not taken before the deadline", procedure=req.procedure)
        try:
            yield
        finally:
            lock.release()

    def _pack(self, req: Request, reply: dict[str, Any]) -> bytes | None:
        if req.reply_to is None:
            if not reply["ok"]:
                log.warning("notification %s to %s failed: %s", req.id, req.procedure, reply["error"].get("message"))
            return None
        try:
            return self.signer.pack(reply, self.limits.max_reply_bytes)
        except PayloadTooLarge as exc:
            err = PayloadTooLarge(f"reply {exc.message}")
            reply.update(ok=False, error=err.to_wire())
        except (TypeError, ValueError) as exc:
            reply.update(ok=False, error=_remote(exc, "", "UnserializableResult"))
        reply.pop("result", None)
        return self.signer.pack(reply)


class Executor(Runner):
    def __init__(
        self,
        transport: Transport,
        signer: Signer,
        registry: Registry,
        limits: Limits,
        provider: str,
        *options: Any,
    ) -> None:
        """``options``: the hooks and the lock factory, as for :class:`Runner`."""
        super().__init__(signer, registry, limits, provider, *options)
        self.transport = transport
        self.calls_served = 0
        self._unfinished: list[Finish] = []
        self._unfinished_lock = threading.Lock()
        self._finishing: set[str] = set()
        self._finisher: Combiner[Finish] = Combiner(self._finish_many)
        self.events = EventRunner(self)
        self.records = RecordBuffer(transport, limits.history_max)
        self._taken: dict[tuple[str, str], Taken] = {}  # (route, entry id) -> decoded and claimed by take(); ids repeat across streams

    def pump(self, req: Request, items: Any) -> int:
        return Pump(self.transport, self.signer, req, self.limits.max_reply_bytes, self.limits.reply_ttl).run(items)

    def _finish_many(self, items: list[Finish]) -> None:
        try:
            self.transport.finish_many(items, self.limits.reply_ttl)
            with self._unfinished_lock:
                self._finishing.difference_update(item[1] for item in items)
        except TransportError as exc:
            # Kept, and sent again by retry_unfinished() from the heartbeat.
            log.warning("redis failed while finishing %d call(s): %s", len(items), exc)
            with self._unfinished_lock:
                self._unfinished.extend(items)

    def finishing_ids(self) -> set[str]:
        """Entries run but whose reply and acknowledgement are not yet written."""
        with self._unfinished_lock:
            return set(self._finishing)

    def has_unfinished(self) -> bool:
        with self._unfinished_lock:
            return bool(self._unfinished)

    def retry_unfinished(self) -> None:
        """Send again the replies that Redis refused (it was away)."""
        with self._unfinished_lock:
            items, self._unfinished = self._unfinished, []
        if items:
            self._finish_many(items)

    def handle(self, service: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        """Process one stream entry; never raises."""
        try:
            self._handle(service, entry_id, fields)
        except TransportError as exc:
            # The entry stays pending: the worker's _unstick() (or recovery) resolves it.
            log.warning("redis failed while handling %s: %s", entry_id, exc)
        except Exception:
            log.exception("unexpected failure handling %s", entry_id)

    def take(self, entries: list[tuple[str, str, dict[bytes, bytes]]]) -> None:
        """Decode the entries of one read and claim their ids in one round trip,
        for :meth:`handle` to find (an entry it does not find, it decodes and
        claims itself). Never raises: a failed claim is left to ``handle``."""
        taken: dict[tuple[str, str], Taken] = {}
        claims: list[tuple[Taken, tuple[str, str, str, int]]] = []
        for service, entry_id, fields in entries:
            item = taken[service, entry_id] = self._decode(fields)
            marker = item.marker()
            if marker is not None:
                claims.append((item, (service, marker, entry_id, item.ttl_ms(self.limits.event_ttl))))
        if len(claims) > 1:  # a lone entry is claimed by the thread that runs it
            try:
                for (item, _), granted in zip(claims, self.transport.claim_runs([c for _, c in claims]), strict=True):
                    item.granted = granted
            except TransportError:
                pass  # left to handle(), which claims again
        with self._unfinished_lock:
            self._taken.update(taken)

    def _decode(self, fields: dict[bytes, bytes]) -> Taken:
        raw = fields.get(b"m", b"")
        try:
            return Taken(raw, decode_message(self.signer.unpack(raw, self.limits.max_request_bytes)))
        except (ProtocolError, PayloadTooLarge) as exc:
            return Taken(raw, None, f"rejected: {exc.message}")

    def _claimed(self, service: str, entry_id: str, item: Taken) -> bool:
        if item.granted is None:
            marker = item.marker()
            assert marker is not None
            item.granted = self.transport.claim_run(service, marker, entry_id, item.ttl_ms(self.limits.event_ttl))
        return item.granted

    def _handle(self, service: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        taken_at = now_ms()
        with self._unfinished_lock:
            item = self._taken.pop((service, entry_id), None)
        item = item or self._decode(fields)
        raw, req = item.raw, item.message
        if req is None:
            self.reject(service, entry_id, raw, item.problem)
            return
        if isinstance(req, Event):
            self.events.handle(service, entry_id, req, lambda: self._claimed(service, entry_id, item))
            return
        if req.reply_to is not None and not is_reply(self.transport.ns, req.reply_to):
            self.reject(service, entry_id, raw, f"rejected: reply_to {req.reply_to[:200]!r} is not a reply list of this namespace")
            return
        if req.expired:
            self.finish(service, entry_id, None, None)
            self.records.add(self._record(req, None, "expired"))
            self.transport.incr(service, "expired")
            log.info("call %s to %s expired before it ran", req.id, req.procedure)
            return
        if not self._claimed(service, entry_id, item):
            self.finish(service, entry_id, None, None)  # another entry took this id: a replay, never run
            self.transport.incr(service, "replayed")
            log.warning("request %s to %s dropped: its id was already taken (a replay)", req.id, req.procedure)
            return
        if req.idempotency_key and req.reply_to is not None:
            if not self._claim(service, entry_id, req):
                return
        reply = self.run(req, taken_at)
        if req.stream:
            reply["end"] = True
        frame = self._pack(req, reply)
        if req.idempotency_key and req.reply_to is not None:
            self._complete(req, reply)
        self.finish(service, entry_id, req.reply_to, frame)
        with self._unfinished_lock:
            self.calls_served += 1
        self.records.add(self._record(req, reply))  # after the reply: history never delays it

    def finish(self, service: str, entry_id: str, reply_to: str | None, frame: bytes | None) -> None:
        """Send the reply (if any) and retire the entry, batched with other threads'."""
        with self._unfinished_lock:
            self._finishing.add(entry_id)
        self._finisher.submit((service, entry_id, reply_to, frame))

    def _record(self, req: Request, reply: dict[str, Any] | None, status: str | None = None) -> bytes | None:
        """The call record of ``req`` (None when recording is off); never raises."""
        if not self.limits.record_calls:
            return None
        try:
            now = now_ms()
            error = "" if reply is None or reply["ok"] else _error_text(reply["error"])
            proc = self.registry.find(req.procedure)
            names = [p.name for p in proc.spec.signature.params if p.kind == "pos"] if proc else []
            return encode(
                id=req.id, procedure=req.procedure, provider=self.provider, caller=req.caller,
                status=status or ("ok" if reply and reply["ok"] else (reply or {}).get("error", {}).get("code", "remote_error")),
                queued_ms=(reply or {}).get("queued_ms"), run_ms=(reply or {}).get("run_ms"),
                total_ms=max(0, now - req.sent_at) if req.sent_at else None, error=error,
                args=preview(names, req.args, req.kwargs, self.limits.redact),
                payload=None if not error else self._replayable(req, names),
                trace_id=req.trace_id, parent_id=req.parent_id or "", at=now,
            )
        except Exception:  # recording must never cost a call
            log.exception("could not build the record of call %s", req.id)
            return None

    def _replayable(self, req: Request, names: list[str]) -> dict[str, Any] | None:
        """A failed call's arguments for a replay from the dashboard, signed
        together with its id and procedure (the history stream is unsigned)."""
        payload = replayable(names, req.args, req.kwargs, self.limits.redact)
        if payload is not None:
            payload["sig"] = self.signer.tag("replay", req.id, req.procedure, payload["args"], payload["kwargs"])
        return payload

    def reject(self, service: str, entry_id: str | None, raw: bytes, reason: str) -> None:
        log.warning("message %s on %s %s", entry_id, service, reason)
        self.transport.dead_letter(service, entry_id, raw, reason, self.limits.dead_letter_max)
        self.transport.incr(service, "rejected")

    def _claim(self, service: str, entry_id: str, req: Request) -> bool:
        """True if this delivery should run the call; otherwise it is answered."""
        waiter = self.signer.pack({"id": req.id, "reply_to": req.reply_to})
        ttl_ms = max(1, req.deadline - now_ms())
        assert req.idempotency_key is not None
        state, stored = self.transport.claim_idempotency(req.procedure, req.idempotency_key, req.id, ttl_ms, waiter)
        if state == 0:
            return True
        if state == 2 and stored is not None:
            try:
                first = self.signer.unpack(stored)
                if not isinstance(first, dict) or first.pop("for", None) != [req.procedure, req.idempotency_key]:
                    raise ProtocolError("the stored reply is not bound to this procedure and key")
            except ProtocolError as exc:
                log.warning("ignoring a forged idempotency entry for %s: %s", req.procedure, exc)
                self.transport.incr(service, "rejected")
                return True
            first["id"] = req.id
            self.transport.finish_many([(service, entry_id, req.reply_to, self.signer.pack(first))], self.limits.reply_ttl)
        else:  # another call with this key is running; it will answer us
            self.transport.ack(service, entry_id)
        return False

    def _complete(self, req: Request, reply: dict[str, Any]) -> None:
        assert req.idempotency_key is not None
        # Signed and bound to its procedure and key: a stored reply copied under
        # another procedure's or key's entry is refused (see _claim).
        stored = self.signer.pack({**{k: v for k, v in reply.items() if k != "id"}, "for": [req.procedure, req.idempotency_key]})
        waiters = self.transport.complete_idempotency(req.procedure, req.idempotency_key, stored, self.limits.idempotency_ttl)
        self.answer_waiters(waiters, reply)

    def answer_waiters(self, waiters: list[bytes], reply: dict[str, Any]) -> None:
        out = []
        for raw in waiters:
            try:
                w = self.signer.unpack(raw)
            except ProtocolError:
                continue
            out.append((w["reply_to"], self.signer.pack({**reply, "id": w["id"]})))
        if out:
            self.transport.send_replies(out, self.limits.reply_ttl)


def _error_text(error: dict[str, Any]) -> str:
    text = f"{error.get('code', 'remote_error')}: {error.get('message', '')}"
    if error.get("traceback"):
        text += "\n" + str(error["traceback"])
    return text[:20_000]


class _NotJson(ValueError):
    """A result JSON cannot carry (inf, NaN): the codec would turn it into null."""


def _remote(exc: BaseException, tb: str, type_name: str | None = None) -> dict[str, Any]:
    return RemoteError(
        remote_type=type_name or type(exc).__name__, remote_message=str(exc), remote_traceback=tb
    ).to_wire()

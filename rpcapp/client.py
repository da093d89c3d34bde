"""Layer 2: the client: call, call_async, gather, notify, service proxies.

One reply listener thread per client and process multiplexes every call in
flight by correlation id, blocking on a single reply list (no polling, no
connection per call).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

from . import context, keys
from .combiner import Combiner
from .errors import (
    InvalidParams,
    PayloadTooLarge,
    ProcedureNotFound,
    ProtocolError,
    RpcError,
    RpcTimeout,
    ServiceUnavailable,
    TransportError,
    error_from_wire,
)
from .protocol import Request, Signer, now_ms
from .registry import Registry, Spec, default_registry
from .signature import _Mismatch, coerce
from .transport import Transport

log = logging.getLogger("rpcapp.client")

REGISTRATION_WAIT_MS = 1500
"""How long a call waits for a provider to register when none is known at all."""


@dataclass(frozen=True)
class ClientSettings:
    default_timeout: float = 10.0
    max_request_bytes: int = 1 << 20
    max_reply_bytes: int = 1 << 20
    max_queue_length: int = 100_000
    provider_ttl: float = 5.0
    reply_ttl: int = 60
    spec_cache_ttl: float = 5.0
    provider_cache_ttl: float = 1.0


class Client:
    """Calls procedures through Redis. Thread-safe; one per process is plenty."""

    def __init__(
        self,
        transport: Transport,
        signer: Signer,
        settings: ClientSettings | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.transport = transport
        self.signer = signer
        self.settings = settings or ClientSettings()
        self.registry = registry if registry is not None else default_registry
        self.late_replies = 0
        self.rejected_replies = 0
        self._spec_cache: dict[str, tuple[float, Spec | None]] = {}
        self._live_cache: dict[str, tuple[float, int]] = {}
        self._listener: _ReplyListener | None = None
        self._lock = threading.Lock()
        self._pid = -1
        self._sender: Combiner[Any] = Combiner(self._flush_sends)

    # -- public API --------------------------------------------------------
    def call(self, name: str, /, *args: Any, timeout: float | None = None, idempotency_key: str | None = None, **kwargs: Any) -> Any:
        """Call ``name`` and wait for its result (up to the deadline)."""
        fut = self._send_all([(name, args, kwargs, timeout, idempotency_key)], inline=True, self_read=True)[0]
        listener = self._listener
        if listener is not None:
            listener.read_for(fut)
        return self._wait(fut)

    def call_async(self, name: str, /, *args: Any, timeout: float | None = None, idempotency_key: str | None = None, **kwargs: Any) -> Future[Any]:
        """Queue the call and return a Future at once; never blocks, never raises.

        A background sender writes queued calls to Redis in shared pipelines."""
        return self._send_all([(name, args, kwargs, timeout, idempotency_key)], inline=False)[0]

    async def acall(self, name: str, /, *args: Any, timeout: float | None = None, idempotency_key: str | None = None, **kwargs: Any) -> Any:
        """``call`` for asyncio code; shares the reply listener."""
        fut = self.call_async(name, *args, timeout=timeout, idempotency_key=idempotency_key, **kwargs)
        return await asyncio.wrap_future(fut)

    def gather(self, calls: Iterable[Sequence[Any]], *, timeout: float | None = None, return_exceptions: bool = False) -> list[Any]:
        """Send every call (in one round trip), then wait for all; results in order."""
        batch = []
        for item in calls:
            name, args = item[0], tuple(item[1]) if len(item) > 1 else ()
            kwargs = dict(item[2]) if len(item) > 2 else {}
            batch.append((name, args, kwargs, timeout, None))
        futures = self._send_all(batch, inline=True)
        results: list[Any] = []
        for fut in futures:
            try:
                results.append(self._wait(fut))
            except RpcError as exc:
                if not return_exceptions:
                    raise
                results.append(exc)
        return results

    def notify(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Queue a call that gets no reply; returns once it is queued."""
        spec = self._spec(name)
        args_, kwargs_ = spec.signature.bind(args, kwargs, name)
        deadline = self._deadline(spec, None)
        req = self._request(spec, args_, kwargs_, deadline, reply_to=None, idempotency_key=None)
        frame = self._pack(req)
        self._enqueue([(spec.service, frame)], deadline, name)

    def service(self, name: str) -> ServiceProxy:
        """A proxy: ``client.service("calculator").add(1, 2)``."""
        return ServiceProxy(self, name)

    def close(self) -> None:
        """Stop the listener; calls still waiting fail with ServiceUnavailable."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    # -- internals -------------------------------------------------------------
    def _wait(self, fut: Future[Any]) -> Any:
        deadline_ms = getattr(fut, "rpc_deadline", None)
        remaining = max(0.0, (deadline_ms - now_ms()) / 1000) if deadline_ms else None
        try:
            return fut.result(timeout=None if remaining is None else remaining + 0.05)
        except TimeoutError:
            listener = self._listener
            if listener is not None:
                listener.expire(getattr(fut, "rpc_id", ""))
            _complete(fut, exc=RpcTimeout("no reply before the deadline", call_id=getattr(fut, "rpc_id", None)))
            return fut.result()

    def _send_all(self, batch: list[tuple[str, Sequence[Any], dict[str, Any], float | None, str | None]], inline: bool, self_read: bool = False) -> list[Future[Any]]:
        listener = self._ensure_listener()
        futures: list[Future[Any]] = []
        outgoing: list[tuple[str, bytes, Request, Future[Any]]] = []
        for name, args, kwargs, timeout, idem in batch:
            fut: Future[Any] = Future()
            futures.append(fut)
            try:
                spec = self._spec(name)
                args_, kwargs_ = spec.signature.bind(args, kwargs, name)
                deadline = self._deadline(spec, timeout)
                req = self._request(spec, args_, kwargs_, deadline, listener.reply_key, idem)
                frame = self._pack(req)
                fut.rpc_id = req.id  # type: ignore[attr-defined]
                fut.rpc_deadline = deadline  # type: ignore[attr-defined]
                outgoing.append((spec.service, frame, req, fut))
            except RpcError as exc:
                exc.procedure = exc.procedure or name
                _complete(fut, exc=exc)
        if outgoing:
            for _service, _frame, req, fut in outgoing:
                listener.track(req, fut, self._returns(req.procedure), self_read)
            self._send(outgoing, listener, inline)
        return futures

    def _send(self, outgoing: list[tuple[str, bytes, Request, Future[Any]]], listener: _ReplyListener, inline: bool) -> None:
        if not inline:
            listener.queue_send(outgoing)
            return
        ready = self._with_providers(outgoing, listener)
        if ready:
            self._sender.submit((ready, listener))

    def _with_providers(self, outgoing: list[tuple[str, bytes, Request, Future[Any]]], listener: _ReplyListener) -> list[tuple[str, bytes, Request, Future[Any]]]:
        """The calls whose service has a live provider; the others fail (per service)."""
        ready = []
        for service in dict.fromkeys(s for s, _, _, _ in outgoing):
            mine = [item for item in outgoing if item[0] == service and not item[3].done()]
            if not mine:
                continue
            try:
                self._check_providers(service, max(req.deadline for _, _, req, _ in mine))
                ready.extend(mine)
            except RpcError as exc:
                self._fail(mine, listener, exc)
        return ready

    def _send_queued(self, batches: list[tuple[list[tuple[str, bytes, Request, Future[Any]]], _ReplyListener]]) -> None:
        """The sender thread's flush: provider checks, then one pipeline."""
        ready = []
        for outgoing, listener in batches:
            checked = self._with_providers(outgoing, listener)
            if checked:
                ready.append((checked, listener))
        if ready:
            self._flush_sends(ready)

    def _flush_sends(self, batches: list[tuple[list[tuple[str, bytes, Request, Future[Any]]], _ReplyListener]]) -> None:
        """Send the requests of every waiting caller in one pipeline."""
        outgoing = [item for items, _ in batches for item in items]
        try:
            self._enqueue([(s, f) for s, f, _, _ in outgoing], max(req.deadline for _, _, req, _ in outgoing), outgoing[0][2].procedure)
            for _, _, _, fut in outgoing:
                fut.rpc_sent = True  # type: ignore[attr-defined]
        except RpcError as exc:
            for items, listener in batches:
                self._fail(items, listener, exc)

    @staticmethod
    def _fail(outgoing: list[tuple[str, bytes, Request, Future[Any]]], listener: _ReplyListener, exc: RpcError) -> None:
        for _, _, req, _ in outgoing:
            listener.fail(req.id, type(exc)(exc.message, procedure=req.procedure, call_id=None))

    def _pack(self, req: Request) -> bytes:
        try:
            return self.signer.pack(req.to_wire(), self.settings.max_request_bytes)
        except (TypeError, ValueError) as exc:  # orjson: unsupported type, int over 64 bits
            raise InvalidParams(f"arguments cannot be encoded: {exc}", procedure=req.procedure) from None

    def _enqueue(self, items: list[tuple[str, bytes]], deadline_ms: int, name: str) -> None:
        """XADD, retrying with capped backoff while Redis is unreachable."""
        delay = 0.05
        while True:
            try:
                self.transport.enqueue(items, self.settings.max_queue_length)
                return
            except TransportError as exc:
                left = (deadline_ms - now_ms()) / 1000
                if left <= 0:
                    raise ServiceUnavailable(f"redis unreachable: {exc.message}", procedure=name) from exc
                time.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)

    def _check_providers(self, service: str, deadline_ms: int) -> None:
        """ServiceUnavailable at once if the service's providers are all dead.

        When none is registered at all (a Redis that restarted empty, a pool
        between two workers), wait a moment for one to register first."""
        now = time.monotonic()
        cached = self._live_cache.get(service)
        if cached and cached[0] > now and cached[1] > 0:
            return
        if self._known_absent(service):  # do not wait again so soon
            raise ServiceUnavailable(f"no provider registered for service {service!r}")
        registration_wait: int | None = None  # from the first answer of Redis
        delay = 0.05
        while True:
            try:
                live, known = self.transport.count_live(service, now_ms() - int(self.settings.provider_ttl * 1000))
                if registration_wait is None:
                    registration_wait = min(now_ms() + REGISTRATION_WAIT_MS, deadline_ms)
            except TransportError as exc:
                live, known = 0, -1
                if now_ms() >= deadline_ms:
                    raise ServiceUnavailable(f"redis unreachable: {exc.message}") from exc
            if live or known > 0:
                break
            if registration_wait is not None and now_ms() >= registration_wait:
                self._live_cache[service] = (time.monotonic() + self.settings.provider_cache_ttl, -1)
                raise ServiceUnavailable(f"no provider registered for service {service!r}")
            time.sleep(max(0.0, min(delay, (deadline_ms - now_ms()) / 1000)))
            delay = min(delay * 2, 1.0)
        self._live_cache[service] = (time.monotonic() + self.settings.provider_cache_ttl, live)
        if live == 0:
            raise ServiceUnavailable(f"no live provider for service {service!r}")

    def _known_absent(self, service: str) -> bool:
        """True for a moment after a call waited in vain for any provider to register."""
        cached = self._live_cache.get(service)
        return bool(cached and cached[0] > time.monotonic() and cached[1] == -1)

    def _spec(self, name: str) -> Spec:
        local = self.registry.find(name)
        if local is not None:
            return local.spec
        now = time.monotonic()
        cached = self._spec_cache.get(name)
        if cached is None or cached[0] <= now:
            try:
                keys.service_of(name)
                raw = self.transport.get_spec(name)
            except ValueError:
                raw = None
            except TransportError:
                raise ServiceUnavailable("redis unreachable", procedure=name) from None
            spec = self._verified_spec(name, raw)
            cached = (now + (self.settings.spec_cache_ttl if spec else 1.0), spec)
            self._spec_cache[name] = cached
        if cached[1] is None:
            raise ProcedureNotFound(f"no procedure {name!r}", procedure=name)
        return cached[1]

    def _verified_spec(self, name: str, raw: bytes | None) -> Spec | None:
        if not raw:
            return None
        try:
            return Spec.from_wire(self.signer.unpack(raw))
        except (ProtocolError, KeyError, TypeError, ValueError):
            log.warning("ignoring an unsigned or malformed spec for %s", name)
            return None

    def _returns(self, name: str) -> Any:
        try:
            return self._spec(name).signature.returns
        except RpcError:
            return "any"

    def _deadline(self, spec: Spec, timeout: float | None) -> int:
        seconds = timeout if timeout is not None else spec.timeout or self.settings.default_timeout
        deadline = now_ms() + int(seconds * 1000)
        parent = context.current()
        if parent is not None:
            deadline = min(deadline, parent.deadline_ms)
        return deadline

    def _request(self, spec: Spec, args: list[Any], kwargs: dict[str, Any], deadline: int, reply_to: str | None, idempotency_key: str | None) -> Request:
        parent = context.current()
        req = Request(
            procedure=spec.name,
            args=args,
            kwargs=kwargs,
            deadline=deadline,
            reply_to=reply_to,
            caller=_CALLER,
            idempotency_key=idempotency_key,
            idempotent=spec.idempotent,
        )
        if parent is not None:
            req.trace_id, req.parent_id = parent.trace_id, parent.call_id
        return req

    def _ensure_listener(self) -> _ReplyListener:
        pid = os.getpid()
        listener = self._listener
        if listener is not None and self._pid == pid:
            return listener
        with self._lock:
            if self._listener is None or self._pid != pid:
                self._pid = pid
                self._listener = _ReplyListener(self)
                self._listener.start()
            return self._listener


_CALLER = f"{socket.gethostname()}:{os.getpid()}"


def _complete(fut: Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
    """Complete a Future unless something else already did (no race raises)."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except InvalidStateError:
        pass


class ServiceProxy:
    """``proxy.method(*args, **kwargs)`` is ``client.call("service.method", ...)``."""

    def __init__(self, client: Client, service: str) -> None:
        self._client = client
        self._service = service

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        name = f"{self._service}.{method}"

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._client.call(name, *args, **kwargs)

        call.__name__ = method
        return call


class _ReplyListener(threading.Thread):
    """Blocks on the client's reply list and completes the matching Futures.

    One reader at a time (the ``_reading`` lock): a synchronous caller reads
    its own reply when no one else is reading, else this thread reads for
    every call whose caller is not reading itself.

    A second, in-process timer thread completes Futures whose deadline passed
    with ``RpcTimeout`` (no Redis traffic)."""

    def __init__(self, client: Client) -> None:
        super().__init__(name="rpcapp-replies", daemon=True)
        self.client = client
        self.reply_key = keys.reply(client.transport.ns, uuid.uuid4().hex)
        self._pending: dict[str, tuple[Future[Any], Any, str]] = {}
        self._deadlines: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._timer_wake = threading.Condition(self._lock)
        self._needed = threading.Condition(self._lock)  # wakes the listener thread when it must read
        self._self_readers: set[str] = set()  # calls whose caller reads its reply itself
        self._expired: dict[str, float] = {}  # timed-out calls whose late reply may come, until when
        self._reading = threading.Lock()  # held by whoever is blocked on the reply list
        self._stop_event = threading.Event()
        self._timer = threading.Thread(target=self._expire_loop, name="rpcapp-deadlines", daemon=True)
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name="rpcapp-sender", daemon=True)

    def start(self) -> None:
        super().start()
        self._timer.start()
        self._sender.start()

    def queue_send(self, outgoing: list[Any]) -> None:
        self._outbox.put(outgoing)

    def _send_loop(self) -> None:
        while not self._stop_event.is_set():
            try:
                first = self._outbox.get(timeout=1.0)
            except queue.Empty:
                continue
            batches = [(first, self)]
            while True:
                try:
                    batches.append((self._outbox.get_nowait(), self))
                except queue.Empty:
                    break
            try:
                self.client._send_queued(batches)
            except Exception:  # the sender never dies; the calls time out
                log.exception("sending %d call(s) failed", len(batches))

    def track(self, req: Request, fut: Future[Any], returns: Any, self_read: bool = False) -> None:
        """Expect a reply for ``req``; ``self_read``: its caller will try to read it itself."""
        with self._lock:
            self._pending[req.id] = (fut, returns, req.procedure)
            heapq.heappush(self._deadlines, (req.deadline, req.id))
            if self._deadlines[0][1] == req.id:
                self._timer_wake.notify()
            if self_read:
                self._self_readers.add(req.id)
            else:
                self._needed.notify()

    def read_for(self, fut: Future[Any]) -> None:
        """Read the reply list in the caller's own thread until ``fut`` is done
        (no hand-off between threads), if no one else is reading it; replies
        for other calls met on the way are delivered too."""
        call_id = getattr(fut, "rpc_id", "")
        try:
            if fut.done() or not self._reading.acquire(blocking=False):
                return  # someone is reading: they deliver ours
            try:
                self._read_until(fut, getattr(fut, "rpc_deadline", 0))
            finally:
                self._reading.release()
        finally:
            with self._lock:
                self._self_readers.discard(call_id)
                self._needed.notify()

    def _read_until(self, fut: Future[Any], deadline_ms: int) -> None:
        transport = self.client.transport
        while not fut.done():
            left = (deadline_ms - now_ms()) / 1000
            if left <= 0:
                return
            try:
                first = transport.wait_reply(self.reply_key, min(left, 1.0))
                if first is None:
                    continue
                self._deliver_safely(first)
                frames = transport.take_replies(self.reply_key) if self._pending else []
            except Exception:  # leave the reading (and any retrying) to the listener thread
                return
            for frame in frames:
                self._deliver_safely(frame)

    def fail(self, call_id: str, exc: RpcError) -> None:
        with self._lock:
            entry = self._pending.pop(call_id, None)
            self._self_readers.discard(call_id)
        if entry is not None:
            _complete(entry[0], exc=exc)

    def expire(self, call_id: str) -> None:
        with self._lock:
            entry = self._pending.pop(call_id, None)
            self._self_readers.discard(call_id)
        if entry is None:
            return
        fut, _, procedure = entry
        with self._lock:
            if len(self._expired) < 100_000:
                self._expired[call_id] = time.monotonic() + self.client.settings.reply_ttl
            self._needed.notify()
        if getattr(fut, "rpc_sent", False):
            _complete(fut, exc=RpcTimeout("no reply before the deadline", procedure=procedure, call_id=call_id))
        else:  # Redis stayed unreachable until the deadline: the call never left
            _complete(fut, exc=ServiceUnavailable("redis unreachable until the deadline", procedure=procedure))

    def stop(self) -> None:
        self._stop_event.set()
        with self._lock:
            self._timer_wake.notify()
            self._needed.notify()
            pending = list(self._pending.items())
            self._pending.clear()
            self._self_readers.clear()
        for call_id, (fut, _, procedure) in pending:
            _complete(fut, exc=ServiceUnavailable("the client was closed", procedure=procedure, call_id=call_id))
        while True:  # calls queued for the sender thread
            try:
                outgoing = self._outbox.get_nowait()
            except queue.Empty:
                break
            for _, _, req, fut in outgoing:
                _complete(fut, exc=ServiceUnavailable("the client was closed", procedure=req.procedure))

    def _wanted(self) -> bool:
        """Under the lock: a call is waiting whose caller is not reading for
        itself, or a call that timed out may still get its (late) reply."""
        if self._expired:
            now = time.monotonic()
            self._expired = {k: t for k, t in self._expired.items() if t > now}
        return len(self._pending) > len(self._self_readers) or bool(self._expired)

    def run(self) -> None:
        delay = 0.05
        while not self._stop_event.is_set():
            with self._lock:
                if not self._wanted():
                    self._needed.wait(1.0)
                    continue
            if not self._reading.acquire(timeout=1.0):
                continue
            try:
                with self._lock:
                    wanted = self._wanted()
                if not wanted:
                    continue
                first = self.client.transport.wait_reply(self.reply_key, 1.0)
                if first is None:
                    continue
                self._deliver_safely(first)
                # More calls in flight: take what else has arrived in one trip.
                frames = self.client.transport.take_replies(self.reply_key) if self._pending else []
                delay = 0.05
            except Exception as exc:  # a TransportError, or a client closed under us
                if self._stop_event.is_set():
                    return
                log.debug("reply listener: %s; retrying in %.2fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            finally:
                self._reading.release()
            for frame in frames:
                self._deliver_safely(frame)

    def _deliver_safely(self, frame: bytes) -> None:
        try:
            self._deliver(frame)
        except Exception:  # a malformed (but signed) reply: logged, the listener goes on
            log.exception("could not deliver a reply")

    def _deliver(self, frame: bytes) -> None:
        try:
            data = self.client.signer.unpack(frame, self.client.settings.max_reply_bytes)
            call_id = data["id"]
        except (ProtocolError, PayloadTooLarge, KeyError, TypeError) as exc:
            self.client.rejected_replies += 1
            log.warning("rejected a reply: %s", exc)
            return
        with self._lock:
            entry = self._pending.pop(call_id, None)
            self._self_readers.discard(call_id)
            if len(self._deadlines) > 2 * len(self._pending) + 256:
                # Answered calls linger in the heap until their deadline: compact.
                self._deadlines = [d for d in self._deadlines if d[1] in self._pending]
                heapq.heapify(self._deadlines)
        if entry is None:
            with self._lock:
                self._expired.pop(call_id, None)
            self.client.late_replies += 1
            log.info("dropped a late reply for call %s", call_id)
            return
        fut, returns, procedure = entry
        if fut.done():
            return
        error = data.get("error")
        if data.get("ok") is not True and not isinstance(error, dict):
            error = {"code": "remote_error", "message": "malformed reply"}
        if data.get("ok") is True:
            result = data.get("result")
            try:
                result = coerce(result, returns)
            except _Mismatch:
                pass
            _complete(fut, result=result)
        else:
            _complete(fut, exc=error_from_wire(error, procedure=procedure, call_id=call_id))

    def _expire_loop(self) -> None:
        while not self._stop_event.is_set():
            expired = []
            with self._lock:
                now = now_ms()
                while self._deadlines and self._deadlines[0][0] <= now:
                    _, call_id = heapq.heappop(self._deadlines)
                    if call_id in self._pending:
                        expired.append(call_id)
                if not expired:
                    wait = (self._deadlines[0][0] - now) / 1000 if self._deadlines else 1.0
                    self._timer_wake.wait(min(wait, 1.0))
            for call_id in expired:
                self.expire(call_id)

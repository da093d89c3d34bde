"""Layer 2: the client: call, call_async, gather, notify, service proxies.

One reply listener thread per client and process multiplexes every call in
flight by correlation id, blocking on a single reply list (no polling, no
connection per call).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from . import context, keys
from .cache import ExpiringLru
from .errors import (
    InvalidParams,
    ProcedureNotFound,
    ProtocolError,
    RpcError,
    RpcTimeout,
    ServiceUnavailable,
    TransportError,
)
from .events import Publisher
from .governance import Governor
from .key_check import KeyCheck
from .protocol import Request, Signer, now_ms
from .records import encode
from .registry import Registry, Spec, default_registry
from .replies import ReplyListener, complete
from .retries import Attempts
from .streams import AsyncCallStream, CallStream, StreamSink
from .transport import Transport, deadline

log = logging.getLogger("rpcapp.client")

REGISTRATION_WAIT_MS = 1500
"""How long a call waits for a provider to register when none is known at all."""
HEARTBEAT_WAIT_MS = 1000
"""How long a call waits for a heartbeat when the service's providers all look
dead but one beat within ``RECENTLY_ALIVE_MS`` (a Redis failover or restart
held their heartbeats back: they beat again within a second of it)."""
RECENTLY_ALIVE_MS = 30_000


SPEC_CACHE_SIZE = 1024
"""Procedure specs a client keeps in memory at most (least recently used go first)."""
MISS_CACHE_SIZE = 256
MISS_TTL = 1.0
"""Unknown names a client remembers at most, and for how long (sparing Redis a lookup)."""
MAX_NAME_CHARS = 200
"""A longer procedure name is refused (ProcedureNotFound) without a lookup."""


def plausible_name(name: object) -> bool:
    """True if ``name`` could be a procedure's: ``service.method``, at most
    ``MAX_NAME_CHARS`` characters, no whitespace or control characters, and
    none of ``@{}`` in the service part."""
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not name.isprintable() or any(c.isspace() for c in name):
        return False
    try:
        keys.service_of(name)
    except ValueError:
        return False
    return True


QUEUE_FULL_RETRY_AFTER = 1.0
"""Seconds a caller refused for a full queue is told to wait (HTTP ``Retry-After``)."""


def queue_full(name: str) -> ServiceUnavailable:
    """The refusal of a request whose queue holds ``MAX_QUEUE_LENGTH`` entries:
    not queued (``call_id`` None), so safe to send again later."""
    error = ServiceUnavailable(f"queue full: the queue of service {keys.service_of(name)!r} is at its limit; try again later", procedure=name)
    error.retry_after = QUEUE_FULL_RETRY_AFTER  # type: ignore[attr-defined]
    return error


def _shown(name: object) -> str:
    """``name`` for a message, cut short."""
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


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
    stream_window: int = 64
    catalog: bool = True  # False: ignore the catalog (every service as if unlisted)
    catalog_refresh: float = 10.0
    record_calls: bool = True  # the caller's side of call history: timeouts and late replies
    history_max: int = 100_000
    event_ttl: float = 3600.0  # a durable event not delivered within this is dead-lettered


def deadline_for(seconds: float) -> int:
    """The absolute deadline ``seconds`` from now, no later than the calling procedure's."""
    deadline = now_ms() + int(seconds * 1000)
    parent = context.current()
    if parent is not None:
        deadline = min(deadline, parent.deadline_ms)
    return deadline


def new_request(spec: Spec, args: list[Any], kwargs: dict[str, Any], deadline: int, reply_to: str | None, idempotency_key: str | None) -> Request:
    """A request for ``spec``, in the trace of the calling procedure if any."""
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


def pack_request(signer: Signer, req: Request, limit: int) -> bytes:
    """The signed frame of ``req``: PayloadTooLarge over ``limit``, InvalidParams
    for arguments the codec cannot carry."""
    try:
        return signer.pack(req.to_wire(), limit)
    except (TypeError, ValueError) as exc:  # orjson: unsupported type, int over 64 bits
        raise InvalidParams(f"arguments cannot be encoded: {exc}", procedure=req.procedure) from None


def gather_items(calls: Iterable[Sequence[Any]]) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """``gather``'s ``(name, args[, kwargs])`` items as ``(name, args, kwargs)``."""
    return [(item[0], tuple(item[1]) if len(item) > 1 else (), dict(item[2]) if len(item) > 2 else {}) for item in calls]


def collect(outcomes: Iterable[Callable[[], Any]], return_exceptions: bool) -> list[Any]:
    """Each outcome's value, in order; the first RpcError is raised, or with
    ``return_exceptions`` put in its place."""
    results: list[Any] = []
    for outcome in outcomes:
        try:
            results.append(outcome())
        except RpcError as exc:
            if not return_exceptions:
                raise
            results.append(exc)
    return results


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
        self._spec_cache: ExpiringLru[Spec] = ExpiringLru(SPEC_CACHE_SIZE, self.settings.spec_cache_ttl)
        self._spec_misses: ExpiringLru[bool] = ExpiringLru(MISS_CACHE_SIZE, MISS_TTL)
        self._live_cache: dict[str, tuple[float, int]] = {}
        self._listener: ReplyListener | None = None
        self._lock = threading.Lock()
        self._pid = -1
        self._publisher = Publisher(self)
        s = self.settings
        self.governor = Governor(transport, s.default_timeout, s.provider_ttl, s.catalog_refresh, s.catalog)
        self.key_check = KeyCheck(transport, signer.keys, s.provider_ttl)

    # -- public API --------------------------------------------------------
    def call(self, name: str, /, *args: Any, timeout: float | None = None, idempotency_key: str | None = None, **kwargs: Any) -> Any:
        """Call ``name`` and wait for its result (up to the deadline)."""
        fut = self._send_all([(name, args, kwargs, timeout, idempotency_key)], inline=True, self_read=True)[0]
        listener = self._listener
        if listener is not None:
            listener.read_for(fut)
        return self._wait(fut, name)

    def call_async(self, name: str, /, *args: Any, timeout: float | None = None, idempotency_key: str | None = None, **kwargs: Any) -> Future[Any]:
        """Queue the call and return a Future at once; never blocks, never raises.

        A background sender writes queued calls to Redis in shared pipelines."""
        return self._send_all([(name, args, kwargs, timeout, idempotency_key)], inline=False)[0]

    async def acall(self, name: str, /, *args: Any, timeout: float | None = None, idempotency_key: str | None = None, **kwargs: Any) -> Any:
        """``call`` for asyncio code; shares the reply listener."""
        fut = self.call_async(name, *args, timeout=timeout, idempotency_key=idempotency_key, **kwargs)
        try:
            return await asyncio.wrap_future(fut)
        except RpcTimeout as exc:
            raise await asyncio.to_thread(self.key_check.explain, exc, name) from None

    def gather(self, calls: Iterable[Sequence[Any]], *, timeout: float | None = None, return_exceptions: bool = False) -> list[Any]:
        """Send every call (in one round trip), then wait for all; results in order."""
        batch = [(name, args, kwargs, timeout, None) for name, args, kwargs in gather_items(calls)]
        futures = self._send_all(batch, inline=True)
        return collect([functools.partial(self._wait, fut, name) for (name, *_), fut in zip(batch, futures, strict=True)], return_exceptions)

    def notify(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Queue a call that gets no reply; returns once it is queued."""
        self._notify(name, args, kwargs, once=False)

    def notify_once(self, name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """``notify`` trying Redis once (``ServiceUnavailable`` if it is away),
        for relays that will try again later."""
        self._notify(name, args, kwargs, once=True)

    def _notify(self, name: str, args: Sequence[Any], kwargs: dict[str, Any], once: bool) -> None:
        spec = self._spec(name)
        args_, kwargs_ = spec.signature.bind(args, kwargs, name)
        admitted = self.governor.admit(spec, args_, kwargs_, None)
        deadline = self._deadline_for(admitted.seconds)
        req = self._request(spec, args_, kwargs_, deadline, reply_to=None, idempotency_key=None)
        frame = self._pack(req)
        uncertain, refused = self._enqueue([(admitted.route, frame)], deadline, name, [req], retry=not once)
        if refused:
            raise queue_full(name)
        if uncertain:
            raise ServiceUnavailable("redis failed while the notification was being queued; it may have been queued", procedure=name)

    def stream(self, name: str, /, *args: Any, timeout: float | None = None, **kwargs: Any) -> CallStream:
        """Call a streaming procedure; iterate the result for its items.

        ``timeout`` bounds the wait for each next item; the procedure's
        deadline (catalog, ``@procedure(timeout=)``, else the default) bounds
        the whole stream. Errors found before sending are raised here."""
        listener, req, sink = self._open_stream(name, args, kwargs)
        return CallStream(listener, req, sink, timeout, self.settings.stream_window)

    def astream(self, name: str, /, *args: Any, timeout: float | None = None, **kwargs: Any) -> AsyncCallStream:
        """``stream`` for ``async for``; the request is sent when iteration starts."""
        return _LazyAsyncStream(self, name, args, kwargs, timeout)  # type: ignore[return-value]

    def _open_stream(self, name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[ReplyListener, Request, StreamSink]:
        listener = self._ensure_listener()
        spec = self._spec(name)
        if not spec.stream:
            raise InvalidParams(f"{name} is not a streaming procedure; use call()", procedure=name)
        args_, kwargs_ = spec.signature.bind(args, kwargs, name)
        admitted = self.governor.admit(spec, args_, kwargs_, None)
        deadline = self._deadline_for(admitted.seconds)
        req = self._request(spec, args_, kwargs_, deadline, listener.reply_key, None)
        req.stream, req.window, req.idempotent = True, self.settings.stream_window, False
        frame = self._pack(req)
        sink = StreamSink(name, req.id, spec.signature.returns)
        listener.track_stream(req, sink)
        try:
            self._check_providers(spec.service, deadline)
            if self._enqueue([(admitted.route, frame)], deadline, name, [req])[1]:  # if it may be queued, its items may come
                raise queue_full(name)
        except RpcError:
            listener.untrack_stream(req.id)
            raise
        return listener, req, sink

    def publish(self, topic: str, payload: Any, *, timeout: float | None = None, event_id: str | None = None) -> str:
        """Publish an event to every subscribing service (and broadcast handler);
        returns the event id once it is queued. ``timeout`` bounds the retries
        while Redis is unreachable (then ``ServiceUnavailable``)."""
        return self._publisher.publish(topic, payload, timeout, _CALLER, event_id)

    def record(self, **fields: Any) -> None:
        """Append a caller-side call record (a timeout, a late reply); never raises."""
        if not self.settings.record_calls:
            return
        try:
            self.transport.record_calls([encode(caller=_CALLER, at=now_ms(), **fields)], self.settings.history_max)
        except Exception as exc:  # recording must never cost a caller anything
            log.debug("could not record call %s: %s", fields.get("id"), exc)

    def describe(self, name: str) -> Spec:
        """The procedure's spec (from this process's code, else as a worker
        published it); ProcedureNotFound if nobody knows it."""
        return self._spec(name)

    def parked_events(self, service: str, count: int = 100) -> list[dict[str, Any]]:
        """Events whose handlers kept failing in ``service``, newest first."""
        return self._publisher.parked(service, count)

    def replay_event(self, service: str, entry: str) -> bool:
        """Deliver a parked event (``parked_events()[i]["entry"]``) again."""
        return self._publisher.replay(service, entry)

    def service(self, name: str) -> ServiceProxy:
        """A proxy: ``client.service("calculator").add(1, 2)``."""
        return ServiceProxy(self, name)

    def close(self) -> None:
        """Stop the listener; calls still waiting fail with ServiceUnavailable."""
        self.governor.catalog.close()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    # -- internals -------------------------------------------------------------
    def _wait(self, fut: Future[Any], name: str | None = None) -> Any:
        """The call's result; a timeout explained by ``key_check`` (signing keys)."""
        try:
            return self._result(fut)
        except RpcTimeout as exc:
            raise self.key_check.explain(exc, name) from None

    def _result(self, fut: Future[Any]) -> Any:
        deadline_ms = getattr(fut, "rpc_deadline", None)
        remaining = max(0.0, (deadline_ms - now_ms()) / 1000) if deadline_ms else None
        try:
            return fut.result(timeout=None if remaining is None else remaining + 0.05)
        except TimeoutError:
            listener = self._listener
            if listener is not None:
                listener.expire(getattr(fut, "rpc_id", ""))
            complete(fut, exc=RpcTimeout("no reply before the deadline", call_id=getattr(fut, "rpc_id", None)))
            return fut.result()

    def _send_all(self, batch: list[tuple[Any, ...]], inline: bool, self_read: bool = False, resilient: bool = True) -> list[Future[Any]]:
        """Send each (name, args, kwargs, timeout, idempotency key[, providers to avoid]);
        a Future per call, in order."""
        listener = self._ensure_listener()
        futures: list[Future[Any]] = []
        outgoing: list[tuple[str, bytes, Request, Future[Any]]] = []
        for name, args, kwargs, timeout, idem, *avoid in batch:
            fut: Future[Any] = Future()
            try:
                spec = self._spec(name)
                args_, kwargs_ = spec.signature.bind(args, kwargs, name)
                retrying = self.governor.resilience(spec) if resilient else None
                if retrying is not None:
                    fut = self._attempts(spec, args, kwargs, timeout, idem, retrying)
                    futures.append(fut)
                    continue
                admitted = self.governor.admit(spec, args_, kwargs_, timeout, avoid[0] if avoid else ())
                deadline = self._deadline_for(admitted.seconds)
                req = self._request(spec, args_, kwargs_, deadline, listener.reply_key, idem)
                frame = self._pack(req)
                fut.rpc_id = req.id  # type: ignore[attr-defined]
                fut.rpc_deadline = deadline  # type: ignore[attr-defined]
                fut.rpc_provider = admitted.provider  # type: ignore[attr-defined]
                if admitted.provider:
                    self._count_outstanding(fut, admitted.provider)
                outgoing.append((admitted.route, frame, req, fut))
            except RpcError as exc:
                exc.procedure = exc.procedure or name
                complete(fut, exc=exc)
            futures.append(fut)
        if outgoing:
            for _service, _frame, req, fut in outgoing:
                listener.track(req, fut, self._returns(req.procedure), self_read)
            self._send(outgoing, listener, inline)
        return futures

    def _attempts(self, spec: Spec, args: Sequence[Any], kwargs: dict[str, Any], timeout: float | None, idem: str | None, conf: Any) -> Future[Any]:
        """A call retried and/or hedged as the catalog says (idempotent procedures only)."""
        deadline = self._deadline_for(self.governor.timeout_of(spec, timeout))

        def send(seconds: float, avoid: Any) -> Future[Any]:
            return self._send_all([(spec.name, args, kwargs, seconds, idem, avoid)], inline=False, resilient=False)[0]

        return Attempts(send, deadline, conf).start()

    def _count_outstanding(self, fut: Future[Any], provider: str) -> None:
        balancer = self.governor.balancer
        balancer.sent(provider)
        fut.add_done_callback(lambda _: balancer.done(provider))

    def _send(self, outgoing: list[tuple[str, bytes, Request, Future[Any]]], listener: ReplyListener, inline: bool) -> None:
        if not inline:
            listener.queue_send(outgoing)
            return
        ready = self._with_providers(outgoing, listener)
        if ready:
            self._flush_sends([(ready, listener)])  # its own requests only, retried to their deadline

    def _with_providers(self, outgoing: list[tuple[str, bytes, Request, Future[Any]]], listener: ReplyListener) -> list[tuple[str, bytes, Request, Future[Any]]]:
        """The calls whose service has a live provider; the others fail (per service)."""
        ready = []
        for service in dict.fromkeys(keys.base(s) for s, _, _, _ in outgoing):
            mine = [item for item in outgoing if keys.base(item[0]) == service and not item[3].done()]
            if not mine:
                continue
            try:
                self._check_providers(service, max(req.deadline for _, _, req, _ in mine))
                ready.extend(mine)
            except RpcError as exc:
                self._fail(mine, listener, exc)
        return ready

    def _send_queued(self, batches: list[tuple[list[tuple[str, bytes, Request, Future[Any]]], ReplyListener]]) -> None:
        """The sender thread's flush: provider checks, then one pipeline."""
        ready = []
        for outgoing, listener in batches:
            checked = self._with_providers(outgoing, listener)
            if checked:
                ready.append((checked, listener))
        if ready:
            self._flush_sends(ready)

    def _flush_sends(self, batches: list[tuple[list[tuple[str, bytes, Request, Future[Any]]], ReplyListener]]) -> None:
        """Send the requests of every waiting caller in one pipeline."""
        outgoing = [item for items, _ in batches for item in items]
        try:
            _, refused = self._enqueue(
                [(s, f) for s, f, _, _ in outgoing],
                max(req.deadline for _, _, req, _ in outgoing),
                outgoing[0][2].procedure,
                [req for _, _, req, _ in outgoing],
            )
            for i, (_, _, _, fut) in enumerate(outgoing):
                fut.rpc_sent = i not in refused  # type: ignore[attr-defined]
            if refused:
                full = {outgoing[i][2].id for i in refused}
                for items, listener in batches:
                    for _, _, req, _ in items:
                        if req.id in full:
                            listener.fail(req.id, queue_full(req.procedure))
        except RpcError as exc:
            # Those that may have been queued wait for their reply (or RpcTimeout).
            maybe = {outgoing[i][2].id for i in getattr(exc, "uncertain", ())}
            for items, listener in batches:
                self._fail([item for item in items if item[2].id not in maybe], listener, exc)

    @staticmethod
    def _fail(outgoing: list[tuple[str, bytes, Request, Future[Any]]], listener: ReplyListener, exc: RpcError) -> None:
        for _, _, req, _ in outgoing:
            error = type(exc)(exc.message, procedure=req.procedure, call_id=None)
            error.retry_after = getattr(exc, "retry_after", None)  # type: ignore[attr-defined]
            listener.fail(req.id, error)

    def _pack(self, req: Request) -> bytes:
        return pack_request(self.signer, req, self.settings.max_request_bytes)

    def _enqueue(self, items: list[tuple[str, bytes]], deadline_ms: int, name: str, reqs: Sequence[Request] | None = None, retry: bool = True) -> tuple[set[int], set[int]]:
        """Queue the items, retrying with capped backoff while Redis is
        unreachable, each attempt's waits bounded by the deadline. After a
        failure that may have reached Redis only idempotent requests (or with
        an idempotency key) among ``reqs`` are sent again: the others may be
        queued already and wait for their reply, as a second copy could run
        them twice. Returns (the indexes of the items left that way, the
        indexes refused because their queue was full: not queued, never
        retried); a ServiceUnavailable raised later carries the first too
        (``uncertain``)."""
        try:
            with deadline((deadline_ms - now_ms()) / 1000):
                ids = self.transport.enqueue(items, self.settings.max_queue_length)
            return set(), {i for i, entry in enumerate(ids) if entry is None}
        except TransportError as exc:
            return self._enqueue_again(items, deadline_ms, name, reqs, retry, exc)

    def _enqueue_again(
        self, items: list[tuple[str, bytes]], deadline_ms: int, name: str, reqs: Sequence[Request] | None, retry: bool, exc: TransportError
    ) -> tuple[set[int], set[int]]:
        flags = [r.idempotent or bool(r.idempotency_key) for r in reqs] if reqs is not None else [True] * len(items)
        todo = list(range(len(items)))
        uncertain: set[int] = set()
        delay = 0.05
        while True:
            if exc.maybe_sent:
                uncertain.update(i for i in todo if not flags[i])
                todo = [i for i in todo if flags[i]]
                if not todo:
                    return uncertain, set()
            left = (deadline_ms - now_ms()) / 1000
            if left <= 0 or not retry:
                error = ServiceUnavailable(exc.message, procedure=name)
                error.uncertain = uncertain  # type: ignore[attr-defined]
                raise error from exc
            time.sleep(min(delay, left))
            delay = min(delay * 2, 1.0)
            try:
                with deadline((deadline_ms - now_ms()) / 1000):
                    ids = self.transport.enqueue([items[i] for i in todo], self.settings.max_queue_length)
                return uncertain, {i for i, entry in zip(todo, ids, strict=True) if entry is None}
            except TransportError as again:
                exc = again

    def _check_providers(self, service: str, deadline_ms: int) -> None:
        """ServiceUnavailable at once if the service's providers are all dead
        (within HEARTBEAT_WAIT_MS if one was alive within RECENTLY_ALIVE_MS).

        When none is registered at all (a Redis that restarted empty, a pool
        between two workers), wait a moment for one to register first."""
        now = time.monotonic()
        cached = self._live_cache.get(service)
        if cached and cached[0] > now and cached[1] > 0:
            return
        if self._known_absent(service):  # do not wait again so soon
            raise ServiceUnavailable(f"no provider registered for service {service!r}")
        registration_wait: int | None = None  # from the first answer of Redis
        heartbeat_wait: int | None = None
        delay = 0.05
        while True:
            try:
                with deadline((deadline_ms - now_ms()) / 1000):
                    live, known, newest = self.transport.pulse(service, now_ms() - int(self.settings.provider_ttl * 1000))
                if registration_wait is None:
                    registration_wait = min(now_ms() + REGISTRATION_WAIT_MS, deadline_ms)
                    heartbeat_wait = min(now_ms() + HEARTBEAT_WAIT_MS, deadline_ms) if newest > now_ms() - RECENTLY_ALIVE_MS else 0
            except TransportError as exc:
                live, known = 0, -1
                if now_ms() >= deadline_ms:
                    raise ServiceUnavailable(exc.message) from exc
            if live or (known > 0 and now_ms() >= (heartbeat_wait or 0)):
                break
            if known <= 0 and registration_wait is not None and now_ms() >= registration_wait:
                self._live_cache[service] = (time.monotonic() + self.settings.provider_cache_ttl, -1)
                raise ServiceUnavailable(f"no provider registered for service {service!r}")
            time.sleep(max(0.0, min(delay, (deadline_ms - now_ms()) / 1000)))
            delay = min(delay * 2, 0.2 if heartbeat_wait else 1.0)
        self._live_cache[service] = (time.monotonic() + self.settings.provider_cache_ttl, live)
        if live == 0:
            raise ServiceUnavailable(f"no live provider for service {service!r}")

    def _known_absent(self, service: str) -> bool:
        """True for a moment after a call waited in vain for any provider to register."""
        cached = self._live_cache.get(service)
        return bool(cached and cached[0] > time.monotonic() and cached[1] == -1)

    def _spec(self, name: str) -> Spec:
        """The spec of ``name``: this process's code, else the bounded cache,
        else Redis. A name that cannot be a procedure's is refused without a
        lookup; an unknown one is remembered for ``MISS_TTL`` (sparing Redis)."""
        local = self.registry.find(name)
        if local is not None:
            return local.spec
        spec = self._spec_cache.get(name)
        if spec is not None:
            return spec
        if not plausible_name(name) or self._spec_misses.get(name):
            raise ProcedureNotFound(f"no procedure {_shown(name)}", procedure=name[:MAX_NAME_CHARS])
        try:
            raw = self.transport.get_spec(name)
        except TransportError as exc:
            raise ServiceUnavailable(exc.message, procedure=name) from None
        spec = self._verified_spec(name, raw)
        if spec is None:
            self._spec_misses.put(name, True)
            raise ProcedureNotFound(f"no procedure {name!r}", procedure=name)
        self._spec_cache.put(name, spec)
        return spec

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

    _deadline_for = staticmethod(deadline_for)
    _request = staticmethod(new_request)

    def _ensure_listener(self) -> ReplyListener:
        pid = os.getpid()
        listener = self._listener
        if listener is not None and self._pid == pid:
            return listener
        with self._lock:
            if self._listener is None or self._pid != pid:
                self._pid = pid
                self._listener = ReplyListener(self)
                self._listener.start()
            return self._listener


_CALLER = f"{socket.gethostname()}:{os.getpid()}"


class _LazyAsyncStream:
    """What ``astream`` returns: opens the stream (in a thread) on first use."""

    def __init__(self, client: Client, name: str, args: Sequence[Any], kwargs: dict[str, Any], timeout: float | None) -> None:
        self._open = (client, name, args, kwargs, timeout)
        self._stream: AsyncCallStream | None = None

    def __aiter__(self) -> _LazyAsyncStream:
        return self

    async def __anext__(self) -> Any:
        if self._stream is None:
            client, name, args, kwargs, timeout = self._open
            listener, req, sink = await asyncio.to_thread(client._open_stream, name, args, kwargs)
            self._stream = AsyncCallStream(listener, req, sink, timeout, client.settings.stream_window)
        return await self._stream.__anext__()

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()

    async def __aenter__(self) -> _LazyAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


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

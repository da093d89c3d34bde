"""Layer 2: local mode: procedures run in the calling process, no Redis.

:class:`LocalClient` has the public methods of :class:`rpcapp.client.Client`
and goes through the same steps as a real call, minus the trip: the spec is
looked up in the registry (the code's definitions; the database catalog is
not read), the arguments are checked against the signature, the request is
encoded and signed with the configured codec and size limit and decoded again,
the procedure is run by the worker's own :class:`~rpcapp.worker.executor.Runner`
(its argument checks, call context, lock, errors), and the reply is encoded
and decoded as a caller reads it. ``rpcapp.testing.local_calls()`` installs
one as the process's client.

The procedure runs in the calling thread (so it sees the caller's database
transaction, thread-locals and mocks). A call whose deadline has passed when
its procedure returns raises ``RpcTimeout`` (its result is dropped, as a late
reply is); one whose deadline passed before it started is not run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, cast

from .catalog import UNLISTED, ServiceConfig
from .client import ClientSettings, ServiceProxy, collect, deadline_for, gather_items, new_request, pack_request
from .errors import InvalidParams, ProcedureNotFound, RpcError, RpcTimeout, ServiceUnavailable
from .events import Publisher
from .protocol import Event, Request, Signer, decode_message, derive_key, now_ms
from .registry import Registry, Spec, default_registry
from .replies import complete, read_reply
from .streams import END, ERROR, ITEM, StreamSink
from .worker.events import run_handlers
from .worker.executor import Limits, Runner
from .worker.streaming import Pump

log = logging.getLogger("rpcapp.local")

PROVIDER = "local"


class LocalClient:
    """A client that runs every call in this process (see the module docstring).

    ``calls`` lists ``(name, args, kwargs)`` of every call, notification and
    stream that passed the argument checks; ``events`` lists ``(topic, payload)``
    of every published event. Both as the procedure received them."""

    def __init__(self, signer: Signer | None = None, registry: Registry | None = None, settings: ClientSettings | None = None) -> None:
        self.signer = signer or Signer((derive_key("rpcapp-local"),))
        self.registry = registry if registry is not None else default_registry
        self.settings = settings or ClientSettings()
        self.governor = _NoCatalog()
        self.calls: list[tuple[str, list[Any], dict[str, Any]]] = []
        self.events: list[tuple[str, Any]] = []
        self.late_replies = 0
        self.rejected_replies = 0
        s = self.settings
        limits = Limits(s.max_request_bytes, s.max_reply_bytes, s.reply_ttl, 0, 0, record_calls=False)
        self._runner = _LocalRunner(self.signer, self.registry, limits, PROVIDER, lock_factory=_ProcessLock)
        self._publisher = Publisher(cast(Any, self))

    # -- calls -------------------------------------------------------------------
    def call(self, name: str, /, *args: Any, timeout: float | None = None, idempotency_key: str | None = None, **kwargs: Any) -> Any:
        """Run ``name`` here and return its result, as ``Client.call`` would."""
        spec, req = self._prepare(name, args, kwargs, timeout, idempotency_key)
        data = self._execute(req)
        return read_reply(data, spec.signature.returns, name, req.id)

    def call_async(self, name: str, /, *args: Any, timeout: float | None = None, idempotency_key: str | None = None, **kwargs: Any) -> Future[Any]:
        """``call``, run now; a completed Future. Never raises."""
        fut: Future[Any] = Future()
        try:
            complete(fut, result=self.call(name, *args, timeout=timeout, idempotency_key=idempotency_key, **kwargs))
        except RpcError as exc:
            complete(fut, exc=exc)
        return fut

    async def acall(self, name: str, /, *args: Any, timeout: float | None = None, idempotency_key: str | None = None, **kwargs: Any) -> Any:
        """``call`` for asyncio code, run in a thread (as a sync procedure would be)."""
        return await asyncio.to_thread(lambda: self.call(name, *args, timeout=timeout, idempotency_key=idempotency_key, **kwargs))

    def gather(self, calls: Iterable[Sequence[Any]], *, timeout: float | None = None, return_exceptions: bool = False) -> list[Any]:
        """Run each ``(name, args[, kwargs])`` in order; ``timeout`` is one shared deadline."""
        end = None if timeout is None else now_ms() + int(timeout * 1000)

        def run(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return self.call(name, *args, timeout=None if end is None else max(0, end - now_ms()) / 1000, **kwargs)

        return collect([functools.partial(run, *item) for item in gather_items(calls)], return_exceptions)

    def notify(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Run ``name`` now, without a reply: a failure is logged, never raised
        (errors found before sending are raised, as by ``Client.notify``)."""
        _, req = self._prepare(name, args, kwargs, None, None, reply_to=None)
        self._execute(req)

    def notify_once(self, name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        self.notify(name, *args, **kwargs)

    def stream(self, name: str, /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Iterator[Any]:
        """Run a streaming procedure to its end, then iterate its items (an
        exception it raised comes as ``RemoteError`` after them). ``timeout``
        is accepted for ``Client.stream``'s sake; the deadline bounds the run."""
        spec = self.describe(name)
        if not spec.stream:
            raise InvalidParams(f"{name} is not a streaming procedure; use call()", procedure=name)
        _, req = self._prepare(name, args, kwargs, None, None)
        req.stream, req.window, req.idempotent = True, self.settings.stream_window, False
        sink = StreamSink(name, req.id, spec.signature.returns)
        sink.deliver(self._execute(req, sink))
        return _items(sink)

    def astream(self, name: str, /, *args: Any, timeout: float | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        """``stream`` for ``async for``."""
        return _aitems(lambda: self.stream(name, *args, timeout=timeout, **kwargs))

    def service(self, name: str) -> ServiceProxy:
        """A proxy: ``client.service("calculator").add(1, 2)``."""
        return ServiceProxy(cast(Any, self), name)

    def describe(self, name: str) -> Spec:
        """The procedure's spec from the registry; ProcedureNotFound if it has none."""
        proc = self.registry.find(name)
        if proc is None:
            raise ProcedureNotFound(f"no procedure {name!r}", procedure=name)
        return proc.spec

    # -- events ------------------------------------------------------------------
    def publish(self, topic: str, payload: Any, *, timeout: float | None = None, event_id: str | None = None) -> str:
        """Run every subscriber of ``topic`` (durable and broadcast, each once) here;
        returns the event id. A failing handler is logged, not retried."""
        if not isinstance(topic, str) or not topic or any(c.isspace() for c in topic):
            raise InvalidParams(f"topic {topic!r} must be a non-empty name without spaces")
        frame = self._publisher._pack(Event(topic, payload, "*", id=event_id or uuid.uuid4().hex))
        event = decode_message(self.signer.unpack(frame))
        assert isinstance(event, Event)
        self.events.append((topic, event.payload))
        run_handlers([s for s in self.registry.subscribers if s.topic == topic], event.payload)
        return event.id

    def parked_events(self, service: str, count: int = 100) -> list[dict[str, Any]]:
        return []  # local handlers are not retried, so never parked

    def replay_event(self, service: str, entry: str) -> bool:
        return False

    # -- what needs Redis ---------------------------------------------------------
    @property
    def transport(self) -> Any:
        raise ServiceUnavailable("local mode (rpcapp.testing.local_calls) has no Redis")

    def record(self, **fields: Any) -> None:
        """Caller-side call records need Redis: none in local mode."""

    def close(self) -> None:
        """Nothing to stop."""

    # -- internals ------------------------------------------------------------------
    def _prepare(
        self, name: str, args: Sequence[Any], kwargs: dict[str, Any], timeout: float | None, idem: str | None, reply_to: str | None = PROVIDER
    ) -> tuple[Spec, Request]:
        """The checks a caller makes, then the request as a worker decodes it."""
        spec = self.describe(name)
        args_, kwargs_ = spec.signature.bind(tuple(args), kwargs, name)
        seconds = timeout if timeout is not None else spec.timeout or self.settings.default_timeout
        req = new_request(spec, args_, kwargs_, deadline_for(seconds), reply_to, idem)
        try:
            frame = pack_request(self.signer, req, self.settings.max_request_bytes)
        except RpcError as exc:
            exc.procedure = exc.procedure or name
            raise
        self.calls.append((name, args_, kwargs_))
        sent = decode_message(self.signer.unpack(frame))
        assert isinstance(sent, Request)
        return spec, sent

    def _execute(self, req: Request, sink: StreamSink | None = None) -> dict[str, Any]:
        """Run ``req`` as a worker would; its reply as the caller decodes it."""
        if req.expired:
            raise RpcTimeout("no reply before the deadline (it passed before the call started)", procedure=req.procedure, call_id=req.id)
        reply = self._runner.run_here(req, sink)
        if sink is not None:
            reply["end"] = True
        frame = self._runner._pack(req, reply)
        if frame is None:  # a notification: nobody reads its reply
            return reply
        if sink is None and now_ms() > req.deadline:  # (a stream's deadline is checked item by item)
            self.late_replies += 1
            raise RpcTimeout("no reply before the deadline (the procedure ran past it)", procedure=req.procedure, call_id=req.id)
        data: dict[str, Any] = self.signer.unpack(frame)
        return data


class _LocalRunner(Runner):
    """The worker's runner, a streaming call's items handed to the caller's sink."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sinks: dict[str, StreamSink] = {}

    def run_here(self, req: Request, sink: StreamSink | None) -> dict[str, Any]:
        if sink is not None:
            self._sinks[req.id] = sink
        try:
            return self.run(req, now_ms())
        finally:
            self._sinks.pop(req.id, None)

    def pump(self, req: Request, items: Any) -> int:
        return _LocalPump(self.signer, req, self.limits.max_reply_bytes, self._sinks[req.id]).run(items)


class _LocalPump(Pump):
    """The worker's pump (item encoding, size limit, deadline), its items
    delivered to a sink in this process instead of a reply list in Redis."""

    def __init__(self, signer: Signer, req: Request, max_item_bytes: int, sink: StreamSink) -> None:
        super().__init__(cast(Any, _NoTransport()), signer, req, max_item_bytes, 0)
        self.sink = sink

    def _send(self, item: Any) -> None:
        frame = self._pack(item)
        self._left()
        self.sink.deliver(self.signer.unpack(frame))
        self.sent += 1


class _NoTransport:
    def drop_credits(self, service: str, call_id: str) -> None:
        """No credit list to drop: a local stream has no flow control."""


class _NoCatalog:
    """What the gateways ask the governor: in local mode every service is
    unlisted (enabled, no rate limit, the code's timeouts)."""

    def config(self, service: str) -> ServiceConfig:
        return UNLISTED


class _ProcessLock:
    """``@procedure(lock=...)`` in local mode: a lock of this process only."""

    _locks: dict[str, threading.Lock] = {}
    _guard = threading.Lock()

    def __init__(self, name: str, ttl: float) -> None:
        with self._guard:
            self._lock = self._locks.setdefault(name, threading.Lock())

    def acquire(self, timeout: float | None = None) -> bool:
        return self._lock.acquire(timeout=-1 if timeout is None else timeout)

    def release(self) -> None:
        self._lock.release()


def _items(sink: StreamSink) -> Iterator[Any]:
    while True:
        got = sink.get(0)
        if got is None or got[0] == END:
            return
        if got[0] == ERROR:
            raise got[1]
        assert got[0] == ITEM
        yield got[1]


async def _aitems(open_stream: Any) -> AsyncIterator[Any]:
    for item in await asyncio.to_thread(lambda: list(_Collect(open_stream()))):
        if isinstance(item, _Raised):
            raise item.error
        yield item


class _Raised:
    def __init__(self, error: RpcError) -> None:
        self.error = error


class _Collect:
    """A stream's items, then its error (as a ``_Raised``) if it ended with one."""

    def __init__(self, stream: Iterator[Any]) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self.stream
        except RpcError as exc:
            yield _Raised(exc)

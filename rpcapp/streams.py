"""Layer 2: the caller's side of a streaming call.

The reply listener puts each frame of the stream into a :class:`StreamSink`;
:class:`CallStream` (``for``) and :class:`AsyncCallStream` (``async for``)
take items from it, acknowledge them to the worker every half window
(back-pressure), and cancel the stream when the caller stops early.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from .errors import RpcError, RpcTimeout, error_from_wire
from .protocol import Request, now_ms
from .signature import _Mismatch, coerce

if TYPE_CHECKING:
    from .replies import ReplyListener

ITEM, END, ERROR = "item", "end", "error"


class StreamSink:
    """Frames of one stream, handed from the listener thread to the consumer
    (a thread or an event loop)."""

    def __init__(self, procedure: str, call_id: str, returns: Any) -> None:
        self.procedure = procedure
        self.call_id = call_id
        self.returns = returns
        self._items: deque[tuple[str, Any]] = deque()
        self._cond = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def deliver(self, data: dict[str, Any]) -> bool:
        """Take one frame from the worker; True if it ends the stream."""
        if "seq" in data and data.get("ok") is True:
            item = data.get("item")
            try:
                item = coerce(item, self.returns)
            except _Mismatch:
                pass
            self._put((ITEM, item))
            return False
        if data.get("ok") is True:
            self._put((END, None))
        else:
            error = data.get("error") if isinstance(data.get("error"), dict) else {"code": "remote_error", "message": "malformed reply"}
            self._put((ERROR, error_from_wire(error, procedure=self.procedure, call_id=self.call_id)))
        return True

    def fail(self, exc: RpcError) -> None:
        self._put((ERROR, exc))

    def _put(self, entry: tuple[str, Any]) -> None:
        with self._cond:
            self._items.append(entry)
            self._cond.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_wake, fut)

    def get(self, timeout: float) -> tuple[str, Any] | None:
        """The next frame, or None after ``timeout`` seconds."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    async def aget(self, timeout: float) -> tuple[str, Any] | None:
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._items:
                return self._items.popleft()
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        with self._cond:
            return self._items.popleft() if self._items else None


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _StreamBase:
    def __init__(self, listener: ReplyListener, req: Request, sink: StreamSink, item_timeout: float | None, window: int) -> None:
        self._listener = listener
        self._req = req
        self._sink = sink
        self._item_timeout = item_timeout
        self._window = window
        self._consumed = 0
        self._acked = 0
        self._done = False

    @property
    def call_id(self) -> str:
        return self._req.id

    def _wait(self) -> float:
        left = max(0.0, (self._req.deadline - now_ms()) / 1000) + 0.05
        return left if self._item_timeout is None else min(self._item_timeout, left)

    def _take(self, got: tuple[str, Any] | None) -> tuple[bool, Any]:
        """(True, item), or (False, None) at the end; raises the stream's error."""
        if got is None:
            self._cancel()
            raise RpcTimeout("no stream item before the timeout", procedure=self._req.procedure, call_id=self._req.id)
        kind, value = got
        if kind == ITEM:
            self._consumed += 1
            return True, value
        self._done = True
        if kind == ERROR:
            raise value
        return False, None

    def _ack_due(self) -> bool:
        return not self._done and self._consumed - self._acked >= max(1, self._window // 2)

    def _ack(self) -> None:
        self._acked = self._consumed
        self._listener.grant(self._req, f"a:{self._consumed}".encode())

    def _cancel(self) -> None:
        if self._done:
            return
        self._done = True
        self._listener.untrack_stream(self._req.id)
        self._listener.grant(self._req, b"c")

    def __del__(self) -> None:
        try:
            self._cancel()
        except Exception:  # never raise from garbage collection
            pass


class CallStream(_StreamBase):
    """The iterator returned by ``rpc.stream()``; ``close()`` (or leaving the
    loop) cancels the generator on the worker."""

    def __iter__(self) -> CallStream:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        more, item = self._take(self._sink.get(self._wait()))
        if not more:
            raise StopIteration
        if self._ack_due():
            self._ack()
        return item

    def close(self) -> None:
        self._cancel()

    def __enter__(self) -> CallStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncCallStream(_StreamBase):
    """The async iterator returned by ``rpc.astream()``."""

    def __aiter__(self) -> AsyncCallStream:
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        more, item = self._take(await self._sink.aget(self._wait()))
        if not more:
            raise StopAsyncIteration
        if self._ack_due():
            await asyncio.to_thread(self._ack)
        return item

    async def aclose(self) -> None:
        if not self._done:
            await asyncio.to_thread(self._cancel)

    async def __aenter__(self) -> AsyncCallStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

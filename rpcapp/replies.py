"""Layer 2: the reply side of a client: one listener per client and process.

It blocks on the client's reply list (one reader at a time: a synchronous
caller may read for itself) and completes the matching Futures by
correlation id; a timer thread completes Futures whose deadline passed, and
a sender thread writes queued ``call_async`` requests in shared pipelines.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any

from . import keys
from .errors import PayloadTooLarge, ProtocolError, RpcError, RpcTimeout, ServiceUnavailable, TransportError, error_from_wire
from .protocol import Request, now_ms
from .signature import _Mismatch, coerce
from .streams import StreamSink
from .transport import deadline

if TYPE_CHECKING:
    from .client import Client

REPLY_WAIT_SLACK = 0.4
"""Seconds past its deadline a caller reading its own reply may wait for Redis."""

log = logging.getLogger("rpcapp.client")


def complete(fut: Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
    """Complete a Future unless something else already did (no race raises)."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except InvalidStateError:
        pass


def read_reply(data: dict[str, Any], returns: Any, procedure: str, call_id: str) -> Any:
    """The result a decoded reply carries (typed as ``returns`` hints), or
    raise the typed error it carries."""
    if data.get("ok") is not True:
        error = data.get("error")
        if not isinstance(error, dict):
            error = {"code": "remote_error", "message": "malformed reply"}
        raise error_from_wire(error, procedure=procedure, call_id=call_id)
    result = data.get("result")
    try:
        return coerce(result, returns)
    except _Mismatch:
        return result


class ReplyListener(threading.Thread):
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
        self._streams: dict[str, StreamSink] = {}  # streaming calls under way
        self._expired: dict[str, tuple[float, str]] = {}  # timed-out calls whose late reply may come: (until when, procedure)
        self._left: set[str] = set()  # streams whose caller stopped reading (among _expired): not late
        # Held by whoever is blocked on the reply list; re-entrant, so that a call made
        # from a done-callback run by the reader reads its own reply.
        self._reading = threading.RLock()
        self._stop_event = threading.Event()
        self._timer = threading.Thread(target=self._expire_loop, name="rpcapp-deadlines", daemon=True)
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name="rpcapp-sender", daemon=True)

    def start(self) -> None:
        super().start()
        self._timer.start()
        self._sender.start()

    def queue_send(self, outgoing: list[Any]) -> None:
        if self._stop_event.is_set():  # closed meanwhile: nothing would send these
            for _, _, req, fut in outgoing:
                complete(fut, exc=ServiceUnavailable("the client was closed", procedure=req.procedure))
            return
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
        if self._stop_event.is_set():  # closed meanwhile: nothing would complete it
            complete(fut, exc=ServiceUnavailable("the client was closed", procedure=req.procedure))
            return
        with self._lock:
            self._pending[req.id] = (fut, returns, req.procedure)
            heapq.heappush(self._deadlines, (req.deadline, req.id))
            if self._deadlines[0][1] == req.id:
                self._timer_wake.notify()
            if self_read:
                self._self_readers.add(req.id)
            else:
                self._needed.notify()

    def track_stream(self, req: Request, sink: StreamSink) -> None:
        """Route the frames of streaming call ``req`` to ``sink`` until its end frame."""
        with self._lock:
            if self._stop_event.is_set():
                sink.fail(ServiceUnavailable("the client was closed", procedure=req.procedure))
                return
            self._streams[req.id] = sink
            heapq.heappush(self._deadlines, (req.deadline, req.id))
            if self._deadlines[0][1] == req.id:
                self._timer_wake.notify()
            self._needed.notify()

    def untrack_stream(self, call_id: str) -> None:
        """The caller stopped iterating: frames still coming are dropped quietly."""
        with self._lock:
            sink = self._streams.pop(call_id, None)
            if sink is not None and len(self._expired) < 100_000:
                self._expired[call_id] = (time.monotonic() + self.client.settings.reply_ttl, sink.procedure)
                self._left.add(call_id)

    def grant(self, req: Request, message: bytes) -> None:
        """Tell the worker running stream ``req`` what was consumed (or to stop);
        best effort: a lost message is made up by the next, or by the deadline."""
        try:
            ttl_ms = req.deadline - now_ms() + 5000
            self.client.transport.grant(keys.service_of(req.procedure), req.id, message, ttl_ms)
        except TransportError as exc:
            log.debug("could not reach the worker of stream %s: %s", req.id, exc)

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
                # A Redis that stops answering cannot hold the caller much past
                # its deadline; the slack keeps a slow answer (a reply already
                # popped from the list) from being cut off and lost.
                with deadline(left + REPLY_WAIT_SLACK):
                    first = transport.wait_reply(self.reply_key, min(left, 1.0))
                if first is None:
                    continue
                self._deliver_safely(first)
                frames = transport.take_replies(self.reply_key) if self._pending or self._streams else []
            except Exception:  # leave the reading (and any retrying) to the listener thread
                return
            for frame in frames:
                self._deliver_safely(frame)

    def fail(self, call_id: str, exc: RpcError) -> None:
        with self._lock:
            entry = self._pending.pop(call_id, None)
            self._self_readers.discard(call_id)
        if entry is not None:
            complete(entry[0], exc=exc)

    def expire(self, call_id: str) -> None:
        with self._lock:
            sink = self._streams.pop(call_id, None)
        if sink is not None:
            sink.fail(RpcTimeout("the stream's deadline passed", procedure=sink.procedure, call_id=call_id))
            return
        with self._lock:
            entry = self._pending.pop(call_id, None)
            self._self_readers.discard(call_id)
        if entry is None:
            return
        fut, _, procedure = entry
        with self._lock:
            if len(self._expired) < 100_000:
                self._expired[call_id] = (time.monotonic() + self.client.settings.reply_ttl, procedure)
            self._needed.notify()
        if getattr(fut, "rpc_sent", False):
            timeout = RpcTimeout("no reply before the deadline", procedure=procedure, call_id=call_id)
            complete(fut, exc=self.client.key_check.explain(timeout, procedure))  # a signing-key mismatch is named
            self.client.record(id=call_id, procedure=procedure, status="timeout", error="timeout: no reply before the deadline")
        else:  # Redis stayed unreachable until the deadline: the call never left
            complete(fut, exc=ServiceUnavailable(f"Redis at {self.client.transport.address or '(unknown address)'} is unreachable: still at the deadline", procedure=procedure))

    def stop(self) -> None:
        self._stop_event.set()
        with self._lock:
            self._timer_wake.notify()
            self._needed.notify()
            pending = list(self._pending.items())
            self._pending.clear()
            self._self_readers.clear()
            sinks, self._streams = list(self._streams.items()), {}
        for call_id, sink in sinks:
            sink.fail(ServiceUnavailable("the client was closed", procedure=sink.procedure, call_id=call_id))
        for call_id, (fut, _, procedure) in pending:
            complete(fut, exc=ServiceUnavailable("the client was closed", procedure=procedure, call_id=call_id))
        while True:  # calls queued for the sender thread
            try:
                outgoing = self._outbox.get_nowait()
            except queue.Empty:
                break
            for _, _, req, fut in outgoing:
                complete(fut, exc=ServiceUnavailable("the client was closed", procedure=req.procedure))

    def _wanted(self) -> bool:
        """Under the lock: a call is waiting whose caller is not reading for
        itself, or a call that timed out may still get its (late) reply."""
        now = time.monotonic()
        while self._expired:  # insertion order is expiry order: drop from the front
            call_id, (until, _) = next(iter(self._expired.items()))
            if until > now:
                break
            del self._expired[call_id]
            self._left.discard(call_id)
        return len(self._pending) > len(self._self_readers) or bool(self._expired) or bool(self._streams)

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
                frames = self.client.transport.take_replies(self.reply_key) if self._pending or self._streams else []
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
            sink = self._streams.get(call_id)
        if sink is not None:
            if sink.deliver(data):
                with self._lock:
                    self._streams.pop(call_id, None)
            return
        with self._lock:
            entry = self._pending.pop(call_id, None)
            self._self_readers.discard(call_id)
            if len(self._deadlines) > 2 * (len(self._pending) + len(self._streams)) + 256:
                # Answered calls linger in the heap until their deadline: compact.
                self._deadlines = [d for d in self._deadlines if d[1] in self._pending or d[1] in self._streams]
                heapq.heapify(self._deadlines)
        if entry is None:
            self._late(call_id, data)
            return
        fut, returns, procedure = entry
        if fut.done():
            return
        try:
            complete(fut, result=read_reply(data, returns, procedure, call_id))
        except RpcError as exc:
            complete(fut, exc=exc)

    def _late(self, call_id: str, data: dict[str, Any]) -> None:
        """A reply nobody waits for: dropped, and counted unless it is an item
        of a stream its caller stopped reading."""
        with self._lock:
            if call_id in self._left:
                return
            _, procedure = self._expired.pop(call_id, (0.0, ""))
        self.client.late_replies += 1
        log.info("dropped a late reply for call %s", call_id)
        known = {"procedure": procedure} if procedure else {}  # its expiry note may have lapsed
        self.client.record(id=call_id, status="late", provider=data.get("provider", ""), queued_ms=data.get("queued_ms"), run_ms=data.get("run_ms"), **known)

    def _expire_loop(self) -> None:
        while not self._stop_event.is_set():
            expired = []
            with self._lock:
                now = now_ms()
                while self._deadlines and self._deadlines[0][0] <= now:
                    _, call_id = heapq.heappop(self._deadlines)
                    if call_id in self._pending or call_id in self._streams:
                        expired.append(call_id)
                if not expired:
                    wait = (self._deadlines[0][0] - now) / 1000 if self._deadlines else 1.0
                    self._timer_wake.wait(min(wait, 1.0))
            for call_id in expired:
                self.expire(call_id)

"""Layer 2: running a streaming procedure's generator on the worker.

Each item goes to the caller's reply list as soon as it is yielded (frames
carry ``seq``; the final frame has ``end``). Back-pressure: at most
``window`` items are sent beyond what the caller has acknowledged (it pushes
``a:<count>`` to the call's credit list as it consumes); the worker blocks on
that list when the window is full. The caller pushes ``c`` to cancel; the
worker looks at the list at least every ``CHECK_EVERY`` seconds between
items, and closes the generator (its ``finally`` blocks run). The call's
deadline bounds the whole stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .. import keys
from ..errors import PayloadTooLarge, RpcTimeout
from ..protocol import VERSION, Request, Signer, now_ms
from ..transport import Transport

DEFAULT_WINDOW = 64
CHECK_EVERY = 0.5  # seconds between two looks for a cancellation while items flow


class StreamCancelled(Exception):
    """The caller stopped iterating."""


class Pump:
    """Sends one stream's items with flow control."""

    def __init__(self, transport: Transport, signer: Signer, req: Request, max_item_bytes: int, reply_ttl: int) -> None:
        self.transport = transport
        self.signer = signer
        self.req = req
        self.service = keys.service_of(req.procedure)
        self.window = max(1, min(req.window or DEFAULT_WINDOW, 10_000))
        self.max_item_bytes = max_item_bytes
        self.reply_ttl = reply_ttl
        self.sent = 0
        self.acked = 0
        self._checked = time.monotonic()

    def run(self, items: Iterable[Any]) -> int:
        """Send every item; returns how many. Raises StreamCancelled, RpcTimeout,
        PayloadTooLarge, or whatever the generator raises."""
        iterator = iter(items)
        try:
            for item in iterator:
                self._send(item)
            return self.sent
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # runs the generator's finally blocks now, not at garbage collection
            try:
                self.transport.drop_credits(self.service, self.req.id)
            except Exception:  # the key expires by itself
                pass

    def _send(self, item: Any) -> None:
        frame = self._pack(item)
        while self.sent - self.acked >= self.window:
            self._absorb(self.transport.take_credits(self.service, self.req.id, block=min(1.0, self._left())))
        if time.monotonic() - self._checked >= CHECK_EVERY:
            self._absorb(self.transport.take_credits(self.service, self.req.id))
        self._left()
        assert self.req.reply_to is not None
        self.transport.send_replies([(self.req.reply_to, frame)], self.reply_ttl)
        self.sent += 1

    def _pack(self, item: Any) -> bytes:
        data = {"v": VERSION, "id": self.req.id, "ok": True, "seq": self.sent, "item": item}
        try:
            return self.signer.pack(data, self.max_item_bytes)
        except PayloadTooLarge as exc:
            raise PayloadTooLarge(f"stream item {self.sent} {exc.message}", procedure=self.req.procedure) from None

    def _left(self) -> float:
        left = (self.req.deadline - now_ms()) / 1000
        if left <= 0:
            raise RpcTimeout(f"the stream's deadline passed after {self.sent} item(s)", procedure=self.req.procedure)
        return left

    def _absorb(self, messages: list[bytes]) -> None:
        self._checked = time.monotonic()
        for raw in messages:
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            if text == "c":
                raise StreamCancelled()
            if text.startswith("a:"):
                try:
                    self.acked = max(self.acked, int(text[2:]))
                except ValueError:
                    pass

"""Layer 2: retries and hedging of idempotent calls, set in the catalog.

An :class:`Attempts` is one logical call made of several attempts, each a
normal call with its own Future. Retries: an attempt that fails with
``ServiceUnavailable`` or ``RpcTimeout`` is followed, after a backoff
(``retry_backoff`` doubled each time), by another, as long as the caller's
deadline allows; each attempt gets an equal share of the time left, so a
retry always fits inside the deadline. Hedging: if no attempt has answered
``hedge_after`` seconds after the first was sent, one more copy goes to
another provider; the first answer wins and the others are dropped when
they arrive. Only idempotent procedures are retried or hedged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from concurrent.futures import Future
from typing import Any

from .catalog import ProcedureConfig
from .errors import RpcTimeout, ServiceUnavailable
from .protocol import now_ms
from .replies import complete

RETRYABLE = (ServiceUnavailable, RpcTimeout)

Send = Callable[[float, Collection[str]], "Future[Any]"]


class Attempts:
    def __init__(self, send: Send, deadline_ms: int, conf: ProcedureConfig) -> None:
        self.send = send
        self.deadline_ms = deadline_ms
        self.conf = conf
        self.future: Future[Any] = Future()
        self.future.rpc_deadline = deadline_ms  # type: ignore[attr-defined]
        self._lock = threading.Lock()
        self._retries_left = conf.retries
        self._running = 0
        self._retried = 0
        self._providers: set[str] = set()
        self._last_error: BaseException | None = None

    def start(self) -> Future[Any]:
        self._launch(share=self.conf.retries + 1)
        if self.conf.hedge_after:
            timer = threading.Timer(self.conf.hedge_after, self._hedge)
            timer.daemon = True
            timer.start()
        return self.future

    def _launch(self, share: int) -> None:
        left = (self.deadline_ms - now_ms()) / 1000
        if left <= 0:
            self._finish_if_idle()
            return
        with self._lock:
            self._running += 1
            avoid = set(self._providers)
        inner = self.send(left / max(1, share), avoid)
        provider = getattr(inner, "rpc_provider", None)
        if provider:
            with self._lock:
                self._providers.add(provider)
        inner.add_done_callback(self._done)

    def _hedge(self) -> None:
        if not self.future.done():
            self._launch(share=1)

    def _done(self, inner: Future[Any]) -> None:
        exc = inner.exception()
        if exc is None:
            complete(self.future, result=inner.result())
            return
        with self._lock:
            self._running -= 1
            self._last_error = exc
            retry = isinstance(exc, RETRYABLE) and self._retries_left > 0 and not self.future.done()
            if retry:
                self._retries_left -= 1
                delay = self.conf.retry_backoff * (2**self._retried)
                self._retried += 1
        if not retry:
            self._finish_if_idle()
            return
        if now_ms() + delay * 1000 >= self.deadline_ms:
            self._finish_if_idle()
            return
        timer = threading.Timer(delay, self._launch, kwargs={"share": self._retries_left + 1})
        timer.daemon = True
        timer.start()

    def _finish_if_idle(self) -> None:
        with self._lock:
            idle = self._running == 0
            exc = self._last_error
        if idle:
            complete(self.future, exc=exc or RpcTimeout("no reply before the deadline"))

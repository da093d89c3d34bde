"""Layer 2: following a Redis pub/sub subscription for as long as a process
lives: resubscribe with backoff (capped at 1 s) whenever it breaks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("rpcapp.pubsub")


def follow(
    subscribe: Callable[[], Any],
    on_message: Callable[[str, bytes], None],
    stopping: threading.Event,
    ready: threading.Event,
    what: str,
    wait: Callable[[], float] = lambda: 1.0,
    after_each: Callable[[], None] | None = None,
    on_subscribed: Callable[[], None] | None = None,
    level: int = logging.WARNING,
) -> None:
    """Run until ``stopping``: subscribe, pass each (channel, data) message to
    ``on_message``, call ``after_each`` after every wait; ``ready`` is set while
    subscribed. Any failure (Redis away) is logged and followed by a new
    subscription after a backoff."""
    delay = 0.05
    while not stopping.is_set():
        sub = None
        try:
            sub = subscribe()
            if on_subscribed is not None:
                on_subscribed()
            ready.set()
            delay = 0.05
            while not stopping.is_set():
                got = sub.get(timeout=wait())
                if got is not None:
                    on_message(*got)
                if after_each is not None:
                    after_each()
        except Exception as exc:  # a TransportError, or a bug in a handler: never the end
            ready.clear()
            log.log(level, "%s subscription failed (%s); retrying in %.2fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        finally:
            if sub is not None:
                sub.close()

"""Layer 3: ``RedLock`` with its Redis masters taken from settings.

``RPCAPP["LOCK_REDIS_URLS"]`` lists independent masters for the Redlock
algorithm; without it the lock lives on rpcapp's own Redis.
"""

from __future__ import annotations

import threading
from typing import Any

from . import conf, redlock
from .transport import connect

__all__ = ["RedLock", "default_masters"]

_lock = threading.Lock()
_masters: dict[tuple[str, ...], list[Any]] = {}


def default_masters() -> list[Any]:
    """One redis-py client per configured master (cached per set of URLs)."""
    urls = tuple(conf.get().LOCK_REDIS_URLS or [conf.redis_url()])
    with _lock:
        if urls not in _masters:
            _masters[urls] = [connect(u, socket_timeout=0.5) for u in urls]
        return _masters[urls]


class RedLock(redlock.RedLock):
    __doc__ = redlock.RedLock.__doc__

    def __init__(self, name: str, ttl: float = 10.0, *, masters: list[Any] | None = None, namespace: str | None = None, retry_delay: float = 0.2) -> None:
        super().__init__(
            name,
            ttl,
            masters=masters if masters is not None else default_masters(),
            namespace=namespace or conf.get().NAMESPACE,
            retry_delay=retry_delay,
        )

"""rpcapp: remote procedure calls for Django over Redis.

``from rpcapp import rpc, procedure``: ``rpc`` is the process's client, built
from settings on first use.
"""

from __future__ import annotations

from typing import Any

from .errors import RpcError
from .registry import procedure, subscriber

__version__ = "0.2.0.dev0"

__all__ = ["RpcError", "__version__", "procedure", "publish", "rpc", "subscriber"]


class _DefaultClient:
    """Forwards to the client built from Django settings (lazily, per process)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # probes (pytest's collection, copy) must not connect
            raise AttributeError(name)
        from .runtime import get_client

        return getattr(get_client(), name)

    def __repr__(self) -> str:
        return "<rpcapp default client>"


rpc: Any = _DefaultClient()


def publish(topic: str, payload: Any, *, on_commit: bool = False, using: str | None = None, timeout: float | None = None) -> str:
    """Publish an event to every subscribing service; returns its id.

    With ``on_commit=True`` the event is written to the outbox table in the
    current database transaction and sent once it commits (nothing is sent on
    rollback; if Redis is down then, the outbox relay sends it later)."""
    if on_commit:
        from .outbox import publish_on_commit

        return publish_on_commit(topic, payload, using=using)
    return rpc.publish(topic, payload, timeout=timeout)

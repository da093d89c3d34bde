"""rpcapp: remote procedure calls for Django over Redis.

``from rpcapp import rpc, procedure``: ``rpc`` is the process's client, built
from settings on first use.
"""

from __future__ import annotations

from typing import Any

from .errors import RpcError
from .registry import procedure

__all__ = ["RpcError", "procedure", "rpc"]


class _DefaultClient:
    """Forwards to the client built from Django settings (lazily, per process)."""

    def __getattr__(self, name: str) -> Any:
        from .runtime import get_client

        return getattr(get_client(), name)

    def __repr__(self) -> str:
        return "<rpcapp default client>"


rpc: Any = _DefaultClient()

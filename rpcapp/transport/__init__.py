"""Layer 1: the only package that talks to redis-py.

``connect(url)`` builds a redis-py client for every supported URL scheme;
``Transport`` has one method per Redis operation of rpcapp. Every Redis error
is re-raised as :class:`rpcapp.errors.TransportError` (``MissingGroup`` for
a consumer group that is gone); nothing above sees ``redis.exceptions``.
"""

from __future__ import annotations

from ..errors import TransportError
from .base import SOCKET_TIMEOUT, MissingGroup, connect, deadline
from .core import Transport
from .events import Subscription

__all__ = ["SOCKET_TIMEOUT", "MissingGroup", "Subscription", "Transport", "TransportError", "connect", "deadline"]

"""Layer 3: Celery maintenance tasks (Celery beat runs them; see project/celery.py).

Each task takes a lock first (``rpcapp.locks.RedLock``, not waiting), so two
beats, or a slow run and the next, never run one task twice at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from celery import shared_task

from . import runtime
from .locks import RedLock
from .registry import default_registry


def exclusive(name: str, ttl: float = 300.0) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run the task only if its lock is free; otherwise return None at once."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            lock = RedLock(f"rpcapp:task:{name}", ttl=ttl)
            if not lock.acquire(blocking=False):
                return None
            try:
                return fn(*args, **kwargs)
            finally:
                lock.release()

        return wrapper

    return decorate


@shared_task(name="rpcapp.tasks.reap_providers")
@exclusive("reap_providers", ttl=60)
def reap_providers() -> int:
    """Recover the work of dead providers and forget them (workers also do this)."""
    worker = runtime.build_worker(default_registry.services() or None, concurrency=1) if default_registry.services() else None
    if worker is None:
        return 0
    try:
        handled = sum(worker.recovery.sweep(service) for service in worker.services)
    finally:
        worker.transport.close()
    from .catalog_store import refresh_providers

    refresh_providers()  # the Provider rows of the catalog follow (dead ones marked dead)
    return handled


@shared_task(name="rpcapp.tasks.relay_outbox")
@exclusive("relay_outbox", ttl=120)
def relay_outbox() -> int:
    """Send outbox rows left behind (Redis was away when their transaction committed)."""
    from .outbox import relay

    return relay()


@shared_task(name="rpcapp.tasks.roll_up_calls")
@exclusive("roll_up_calls")
def roll_up_calls() -> int:
    """Per-minute rollups of the call history (the dashboard's charts)."""
    from .history import roll_up

    return roll_up()


@shared_task(name="rpcapp.tasks.prune_history")
@exclusive("prune_history", ttl=3600)
def prune_history() -> tuple[int, int]:
    """Delete call records and rollups past their retention."""
    from .history import prune

    return prune()

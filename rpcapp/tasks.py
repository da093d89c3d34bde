"""Layer 3: Celery maintenance tasks."""

from __future__ import annotations

from celery import shared_task

from . import runtime
from .registry import default_registry


@shared_task(name="rpcapp.tasks.reap_providers")
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
def relay_outbox() -> int:
    """Send outbox rows left behind (Redis was away when their transaction committed)."""
    from .outbox import relay

    return relay()

"""Layer 3: the maintenance as Celery tasks, for projects that run Celery beat.

Thin wrappers over :mod:`rpcapp.maintenance` (which ``runrpcworker``
processes and ``manage.py rpcmaintain`` run without Celery): each task takes
the job's lock first (not waiting), so beat, workers and ``rpcmaintain``
never run one job twice at once. A task returns the job's result, or None
when a run under way elsewhere holds the lock. The beat schedule to paste
is in docs/dashboard.md.
"""

from __future__ import annotations

from typing import Any

from . import maintenance
from .extras import require

shared_task = require("celery", "rpcapp.tasks").shared_task


def _run(name: str) -> Any:
    ran, result = maintenance.run_exclusive(name)
    return result if ran else None


@shared_task(name="rpcapp.tasks.reap_providers")
def reap_providers() -> int | None:
    """Recover the work of dead providers and forget them; Provider rows follow."""
    return _run("reap_providers")


@shared_task(name="rpcapp.tasks.relay_outbox")
def relay_outbox() -> int | None:
    """Send outbox rows left behind (Redis was away when their transaction committed)."""
    return _run("relay_outbox")


@shared_task(name="rpcapp.tasks.roll_up_calls")
def roll_up_calls() -> int | None:
    """Per-minute rollups of the call history (the dashboard's charts)."""
    return _run("roll_up_calls")


@shared_task(name="rpcapp.tasks.prune_history")
def prune_history() -> tuple[int, int] | None:
    """Delete call records and rollups past their retention."""
    return _run("prune_history")

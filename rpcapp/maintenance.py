"""Layer 3: the periodic maintenance, with or without Celery.

Four jobs keep the call history, the dashboard and the catalog current:

==================  ==========  ==========================================================
job                 period (s)  what it does
==================  ==========  ==========================================================
``reap_providers``  10          recover the work of dead providers; Provider rows follow
``relay_outbox``    10          send outbox rows left behind (Redis was away at commit)
``roll_up_calls``   30          per-minute rollups (the dashboard's charts and table)
``prune_history``   3600        delete call history past its retention
==================  ==========  ==========================================================

A run holds the lock ``rpcapp:task:<job>`` (not waiting: a run under way
elsewhere is skipped), the lock the Celery tasks of ``rpcapp.tasks`` take
too. A :class:`Schedule` also claims the job's turn, a second lock
``rpcapp:turn:<job>`` taken for one period and never released, so however
many processes take part a job runs about once per period in all.
``runrpcworker`` processes run a Schedule in a thread of their own
(:class:`WorkerDuties`, a worker hook); ``manage.py rpcmaintain`` runs one
from cron or systemd. Periods: ``RPCAPP["MAINTENANCE_PERIODS"]``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connection, reset_queries

from . import conf
from .locks import RedLock

log = logging.getLogger("rpcapp.maintenance")

PERIODS: dict[str, float] = {"reap_providers": 10.0, "relay_outbox": 10.0, "roll_up_calls": 30.0, "prune_history": 3600.0}
"""Default seconds between two runs of each job (over every process)."""
LOCK_TTLS: dict[str, float] = {"reap_providers": 60.0, "relay_outbox": 120.0, "roll_up_calls": 300.0, "prune_history": 3600.0}
"""How long a run may hold its lock before another may start."""


# -- the jobs ------------------------------------------------------------------------
def reap_providers() -> int:
    """Recover the work of dead providers and forget them (workers also do it
    for their own services); the Provider rows follow. Returns entries handled."""
    from . import runtime
    from .catalog_store import refresh_providers
    from .registry import default_registry

    handled = 0
    if default_registry.services():
        worker = runtime.build_worker(default_registry.services(), concurrency=1)
        try:
            handled = sum(_sweep(worker, service) for service in worker.services)
        finally:
            worker.transport.close()
    refresh_providers()  # dead ones marked dead
    return handled


def _sweep(worker: Any, service: str) -> int:
    from .transport import MissingGroup

    try:
        return int(worker.recovery.sweep(service))
    except MissingGroup:  # never served: nothing to recover
        return 0


def relay_outbox() -> int:
    """Send outbox rows left behind (Redis was away when their transaction committed)."""
    from .outbox import relay

    return relay()


def roll_up_calls() -> int:
    """Per-minute (and hourly) rollups of the call history; returns rows written."""
    from .history import roll_up

    return roll_up()


def prune_history() -> tuple[int, int]:
    """Delete call records and rollups past their retention."""
    from .history import prune

    return prune()


JOBS: dict[str, Callable[[], Any]] = {
    "reap_providers": reap_providers,
    "relay_outbox": relay_outbox,
    "roll_up_calls": roll_up_calls,
    "prune_history": prune_history,
}

_DONE = {
    "reap_providers": "{} request(s) recovered",
    "relay_outbox": "{} message(s) sent",
    "roll_up_calls": "{} rollup row(s) written",
    "prune_history": "{0[0]} record(s) and {0[1]} rollup(s) deleted",
}


def periods() -> dict[str, float]:
    """Each job's period: ``MAINTENANCE_PERIODS`` over :data:`PERIODS`."""
    overrides = conf.get().MAINTENANCE_PERIODS or {}
    return {name: float(overrides.get(name, default)) for name, default in PERIODS.items()}


# -- running them ----------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What one attempt at a job did."""

    job: str
    ran: bool
    result: Any = None
    error: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        if self.error:
            return f"{self.job}: failed: {self.error}"
        if not self.ran:
            return f"{self.job}: skipped (running elsewhere)"
        return f"{self.job}: {_DONE[self.job].format(self.result)} in {self.seconds:.2f}s"


def run_exclusive(name: str) -> tuple[bool, Any]:
    """Run job ``name`` under its lock: ``(True, result)``, or ``(False, None)``
    at once if a run holds the lock elsewhere. Errors propagate."""
    lock = RedLock(f"rpcapp:task:{name}", ttl=LOCK_TTLS[name])
    if not lock.acquire(blocking=False):
        return False, None
    try:
        return True, JOBS[name]()
    finally:
        lock.release()


def run(name: str) -> Outcome:
    """Run job ``name`` under its lock; an error is logged and returned, never raised."""
    started = time.monotonic()
    try:
        ran, result = run_exclusive(name)
    except Exception as exc:  # a job never takes its runner down
        log.warning("maintenance job %s failed: %s", name, exc, exc_info=not isinstance(exc, DatabaseError))
        return Outcome(name, False, error=str(exc) or type(exc).__name__, seconds=time.monotonic() - started)
    finally:
        reset_queries()  # with DEBUG on, Django would keep every query of this thread
    return Outcome(name, ran, result, seconds=time.monotonic() - started)


def run_once() -> list[Outcome]:
    """Every job once, now (``rpcmaintain --once``, cron)."""
    return [run(name) for name in JOBS]


def migrated() -> bool:
    """Whether this process's database has rpcapp's tables (quietly False if not,
    or if the database cannot be reached)."""
    from .models import CallRollup, OutboxMessage, Provider

    try:
        tables = set(connection.introspection.table_names())
    except Exception as exc:  # DatabaseError, or database access refused (test runners)
        log.debug("no maintenance: database not usable (%s)", exc)
        return False
    wanted = {m._meta.db_table for m in (CallRollup, OutboxMessage, Provider)}
    if not wanted <= tables:
        log.debug("no maintenance: rpcapp's tables are missing (not migrated)")
        return False
    return True


class Schedule:
    """When each job is next due in this process. A due job runs only if this
    process wins its turn, so the job runs about once a period over all of them."""

    RECHECK = 60.0  # seconds between two looks for rpcapp's tables while they are missing

    def __init__(self) -> None:
        self.next: dict[str, float] = {}
        self._migrated_at: float | None = None
        self._checked_at = -self.RECHECK

    def run_due(self, now: float | None = None) -> list[Outcome]:
        """Run the jobs due at ``now`` (``time.monotonic()`` by default) whose turn this process wins."""
        now = time.monotonic() if now is None else now
        due = {name: p for name, p in periods().items() if now >= self.next.get(name, 0.0)}
        if not due or not self._ready(now):
            return []
        out = []
        for name, period in due.items():
            if self._claim(name, period):
                self.next[name] = now + period
                out.append(run(name))
            else:  # someone else's turn: look again within a quarter period
                self.next[name] = now + min(period, max(1.0, period / 4))
        return out

    def _ready(self, now: float) -> bool:
        if self._migrated_at is None and now - self._checked_at >= self.RECHECK:
            self._checked_at = now
            if migrated():
                self._migrated_at = now
        return self._migrated_at is not None

    @staticmethod
    def _claim(name: str, period: float) -> bool:
        return RedLock(f"rpcapp:turn:{name}", ttl=period).acquire(blocking=False)

    def run_round(self, report: Callable[[Outcome], Any] | None = None) -> None:
        """One :meth:`run_due` now, each outcome reported (logged by default); never raises."""
        try:
            for outcome in self.run_due():
                (report or _log)(outcome)
        except Exception:  # a round never takes its loop down
            log.exception("maintenance round failed")

    def loop(self, stop: threading.Event, tick: float = 1.0, report: Callable[[Outcome], Any] | None = None) -> None:
        """Run due jobs every ``tick`` seconds until ``stop`` is set."""
        self.run_round(report)
        while not stop.wait(tick):
            self.run_round(report)


def _log(outcome: Outcome) -> None:
    """Runs that did something at INFO, the rest at DEBUG (failures: logged by :func:`run`)."""
    if not outcome.error:
        busy = outcome.ran and any(outcome.result) if isinstance(outcome.result, tuple) else bool(outcome.result)
        log.log(logging.INFO if busy else logging.DEBUG, "%s", outcome.summary())


# -- in runrpcworker processes ------------------------------------------------------------
def provider_info(worker: Any, state: str) -> dict[str, Any]:
    """A worker's own Provider record (what its heartbeat writes, in ``state``)."""
    return worker.record(state).as_dict()


def record_own_provider(worker: Any, state: str) -> bool:
    """Write the worker's own Provider row; False (logged at debug) when the
    database has no rpcapp tables or cannot be reached."""
    from .catalog_store import record_provider

    try:
        record_provider(provider_info(worker, state))
    except Exception as exc:  # DatabaseError (not migrated?), or database access refused
        log.debug("Provider row of %s not written (%s): %s", worker.name, state, exc)
        return False
    return True


class WorkerDuties:
    """A worker hook: a worker that owns its process (``Worker.run()``, i.e.
    ``runrpcworker``) writes its own Provider row at start, marks it draining
    then dead at stop, and (``WORKER_MAINTENANCE``) takes its turn at the
    maintenance, all in a thread of its own: never on the call path."""

    def __init__(self, tick: float = 1.0) -> None:
        self.tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def worker_running(self, worker: Any) -> None:
        self._thread = threading.Thread(target=self._duties, args=(worker,), name="rpcapp-maintenance", daemon=True)
        self._thread.start()

    def worker_stopped(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        record_own_provider(worker, "dead")
        connection.close()

    def _duties(self, worker: Any) -> None:
        try:
            record_own_provider(worker, "live")
            schedule = Schedule() if conf.get().WORKER_MAINTENANCE else None
            while worker.state == "live" and not self._stop.wait(self.tick):
                if schedule is not None and worker.state == "live":
                    schedule.run_round()
            if worker.state == "draining":
                record_own_provider(worker, "draining")
        except Exception:  # never takes the worker down
            log.exception("worker duties failed")
        finally:
            connection.close()  # this thread's

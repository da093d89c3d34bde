"""Layer 3: ``manage.py rpcmaintain [--once]``: parse arguments and run the maintenance."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from rpcapp import maintenance


class Command(BaseCommand):
    help = (
        "Run rpcapp's maintenance (rollups for the dashboard, pruning, reaping dead providers, the outbox relay): "
        "with --once every job once (cron), else each job when due until stopped (systemd)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="run every job once and exit")
        parser.add_argument("--tick", type=float, default=1.0, help="seconds between two looks for due jobs (default 1)")

    def handle(self, *args: Any, **opts: Any) -> None:
        if not maintenance.migrated():
            raise CommandError("rpcapp's tables are missing from the database: run manage.py migrate first")
        if opts["once"]:
            failed = [o for o in maintenance.run_once() if not self._report(o)]
            if failed:
                raise CommandError(f"{len(failed)} maintenance job(s) failed: {', '.join(o.job for o in failed)}")
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.stdout.write(f"rpcmaintain running (periods: {maintenance.periods()}); SIGTERM stops it")
        maintenance.Schedule().loop(stop, opts["tick"], report=self._report)
        self.stdout.write("rpcmaintain stopped")

    def _report(self, outcome: maintenance.Outcome) -> bool:
        (self.stderr if outcome.error else self.stdout).write(outcome.summary())
        return not outcome.error

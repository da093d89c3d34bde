"""Layer 3: ``manage.py runrpcworker``: parse arguments and start a worker."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections

from rpcapp import catalog_store, conf, runtime
from rpcapp.errors import RpcError
from rpcapp.history import Recorder
from rpcapp.registry import default_registry
from rpcapp.worker.consumer import provider_id
from rpcapp.worker.supervisor import Supervisor


class Command(BaseCommand):
    help = "Run an RPC worker serving the discovered procedures."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--service", action="append", dest="services", help="serve only this service (repeatable)")
        parser.add_argument("--concurrency", type=int, default=4, help="calls run at once (default 4)")
        parser.add_argument("--pool", choices=("threads", "processes"), default="threads")
        parser.add_argument("--max-calls-per-child", type=int, default=None, help="recycle a process after N calls")
        parser.add_argument("--name", default=None, help="provider id (default host:pid:random)")
        parser.add_argument("--max-calls", type=int, default=None, help=argparse.SUPPRESS)  # a pool child's limit
        parser.add_argument("--log-level", default="INFO")

    def handle(self, *args: Any, **opts: Any) -> None:
        """Start-up failures (a bad Redis URL, Redis unreachable, ...) are one-line CommandErrors."""
        try:
            self._serve(opts)
        except (RpcError, ImproperlyConfigured) as exc:
            raise CommandError(getattr(exc, "message", None) or str(exc)) from exc

    def _serve(self, opts: dict[str, Any]) -> None:
        level = opts["log_level"].upper()
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        logging.getLogger("rpcapp").setLevel(level)
        if opts["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        services = opts["services"] or None
        known = default_registry.services()
        if services and set(services) - set(known):
            raise CommandError(f"unknown service(s) {sorted(set(services) - set(known))}; known: {known}")
        connections.close_all()
        if opts["pool"] == "processes":
            sys.exit(self._run_processes(services, opts))
        if opts["max_calls_per_child"]:
            self.stderr.write("--max-calls-per-child applies to --pool processes; ignored")
        worker = runtime.build_worker(services, name=opts["name"], concurrency=opts["concurrency"], max_calls=opts["max_calls"])
        worker.transport.ping()  # Redis unreachable at start: say so and stop (TransportError)
        self._on_signals(worker.request_stop)
        stop_refresh = threading.Event()
        recorder = None
        if self._sync_catalog(worker.services):
            catalog_store.start_refresher(stop_refresh)
            if conf.get().RECORD_CALLS:
                recorder = Recorder(runtime.build_transport(), worker.name)
                recorder.start()
        else:
            logging.getLogger("rpcapp.history").info("call records are left for other workers to store (no database here)")
        connections.close_all()
        worker.run()
        stop_refresh.set()
        if recorder is not None:
            recorder.stop()
        self.stdout.write(f"worker {worker.name} stopped")

    def _run_processes(self, services: list[str] | None, opts: dict[str, Any]) -> int:
        parent = runtime.build_worker(services, name=opts["name"] or provider_id(), concurrency=opts["concurrency"])
        parent.reads = False  # the children read; the parent only heartbeats
        parent.transport.ping()

        def child_argv(name: str) -> list[str]:
            argv = [sys.executable, "-m", "django", "runrpcworker", "--pool", "threads", "--concurrency", "1", "--name", name]
            argv += ["--log-level", opts["log_level"]]
            for s in parent.services:
                argv += ["--service", s]
            if opts["max_calls_per_child"]:
                argv += ["--max-calls", str(opts["max_calls_per_child"])]
            return argv

        def on_crash(name: str) -> None:
            parent.transport.deregister(parent.services, name)
            for service in parent.services:
                parent.recovery.sweep(service, dead={name})

        path = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (sys.path[0] or os.getcwd(), path) if p)
        sup = Supervisor(opts["concurrency"], child_argv, on_crash, parent.name, parent.settings.drain_grace)
        self._on_signals(sup.request_stop)
        # The pool itself is a provider: callers keep sending while a child is replaced.
        beating = threading.Event()

        def heartbeat() -> None:
            while not beating.wait(parent.settings.heartbeat_interval):
                try:
                    parent._beat()
                except RpcError as exc:
                    logging.getLogger("rpcapp.supervisor").warning("heartbeat failed: %s", exc)

        parent._beat()
        threading.Thread(target=heartbeat, name="rpcapp-pool-heartbeat", daemon=True).start()
        try:
            return sup.run()
        finally:
            beating.set()
            parent.transport.deregister(parent.services, parent.name)

    @staticmethod
    def _sync_catalog(services: list[str]) -> bool:
        """Record what this code serves in the catalog and publish it; a worker
        still serves (with the catalog as Redis has it) if the database fails."""
        try:
            catalog_store.sync_registry(default_registry, services)
            catalog_store.push()
            return True
        except (DatabaseError, RpcError) as exc:
            logging.getLogger("rpcapp.catalog").warning("catalog not synced: %s", exc)
            return False

    @staticmethod
    def _on_signals(callback: Any) -> None:
        def handler(signum: int, frame: Any) -> None:
            callback()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

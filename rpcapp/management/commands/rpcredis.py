"""Layer 3: ``manage.py rpcredis start|stop|url``: the embedded Redis server."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from rpcapp import conf, embedded


class Command(BaseCommand):
    help = "Start, stop or locate the embedded Redis server (used when no Redis URL is configured)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("action", choices=("start", "stop", "url"))

    def handle(self, *args: Any, **opts: Any) -> None:
        folder = conf.get().embedded_dir
        if opts["action"] == "start":
            self.stdout.write(embedded.ensure(folder))
        elif opts["action"] == "stop":
            self.stdout.write("stopped" if embedded.stop(folder) else "not running")
        else:
            self.stdout.write(conf.redis_url())

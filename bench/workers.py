"""Worker processes for the standalone benchmarks (events, catalog, history):
``manage.py runrpcworker`` under ``bench.settings``, against a given Redis and namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def env_for(url: str, namespace: str, **settings: Any) -> dict[str, str]:
    overrides = {"REDIS_URL": url, "NAMESPACE": namespace, **settings}
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "RPCAPP_TEST_OVERRIDES": json.dumps(overrides), "PYTHONPATH": str(ROOT)}
    env.pop("RPCAPP_REDIS_URL", None)
    return env


def start(env: dict[str, str], services: list[str], *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, str(ROOT / "manage.py"), "runrpcworker", *[a for s in services for a in ("--service", s)], *extra]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        w.terminate()
    for w in workers:
        w.wait(timeout=40)

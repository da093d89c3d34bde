"""Layer 2: the worker: consumer loop, executor, heartbeat, recovery, process pool."""

from __future__ import annotations

from .consumer import Worker, WorkerSettings

__all__ = ["Worker", "WorkerSettings"]

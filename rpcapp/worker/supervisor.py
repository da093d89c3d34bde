"""Layer 2: the process pool: a parent that keeps N single-slot worker
processes running, recycles them after a number of calls, and has the work of
a crashed child recovered at once.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable

log = logging.getLogger("rpcapp.supervisor")


class Supervisor:
    def __init__(
        self,
        size: int,
        child_argv: Callable[[str], list[str]],
        on_crash: Callable[[str], None],
        name: str,
        grace: float,
    ) -> None:
        self.size = size
        self.child_argv = child_argv
        self.on_crash = on_crash
        self.name = name
        self.grace = grace
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping = threading.Event()

    def child_name(self, index: int) -> str:
        return f"{self.name}-c{index}"

    def run(self) -> int:
        for i in range(self.size):
            self._spawn(self.child_name(i))
        while not self._stopping.is_set():
            for name, proc in list(self.children.items()):
                code = proc.poll()
                if code is None:
                    continue
                if code != 0:
                    log.error("worker process %s exited with %s; recovering its work", name, code)
                    try:
                        self.on_crash(name)
                    except Exception:
                        log.exception("recovering %s failed", name)
                if not self._stopping.is_set():
                    self._spawn(name)
            self._stopping.wait(0.2)
        return self._drain()

    def request_stop(self) -> None:
        self._stopping.set()

    def _spawn(self, name: str) -> None:
        self.children[name] = subprocess.Popen(self.child_argv(name))
        log.info("started worker process %s (pid %d)", name, self.children[name].pid)

    def _drain(self) -> int:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + self.grace + 5
        for name, proc in self.children.items():
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker process %s did not drain in time; killing it", name)
                proc.kill()
                proc.wait()
                self.on_crash(name)
        return 0

"""Process bookkeeping for the benchmark: every process it starts is stopped.

- Each child is started through ``bench/_guard.py``, which sets
  ``PR_SET_PDEATHSIG`` (Linux) and then ``exec``s the real command: if the
  bench process dies, even by SIGKILL, its children get SIGTERM from the kernel.
- ``Processes.stop_all()`` (called from ``finally`` in ``run.py``) sends
  SIGTERM to each process tree, waits a bounded time, then SIGKILLs what is
  left, children (Celery's prefork pool) included.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
GUARD = Path(__file__).resolve().parent / "_guard.py"


class Processes:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, label: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        log_path = self.log_dir / f"{label}.log"
        log = open(log_path, "wb")  # noqa: SIM115  (closed with the process)
        cmd = [sys.executable, str(GUARD), str(os.getpid()), *argv]
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only us; we stop them in order
            )
        finally:
            log.close()
        proc.log_path = log_path  # type: ignore[attr-defined]
        proc.label = label  # type: ignore[attr-defined]
        self.procs.append((label, proc))
        return proc

    @staticmethod
    def log_tail(proc: subprocess.Popen[bytes], chars: int = 3000) -> str:
        try:
            return Path(proc.log_path).read_text(errors="replace")[-chars:]  # type: ignore[attr-defined]
        except OSError:
            return ""

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """SIGTERM the process tree, wait up to ``timeout``, then SIGKILL it."""
        tree = _tree(proc.pid)
        for p in tree:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(tree, timeout=timeout)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.procs = [(lbl, p) for lbl, p in self.procs if p is not proc]

    def stop_all(self, timeout: float = 10.0) -> None:
        # Newest first: workers before the redis-server they talk to.
        for _, proc in reversed(list(self.procs)):
            try:
                self.stop(proc, timeout)
            except Exception as exc:  # keep stopping the others
                print(f"warning: stopping pid {proc.pid}: {exc}", file=sys.stderr)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [*parent.children(recursive=True), parent]
    except psutil.Error:
        return []


def tree_usage(pid: int, children: bool = True) -> dict[str, float]:
    """CPU seconds (user, system) and context switches (voluntary,
    involuntary, summed over every thread) of a process and, unless
    ``children`` is false, its live descendants."""
    out = {"user": 0.0, "sys": 0.0, "vcsw": 0.0, "ivcsw": 0.0}
    tree = _tree(pid) if children else _tree(pid)[-1:]
    for p in tree:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out["user"] += t.user
        out["sys"] += t.system
        v, iv = thread_ctx_switches(p.pid)
        out["vcsw"] += v
        out["ivcsw"] += iv
    return out


def self_usage() -> dict[str, float]:
    """``tree_usage`` of this process alone, from getrusage: it counts
    threads that have ended too (the floor's client threads do)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"user": ru.ru_utime, "sys": ru.ru_stime, "vcsw": float(ru.ru_nvcsw), "ivcsw": float(ru.ru_nivcsw)}


def thread_ctx_switches(pid: int) -> tuple[int, int]:
    """Voluntary and involuntary context switches of all threads of ``pid``
    (Linux /proc; psutil's counts only the main thread)."""
    v = iv = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        v += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        iv += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return v, iv


def tree_rss(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


TICK = os.sysconf("SC_CLK_TCK")


def own_threads() -> list[tuple[threading.Thread, float, int]]:
    """(thread, CPU seconds, context switches) of each live thread of this process."""
    out = []
    for t in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/self/task/{t.native_id}/status").read_text()
        except OSError:
            continue
        csw = sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)
        out.append((t, (int(stat[11]) + int(stat[12])) / TICK, csw))
    return out


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    from rpcapp.testing import wait_for

    return wait_for(condition, timeout, interval, what)

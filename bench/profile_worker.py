"""``profile_worker.py OUT.json runrpcworker ARGS...``: an instrumented worker.

Runs ``manage.py runrpcworker`` unchanged, after wrapping (in this process
only: nothing in rpcapp is edited) the worker's steps with CLOCK_MONOTONIC
timestamps, which are comparable across processes on one Linux host. On exit
(SIGTERM drains the worker) it writes, per request stream entry id:

read_call / read_ret    the XREADGROUP that returned it (called / returned), batch
handle_start            a pool thread starts Executor.handle (after the hand-off)
run_start / run_end     Executor.run (hooks, lookup, bind, the procedure)
finish_start / _end     Transport.finish (or finish_many): the reply+ack pipeline,
                        finish_batch: calls in that pipeline
handle_end              Executor.handle returns

The wrappers take ``*args``: rpcapp's signatures change while it is being
optimised, so the entry id is whichever argument (or tuple item) looks like
a stream id.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MAX_ENTRIES = 50_000
STREAM_ID = re.compile(r"^\d+-\d+$")
mono = time.monotonic_ns




def thread_stats() -> dict[str, list[float]]:
    """[CPU seconds, context switches] of the live threads of this process, by
    name (the pool's threads summed as ``rpcapp-call``)."""
    from bench.procs import own_threads

    out: dict[str, list[float]] = {}
    for t, cpu_s, csw in own_threads():
        row = out.setdefault(re.sub(r"[-_]\d+$", "", t.name), [0.0, 0.0])
        row[0] += cpu_s
        row[1] += csw
    return out


class Recorder:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, int]] = {}
        self.lock = threading.Lock()
        self.current = threading.local()
        self.thread_samples: list[tuple[int, dict[str, list[float]]]] = []
        threading.Thread(target=self._sample_threads, name="bench-sampler", daemon=True).start()

    def _sample_threads(self) -> None:
        """Per-thread CPU and context switches every 0.25 s (bounded: about 20 minutes)."""
        while len(self.thread_samples) < 5000:
            self.thread_samples.append((mono(), thread_stats()))
            time.sleep(0.25)

    def note(self, entry_id: str, **stamps: int) -> None:
        with self.lock:
            row = self.rows.get(entry_id)
            if row is None:
                if len(self.rows) >= MAX_ENTRIES:
                    return
                row = self.rows[entry_id] = {}
            row.update(stamps)

    def dump(self, path: str) -> None:
        with self.lock:
            Path(path).write_text(json.dumps({"rows": self.rows, "thread_samples": self.thread_samples}))


def eid_of(items: Any) -> str:
    for x in items:
        if isinstance(x, str) and STREAM_ID.match(x):
            return x
    return ""


def wrap_read(rec: Recorder, orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def read(*a: Any, **kw: Any) -> Any:
        t0 = mono()
        res = orig(*a, **kw)
        t1 = mono()
        for row in res:
            rec.note(eid_of(row), read_call=t0, read_ret=t1, batch=len(res))
        return res

    return read


def wrap_handle(rec: Recorder, orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def handle(*a: Any, **kw: Any) -> Any:
        eid = eid_of(a)
        rec.note(eid, handle_start=mono())
        rec.current.entry = eid
        try:
            return orig(*a, **kw)
        finally:
            rec.note(eid, handle_end=mono())

    return handle


def wrap_run(rec: Recorder, orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def run(*a: Any, **kw: Any) -> Any:
        eid = getattr(rec.current, "entry", "")
        rec.note(eid, run_start=mono())
        try:
            return orig(*a, **kw)
        finally:
            rec.note(eid, run_end=mono())

    return run


def wrap_finish(rec: Recorder, orig: Callable[..., Any], many: bool) -> Callable[..., Any]:
    @functools.wraps(orig)
    def finish(*a: Any, **kw: Any) -> Any:
        items = next((x for x in a if isinstance(x, list)), []) if many else [a]
        t0 = mono()
        try:
            return orig(*a, **kw)
        finally:
            t1 = mono()
            for item in items:
                rec.note(eid_of(item), finish_start=t0, finish_end=t1, finish_batch=len(items))

    return finish


def instrument(rec: Recorder) -> None:
    from rpcapp.transport import Transport
    from rpcapp.worker.executor import Executor

    Transport.read = wrap_read(rec, Transport.read)  # type: ignore[method-assign]
    Transport.finish = wrap_finish(rec, Transport.finish, many=False)  # type: ignore[method-assign]
    if hasattr(Transport, "finish_many"):
        Transport.finish_many = wrap_finish(rec, Transport.finish_many, many=True)
    Executor.handle = wrap_handle(rec, Executor.handle)  # type: ignore[method-assign]
    Executor.run = wrap_run(rec, Executor.run)  # type: ignore[method-assign]


def main() -> None:
    out_path, argv = sys.argv[1], sys.argv[2:]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    rec = Recorder()
    instrument(rec)
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(["manage.py", *argv])
    finally:
        rec.dump(out_path)


if __name__ == "__main__":
    main()

"""The soak's load, run in threads of the bench process, and its bookkeeping.

Workloads (each its own thread, paced to a rate):

- ``seq``: ``rpc.call("soak.echo", token)`` one after the other;
- ``async``: ``rpc.call_async`` keeping up to ``--inflight`` calls out, a
  few of them to ``soak.boom`` (which must come back as ``RemoteError``);
- ``notify``: ``rpc.notify("soak.note", token, bucket)``;
- ``stream``: ``rpc.stream("soak.count", ...)``, some left early;
- ``event``: ``rpcapp.publish("soak.event", ...)`` to two subscribing services;
- ``locked``: ``rpc.call("soak.locked_incr", ...)``, a lock-guarded procedure;
- ``lock``: ``rpcapp.locks.RedLock`` sections in this process around a
  read-modify-write counter, checking the fencing tokens.

Every argument is unique, so a reply that reaches the wrong caller is seen.
"""

from __future__ import annotations

import bisect
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import rpcapp
from rpcapp import rpc
from rpcapp.errors import LockNotAcquired, RemoteError, RpcError
from rpcapp.locks import RedLock

from . import rpc as soak

LOST_GRACE = 5.0
"""A call still unanswered this long after its deadline is a lost reply (the
client promises an answer or a typed error by the deadline)."""

KILL_WINDOW = 40.0
"""After a ``kill -9``, errors the docs allow for work the dead worker held
(``WorkerLost`` of non-idempotent calls, a lock held until its lease ran out,
a stream's next item never coming) are excused for this long."""

EXCUSED_AFTER_KILL = {
    "locked": {"worker_lost", "lock_not_acquired", "timeout"},
    "stream": {"worker_lost", "timeout"},
}

_ids = count()


def token(kind: str) -> str:
    return f"{kind}{next(_ids)}-{uuid.uuid4().hex[:12]}"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Pacer:
    """Waits so that its loop runs about ``rate`` times a second (no bursts
    of more than a second's worth after a stall)."""

    def __init__(self, rate: float, stop: threading.Event) -> None:
        self.interval = 1.0 / rate
        self.stop = stop
        self.next = time.monotonic()

    def wait(self) -> bool:
        pause = self.next - time.monotonic()
        if pause > 0 and self.stop.wait(pause):
            return False
        self.next = max(self.next + self.interval, time.monotonic() - 1.0)
        return not self.stop.is_set()


class Stats:
    """Counts of the current reporting interval and of the whole run (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()  # "kind:code", not excused
        self.excused: Counter[str] = Counter()  # "kind:code", after a kill -9 and allowed by the docs
        self.problems: Counter[str] = Counter()  # misrouted, lost_reply, bad_stream, lock_overlap, ...
        self.examples: dict[str, list[str]] = defaultdict(list)
        self.served_by: Counter[int] = Counter()
        self.kill_times: list[float] = []
        self.cur = self._interval()

    @staticmethod
    def _interval() -> dict[str, Any]:
        return {"ops": Counter(), "latency": [], "seq_latency": [], "errors": Counter(), "problems": Counter(), "served_by": Counter()}

    def ok(self, kind: str, latency: float | None = None, pid: int | None = None) -> None:
        with self.lock:
            self.totals[kind] += 1
            self.cur["ops"][kind] += 1
            if latency is not None and kind in ("seq", "async"):
                self.cur["latency"].append(latency)
                if kind == "seq":
                    self.cur["seq_latency"].append(latency)
            if pid is not None:
                self.served_by[pid] += 1
                self.cur["served_by"][pid] += 1

    def error(self, kind: str, exc: BaseException) -> None:
        if not isinstance(exc, RpcError):
            self.problem("untyped_error", f"{kind}: {type(exc).__name__}: {exc}")
            return
        name = f"{kind}:{exc.code}"
        excused = exc.code in EXCUSED_AFTER_KILL.get(kind, ()) and self.after_kill()
        with self.lock:
            (self.excused if excused else self.errors)[name] += 1
            self.cur["errors"][name + (" (after kill -9)" if excused else "")] += 1
            if not excused and len(self.examples[name]) < 5:
                self.examples[name].append(f"{exc.call_id}: {exc.message}"[:300])

    def problem(self, name: str, example: str = "", n: int = 1) -> None:
        with self.lock:
            self.problems[name] += n
            self.cur["problems"][name] += n
            if example and len(self.examples[name]) < 5:
                self.examples[name].append(example[:300])

    def after_kill(self) -> bool:
        now = time.monotonic()
        return any(0 <= now - t <= KILL_WINDOW for t in self.kill_times)

    def roll(self) -> dict[str, Any]:
        """The interval just ended; a new one starts."""
        with self.lock:
            cur, self.cur = self.cur, self._interval()
        return cur


@dataclass
class Pending:
    token: str
    kind: str
    procedure: str
    started: float
    deadline: float
    flagged: bool = False


class Ledger:
    """What was notified / published per time bucket, checked against the
    counts the workers keep in Redis once the bucket has settled.

    A checked bucket's hashes are deleted; anything arriving there later is a
    late delivery (if it was missing) or a duplicate."""

    TARGETS = {"note": [("note",)], "event": [("ev", s) for s in soak.EVENT_SERVICES]}

    def __init__(self, r: Any, ns: str, bucket_seconds: float) -> None:
        self.r = r
        self.ns = ns
        self.bucket_seconds = bucket_seconds
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.sent: dict[tuple[str, int], set[str]] = defaultdict(set)
        self.checked: dict[str, set[int]] = defaultdict(set)
        self.missing: dict[str, set[str]] = defaultdict(set)
        self.result: dict[str, Counter[str]] = defaultdict(Counter)
        self.examples: dict[str, list[str]] = defaultdict(list)

    def bucket(self) -> int:
        return int((time.monotonic() - self.t0) // self.bucket_seconds)

    def add(self, kind: str, bucket: int, tok: str) -> None:
        with self.lock:
            self.sent[(kind, bucket)].add(tok)

    def outstanding(self) -> int:
        """Deliveries still expected in the buckets not checked yet."""
        with self.lock:
            items = [(k, b, len(toks)) for (k, b), toks in self.sent.items()]
        pipe = self.r.pipeline(transaction=False)
        expected = 0
        for kind, b, n in items:
            for target in self.TARGETS[kind]:
                pipe.hlen(soak.key(self.ns, *target, b))
                expected += n
        return expected - sum(pipe.execute())

    def check(self, settle: float | None) -> None:
        """Check the buckets older than ``settle`` seconds (all with None), then
        look for late arrivals in buckets checked before."""
        late_sweep = {kind: set(bs) for kind, bs in self.checked.items()}
        now = time.monotonic() - self.t0
        with self.lock:
            due = [kb for kb in self.sent if settle is None or (kb[1] + 1) * self.bucket_seconds < now - settle]
            batches = [(kind, b, self.sent.pop((kind, b))) for kind, b in due]
        for kind, b, toks in batches:
            for target in self.TARGETS[kind]:
                self._check_bucket(kind, target, b, toks)
            if kind == "event":
                self.r.delete(soak.key(self.ns, "evtry", "soakmailer", b))
            self.checked[kind].add(b)
        for kind, buckets in late_sweep.items():
            for b in buckets:
                for target in self.TARGETS[kind]:
                    self._late(target, b)

    def _take(self, target: tuple[str, ...], b: int) -> dict[str, int]:
        k = soak.key(self.ns, *target, b)
        pipe = self.r.pipeline(transaction=True)
        pipe.hgetall(k)
        pipe.delete(k)
        got, _ = pipe.execute()
        return {t.decode(): int(v) for t, v in got.items()}

    def _check_bucket(self, kind: str, target: tuple[str, ...], b: int, toks: set[str]) -> None:
        name = ":".join(target)
        counts = self._take(target, b)
        res = self.result[name]
        res["sent"] += len(toks)
        res["delivered"] += len(toks & counts.keys())
        missing = toks - counts.keys()
        res["missing"] += len(missing)
        self.missing[name] |= missing
        dups = {t: c for t, c in counts.items() if c > 1}
        res["duplicates"] += sum(c - 1 for c in dups.values())
        unknown = counts.keys() - toks
        res["unknown"] += len(unknown)
        for label, sample in (("missing", missing), ("duplicates", dups), ("unknown", unknown)):
            if sample and len(self.examples[f"{name}:{label}"]) < 5:
                self.examples[f"{name}:{label}"].append(f"bucket {b}: {sorted(sample)[:3]}")

    def _late(self, target: tuple[str, ...], b: int) -> None:
        name = ":".join(target)
        counts = self._take(target, b)
        for t, c in counts.items():
            if t in self.missing[name]:
                self.missing[name].discard(t)
                self.result[name]["late"] += 1
                self.result[name]["missing"] -= 1
                self.result[name]["delivered"] += 1
                c -= 1
            self.result[name]["duplicates"] += c


@dataclass
class LockedSections:
    """The intervals recorded by ``soak.locked_incr`` under its lock: no two
    may overlap, and no two may write the same counter value."""

    r: Any
    ns: str
    name: str = "shared"
    keep: float = 60.0
    starts: list[float] = field(default_factory=list)
    window: list[tuple[float, float, int, str]] = field(default_factory=list)
    recorded: int = 0
    overlaps: int = 0
    duplicate_values: int = 0
    values: set[int] = field(default_factory=set)
    examples: list[str] = field(default_factory=list)

    def drain(self) -> None:
        k = soak.key(self.ns, "locked", self.name, "sections")
        while True:
            raw = self.r.lpop(k, 1000)
            if not raw:
                break
            for line in raw:
                start, end, value, tok = line.decode().split()
                self._add((float(start), float(end), int(value), tok))
        horizon = time.time() - self.keep
        cut = next((i for i, s in enumerate(self.window) if s[1] >= horizon), len(self.window))
        for s in self.window[:cut]:
            self.values.discard(s[2])
        del self.window[:cut]
        del self.starts[:cut]

    def _add(self, s: tuple[float, float, int, str]) -> None:
        self.recorded += 1
        i = bisect.bisect(self.starts, s[0])
        neighbours = self.window[max(0, i - 1) : i + 1]
        for other in neighbours:
            if other[0] < s[1] and s[0] < other[1]:
                self.overlaps += 1
                if len(self.examples) < 5:
                    self.examples.append(f"{other} overlaps {s}")
        if s[2] in self.values:
            self.duplicate_values += 1
        self.values.add(s[2])
        self.starts.insert(i, s[0])
        self.window.insert(i, s)

    def counter(self) -> int:
        return int(self.r.get(soak.key(self.ns, "locked", self.name)) or 0)


class Load:
    """Starts, paces and stops the workloads; holds what they found."""

    def __init__(self, r: Any, ns: str, args: Any, stats: Stats) -> None:
        self.r = r
        self.ns = ns
        self.args = args
        self.stats = stats
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.ledger = Ledger(r, ns, args.bucket)
        self.sections = LockedSections(r, ns)
        self.locked_ok = 0
        self.pending: dict[int, Pending] = {}
        self.plock = threading.Lock()
        self.inflight = threading.Semaphore(args.inflight)
        self.seq_current: Pending | None = None
        self.streams = Counter[str]()
        self.client_lock = {"sections": 0, "holders": 0, "overlaps": 0, "fence_regressions": 0, "not_acquired": 0}
        self.client_lock_mutex = threading.Lock()

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        a = self.args
        plan: list[tuple[str, Callable[[], None], int]] = [
            ("seq", self._seq, 1),
            ("async", self._async, 1),
            ("notify", self._notify, 1),
            ("stream", self._stream, 1),
            ("event", self._event, 1),
            ("locked", self._locked, a.locked_threads),
            ("lock", self._client_lock, a.lock_threads),
        ]
        rates = {"seq": a.seq_rate, "async": a.rate, "notify": a.notify_rate, "stream": a.stream_rate,
                 "event": a.event_rate, "locked": a.locked_rate, "lock": a.lock_rate}
        for name, target, n in plan:
            for i in range(n if rates[name] > 0 else 0):
                t = threading.Thread(target=self._guarded, args=(name, target), name=f"soak-{name}-{i}", daemon=True)
                t.start()
                self.threads.append(t)

    def _guarded(self, name: str, target: Callable[[], None]) -> None:
        try:
            target()
        except Exception as exc:  # noqa: BLE001  (a load thread must not die silently)
            self.stats.problem("load_thread_died", f"{name}: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=soak.STREAM_TIMEOUT + LOST_GRACE)

    def wait_pending(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.watchdog()
            with self.plock:
                if not self.pending:
                    return
            time.sleep(0.2)

    def watchdog(self) -> None:
        """Declare lost the calls still unanswered past their deadline plus a grace."""
        now = time.monotonic()
        with self.plock:
            lost = [k for k, p in self.pending.items() if now > p.deadline + LOST_GRACE]
            gone = [self.pending.pop(k) for k in lost]
        for p in gone:
            self.inflight.release()
            self.stats.problem("lost_reply", f"{p.procedure}({p.token}) sent {now - p.started:.1f}s ago")
        cur = self.seq_current
        if cur is not None and not cur.flagged and now > cur.deadline + LOST_GRACE:
            cur.flagged = True
            self.stats.problem("lost_reply", f"{cur.procedure}({cur.token}): call() still blocked {now - cur.started:.1f}s")

    # -- calls ------------------------------------------------------------------
    def _check_echo(self, kind: str, tok: str, result: Any, started: float) -> None:
        if isinstance(result, dict) and result.get("echo") == tok:
            self.stats.ok(kind, time.monotonic() - started, result.get("pid"))
        else:
            self.stats.problem("misrouted", f"{kind}: sent {tok}, got {result!r}")

    def _seq(self) -> None:
        pacer = Pacer(self.args.seq_rate, self.stop_event)
        while pacer.wait():
            tok = token("s")
            started = time.monotonic()
            cur = self.seq_current = Pending(tok, "seq", "soak.echo", started, started + soak.ECHO_TIMEOUT)
            try:
                result = rpc.call("soak.echo", tok)
            except Exception as exc:  # noqa: BLE001  (typed or not, it is counted)
                self.stats.error("seq", exc)
            else:
                self._check_echo("seq", tok, result, started)
            finally:
                self.seq_current = None
            if cur.flagged:
                self.stats.problem("late_completion", f"soak.echo({tok}) after {time.monotonic() - started:.1f}s")

    def _async(self) -> None:
        pacer = Pacer(self.args.rate, self.stop_event)
        while pacer.wait():
            if not self.inflight.acquire(timeout=1.0):
                continue
            boom = random.random() * 100 < self.args.boom_pct
            proc, timeout = ("soak.boom", 10.0) if boom else ("soak.echo", soak.ECHO_TIMEOUT)
            tok = token("a")
            started = time.monotonic()
            p = Pending(tok, "boom" if boom else "async", proc, started, started + timeout)
            fut = rpc.call_async(proc, tok)
            with self.plock:
                self.pending[id(fut)] = p
            fut.add_done_callback(lambda f, p=p: self._done(f, p))

    def _done(self, fut: Future[Any], p: Pending) -> None:
        with self.plock:
            mine = self.pending.pop(id(fut), None) is not None
        if not mine:
            self.stats.problem("late_completion", f"{p.procedure}({p.token}) after {time.monotonic() - p.started:.1f}s")
            return
        self.inflight.release()
        exc = fut.exception()
        if p.kind == "async":
            if exc is not None:
                self.stats.error("async", exc)
            else:
                self._check_echo("async", p.token, fut.result(), p.started)
        elif isinstance(exc, RemoteError) and exc.remote_type == "ValueError" and p.token in exc.remote_message:
            self.stats.ok("boom")
        elif isinstance(exc, RemoteError):
            self.stats.problem("misrouted", f"soak.boom({p.token}) raised {exc.remote_message!r}")
        elif exc is not None:
            self.stats.error("boom", exc)
        else:
            self.stats.problem("boom_returned", f"soak.boom({p.token}) returned {fut.result()!r}")

    def _locked(self) -> None:
        pacer = Pacer(self.args.locked_rate, self.stop_event)
        while pacer.wait():
            started = time.monotonic()
            try:
                value = rpc.call("soak.locked_incr", self.sections.name, token("l"))
            except Exception as exc:  # noqa: BLE001
                self.stats.error("locked", exc)
                continue
            if not isinstance(value, int):
                self.stats.problem("misrouted", f"soak.locked_incr returned {value!r}")
                continue
            self.stats.ok("locked", time.monotonic() - started)
            with self.plock:
                self.locked_ok += 1

    # -- notifications, streams, events -------------------------------------------
    def _notify(self) -> None:
        pacer = Pacer(self.args.notify_rate, self.stop_event)
        while pacer.wait():
            tok, b = token("n"), self.ledger.bucket()
            try:
                rpc.notify("soak.note", tok, b)
            except Exception as exc:  # noqa: BLE001
                self.stats.error("notify", exc)
                continue
            self.ledger.add("note", b, tok)
            self.stats.ok("notify")

    def _event(self) -> None:
        pacer = Pacer(self.args.event_rate, self.stop_event)
        while pacer.wait():
            tok, b = token("e"), self.ledger.bucket()
            fail = random.random() * 100 < self.args.event_fail_pct
            try:
                rpcapp.publish(soak.TOPIC, {"k": tok, "bucket": b, "fail": fail})
            except Exception as exc:  # noqa: BLE001
                self.stats.error("event", exc)
                continue
            self.ledger.add("event", b, tok)
            self.stats.ok("event")

    def _stream(self) -> None:
        pacer = Pacer(self.args.stream_rate, self.stop_event)
        while pacer.wait():
            tag, start, n = token("t"), random.randrange(1_000_000), random.randint(1, 80)
            leave_at = n // 2 + 1 if random.random() * 100 < self.args.early_pct else None
            items: list[Any] = []
            try:
                s = rpc.stream("soak.count", tag, start, n, timeout=10.0)
                for item in s:
                    items.append(item)
                    if leave_at is not None and len(items) >= leave_at:
                        s.close()
                        break
            except Exception as exc:  # noqa: BLE001
                self.stats.error("stream", exc)
                self._check_items(tag, start, items, None)
                continue
            self._check_items(tag, start, items, leave_at or n, early=leave_at is not None)
            if leave_at is not None:  # what the worker may still send: the client counts these as late replies
                self.streams["abandoned frames"] += n - leave_at + 1

    def _check_items(self, tag: str, start: int, items: list[Any], want: int | None, early: bool = False) -> None:
        """Items in order, none missing (``want`` of them; any prefix when the stream failed)."""
        expected = [{"tag": tag, "i": i} for i in range(start, start + len(items))]
        if items != expected or (want is not None and len(items) != want):
            self.stats.problem("bad_stream", f"{tag}: wanted {want} items from {start}, got {len(items)}: {items[:3]}")
            self.streams["bad"] += 1
        elif want is not None:
            self.stats.ok("stream")
            self.streams["left early" if early else "complete"] += 1
            self.streams["items"] += len(items)

    # -- locks in this process ---------------------------------------------------------
    def _client_lock(self) -> None:
        pacer = Pacer(self.args.lock_rate, self.stop_event)
        fence = soak.key(self.ns, "client-lock", "last-token")
        counter = soak.key(self.ns, "client-lock", "counter")
        while pacer.wait():
            started = time.monotonic()
            lock = RedLock("soak:client", ttl=5.0)
            if not lock.acquire(timeout=5.0):
                with self.client_lock_mutex:
                    self.client_lock["not_acquired"] += 1
                self.stats.error("lock", LockNotAcquired("client-side RedLock not taken in 5 s"))
                continue
            try:
                self._section(lock, fence, counter)
            finally:
                lock.release()
            self.stats.ok("lock", time.monotonic() - started)

    def _section(self, lock: RedLock, fence: str, counter: str) -> None:
        c = self.client_lock
        with self.client_lock_mutex:
            c["holders"] += 1
            if c["holders"] > 1:
                c["overlaps"] += 1
                self.stats.problem("lock_overlap", f"client-side lock held twice, token {lock.fencing_token}")
        try:
            previous = self.r.getset(fence, lock.fencing_token)
            if previous is not None and int(previous) >= (lock.fencing_token or 0):
                c["fence_regressions"] += 1
                self.stats.problem("fence_regression", f"token {lock.fencing_token} after {int(previous)}")
            value = int(self.r.get(counter) or 0)
            time.sleep(0.001)
            self.r.set(counter, value + 1)
            with self.client_lock_mutex:
                c["sections"] += 1
        finally:
            with self.client_lock_mutex:
                c["holders"] -= 1

    def client_lock_counter(self) -> int:
        return int(self.r.get(soak.key(self.ns, "client-lock", "counter")) or 0)

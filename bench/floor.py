"""The floor: the least a Python request/reply over Redis can cost.

Worker (``python bench/floor.py worker URL QUEUE``): ``BLPOP QUEUE`` one
request, ``LPUSH`` the reply to the list named in it; nothing else (no
signing, no envelope, no acknowledgement, no batching).

Client, one process:

- sequential: one thread, one connection: ``LPUSH`` request, ``BLPOP`` its
  own reply list;
- ``threads`` mode (N in flight): N threads, each with its own connection
  and its own reply list, each doing the sequential loop;
- ``mux`` mode (N in flight): the shape of rpcapp's client: the caller thread
  ``LPUSH``es requests while at most N are outstanding, one reader thread
  ``BLPOP``s the process's single reply list (then ``LPOP``s up to 256 more)
  and completes the caller's pending entry by correlation id.

The floor at N in flight is the better of the two modes.
"""

from __future__ import annotations

import itertools
import signal
import sys
import threading
import time
import uuid
from typing import Any

import redis

SEP = b"|"


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=2)


# -- worker ------------------------------------------------------------------
def worker_main(url: str, queue: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    r = connect(url)
    r.ping()
    print("floor worker ready", flush=True)
    while not stop.is_set():
        item = r.blpop([queue], timeout=1)
        if item is None:
            continue
        msg = item[1]
        r.lpush(msg.split(SEP, 1)[0], msg)


# -- client ------------------------------------------------------------------
class FloorClient:
    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.queue = queue
        self.conn = connect(url)
        self.reply_key = f"bench:floor:reply:{uuid.uuid4().hex}".encode()

    def call(self) -> None:
        """One sequential round trip."""
        self.conn.lpush(self.queue, self.reply_key + b"|x")
        if self.conn.blpop([self.reply_key], timeout=10) is None:
            raise TimeoutError("floor: no reply in 10 s")

    def close(self) -> None:
        self.conn.close()


def run_threads(url: str, queue: str, n: int, duration: float, max_calls: int) -> dict[str, Any]:
    """N threads, each with its own connection and reply list."""
    counts = [0] * n
    errors = [0] * n
    last = [0.0] * n
    start_evt = threading.Event()
    per_thread = max(1, max_calls // n)

    def loop(i: int) -> None:
        c = FloorClient(url, queue)
        try:
            start_evt.wait(10)
            end = t0 + duration
            while counts[i] < per_thread and time.perf_counter() < end:
                try:
                    c.call()
                    counts[i] += 1
                    last[i] = time.perf_counter()
                except Exception:
                    errors[i] += 1
                    if errors[i] > 10:
                        return
        finally:
            c.close()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    start_evt.set()
    for t in threads:
        t.join(duration + 20)
    done = sum(counts)
    elapsed = max(last) - t0 if done else 0.0
    return {"calls": done, "errors": sum(errors), "seconds": elapsed, "per_s": done / elapsed if elapsed else 0.0}


class MuxClient:
    """Caller thread sends; one reader thread multiplexes the replies."""

    def __init__(self, url: str, queue: str) -> None:
        self.queue = queue
        self.send_conn = connect(url)
        self.read_conn = connect(url)
        self.reply_key = f"bench:floor:mux:{uuid.uuid4().hex}".encode()
        self.pending: dict[bytes, Any] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.ids = itertools.count()
        self.reader = threading.Thread(target=self._read, name="floor-replies", daemon=True)
        self.reader.start()

    def send(self, callback: Any) -> None:
        cid = str(next(self.ids)).encode()
        with self.lock:
            self.pending[cid] = callback
        self.send_conn.lpush(self.queue, self.reply_key + SEP + cid)

    def _read(self) -> None:
        while not self.stopped.is_set():
            try:
                first = self.read_conn.blpop([self.reply_key], timeout=0.2)
                if first is None:
                    continue
                replies = [first[1]]
                more = self.read_conn.lpop(self.reply_key, 256)
                if more:
                    replies.extend(more)
            except redis.RedisError:
                if self.stopped.is_set():
                    return
                time.sleep(0.05)
                continue
            for msg in replies:
                cid = msg.split(SEP, 1)[1]
                with self.lock:
                    cb = self.pending.pop(cid, None)
                if cb is not None:
                    cb(True)

    def close(self) -> None:
        self.stopped.set()
        self.reader.join(2)
        self.send_conn.close()
        self.read_conn.close()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "worker":
        sys.exit("usage: floor.py worker REDIS_URL QUEUE")
    worker_main(sys.argv[2], sys.argv[3])

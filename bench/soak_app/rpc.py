"""Procedures and subscribers of the soak benchmark (``bench/soak.py``).

Everything the bench must verify leaves a trace in Redis under
``<namespace>:soak:`` (see :func:`key`), so that the bench, not the worker,
judges it:

- ``soak.echo(token)`` returns the token (and the worker's pid): a reply
  routed to the wrong caller shows as a different token;
- ``soak.note(token, bucket)``, the target of notifications, counts its runs
  per token in the hash ``soak:note:<bucket>``;
- ``soak.count(tag, start, n)`` streams ``n`` numbered items;
- ``soak.locked_incr(name, token)`` holds the lock ``soak:<name>`` (taken by
  the worker, ``@procedure(lock=...)``) around a read-modify-write of a
  counter, and records the section's time interval;
- the topic ``soak.event`` has one handler in each of two services
  (``soakledger``, ``soakmailer``); each counts successful deliveries per
  event in ``soak:ev:<service>:<bucket>``. The mailer fails the first attempt
  of events marked ``fail`` (the documented retry then delivers it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import redis

from rpcapp import conf, procedure, subscriber

ECHO_TIMEOUT = 20.0  # long enough for an idempotent call to be redelivered after a worker dies
LOCKED_TIMEOUT = 5.0
STREAM_TIMEOUT = 30.0
NOTE_TIMEOUT = 30.0
EVENT_SERVICES = ("soakledger", "soakmailer")
SERVICES = ("soak", *EVENT_SERVICES)
TOPIC = "soak.event"

_client: list[Any] = []


def key(namespace: str, *parts: object) -> str:
    """A key of the soak's own bookkeeping (never one of rpcapp's)."""
    return ":".join([namespace, "soak", *map(str, parts)])


def _redis() -> tuple[Any, str]:
    if not _client:
        _client.append(redis.Redis.from_url(conf.redis_url(), socket_timeout=5))
    return _client[0], conf.get().NAMESPACE


@procedure("soak.echo", timeout=ECHO_TIMEOUT, idempotent=True)
def echo(token: str) -> dict[str, Any]:
    """Return the token (and which worker process answered)."""
    return {"echo": token, "pid": os.getpid()}


@procedure("soak.boom", timeout=10.0)
def boom(token: str) -> None:
    """Always raise: the caller must get a RemoteError naming the token."""
    raise ValueError(f"injected failure {token}")


@procedure("soak.note", timeout=NOTE_TIMEOUT)
def note(token: str, bucket: int) -> None:
    """The target of ``rpc.notify``: count this run."""
    r, ns = _redis()
    r.hincrby(key(ns, "note", bucket), token, 1)


@procedure("soak.count", stream=True, timeout=STREAM_TIMEOUT)
def count(tag: str, start: int, n: int) -> Iterator[dict[str, Any]]:
    """Yield ``n`` items numbered from ``start``, each carrying the tag."""
    for i in range(start, start + n):
        yield {"tag": tag, "i": i}


@procedure("soak.locked_incr", timeout=LOCKED_TIMEOUT, lock="soak:{name}")
def locked_incr(name: str, token: str) -> int:
    """Under the lock: read the counter, pause, write it plus one (a lost
    update if two holders overlap); record the section's interval."""
    r, ns = _redis()
    started = time.time()
    value = int(r.get(key(ns, "locked", name)) or 0) + 1
    time.sleep(0.002)
    r.set(key(ns, "locked", name), value)
    r.rpush(key(ns, "locked", name, "sections"), f"{started:.6f} {time.time():.6f} {value} {token}")
    return value


def _deliver(service: str, payload: dict[str, Any]) -> None:
    r, ns = _redis()
    if service == "soakmailer" and payload.get("fail"):
        tries = r.hincrby(key(ns, "evtry", service, payload["bucket"]), payload["k"], 1)
        if tries == 1:
            raise RuntimeError(f"injected first-attempt failure of {payload['k']}")
    r.hincrby(key(ns, "ev", service, payload["bucket"]), payload["k"], 1)


@subscriber(TOPIC, service="soakledger")
def ledger(payload: dict[str, Any]) -> None:
    _deliver("soakledger", payload)


@subscriber(TOPIC, service="soakmailer")
def mailer(payload: dict[str, Any]) -> None:
    _deliver("soakmailer", payload)

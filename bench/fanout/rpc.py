"""Two subscribing services of ``bench.fanout``; each handler counts the
event's number in a Redis hash, so the bench can check exactly-once delivery."""

from __future__ import annotations

from typing import Any

import redis

from rpcapp import conf, subscriber

_client: list[Any] = []


def _count(service: str, n: int) -> None:
    if not _client:
        _client.append(redis.Redis.from_url(conf.redis_url()))
    _client[0].hincrby(f"{conf.get().NAMESPACE}:fanout:{service}", str(n), 1)


@subscriber("bench.fanout", service="ledger")
def ledger(payload: dict[str, Any]) -> None:
    _count("ledger", payload["n"])


@subscriber("bench.fanout", service="search")
def search(payload: dict[str, Any]) -> None:
    _count("search", payload["n"])

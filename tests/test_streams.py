"""Streaming procedures: rpc.stream / rpc.astream against a real Redis and worker."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import pytest

from rpcapp import runtime
from rpcapp.errors import InvalidParams, PayloadTooLarge, RemoteError, RpcTimeout, WorkerLost
from rpcapp.testing import running_worker, wait_for
from tests.testapp.rpc import STREAMS


def test_items_arrive_in_order_across_many_windows(client: Any, worker: Any) -> None:
    assert list(client.stream("tests.count_up", 500)) == list(range(500))


def test_items_are_coerced_to_the_hinted_type(client: Any, worker: Any) -> None:
    items = list(client.stream("tests.stream_when", 3))
    assert items == [dt.datetime(2026, 1, d, tzinfo=dt.UTC) for d in (1, 2, 3)]


def test_an_error_mid_stream_comes_after_the_items(client: Any, worker: Any) -> None:
    got = []
    with pytest.raises(RemoteError) as info:
        for item in client.stream("tests.stream_fail", 3):
            got.append(item)
    assert got == [0, 1, 2]
    assert info.value.remote_type == "ValueError"
    assert "failed after 3" in info.value.remote_message


def test_bad_arguments_are_refused_before_sending(client: Any, worker: Any) -> None:
    with pytest.raises(InvalidParams):
        client.stream("tests.count_up", "three")
    with pytest.raises(InvalidParams, match="not a streaming procedure"):
        client.stream("tests.echo", 1)


def test_calling_a_streaming_procedure_with_call_is_invalid(client: Any, worker: Any) -> None:
    with pytest.raises(InvalidParams, match="rpc.stream"):
        client.call("tests.count_up", 3)


def test_a_slow_consumer_holds_the_worker_back(settings: Any, rpc_conf: dict[str, Any]) -> None:
    # Given a window of 8 items
    settings.RPCAPP = {**rpc_conf, "STREAM_WINDOW": 8}
    client = runtime.get_client()
    with running_worker():
        stream = client.stream("tests.tracked_stream", "slow", 10_000)
        # When the caller takes 3 items and then stops reading for a while
        assert [next(stream) for _ in range(3)] == [0, 1, 2]
        time.sleep(1.0)
        # Then the worker has produced at most a window beyond what was acknowledged
        produced = STREAMS["slow"]["produced"]
        assert produced <= 3 + 8 + 1, produced
        # And the stream goes on when the caller reads again
        rest = [next(stream) for _ in range(100)]
        assert rest == list(range(3, 103))
        stream.close()


def test_leaving_the_loop_cancels_the_generator_within_a_second(client: Any, worker: Any) -> None:
    for item in client.stream("tests.tracked_stream", "early", 1_000_000, 0.01):
        if item == 5:
            break
    started = time.monotonic()
    wait_for(lambda: STREAMS["early"]["closed"], 2.0, message="the generator closed")
    assert time.monotonic() - started < 1.5
    wait_for(lambda: worker.in_flight == 0, 2.0, message="the call slot freed")
    assert STREAMS["early"]["produced"] < 200


def test_items_sent_after_the_caller_left_are_not_late_replies(client: Any, worker: Any) -> None:
    late = client.late_replies
    for _ in range(3):
        for item in client.stream("tests.count_up", 500):
            if item == 2:
                break
    assert client.call("tests.echo", "after") == "after"  # the listener has read what was pushed meanwhile
    time.sleep(0.3)
    assert client.late_replies == late


def test_close_cancels_a_worker_blocked_on_a_full_window(settings: Any, rpc_conf: dict[str, Any]) -> None:
    settings.RPCAPP = {**rpc_conf, "STREAM_WINDOW": 4}
    client = runtime.get_client()
    with running_worker() as w:
        stream = client.stream("tests.tracked_stream", "blocked", 1_000_000)
        next(stream)
        wait_for(lambda: STREAMS["blocked"]["produced"] >= 4, 2.0)
        stream.close()
        wait_for(lambda: STREAMS["blocked"]["closed"], 1.5, message="the generator closed")
        wait_for(lambda: w.in_flight == 0, 2.0)


def test_the_deadline_bounds_the_whole_stream(client: Any, worker: Any) -> None:
    got = []
    started = time.monotonic()
    with pytest.raises(RpcTimeout):
        for item in client.stream("tests.stream_short", 20, 0.25):
            got.append(item)
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 1.8, elapsed
    assert got == list(range(len(got))) and 1 <= len(got) <= 4


def test_timeout_bounds_the_wait_for_each_item(client: Any, worker: Any) -> None:
    stream = client.stream("tests.count_up", 3, 0.05, timeout=1.0)
    assert list(stream) == [0, 1, 2]  # 50 ms per item: well inside the per-item bound
    started = time.monotonic()
    with pytest.raises(RpcTimeout):
        next(iter(client.stream("tests.count_up", 3, 2.0, timeout=0.3)))
    assert time.monotonic() - started < 1.0


def test_an_oversize_item_ends_the_stream_with_payload_too_large(settings: Any, rpc_conf: dict[str, Any]) -> None:
    settings.RPCAPP = {**rpc_conf, "MAX_REPLY_BYTES": 10_000}
    client = runtime.get_client()
    with running_worker():
        stream = client.stream("tests.stream_big", 50_000)
        assert next(stream) == "small"
        with pytest.raises(PayloadTooLarge):
            next(stream)


def test_streams_and_calls_interleave(client: Any, worker: Any) -> None:
    streams = [client.stream("tests.count_up", 300) for _ in range(3)]
    results: list[list[int]] = [[] for _ in streams]
    for i in range(300):
        for s, stream in enumerate(streams):
            results[s].append(next(stream))
        if i % 50 == 0:
            assert client.call("tests.echo", i) == i
    assert all(r == list(range(300)) for r in results)


def test_astream_yields_items_in_an_event_loop(client: Any, worker: Any) -> None:
    async def collect() -> tuple[list[int], int]:
        items = [item async for item in client.astream("tests.count_up", 150)]
        return items, await client.acall("tests.echo", 7)

    items, echoed = asyncio.run(collect())
    assert items == list(range(150))
    assert echoed == 7


def test_astream_cancels_when_the_loop_is_left(client: Any, worker: Any) -> None:
    async def take() -> list[int]:
        got = []
        async with client.astream("tests.tracked_stream", "async", 1_000_000, 0.01) as stream:
            async for item in stream:
                got.append(item)
                if item == 3:
                    break
        return got

    assert asyncio.run(take()) == [0, 1, 2, 3]
    wait_for(lambda: STREAMS["async"]["closed"], 1.5, message="the generator closed")


def test_astream_reports_errors(client: Any, worker: Any) -> None:
    async def run() -> None:
        async for _ in client.astream("tests.stream_fail", 2):
            pass

    with pytest.raises(RemoteError):
        asyncio.run(run())


def test_a_worker_killed_mid_stream_ends_it_with_worker_lost(client: Any, processes: Any) -> None:
    proc = processes.start("--service", "tests")
    got = []
    with pytest.raises(WorkerLost):
        for item in client.stream("tests.count_up", 1000, 0.05):
            got.append(item)
            if item == 3:
                proc.kill()
                processes.start("--service", "tests")  # a live worker recovers the lost call
    assert got[:4] == [0, 1, 2, 3]


def test_async_django_views_call_and_stream(settings: Any, client: Any, worker: Any) -> None:
    from django.test import AsyncClient

    settings.ROOT_URLCONF = "tests.testapp.urls"

    async def run() -> tuple[Any, str]:
        http = AsyncClient()
        total = await http.get("/total/", {"a": 2, "b": 3})
        counting = await http.get("/counting/", {"n": 5})
        body = b"".join([chunk async for chunk in counting.streaming_content]).decode()
        return total.json(), body

    total, body = asyncio.run(run())
    assert total == {"sum": 5}
    assert body == "0\n1\n2\n3\n4\n"

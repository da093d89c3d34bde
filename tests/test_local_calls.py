"""Local mode (rpcapp.testing.local_calls): procedures run in the calling
process with the checks, errors, deadlines and encoding of a real call, and
no Redis at all: every test here points REDIS_URL at a closed port."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import logging
import threading
import time
import uuid
from typing import Any

import pytest
from django.test import SimpleTestCase

import rpcapp
from rpcapp import rpc, runtime
from rpcapp.errors import InvalidParams, PayloadTooLarge, ProcedureNotFound, RemoteError, RpcError, RpcTimeout, ServiceUnavailable
from rpcapp.local import LocalClient
from rpcapp.testing import free_port, local_calls
from tests.testapp import rpc as procs

CLOSED = f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture(autouse=True)
def no_redis(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """RPCAPP pointing at a port nobody listens on: any Redis use would fail."""
    monkeypatch.delenv("RPCAPP_REDIS_URL", raising=False)
    settings.RPCAPP = {"REDIS_URL": CLOSED, "NAMESPACE": "local" + uuid.uuid4().hex[:8], "MAX_REQUEST_BYTES": 4000, "MAX_REPLY_BYTES": 4000}
    yield
    runtime.reset()


# -- calls ------------------------------------------------------------------------
def test_call_runs_the_procedure_here(rpcapp_local: LocalClient) -> None:
    assert rpc.call("tests.echo", {"a": [1, 2]}) == {"a": [1, 2]}
    assert rpc.call("tests.echo", value="kw") == "kw"
    assert rpc.service("other").ping() == "pong"
    assert rpcapp_local.calls[:2] == [("tests.echo", [{"a": [1, 2]}], {}), ("tests.echo", [], {"value": "kw"})]


def test_values_go_through_the_wire_encoding(rpcapp_local: LocalClient) -> None:
    when = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC)
    ident = uuid.uuid4()
    out = rpc.call("tests.typed", when, dt.date(2026, 3, 2), ident, decimal.Decimal("10.25"))
    # The procedure got real objects (coerced from the wire by its hints)...
    assert out["types"] == ["datetime", "date", "UUID", "Decimal"]
    # ...and its untyped (Any) result comes back as JSON, as from a worker.
    assert out["when"] == when.isoformat() and out["ident"] == str(ident) and out["amount"] == "10.25"
    # A hinted result is typed again on the caller's side.
    assert rpc.call("tests.when", 2) == dt.datetime(2026, 1, 3, tzinfo=dt.UTC)
    assert rpc.call("tests.echo", decimal.Decimal("1.5")) == "1.5"
    assert rpc.call("tests.echo", (1, 2)) == [1, 2]


def test_argument_checks_before_anything_runs(rpcapp_local: LocalClient) -> None:
    before = procs.RUNS.get("local-args", 0)
    with pytest.raises(InvalidParams, match="missing argument 'key'"):
        rpc.call("tests.count")
    with pytest.raises(InvalidParams, match="must be str"):
        rpc.call("tests.count", 5)
    with pytest.raises(InvalidParams, match="extra positional"):
        rpc.call("tests.count", "local-args", "two")
    with pytest.raises(InvalidParams, match="must be int"):
        rpc.call("tests.big", True)  # a bool is not an int
    with pytest.raises(InvalidParams, match="cannot be encoded"):
        rpc.call("tests.echo", object())
    assert procs.RUNS.get("local-args", 0) == before
    assert rpcapp_local.calls == []
    assert rpc.call("tests.sleep", 0) == 0  # an int where a float is hinted


def test_unknown_procedure(rpcapp_local: LocalClient) -> None:
    for name in ("tests.nope", "nodot"):
        with pytest.raises(ProcedureNotFound) as info:
            rpc.call(name)
        assert info.value.procedure == name and info.value.code == "not_found"


def test_a_procedures_exception_is_a_remote_error(rpcapp_local: LocalClient) -> None:
    with pytest.raises(RemoteError) as info:
        rpc.call("tests.fail", "boom")
    err = info.value
    assert (err.remote_type, err.remote_message, str(err)) == ("ValueError", "boom", "ValueError: boom")
    assert "in fail" in err.remote_traceback and "raise ValueError(message)" in err.remote_traceback
    assert err.procedure == "tests.fail" and err.call_id


def test_payload_limits(rpcapp_local: LocalClient) -> None:
    with pytest.raises(PayloadTooLarge, match="over the limit of 4000") as info:
        rpc.call("tests.echo", "x" * 5000)
    assert info.value.procedure == "tests.echo"
    with pytest.raises(PayloadTooLarge, match="reply"):
        rpc.call("tests.big", 5000)
    assert rpc.call("tests.big", 100) == "x" * 100


def test_an_unserialisable_result_is_the_workers_error(rpcapp_local: LocalClient) -> None:
    with pytest.raises(RemoteError) as info:
        rpc.call("tests.unserialisable")
    assert info.value.remote_type == "UnserializableResult"


def test_a_streaming_procedure_needs_stream(rpcapp_local: LocalClient) -> None:
    with pytest.raises(InvalidParams, match="rpc.stream"):
        rpc.call("tests.count_up", 3)
    with pytest.raises(InvalidParams, match="not a streaming procedure"):
        rpc.stream("tests.echo", 1)


# -- deadlines ------------------------------------------------------------------------
def test_a_procedure_past_its_deadline_times_out(rpcapp_local: LocalClient) -> None:
    started = time.monotonic()
    with pytest.raises(RpcTimeout) as info:
        rpc.call("tests.sleep", 0.4, timeout=0.1)
    assert time.monotonic() - started >= 0.4  # it ran to its end, in this thread
    assert info.value.procedure == "tests.sleep"
    assert rpc.call("tests.sleep", 0.05, timeout=2) == 0.05


def test_nested_calls_inherit_the_remaining_deadline(rpcapp_local: LocalClient) -> None:
    left = rpc.call("tests.nested_remaining", timeout=2.0)
    assert 1.0 < left <= 2.0  # not the inner procedure's own 30 s
    with pytest.raises(RpcTimeout):
        rpc.call("tests.nested", 0.5, timeout=0.2)  # the inner call times out first
    assert rpc.call("tests.nested", 0.01, timeout=2) == 0.01


def test_a_call_whose_deadline_passed_does_not_run(rpcapp_local: LocalClient) -> None:
    before = procs.RUNS.get("late", 0)
    with pytest.raises(RpcTimeout):
        rpc.call("tests.count", "late", timeout=0)
    assert procs.RUNS.get("late", 0) == before


def test_lock_guarded_procedures_hold_a_process_lock(rpcapp_local: LocalClient) -> None:
    assert rpc.call("tests.locked", "a") == "a"
    results: list[Any] = []
    slow = threading.Thread(target=lambda: results.append(rpc.call("tests.locked", "b", 0.6)))
    slow.start()
    time.sleep(0.1)
    with pytest.raises(RpcError) as info:
        rpc.call("tests.locked", "b", timeout=0.2)
    slow.join()
    assert info.value.code == "lock_not_acquired" and results == ["b"]


# -- the other ways to call ------------------------------------------------------------
def test_call_async_never_raises(rpcapp_local: LocalClient) -> None:
    assert rpc.call_async("tests.echo", 3).result(timeout=1) == 3
    for name, args, error in (("tests.nope", (), ProcedureNotFound), ("tests.count", (), InvalidParams), ("tests.fail", ("x",), RemoteError)):
        fut = rpc.call_async(name, *args)
        assert isinstance(fut.exception(timeout=1), error)


def test_acall(rpcapp_local: LocalClient) -> None:
    async def main() -> Any:
        return await rpc.acall("tests.echo", 7), await rpc.acall("tests.nested_remaining", timeout=2)

    value, left = asyncio.run(main())
    assert value == 7 and left <= 2
    with pytest.raises(RemoteError):
        asyncio.run(rpc.acall("tests.fail", "async"))


def test_gather(rpcapp_local: LocalClient) -> None:
    assert rpc.gather([("tests.echo", (1,)), ("calculator.add", (2, 3)), ("tests.echo", (), {"value": 4})]) == [1, 5, 4]
    with pytest.raises(ProcedureNotFound):
        rpc.gather([("tests.echo", (1,)), ("tests.nope", ())])
    out = rpc.gather([("tests.echo", (1,)), ("tests.fail", ("g",))], return_exceptions=True)
    assert out[0] == 1 and isinstance(out[1], RemoteError)
    shared = rpc.gather([("tests.sleep", (0.15,)), ("tests.sleep", (0.15,))], timeout=0.25, return_exceptions=True)
    assert shared[0] == 0.15 and isinstance(shared[1], RpcTimeout)  # one deadline for the lot


def test_notify_runs_and_keeps_failures_to_the_log(rpcapp_local: LocalClient, caplog: pytest.LogCaptureFixture) -> None:
    before = procs.RUNS.get("notified", 0)
    assert rpc.notify("tests.count", "notified") is None
    assert procs.RUNS.get("notified", 0) == before + 1
    with caplog.at_level(logging.WARNING, logger="rpcapp.worker"):
        assert rpc.notify("tests.fail", "quietly") is None
    assert "quietly" in caplog.text
    with pytest.raises(ProcedureNotFound):
        rpc.notify("tests.nope")
    with pytest.raises(InvalidParams):
        rpc.notify("tests.count", 1)


# -- streams ------------------------------------------------------------------------------
def test_stream(rpcapp_local: LocalClient) -> None:
    assert list(rpc.stream("tests.count_up", 4)) == [0, 1, 2, 3]
    assert list(rpc.stream("tests.stream_when", 2)) == [dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC)]
    got = []
    with pytest.raises(RemoteError, match="failed after 2"):
        for item in rpc.stream("tests.stream_fail", 2):
            got.append(item)
    assert got == [0, 1]  # the items before the error


def test_stream_limits_and_deadline(rpcapp_local: LocalClient) -> None:
    got = []
    with pytest.raises(PayloadTooLarge, match="stream item 1"):
        for item in rpc.stream("tests.stream_big", 5000):
            got.append(item)
    assert got == ["small"]
    got = []
    with pytest.raises(RpcTimeout):
        for item in rpc.stream("tests.stream_short", 10, 0.3):  # a 1 s deadline
            got.append(item)
    assert 2 <= len(got) <= 4
    with pytest.raises(InvalidParams):
        rpc.stream("tests.count_up", "three")
    key = uuid.uuid4().hex
    list(rpc.stream("tests.tracked_stream", key, 3))
    assert procs.STREAMS[key] == {"produced": 3, "closed": True}


def test_astream(rpcapp_local: LocalClient) -> None:
    async def main() -> list[Any]:
        return [item async for item in rpc.astream("tests.count_up", 3)]

    assert asyncio.run(main()) == [0, 1, 2]

    async def failing() -> list[Any]:
        got = []
        try:
            async for item in rpc.astream("tests.stream_fail", 1):
                got.append(item)
        except RemoteError:
            got.append("error")
        return got

    assert asyncio.run(failing()) == [0, "error"]


# -- events ------------------------------------------------------------------------------
def test_publish_runs_every_subscriber_here(rpcapp_local: LocalClient, caplog: pytest.LogCaptureFixture) -> None:
    procs.LOCAL_EVENTS.clear()
    with caplog.at_level(logging.WARNING, logger="rpcapp.events"):
        event_id = rpcapp.publish("tests.local_happened", {"n": 1, "at": dt.date(2026, 1, 1)})
    assert event_id and isinstance(event_id, str)
    payload = {"n": 1, "at": "2026-01-01"}  # as encoded on the wire
    assert sorted(procs.LOCAL_EVENTS) == [("audit", payload), ("broadcast", payload)]
    assert "this handler always fails" in caplog.text  # logged, not raised
    assert rpcapp_local.events == [("tests.local_happened", payload)]
    assert rpc.publish("nobody.listens", {}) and rpcapp_local.events[-1] == ("nobody.listens", {})
    with pytest.raises(InvalidParams):
        rpcapp.publish("two words", {})
    with pytest.raises(InvalidParams, match="cannot be encoded"):
        rpcapp.publish("tests.local_happened", {"x": object()})


def test_procedures_publish_and_call_from_inside(rpcapp_local: LocalClient) -> None:
    procs.LOCAL_EVENTS.clear()
    assert rpc.call("tests.publish_then_call", 5) == 5
    assert ("audit", {"n": 5}) in procs.LOCAL_EVENTS
    assert [name for name, _, _ in rpcapp_local.calls] == ["tests.publish_then_call", "tests.echo"]


@pytest.mark.django_db(transaction=True)
def test_publish_on_commit_goes_through_the_outbox_locally(rpcapp_local: LocalClient) -> None:
    from django.db import transaction

    from rpcapp.models import OutboxMessage

    procs.LOCAL_EVENTS.clear()
    with transaction.atomic():
        rpcapp.publish("tests.local_happened", {"n": 9}, on_commit=True)
        assert procs.LOCAL_EVENTS == []
    assert ("audit", {"n": 9}) in procs.LOCAL_EVENTS
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_the_database_catalog_is_not_read(rpcapp_local: LocalClient) -> None:
    from rpcapp.models import Service

    Service.objects.create(name="tests", enabled=False, draining=True)
    assert rpc.call("tests.echo", 1) == 1


# -- installing and restoring ------------------------------------------------------------
def test_without_local_mode_calls_need_redis() -> None:
    with pytest.raises(ServiceUnavailable):
        rpc.call("tests.echo", 1, timeout=0.3)


def test_restored_on_exit_even_on_error_and_nested() -> None:
    built = runtime.get_client()
    with pytest.raises(ValueError), local_calls() as outer:
        assert runtime.get_client() is outer
        with local_calls() as inner:
            assert runtime.get_client() is inner and inner is not outer
            rpc.call("tests.echo", 1)
        assert runtime.get_client() is outer
        assert inner.calls and not outer.calls
        raise ValueError("leaves the block")
    assert runtime.get_client() is built


def test_process_wide_other_threads_call_locally_too() -> None:
    out: list[Any] = []
    with local_calls():
        t = threading.Thread(target=lambda: out.append(rpc.call("tests.echo", "from a thread")))
        t.start()
        t.join()
    assert out == ["from a thread"]


@local_calls()
def test_decorator_form() -> None:
    assert isinstance(runtime.get_client(), LocalClient)
    assert rpc.call("calculator.add", 2, 2) == 4


def test_decorator_restores_after_the_function() -> None:
    @local_calls()
    def inside() -> Any:
        return runtime.get_client()

    assert isinstance(inside(), LocalClient) and isinstance(inside(), LocalClient)
    assert not isinstance(runtime.get_client(), LocalClient)


def test_a_settings_change_keeps_local_mode(settings: Any) -> None:
    with local_calls() as client:
        settings.RPCAPP = {**settings.RPCAPP, "DEFAULT_TIMEOUT": 3.0}  # resets the built client
        assert runtime.get_client() is client


def test_local_client_gives_the_gateways_an_open_catalog(rpcapp_local: LocalClient) -> None:
    assert rpcapp_local.governor.config("tests").enabled
    assert rpcapp_local.describe("tests.echo").name == "tests.echo"
    with pytest.raises(ServiceUnavailable, match="no Redis"):
        rpcapp_local.transport  # noqa: B018


class LocalModeInATestCase(SimpleTestCase):
    """Django TestCase usage, as docs/testing.md shows it."""

    def setUp(self) -> None:
        self.client_rpc = self.enterContext(local_calls())

    def test_call(self) -> None:
        self.assertEqual(rpc.call("calculator.add", 1, 2), 3)
        self.assertEqual(self.client_rpc.calls, [("calculator.add", [1, 2], {})])


def test_probing_rpc_for_private_names_builds_no_client() -> None:
    # pytest's collection looks for fixture markers on every module-level name,
    # ``rpc`` included: that must not connect (or start an embedded server)
    from rpcapp import rpc

    runtime.reset()
    for name in ("__pytest_wrapped__", "_pytestfixturefunction", "__wrapped__", "_private"):
        with pytest.raises(AttributeError):
            getattr(rpc, name)
    assert runtime._client is None

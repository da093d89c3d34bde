"""The service catalog: sync from code, propagation of admin changes,
timeouts, rate limits, retries and hedging (in-thread workers, real Redis)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from rpcapp import catalog_store, runtime
from rpcapp.client import Client
from rpcapp.errors import InvalidParams, RateLimited, RpcTimeout, ServiceUnavailable
from rpcapp.models import Procedure, Provider, Service
from rpcapp.registry import default_registry
from rpcapp.testing import wait_for
from tests.testapp.rpc import RUNS

pytestmark = pytest.mark.django_db(transaction=True)


def catalog_says(client: Any, service: str, check: Any, timeout: float = 2.0) -> float:
    """Seconds until the client's catalog cache satisfies ``check`` (at most ``timeout``)."""
    started = time.monotonic()
    wait_for(lambda: check(client.governor.config(service)), timeout, interval=0.01, message="catalog propagation")
    return time.monotonic() - started


@pytest.fixture
def synced(client: Any) -> Service:
    catalog_store.sync_registry(default_registry, ["tests"])
    catalog_store.push()
    return Service.objects.get(name="tests")


def test_a_worker_sync_records_code_and_keeps_admin_edits(synced: Service) -> None:
    add = Procedure.objects.get(name="tests.typed")
    assert add.signature.startswith("(when: datetime, day: date, ident: uuid, amount: decimal")
    sleep = Procedure.objects.get(name="tests.sleep")
    assert sleep.timeout == 30.0 and not sleep.idempotent
    # An admin's edits to operational fields...
    sleep.enabled, sleep.timeout, sleep.rate_limit = False, 3.0, "5/s"
    sleep.signature = "(tampered)"
    sleep.save()
    synced.policy = "random"
    synced.save()
    # ...survive the next worker start, while code fields follow the code
    catalog_store.sync_registry(default_registry, ["tests"])
    sleep.refresh_from_db()
    synced.refresh_from_db()
    assert (sleep.enabled, sleep.timeout, sleep.rate_limit) == (False, 3.0, "5/s")
    assert sleep.signature == "(seconds: float) -> float"
    assert synced.policy == "random"


def test_disabling_a_service_makes_calls_fail_at_once(synced: Service, client: Any, worker: Any) -> None:
    assert client.call("tests.echo", 1) == 1
    synced.enabled = False
    synced.save()
    assert catalog_says(client, "tests", lambda c: not c.enabled) < 2.0
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="disabled"):
        client.call("tests.echo", 1)
    assert time.monotonic() - started < 0.1
    fut = client.call_async("tests.echo", 1)
    assert isinstance(fut.exception(timeout=1), ServiceUnavailable)
    with pytest.raises(ServiceUnavailable):
        client.notify("tests.echo", 1)
    synced.enabled = True
    synced.save()
    catalog_says(client, "tests", lambda c: c.enabled)
    assert client.call("tests.echo", 2) == 2


def test_disabling_a_procedure_and_draining_a_service(synced: Service, client: Any, worker: Any) -> None:
    echo = Procedure.objects.get(name="tests.echo")
    echo.enabled = False
    echo.save()
    catalog_says(client, "tests", lambda c: not c.procedure("tests.echo").enabled)
    with pytest.raises(ServiceUnavailable, match="procedure 'tests.echo' is disabled"):
        client.call("tests.echo", 1)
    assert client.call("tests.noop") is None  # the rest of the service still answers
    synced.draining = True
    synced.save()
    catalog_says(client, "tests", lambda c: c.draining)
    with pytest.raises(ServiceUnavailable, match="draining"):
        client.call("tests.noop")


def test_a_changed_timeout_applies_to_the_next_call(synced: Service, client: Any, worker: Any) -> None:
    sleep = Procedure.objects.get(name="tests.sleep")
    sleep.timeout = 0.4
    sleep.save()
    catalog_says(client, "tests", lambda c: c.procedure("tests.sleep").timeout == 0.4)
    started = time.monotonic()
    with pytest.raises(RpcTimeout):
        client.call("tests.sleep", 1.5)
    assert 0.35 < time.monotonic() - started < 1.0
    assert client.call("tests.sleep", 0.5, timeout=2) == 0.5  # an explicit timeout still wins


def test_the_service_default_timeout_applies_to_procedures_without_their_own(synced: Service, client: Any, worker: Any) -> None:
    Procedure.objects.filter(name="tests.sleep").update(timeout=None)
    synced.default_timeout = 0.3
    synced.save()
    catalog_says(client, "tests", lambda c: c.default_timeout == 0.3)
    with pytest.raises(RpcTimeout):
        client.call("tests.sleep", 1.0)


def test_a_procedure_rate_limit_is_shared_by_every_caller(synced: Service, client: Any, worker: Any) -> None:
    echo = Procedure.objects.get(name="tests.echo")
    echo.rate_limit = "5/s"
    echo.save()
    catalog_says(client, "tests", lambda c: c.procedure("tests.echo").rate_limit == "5/s")
    other = Client(runtime.build_transport(), runtime.build_signer(), runtime.client_settings())
    try:
        results = [c.call("tests.echo", i) for i, c in zip(range(5), [client, other] * 3, strict=False)]
        assert results == [0, 1, 2, 3, 4]
        started = time.monotonic()
        with pytest.raises(RateLimited, match=r"procedure 'tests.echo' \(5/s\)"):
            other.call("tests.echo", 5)
        assert time.monotonic() - started < 0.1
        with pytest.raises(RateLimited):
            client.call("tests.echo", 6)
        assert client.call("tests.noop") is None  # other procedures are not limited
        time.sleep(0.25)  # a fifth of a second frees one call
        assert client.call("tests.echo", 7) == 7
    finally:
        other.close()


def test_a_service_rate_limit_covers_all_its_procedures(synced: Service, client: Any, worker: Any) -> None:
    synced.rate_limit = "3/s"
    synced.save()
    catalog_says(client, "tests", lambda c: c.rate_limit == "3/s")
    client.call("tests.echo", 1)
    client.call("tests.noop")
    client.call("tests.echo", 2)
    with pytest.raises(RateLimited, match="service 'tests'"):
        client.call("tests.noop")


def test_retries_an_idempotent_call_inside_its_deadline(synced: Service, client: Any, worker: Any) -> None:
    proc = Procedure.objects.get(name="tests.slow_first")
    proc.retries, proc.retry_backoff = 2, 0.05
    proc.save()
    catalog_says(client, "tests", lambda c: c.procedure("tests.slow_first").retries == 2)
    started = time.monotonic()
    # Each of the 3 attempts gets a third of the 3 s: the first (slow) times out, the second answers.
    assert client.call("tests.slow_first", "retry", 5.0, timeout=3.0) == 2
    assert 0.9 < time.monotonic() - started < 2.5
    assert RUNS["slow_first:retry"] == 2


def test_retries_never_go_past_the_deadline(synced: Service, client: Any, worker: Any) -> None:
    proc = Procedure.objects.get(name="tests.sleep_idem")
    proc.retries = 3
    proc.save()
    catalog_says(client, "tests", lambda c: c.procedure("tests.sleep_idem").retries == 3)
    started = time.monotonic()
    with pytest.raises(RpcTimeout):
        client.call("tests.sleep_idem", 5.0, timeout=1.0)
    assert time.monotonic() - started < 1.3


def test_hedging_sends_a_second_copy_and_the_first_answer_wins(synced: Service, client: Any, worker: Any) -> None:
    proc = Procedure.objects.get(name="tests.slow_first")
    proc.hedge_after = 0.2
    proc.save()
    catalog_says(client, "tests", lambda c: c.procedure("tests.slow_first").hedge_after == 0.2)
    started = time.monotonic()
    assert client.call("tests.slow_first", "hedge", 2.0) == 2  # the second copy's answer
    assert time.monotonic() - started < 1.0
    assert RUNS["slow_first:hedge"] == 2


def test_only_idempotent_procedures_are_retried(synced: Service, client: Any, worker: Any) -> None:
    Procedure.objects.filter(name="tests.count").update(retries=3)  # bypasses the admin form's check
    catalog_store.push(["tests"])
    catalog_says(client, "tests", lambda c: c.procedure("tests.count").retries == 3)
    spec = client._spec("tests.count")
    assert client.governor.resilience(spec) is None


def test_changes_that_bypass_signals_arrive_with_the_periodic_push(settings: Any, rpc_conf: dict[str, Any]) -> None:
    import threading

    settings.RPCAPP = {**rpc_conf, "CATALOG_REFRESH": 1.0}
    client = runtime.get_client()
    catalog_store.sync_registry(default_registry, ["tests"])
    catalog_store.push()
    stop = threading.Event()
    catalog_store.start_refresher(stop)
    try:
        Service.objects.filter(name="tests").update(enabled=False)  # no signal
        assert catalog_says(client, "tests", lambda c: not c.enabled, timeout=3.0) < 3.0
    finally:
        stop.set()


def test_no_database_query_per_call(synced: Service, client: Any, worker: Any, django_assert_num_queries: Any) -> None:
    client.call("tests.echo", 0)
    with django_assert_num_queries(0):
        for i in range(20):
            assert client.call("tests.echo", i) == i


def test_no_provider_fails_quickly(synced: Service, client: Any) -> None:
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        client.call("tests.echo", 1, timeout=10)
    assert time.monotonic() - started < 2.0


def test_unknown_policy_values_and_bad_rate_limits_are_refused_by_validation() -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        Service(name="x", rate_limit="fast").full_clean()
    with pytest.raises(ValidationError):
        Service(name="x", policy="fastest").full_clean()
    Service(name="x", rate_limit="6000/m").full_clean()


def test_providers_are_recorded_with_their_live_state(client: Any, worker: Any) -> None:
    Service.objects.create(name="tests")
    live = catalog_store.refresh_providers()
    row = Provider.objects.get(id=worker.name)
    assert live[worker.name]["state"] == "live" and row.state == "live"
    assert row.services == worker.services and row.concurrency == 4


def test_invalid_params_still_come_first(synced: Service, client: Any) -> None:
    with pytest.raises(InvalidParams):
        client.call("tests.echo")

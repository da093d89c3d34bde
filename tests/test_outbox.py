"""The transactional outbox: events and notifications sent on commit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction

from rpcapp import publish, runtime
from rpcapp.models import OutboxMessage
from rpcapp.outbox import _claim, notify_on_commit, relay
from rpcapp.tasks import relay_outbox
from rpcapp.testing import running_worker, wait_for
from tests.test_events import Tally

pytestmark = pytest.mark.django_db(transaction=True)


def queued(client: Any, service: str) -> int:
    return int(client.transport.redis.xlen(f"{client.transport.ns}:{{{service}}}:requests"))


def test_an_event_is_sent_when_the_transaction_commits(client: Any, rpc_conf: dict[str, Any]) -> None:
    with transaction.atomic():
        event_id = publish("tests.happened", {"n": 1}, on_commit=True)
        assert queued(client, "audit") == 0  # not before the commit
        assert OutboxMessage.objects.count() == 1
    assert queued(client, "audit") == 1 and queued(client, "mailer") == 1
    assert OutboxMessage.objects.count() == 0
    with running_worker(["audit"]):
        assert Tally(rpc_conf).wait("audit", 1) == {"1": 1}
    assert len(event_id) == 32


def test_a_rollback_sends_nothing(client: Any) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        publish("tests.happened", {"n": 1}, on_commit=True)
        notify_on_commit("tests.echo", 1)
        raise RuntimeError("rolled back")
    assert queued(client, "audit") == 0 and queued(client, "tests") == 0
    assert OutboxMessage.objects.count() == 0


def test_a_notification_runs_after_the_commit(client: Any, tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    with running_worker(["tests"]):
        with transaction.atomic():
            notify_on_commit("tests.touch", str(marker))
            time.sleep(0.3)
            assert not marker.exists()
        wait_for(marker.exists, 5, message="the notified procedure ran")


def test_a_redis_outage_at_commit_loses_nothing(own_conf: dict[str, Any], own_redis: Any) -> None:
    # Given Redis is down when the transaction commits
    own_redis.stop()
    started = time.monotonic()
    with transaction.atomic():
        event_id = publish("tests.happened", {"n": 5}, on_commit=True)
    assert time.monotonic() - started < 3.0  # the commit is not held up
    row = OutboxMessage.objects.get()
    assert row.event_id == event_id and row.attempts == 1 and "redis" in row.last_error
    assert relay() == 0  # still down: kept (the Celery task cannot even take its lock: it skips)
    assert relay_outbox() is None
    # When Redis is back, the relay (a Celery beat task) sends it
    own_redis.start()
    runtime.reset()
    assert relay_outbox() == 1
    assert OutboxMessage.objects.count() == 0
    with running_worker(["audit"]):
        assert Tally(own_conf).wait("audit", 1) == {"5": 1}


def test_a_refused_message_is_kept_as_failed_and_not_retried(client: Any) -> None:
    with transaction.atomic():
        notify_on_commit("tests.echo", 1, 2)  # one argument too many
    row = OutboxMessage.objects.get()
    assert row.failed and "invalid_params" in row.last_error
    assert relay() == 0
    assert OutboxMessage.objects.get().attempts == 1


def test_rows_are_sent_in_order_and_a_row_is_claimed_by_one_relay(client: Any) -> None:
    rows = [OutboxMessage.objects.create(kind="notify", name="tests.echo", payload={"args": [n], "kwargs": {}}) for n in range(3)]
    assert _claim(rows[1], None)
    assert not _claim(rows[1], None)  # a second relay cannot take it meanwhile
    assert relay() == 2
    assert list(OutboxMessage.objects.values_list("pk", flat=True)) == [rows[1].pk]

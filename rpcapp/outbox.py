"""Layer 3: the transactional outbox for events and notifications.

``publish(..., on_commit=True)`` and :func:`notify_on_commit` write a row in
the current transaction and relay it once the transaction commits: a
rollback sends nothing, and a row that could not be sent (Redis away) stays
until :func:`relay` (the ``relay_outbox`` job of ``rpcapp.maintenance``)
sends it. Delivery is at least once: a relay that dies between sending and
deleting a row sends it again; an event keeps its id across such repeats.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from . import conf
from .errors import RpcError, ServiceUnavailable
from .models import OutboxMessage

log = logging.getLogger("rpcapp.outbox")

CLAIM_FOR = dt.timedelta(seconds=30)


def publish_on_commit(topic: str, payload: Any, using: str | None = None) -> str:
    """Publish ``topic`` once the current transaction commits; returns the event id."""
    event_id = uuid.uuid4().hex
    row = OutboxMessage.objects.using(using).create(kind=OutboxMessage.EVENT, name=topic, payload=payload, event_id=event_id)
    transaction.on_commit(lambda: relay(using=using, pks=[row.pk]), using=using)
    return event_id


def notify_on_commit(name: str, /, *args: Any, **kwargs: Any) -> None:
    """``rpc.notify(name, *args, **kwargs)`` once the current transaction commits.
    (The default database; use :func:`notify_on_commit_using` for another.)"""
    notify_on_commit_using(None, name, args, kwargs)


def notify_on_commit_using(using: str | None, name: str, args: Any, kwargs: dict[str, Any]) -> None:
    row = OutboxMessage.objects.using(using).create(kind=OutboxMessage.NOTIFY, name=name, payload={"args": list(args), "kwargs": kwargs})
    transaction.on_commit(lambda: relay(using=using, pks=[row.pk]), using=using)


def relay(using: str | None = None, limit: int | None = None, pks: list[int] | None = None) -> int:
    """Send waiting outbox rows in order; returns how many were sent.

    Stops at the first row Redis could not take (tried once, no waiting):
    that row and the rest stay for the next relay."""
    from .runtime import get_client

    client = get_client()
    rows = OutboxMessage.objects.using(using).filter(failed=False).order_by("id")
    if pks is not None:
        rows = rows.filter(pk__in=pks)
    sent = 0
    for row in list(rows[: limit or conf.get().OUTBOX_BATCH]):
        if not _claim(row, using):
            continue
        try:
            _send(client, row)
        except ServiceUnavailable as exc:
            OutboxMessage.objects.using(using).filter(pk=row.pk).update(claimed_until=None, last_error=str(exc))
            log.warning("outbox relay paused, %s", exc)
            break
        except RpcError as exc:  # refused for good: kept for inspection, not retried
            OutboxMessage.objects.using(using).filter(pk=row.pk).update(failed=True, last_error=f"{exc.code}: {exc}")
            log.error("outbox message %s refused: %s", row.pk, exc)
            continue
        OutboxMessage.objects.using(using).filter(pk=row.pk).delete()
        sent += 1
    return sent


def _claim(row: OutboxMessage, using: str | None) -> bool:
    """Take the row for this relay (two relays never send one row at once)."""
    now = timezone.now()
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    return bool(OutboxMessage.objects.using(using).filter(free, pk=row.pk).update(claimed_until=now + CLAIM_FOR, attempts=F("attempts") + 1))


def _send(client: Any, row: OutboxMessage) -> None:
    if row.kind == OutboxMessage.EVENT:
        client.publish(row.name, row.payload, timeout=0, event_id=row.event_id or None)
    else:
        payload = row.payload or {}
        client.notify_once(row.name, payload.get("args", []), payload.get("kwargs", {}))

"""Layer 3: rpcapp's database tables."""

from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class OutboxMessage(models.Model):
    """An event or notification written in a transaction, sent to Redis once it
    commits (see ``rpcapp.outbox``)."""

    EVENT = "event"
    NOTIFY = "notify"
    KINDS = [(EVENT, "event"), (NOTIFY, "notify")]

    kind = models.CharField(max_length=10, choices=KINDS)
    name = models.CharField(max_length=200, help_text="The event's topic, or the procedure notified.")
    payload = models.JSONField(encoder=DjangoJSONEncoder, help_text="The event's payload, or {args, kwargs}.")
    event_id = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    claimed_until = models.DateTimeField(null=True, blank=True)
    failed = models.BooleanField(default=False, help_text="Refused for good (e.g. invalid arguments); not retried.")
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "outbox message"

    def __str__(self) -> str:
        return f"{self.kind} {self.name} #{self.pk}"

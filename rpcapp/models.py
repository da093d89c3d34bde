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


POLICY_CHOICES = [
    ("queue", "queue: one shared queue, competing workers"),
    ("round_robin", "round robin"),
    ("random", "random"),
    ("weighted", "weighted (provider weights)"),
    ("least_busy", "least busy (fewest calls in flight)"),
    ("consistent_hash", "consistent hash (sticky by an argument)"),
]


def _validate_rate(value: str) -> None:
    from django.core.exceptions import ValidationError

    from .catalog import parse_rate

    try:
        parse_rate(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class Service(models.Model):
    """A service in the catalog: its procedures share a queue and its settings."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True, help_text="Disabled: every call fails at once with ServiceUnavailable.")
    policy = models.CharField(max_length=20, choices=POLICY_CHOICES, default="queue")
    hash_argument = models.CharField(
        max_length=100, blank=True, help_text="consistent_hash: the argument whose value picks the provider (default: the first)."
    )
    default_timeout = models.FloatField(null=True, blank=True, help_text="Seconds; for procedures without their own timeout.")
    rate_limit = models.CharField(max_length=30, blank=True, validators=[_validate_rate], help_text='For the whole service, e.g. "100/s" or "6000/m".')
    draining = models.BooleanField(default=False, help_text="Draining: new calls fail at once with ServiceUnavailable.")
    allowed_groups = models.ManyToManyField("auth.Group", blank=True, help_text="If set, only members may call it through the HTTP gateways.")

    class Meta:
        ordering = ["name"]
        permissions = [("call_procedure", "Can call procedures through the HTTP gateways")]

    def __str__(self) -> str:
        return self.name


class Procedure(models.Model):
    """A procedure of a service. Signature, doc, idempotent, lock and stream come
    from code (a worker syncs them); the operational fields are the admin's."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="procedures")
    name = models.CharField(max_length=300, unique=True, help_text='The full dotted name, e.g. "calculator.add".')
    signature = models.TextField(blank=True)
    doc = models.TextField(blank=True)
    enabled = models.BooleanField(default=True, help_text="Disabled: calls fail at once with ServiceUnavailable.")
    timeout = models.FloatField(null=True, blank=True, help_text="Seconds; overrides the service's default timeout.")
    idempotent = models.BooleanField(default=False)
    lock = models.CharField(max_length=200, blank=True)
    rate_limit = models.CharField(max_length=30, blank=True, validators=[_validate_rate], help_text='e.g. "10/s".')
    stream = models.BooleanField(default=False)
    retries = models.PositiveSmallIntegerField(default=0, help_text="Idempotent only: attempts after the first on ServiceUnavailable or timeout.")
    retry_backoff = models.FloatField(default=0.05, help_text="Seconds before the first retry; doubled for each next one.")
    hedge_after = models.FloatField(null=True, blank=True, help_text="Idempotent only: seconds without a reply before a second copy is sent.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Provider(models.Model):
    """A worker serving some services. Live state (state, heartbeat, in flight,
    calls served) is read from Redis; the admin sets the weight and drains."""

    STATES = [("live", "live"), ("draining", "draining"), ("dead", "dead")]

    id = models.CharField(max_length=200, primary_key=True)
    host = models.CharField(max_length=200, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    services = models.JSONField(default=list)
    concurrency = models.PositiveIntegerField(default=0)
    weight = models.PositiveIntegerField(default=1, help_text="Share of the calls under the weighted policy.")
    drain = models.BooleanField(default=False, help_text="Drained by an admin: takes no new work, finishes what it has.")
    started_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=STATES, default="live")
    calls_served = models.PositiveBigIntegerField(default=0)
    in_flight = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.id


class CallRecord(models.Model):
    """One call, as its worker (and, for timeouts and late replies, its caller) saw it."""

    STATUS_EXTRA = [("expired", "expired before running"), ("late", "late reply (the caller had given up)")]

    id = models.CharField(max_length=64, primary_key=True)
    procedure = models.CharField(max_length=300)
    provider = models.CharField(max_length=200, blank=True)
    caller = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=30, help_text='"ok", an error code, "timeout" (at the caller), "expired" or "late".')
    queued_ms = models.FloatField(null=True, blank=True)
    run_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    args_preview = models.CharField(max_length=500, blank=True)
    payload = models.JSONField(null=True, blank=True, help_text="A failed call's arguments, kept to replay it (not when any looks secret).")
    trace_id = models.CharField(max_length=64, blank=True, db_index=True)
    parent_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("replay_call", "Can replay a recorded call from the dashboard")]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="rpcapp_call_newest"),
            models.Index(fields=["procedure", "-created_at"]),
            models.Index(fields=["status", "-created_at"]),
            models.Index(fields=["provider", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.procedure} {self.id}"


class CallRollup(models.Model):
    """Calls of one procedure in one minute (``period`` 1) or one hour
    (``period`` 60): count, errors, and a latency histogram, one column per
    bucket (``rpcapp.history.BUCKETS_MS``) so that the database sums them."""

    procedure = models.CharField(max_length=300)
    minute = models.DateTimeField(help_text="Start of the period.")
    period = models.PositiveSmallIntegerField(default=1, help_text="Minutes covered: 1, or 60 for the hourly sums of the minute rows.")
    count = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    total_ms_sum = models.FloatField(default=0.0)
    b0 = models.PositiveIntegerField(default=0)
    b1 = models.PositiveIntegerField(default=0)
    b2 = models.PositiveIntegerField(default=0)
    b3 = models.PositiveIntegerField(default=0)
    b4 = models.PositiveIntegerField(default=0)
    b5 = models.PositiveIntegerField(default=0)
    b6 = models.PositiveIntegerField(default=0)
    b7 = models.PositiveIntegerField(default=0)
    b8 = models.PositiveIntegerField(default=0)
    b9 = models.PositiveIntegerField(default=0)
    b10 = models.PositiveIntegerField(default=0)
    b11 = models.PositiveIntegerField(default=0)
    b12 = models.PositiveIntegerField(default=0)
    b13 = models.PositiveIntegerField(default=0)
    b14 = models.PositiveIntegerField(default=0)

    BUCKET_FIELDS = [f"b{i}" for i in range(15)]

    class Meta:
        ordering = ["minute"]
        constraints = [models.UniqueConstraint(fields=["procedure", "period", "minute"], name="rpcapp_rollup_unique")]
        indexes = [models.Index(fields=["period", "minute"])]

    def __str__(self) -> str:
        return f"{self.procedure} @ {self.minute:%Y-%m-%d %H:%M}"

    @property
    def buckets(self) -> list[int]:
        return [getattr(self, f) for f in self.BUCKET_FIELDS]

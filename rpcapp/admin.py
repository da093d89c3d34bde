"""Layer 3: rpcapp in the Django admin: the service catalog, the outbox, parked events."""

from __future__ import annotations

import threading
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from . import catalog_store, conf
from .errors import RpcError
from .models import OutboxMessage, Procedure, Provider, Service
from .registry import default_registry


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "name", "created_at", "attempts", "failed", "last_error")
    list_filter = ("kind", "failed")
    search_fields = ("name", "event_id", "last_error")
    readonly_fields = ("event_id", "created_at", "attempts", "claimed_until")
    change_list_template = "rpcapp/admin/outbox_change_list.html"

    def get_urls(self) -> list[Any]:
        extra = [
            path("parked-events/", self.admin_site.admin_view(self.parked_events), name="rpcapp_parked_events"),
        ]
        return extra + super().get_urls()

    def parked_events(self, request: HttpRequest) -> HttpResponse:
        """Events whose handlers kept failing, per service; POST replays one."""
        from .runtime import get_client

        if not self.has_change_permission(request):
            return HttpResponse(status=403)
        client = get_client()
        if request.method == "POST":
            service, entry = request.POST.get("service", ""), request.POST.get("entry", "")
            if service in default_registry.services() and client.replay_event(service, entry):
                LogEntry.objects.create(
                    user_id=request.user.pk,
                    content_type=ContentType.objects.get_for_model(OutboxMessage),
                    object_id=entry,
                    object_repr=f"parked event {entry} of {service}",
                    action_flag=CHANGE,
                    change_message=f"Replayed parked event {entry} of service {service}.",
                )
                messages.success(request, f"Event {entry} of {service} queued again.")
            else:
                messages.error(request, f"No parked event {entry} in {service}.")
            return HttpResponseRedirect(reverse("admin:rpcapp_parked_events"))
        rows, errors = [], []
        for service in default_registry.services():
            try:
                rows += [{**p, "service": service} for p in client.parked_events(service)]
            except RpcError as exc:
                errors.append(f"{service}: {exc}")
        context = {**self.admin_site.each_context(request), "title": "Parked events", "rows": rows, "errors": errors, "opts": self.model._meta}
        return TemplateResponse(request, "rpcapp/admin/parked_events.html", context)


# -- the service catalog ---------------------------------------------------------
def _set(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: Any, message: str, **values: Any) -> None:
    """Save each object (its signal publishes the change) and log it in the admin history."""
    for obj in queryset:
        for field, value in values.items():
            setattr(obj, field, value)
        obj.save(update_fields=list(values))
        modeladmin.log_change(request, obj, message)
    modeladmin.message_user(request, f"{message}: {', '.join(str(o) for o in queryset)}.")


_LIVE = threading.local()  # the provider records read for the changelist being rendered
CODE_FIELDS = ("name", "service", "signature", "doc", "idempotent", "lock", "stream")
"""A Procedure's fields that come from code: read-only for procedures defined in this project."""


class ProcedureInlineForm(forms.ModelForm):
    """A row of the service's procedure table: the code fields of a procedure
    defined in this project's code come from the code (kept whatever is posted)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and default_registry.find(self.instance.name) is not None:
            for name in set(CODE_FIELDS) & set(self.fields):
                self.fields[name].disabled = True


class ProcedureInline(admin.TabularInline):
    model = Procedure
    form = ProcedureInlineForm
    fields = ("name", "signature", "enabled", "timeout", "rate_limit", "idempotent", "retries", "hedge_after")
    readonly_fields = ("signature",)
    extra = 0
    show_change_link = True


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    list_display = ("name", "enabled", "draining", "policy", "default_timeout", "rate_limit", "procedure_count", "live_providers")
    list_filter = ("enabled", "draining", "policy")
    search_fields = ("name", "description")
    filter_horizontal = ("allowed_groups",)
    inlines = [ProcedureInline]
    actions = ["enable", "disable", "start_draining", "stop_draining"]

    @admin.display(description="procedures")
    def procedure_count(self, obj: Service) -> int:
        return obj.procedures.count()

    @admin.display(description="live providers")
    def live_providers(self, obj: Service) -> str:
        from .protocol import now_ms
        from .runtime import get_client

        try:
            live, known = get_client().transport.count_live(obj.name, now_ms() - int(conf.get().PROVIDER_TTL * 1000))
        except RpcError:
            return "?"
        return f"{live} of {known}"

    @admin.action(description="Enable the selected services")
    def enable(self, request: HttpRequest, queryset: Any) -> None:
        _set(self, request, queryset, "Enabled", enabled=True)

    @admin.action(description="Disable the selected services (calls fail at once)")
    def disable(self, request: HttpRequest, queryset: Any) -> None:
        _set(self, request, queryset, "Disabled", enabled=False)

    @admin.action(description="Drain the selected services (new calls refused)")
    def start_draining(self, request: HttpRequest, queryset: Any) -> None:
        _set(self, request, queryset, "Draining", draining=True)

    @admin.action(description="Stop draining the selected services")
    def stop_draining(self, request: HttpRequest, queryset: Any) -> None:
        _set(self, request, queryset, "Stopped draining", draining=False)


class ProcedureForm(forms.ModelForm):
    class Meta:
        model = Procedure
        fields = [
            "service", "name", "signature", "doc", "enabled", "timeout", "idempotent", "lock",
            "rate_limit", "stream", "retries", "retry_backoff", "hedge_after",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if (data.get("retries") or data.get("hedge_after")) and not data.get("idempotent", getattr(self.instance, "idempotent", False)):
            raise forms.ValidationError("Only idempotent procedures may be retried or hedged.")
        return data


@admin.register(Procedure)
class ProcedureAdmin(admin.ModelAdmin):
    form = ProcedureForm
    list_display = ("name", "service", "enabled", "timeout", "rate_limit", "idempotent", "retries", "hedge_after", "stream", "signature")
    list_filter = ("enabled", "idempotent", "stream", "service")
    search_fields = ("name", "doc")
    actions = ["enable", "disable"]
    CODE_FIELDS = CODE_FIELDS

    def get_readonly_fields(self, request: HttpRequest, obj: Procedure | None = None) -> tuple[str, ...]:
        # Defined in this project's code: the code says (a worker syncs it). A
        # procedure registered by hand (served from elsewhere) is edited here.
        if obj is not None and default_registry.find(obj.name) is not None:
            return self.CODE_FIELDS
        return ()

    @admin.action(description="Enable the selected procedures")
    def enable(self, request: HttpRequest, queryset: Any) -> None:
        _set(self, request, queryset, "Enabled", enabled=True)

    @admin.action(description="Disable the selected procedures (calls fail at once)")
    def disable(self, request: HttpRequest, queryset: Any) -> None:
        _set(self, request, queryset, "Disabled", enabled=False)


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ("id", "host", "pid", "service_list", "live_state", "heartbeat_age", "live_in_flight", "live_calls_served", "concurrency", "weight", "drain")
    list_editable = ("weight",)
    list_filter = ("state", "drain")
    search_fields = ("id", "host")
    readonly_fields = ("id", "host", "pid", "services", "concurrency", "started_at", "last_heartbeat", "state", "calls_served", "in_flight")
    actions = ["drain_providers", "undrain_providers"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # providers are workers: they appear when they start

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        try:
            _LIVE.records = catalog_store.refresh_providers()  # the rows as Redis has them now
        except RpcError as exc:
            _LIVE.records = {}
            messages.warning(request, f"Live state unavailable: {exc}")
        return super().changelist_view(request, extra_context)

    def _info(self, obj: Provider) -> dict[str, Any]:
        records: dict[str, dict[str, Any]] = getattr(_LIVE, "records", {})
        return records.get(obj.id, {})

    @admin.display(description="services")
    def service_list(self, obj: Provider) -> str:
        return ", ".join(obj.services or [])

    @admin.display(description="state")
    def live_state(self, obj: Provider) -> str:
        return str(self._info(obj).get("state", "dead"))

    @admin.display(description="heartbeat age")
    def heartbeat_age(self, obj: Provider) -> str:
        age = self._info(obj).get("heartbeat_age")
        return "—" if age is None else f"{age:.1f} s"

    @admin.display(description="in flight")
    def live_in_flight(self, obj: Provider) -> int:
        return int(self._info(obj).get("in_flight", 0))

    @admin.display(description="calls served")
    def live_calls_served(self, obj: Provider) -> int:
        return int(self._info(obj).get("calls_served", obj.calls_served))

    @admin.action(description="Drain the selected providers (no new work; they finish what they have)")
    def drain_providers(self, request: HttpRequest, queryset: Any) -> None:
        _set(self, request, queryset, "Drained", drain=True)

    @admin.action(description="Stop draining the selected providers")
    def undrain_providers(self, request: HttpRequest, queryset: Any) -> None:
        _set(self, request, queryset, "Stopped draining", drain=False)

"""Layer 3: rpcapp in the Django admin: the outbox, and parked events."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from .errors import RpcError
from .models import OutboxMessage
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

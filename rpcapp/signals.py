"""Layer 3: catalog changes saved anywhere (admin, shell, code) reach Redis on commit."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from .catalog_store import push_on_commit
from .models import Procedure, Provider, Service


@receiver([post_save, post_delete], sender=Service)
def _service_changed(sender: Any, instance: Service, **kwargs: Any) -> None:
    push_on_commit([instance.name])


@receiver([post_save, post_delete], sender=Procedure)
def _procedure_changed(sender: Any, instance: Procedure, **kwargs: Any) -> None:
    try:
        push_on_commit([instance.service.name])
    except Service.DoesNotExist:  # deleted with its service, which pushes itself
        pass


@receiver([post_save, post_delete], sender=Provider)
def _provider_changed(sender: Any, instance: Provider, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and not {"weight", "drain"} & set(update_fields):
        return  # live-state bookkeeping: nothing callers use changed
    push_on_commit(instance.services or [])


@receiver(m2m_changed, sender=Service.allowed_groups.through)
def _groups_changed(sender: Any, instance: Any, action: str, **kwargs: Any) -> None:
    if action.startswith("post_") and isinstance(instance, Service):
        push_on_commit([instance.name])

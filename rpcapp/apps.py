"""Layer 3: the Django app: discovers ``rpc.py`` modules and registers checks."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class RpcAppConfig(AppConfig):
    name = "rpcapp"
    verbose_name = "RPC"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the system checks)
            conf,  # noqa: F401  (connects setting_changed)
            signals,  # noqa: F401  (pushes catalog changes to Redis)
        )

        autodiscover_modules("rpc")
        from django.contrib import admin

        if admin.site.index_template is None:  # a link to the dashboard on the admin's index
            admin.site.index_template = "rpcapp/admin_index.html"

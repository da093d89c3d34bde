"""The minimal install: ``"rpcapp"`` in INSTALLED_APPS and ``migrate``, but no
``include("rpcapp.urls")``. Every admin page still answers, and a system
check (rpcapp.W010) says the dashboard and gateways are not mounted."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.core import checks
from django.urls import path, reverse

from rpcapp import checks as rpcapp_checks

# This module is the URLconf of the tests below: the admin alone, as in a fresh project.
urlpatterns = [path("admin/", admin.site.urls)]

pytestmark = pytest.mark.django_db(transaction=True)
MINIMAL = "tests.test_minimal_install"


def rpcapp_admin_urls() -> list[str]:
    """Every rpcapp model's changelist and add page registered in the admin."""
    urls = []
    for model in apps.get_app_config("rpcapp").get_models():
        if admin.site.is_registered(model):
            name = model._meta.model_name
            urls.append(reverse(f"admin:rpcapp_{name}_changelist"))
            urls.append(reverse(f"admin:rpcapp_{name}_add"))
    return urls


def test_every_admin_page_answers_without_the_include(settings: Any, rpc_conf: dict[str, Any], admin_client: Any) -> None:
    # given a project that mounts only the admin
    settings.ROOT_URLCONF = MINIMAL
    pages = [reverse("admin:index"), reverse("admin:app_list", args=["rpcapp"]), reverse("admin:rpcapp_parked_events"), *rpcapp_admin_urls()]
    assert len(pages) > 5
    for url in pages:
        # when a superuser opens it, then it answers 200 (add pages of read-only models: 403)
        answer = admin_client.get(url)
        assert answer.status_code in (200, 403), (url, answer.status_code, answer.content[:300])
        assert answer.status_code == 200 or url.endswith("/add/"), url
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert "rpcapp-dashboard-link" not in index  # no link to a dashboard that is not mounted


def test_admin_index_links_the_dashboard_when_mounted(rpc_conf: dict[str, Any], admin_client: Any) -> None:
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert "rpcapp-dashboard-link" in index
    assert reverse("rpcapp:dashboard") in index


def test_check_warns_when_the_urls_are_not_mounted(settings: Any) -> None:
    settings.ROOT_URLCONF = MINIMAL
    found = [m for m in rpcapp_checks.check_urls(None) if m.id == "rpcapp.W010"]
    assert len(found) == 1
    assert found[0].level == checks.WARNING
    assert 'path("rpc/", include("rpcapp.urls"))' in found[0].hint
    assert "dashboard" in found[0].msg and "gateways" in found[0].msg
    assert "rpcapp.W010" in [m.id for m in checks.run_checks(tags=[checks.Tags.urls])]


def test_check_is_quiet_with_the_include() -> None:
    assert [m for m in rpcapp_checks.check_urls(None) if m.id == "rpcapp.W010"] == []
    assert "rpcapp.W010" not in [m.id for m in checks.run_checks(tags=[checks.Tags.urls])]

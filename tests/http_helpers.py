"""Users and credentials for the HTTP tests."""

from __future__ import annotations

import base64
from typing import Any

import pytest


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.fixture
def caller(django_user_model: Any) -> Any:
    """A user holding rpcapp.call_procedure (password "pw")."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("carol", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="call_procedure"))
    return user


@pytest.fixture
def nobody(django_user_model: Any) -> Any:
    """An authenticated user without the permission (password "pw")."""
    return django_user_model.objects.create_user("dave", password="pw")

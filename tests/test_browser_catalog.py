"""The catalog's Provider list in a real headless Chromium."""

from __future__ import annotations

import time
from typing import Any

import pytest

from rpcapp import catalog_store
from rpcapp.registry import default_registry
from rpcapp.testing import running_worker
from tests.browser import chromium, log_in, screenshot  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_the_provider_list_shows_live_workers(chromium: Any, live_server: Any, client: Any, django_user_model: Any) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    django_user_model.objects.create_superuser("admin", "admin@example.com", "admin")
    catalog_store.sync_registry(default_registry, ["calculator", "math", "tests"])
    with running_worker(["calculator", "math"], name="web-1:4242:demo", concurrency=4), running_worker(["tests"], name="web-2:4343:demo", concurrency=8):
        for i in range(5):
            client.call("calculator.add", i, 1)
        busy = [client.call_async("tests.sleep", 2.0) for _ in range(3)]
        time.sleep(0.6)  # a few heartbeats report them in flight
        log_in(chromium, live_server.url, "admin", "admin")
        chromium.set_window_size(1800, 640)
        chromium.get(f"{live_server.url}/admin/rpcapp/provider/")
        WebDriverWait(chromium, 10).until(lambda d: d.find_elements(By.ID, "result_list"))
        rows = chromium.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
        text = chromium.find_element(By.ID, "result_list").text
        assert len(rows) == 2
        assert "web-1:4242:demo" in text and "web-2:4343:demo" in text
        assert "calculator, math" in text and "live" in text
        weight = chromium.find_element(By.NAME, "form-0-weight")
        assert weight.get_attribute("value") == "1"  # weights are edited in the list
        cells = [c.text for c in rows[1].find_elements(By.CSS_SELECTOR, "td")]
        assert "3" in cells  # the three calls in flight on web-2
        screenshot(chromium, "providers.png")
        for fut in busy:
            assert fut.result(timeout=5) == 2.0

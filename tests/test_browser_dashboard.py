"""The dashboard in a real headless Chromium: log in as staff, see the charts
drawn with real data from real calls, filter the history, open a call."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from django.utils import timezone

from rpcapp import history
from rpcapp.errors import RemoteError
from rpcapp.models import CallRecord
from tests.browser import chromium, log_in, screenshot  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_the_dashboard_in_a_browser(chromium: Any, live_server: Any, client: Any, worker: Any, django_user_model: Any) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    django_user_model.objects.create_user("sam", password="pw", is_staff=True)
    for i in range(40):
        client.call("calculator.add", i, 1)
        client.call("math.fib", i % 30)
    for _ in range(4):
        with pytest.raises(RemoteError):
            client.call("calculator.divide", 1, 0)
    client.call("tests.nested", 0.02)
    time.sleep(0.3)
    history.record_now()
    # Spread these real calls over the last 40 minutes, so that the charts show a curve
    for i, record in enumerate(CallRecord.objects.order_by("created_at")):
        CallRecord.objects.filter(pk=record.pk).update(created_at=record.created_at - dt.timedelta(minutes=(i * 7) % 40))
    history.roll_up(since=timezone.now() - dt.timedelta(hours=1))

    chromium.set_window_size(1400, 1300)
    log_in(chromium, live_server.url, "sam", "pw")
    chromium.get(f"{live_server.url}/rpc/dashboard/")
    # The charts are drawn by Chart.js with the real points
    points = WebDriverWait(chromium, 10).until(
        lambda d: d.execute_script("return window.rpcappCharts && window.rpcappCharts.throughput.data.datasets[0].data")
    )
    assert sum(points) == 86  # 40 + 40 + 4, and the nested call with the call it made
    assert len(points) == 61 and sum(1 for p in points if p) > 10  # a point a minute, many with calls
    latency = chromium.execute_script("return window.rpcappCharts.latency.data.datasets.map(d => d.data.length)")
    assert latency == [len(points)] * 3
    assert chromium.execute_script("return document.getElementById('chart-throughput').width") > 0
    assert "calculator.divide" in chromium.find_element(By.ID, "procedures").text
    assert worker.name in chromium.find_element(By.ID, "providers").text
    # The live part refreshes by itself
    WebDriverWait(chromium, 12).until(lambda d: d.execute_script("return Number(document.body.dataset.refreshes || 0)") >= 1)
    screenshot(chromium, "dashboard.png")

    # Filter the history, open a failed call
    chromium.get(f"{live_server.url}/rpc/dashboard/calls/")
    chromium.find_element(By.NAME, "procedure").send_keys("calculator.divide")
    chromium.find_element(By.ID, "apply").click()
    WebDriverWait(chromium, 10).until(lambda d: "procedure=calculator.divide" in d.current_url)
    rows = chromium.find_elements(By.CSS_SELECTOR, "#calls tbody tr")
    assert len(rows) == 4 and all("remote_error" in r.text for r in rows)
    screenshot(chromium, "history.png")
    rows[0].find_element(By.TAG_NAME, "a").click()
    status = WebDriverWait(chromium, 10).until(lambda d: d.find_elements(By.ID, "status"))
    assert status[0].text == "remote_error"
    assert "ZeroDivisionError" in chromium.find_element(By.ID, "error").text
    screenshot(chromium, "call-detail.png")


def test_a_non_staff_user_is_refused(chromium: Any, live_server: Any, django_user_model: Any) -> None:  # noqa: F811
    django_user_model.objects.create_user("bob", password="pw")
    log_in(chromium, live_server.url, "bob", "pw")
    chromium.get(f"{live_server.url}/rpc/dashboard/")
    assert "/admin/login/" in chromium.current_url

"""The demo calculator page in a real headless Chromium."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser import chromium, screenshot  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_fill_the_form_submit_and_see_the_result(chromium: Any, live_server: Any, worker: Any) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    chromium.set_window_size(900, 600)
    chromium.get(f"{live_server.url}/calculator/")
    assert "fib(20) = 6765" in chromium.find_element(By.ID, "fib").text  # the template tag
    chromium.find_element(By.NAME, "a").send_keys("6")
    Select(chromium.find_element(By.NAME, "op")).select_by_value("multiply")
    chromium.find_element(By.NAME, "b").send_keys("7")
    chromium.find_element(By.ID, "compute").click()
    result = WebDriverWait(chromium, 10).until(lambda d: d.find_elements(By.ID, "result"))
    assert result[0].text == "42.0"
    screenshot(chromium, "calculator.png")
    # A remote error shows the fallback and the error, not a broken page
    chromium.get(f"{live_server.url}/calculator/?a=1&op=divide&b=0")
    assert chromium.find_element(By.ID, "result").text == "unavailable"
    assert chromium.find_element(By.ID, "error").text.startswith("remote_error: ZeroDivisionError")

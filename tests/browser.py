"""A headless Chromium for the browser tests (Debian's chromium and
chromium-driver, driven by Selenium; nothing is downloaded)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run", "--window-size=1400,900"]


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    browser, driver = _binary("chromium", "chromium-browser"), _binary("chromedriver")
    if browser is None or driver is None:
        why = "the browser tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)  # CI must run them
        pytest.skip(why)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ARGS:
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=DriverService(executable_path=driver), options=options)
    chrome.set_page_load_timeout(30)
    try:
        yield chrome
    finally:
        chrome.quit()


def log_in(chrome: Any, base_url: str, username: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    chrome.delete_all_cookies()
    chrome.get(f"{base_url}/admin/login/")
    chrome.find_element(By.NAME, "username").send_keys(username)
    chrome.find_element(By.NAME, "password").send_keys(password)
    chrome.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(chrome, 10).until(lambda d: "/admin/login/" not in d.current_url or d.find_elements(By.CSS_SELECTOR, ".errornote"))


def screenshot(chrome: Any, name: str) -> Path | None:
    """Save a screenshot under $RPCAPP_SCREENSHOTS (``make screenshots`` sets it to docs/img)."""
    folder = os.environ.get("RPCAPP_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    chrome.save_screenshot(str(path))
    return path

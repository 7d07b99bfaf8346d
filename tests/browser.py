"""Headless Chromium for the playground's tests: the system's browser and driver, nothing downloaded."""

from __future__ import annotations

import os
import shutil

import pytest

INSTALL = "sudo apt-get install chromium chromium-driver (`make setup` does it)"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def open_browser(width: int = 1200, height: int = 1000):
    """Headless Chromium through the system's driver (no download: Selenium Manager is not used)."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail(f"the playground's browser tests need Chromium and its driver: {INSTALL}")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def wait(driver, script: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))

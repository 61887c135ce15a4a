"""A real headless Chromium driven by selenium, for the web page's tests: Debian's
``chromium`` and ``chromium-driver``, chromedriver on a free port of its own with its
log and the browser's profile in a temp dir. Selenium is told where both are and to
stay offline, so selenium-manager never looks for a driver on the network.

Stopped by its own processes: the browser by the driver (``quit``), chromedriver by
its PID (selenium's ``Service.stop``). Skipped, with the reason, where the packages
are not installed."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.process import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1200, 900)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """A ``selenium.webdriver.Chrome`` on headless Chromium (typed loosely: the tests
    are not type-checked and selenium is a test-only dependency)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} is not installed (apt-get install {package})")
    os.environ["SE_OFFLINE"] = "true"
    os.environ["SE_AVOID_STATS"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    base = Path(tempfile.mkdtemp(prefix="jarvis-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", f"--user-data-dir={base / 'profile'}",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update"):
        options.add_argument(argument)
    service = Service(executable_path=CHROMEDRIVER, port=free_port(),
                      log_output=str(base / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            service.stop()
            shutil.rmtree(base, ignore_errors=True)

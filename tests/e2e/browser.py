"""Headless Debian Chromium driven through the system ChromeDriver (never a downloaded one)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.harness import Service, free_port, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def require_browser() -> None:
    """Skips with the install command when Debian's chromium/chromium-driver are absent."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.skip(f"{missing} missing: apt-get install -y chromium chromium-driver")
    pytest.importorskip("selenium", reason="pip install selenium (the dev extra)")


class Browser:
    """ChromeDriver in its own process group on 127.0.0.1, with one Chromium session."""

    def __init__(self, log_dir: Path) -> None:
        from selenium import webdriver

        os.environ["SE_OFFLINE"] = "1"  # Selenium Manager must never fetch a driver
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
        port = free_port()
        self.driver_service = Service(
            "chromedriver",
            [CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
            {**os.environ},
            log_dir,
        )
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(url), 30, "chromedriver to listen", every=0.2)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        self.driver = webdriver.Remote(command_executor=url, options=options)
        self.driver.set_window_size(1600, 1000)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            self.driver_service.stop(grace_s=10)
            shutil.rmtree(self.profile, ignore_errors=True)

    def until(self, probe: Callable[[Any], Any], timeout: float = 30) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.25).until(probe)

    def button(self, text: str, timeout: float = 30) -> Any:
        """The visible button whose text contains `text`, once it is enabled."""
        from selenium.webdriver.common.by import By

        xpath = f"//button[contains(normalize-space(.), '{text}')]"

        def find(driver: Any) -> Any:
            found = [b for b in driver.find_elements(By.XPATH, xpath) if b.is_displayed()]
            return found[0] if found and found[0].is_enabled() else None

        return self.until(find, timeout)


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/status", timeout=2).json()["value"]["ready"]
    except (requests.RequestException, ValueError, KeyError):
        return False

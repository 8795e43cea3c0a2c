"""A real headless Chromium for tests, and the web app served by uvicorn in a thread.

Chromium and chromedriver are Debian packages (``chromium``, ``chromium-driver``); ``.ci/run``
installs them. When they are missing the browser tests fail with a message saying so: they
are never skipped silently.
"""

from __future__ import annotations

import base64
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from starlette.types import ASGIApp

from newsletter.inbox import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"
STARTUP_TIMEOUT = 10.0  # seconds for uvicorn to listen
PAGE_TIMEOUT = 20  # seconds for a page load


@contextmanager
def live_server(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 and a free port; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail(f"uvicorn did not start on 127.0.0.1:{port} within {STARTUP_TIMEOUT}s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT)


def require_chromium() -> None:
    """Fail (never skip) with what to install when Chromium or its driver is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing and not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail(
            f"browser tests need {', '.join(missing)}: "
            "apt-get install chromium chromium-driver (.ci/run does this)"
        )


@contextmanager
def chromium(profile_dir: Path, *, width: int = 1280, height: int = 900) -> Iterator[WebDriver]:
    """A headless Chromium with a throwaway profile, quit at the end."""
    require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile_dir}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: WebDriver, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG under ``tests/_artifacts/`` (the whole page height by default)."""
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    if full_page:
        size = driver.get_window_size()
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(int(height) + 140, 8000))
        driver.save_screenshot(str(target))
        driver.set_window_size(size["width"], size["height"])
    else:
        driver.save_screenshot(str(target))
    return target


def emulate(
    driver: WebDriver, *, width: int, height: int = 800, color_scheme: str = "light"
) -> None:
    """A viewport ``width`` CSS pixels wide (device scale 1, desktop) that prefers
    ``color_scheme`` ("light" or "dark"), through the DevTools protocol."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": color_scheme}]},
    )


def page_screenshot(driver: WebDriver, name: str, *, max_height: int = 8000) -> Path:
    """The whole page at the emulated width, at most ``max_height`` px, in ``tests/_artifacts/``."""
    ARTIFACTS.mkdir(exist_ok=True)
    width = driver.execute_script("return window.innerWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": min(height, max_height), "scale": 1},
        },
    )
    target = ARTIFACTS / f"{name}.png"
    target.write_bytes(base64.b64decode(shot["data"]))
    return target

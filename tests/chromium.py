"""Headless Chromium for the browser test: Debian's ``chromium`` driven through its ``chromium-driver``.

Selenium is handed both paths, so its Selenium Manager never runs and nothing is downloaded. When
the binaries are missing, :func:`install` tries Debian's packages (as root, with ``apt-get``);
``.ci/run`` does the same before ``make test``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ENV_BROWSER = "BROADCAST_LIFECYCLE_CHROMIUM"
"""Path of a Chromium binary to use instead of the one on ``PATH``."""
ENV_DRIVER = "BROADCAST_LIFECYCLE_CHROMEDRIVER"
"""Path of a chromedriver binary to use instead of the one on ``PATH``."""
PACKAGES = ("chromium", "chromium-driver")
WINDOW = (1000, 600)
"""The window the screenshots are taken at (CSS pixels)."""


@dataclass(frozen=True)
class Binaries:
    """Where the browser and its driver are."""

    browser: str
    driver: str


def find() -> Binaries | None:
    """The browser and driver from the environment variables or ``PATH``, or None when one is missing."""
    browser = os.environ.get(ENV_BROWSER) or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get(ENV_DRIVER) or shutil.which("chromedriver")
    if browser and driver and os.access(browser, os.X_OK) and os.access(driver, os.X_OK):
        return Binaries(browser, driver)
    return None


def install() -> str | None:
    """Install Debian's packages; return why that was not possible, or None when it worked."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    if os.geteuid() != 0:
        return "not root, so apt-get cannot install packages"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-qq", *PACKAGES]
    attempts = [command, ["apt-get", "update", "-qq"], command]  # the package lists may be stale or absent
    failure = ""
    for argv in attempts:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode == 0 and argv is command:
            return None
        failure = done.stderr.strip()[-300:]
    return f"`apt-get install {' '.join(PACKAGES)}` failed: {failure}"


def start(binaries: Binaries) -> webdriver.Chrome:
    """A headless Chromium at :data:`WINDOW`, driven through the given chromedriver."""
    options = webdriver.ChromeOptions()
    options.binary_location = binaries.browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=binaries.driver), options=options)

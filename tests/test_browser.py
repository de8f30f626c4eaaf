"""The example app's page in a real browser (headless Chromium): an offer appears live on the
transporter's view and vanishes live when the customer cancels.

The app runs for real (uvicorn on loopback, a SQLite file, the Socket.IO bridge). Screenshots of both
views go to the test's temp dir; with ``BROADCAST_LIFECYCLE_SCREENSHOTS=<dir>`` (``make screenshots``
sets ``docs/images``) they are copied there too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromium
import pytest
from marketplace.auth import Role
from marketplace.fixtures import DROP, PICKUP, booking_body, token_for
from marketplace.server import RunningApp
from marketplace_harness import serve
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

ENV_SCREENSHOTS = "BROADCAST_LIFECYCLE_SCREENSHOTS"
SECRET = b"browser-test-secret"
WAIT = 20.0
"""Seconds a DOM condition may take (a loaded 2-core machine; it normally holds within milliseconds)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """A headless Chromium; installs Debian's packages when missing, skips only when that is impossible."""
    binaries = chromium.find()
    if binaries is None:
        why = chromium.install()
        binaries = chromium.find()
        if binaries is None:
            why = why or "chromium or chromedriver is neither on PATH nor at the path its variable names"
            pytest.skip(f"headless Chromium not available, the browser test did NOT run: {why}. "
                        f"Install it with `apt-get install {' '.join(chromium.PACKAGES)}`, or set "
                        f"{chromium.ENV_BROWSER} and {chromium.ENV_DRIVER}.")
    driver = chromium.start(binaries)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """The marketplace on a fresh SQLite file, with the demo transporters, serving on loopback."""
    with serve(f"sqlite:///{tmp_path_factory.mktemp('browser') / 'marketplace.db'}", secret=SECRET) as running:
        yield running


def call(app: RunningApp, method: str, path: str, user: str, role: Role, body: object = None) -> dict[str, Any]:
    """``method path`` as ``user`` over HTTP, the JSON answer (an error status raises)."""
    request = urllib.request.Request(
        app.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token_for(user, role, SECRET)}",
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


def open_view(browser: WebDriver, app: RunningApp, user: str, role: Role) -> None:
    """Load the page as ``user`` and wait until it has read its data and its socket is live."""
    browser.get(f"{app.url}/?token={token_for(user, role, SECRET)}")
    wait = WebDriverWait(browser, WAIT)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready='true']")))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#connection[data-state='connected']")))


def screenshot(browser: WebDriver, directory: Path, name: str) -> Path:
    """Save the window as ``name``.png in ``directory`` (and in ``$BROADCAST_LIFECYCLE_SCREENSHOTS``)."""
    path = directory / f"{name}.png"
    chrome, content = browser.execute_script(
        "return [window.outerHeight - window.innerHeight, document.documentElement.scrollHeight]")
    browser.set_window_size(chromium.WINDOW[0], chrome + content)  # the whole page, no more
    assert browser.save_screenshot(str(path)), f"no screenshot written to {path}"
    if os.environ.get(ENV_SCREENSHOTS):
        target = Path(os.environ[ENV_SCREENSHOTS])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.name)
    return path


def buttons(element: WebElement) -> list[str]:
    """The ``data-action`` of each action button in ``element``, read in one script (the page
    replaces the buttons when a read answers, so element handles to them may go stale)."""
    script = "return [...arguments[0].querySelectorAll('.actions button')].map((b) => b.dataset.action)"
    found: list[str] = element.parent.execute_script(script, element)
    return found


def test_offer_appears_and_vanishes_live(browser: WebDriver, app: RunningApp, tmp_path: Path) -> None:
    """A transporter's open page shows a new booking offered to them without a reload, with its
    details, a countdown to its deadline and only the accept button; and drops it without a reload
    when the customer cancels it on their own page, where only the allowed actions are shown and the
    cancellation is one timed row of the timeline."""
    open_view(browser, app, "t-1", "transporter")
    transporter_tab = browser.current_window_handle
    assert browser.find_element(By.ID, "offers-empty").is_displayed()

    booking = call(app, "POST", "/api/bookings", "c-1", "customer", booking_body(trucks=2))
    offer_id = f"offer-booking-{booking['id']}"
    active = f"#{offer_id}[data-status='active']"  # offered at the broadcast, offered again with the deadline
    offer = WebDriverWait(browser, WAIT).until(ec.visibility_of_element_located((By.CSS_SELECTOR, active)))
    assert offer.find_element(By.CSS_SELECTOR, ".title").text == f"booking #{booking['id']}"
    assert offer.find_element(By.CSS_SELECTOR, ".slots").text == "0/2 filled"
    assert re.fullmatch(r"closes in \d+:\d\d", offer.find_element(By.CSS_SELECTOR, ".deadline").text)
    WebDriverWait(browser, WAIT).until(lambda _: buttons(offer) == ["accept"])
    details = offer.find_element(By.CSS_SELECTOR, ".details").text
    assert details == f"{PICKUP['address']} → {DROP['address']} · 2 vans", details
    assert not browser.find_element(By.ID, "offers-empty").is_displayed()
    screenshot(browser, tmp_path, "transporter-view")

    call(app, "POST", f"/api/bookings/{booking['id']}/accept", "t-2", "transporter", {"slots": 1})
    browser.switch_to.new_window("tab")
    open_view(browser, app, "c-1", "customer")
    card_selector = f"#broadcast-booking-{booking['id']}[data-status='partially_filled']"
    card = WebDriverWait(browser, WAIT).until(ec.visibility_of_element_located((By.CSS_SELECTOR, card_selector)))
    rows = card.find_elements(By.CSS_SELECTOR, ".timeline li")
    assert [li.get_attribute("data-status") for li in rows] == ["created", "broadcasting", "active", "partially_filled"]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", li.find_element(By.TAG_NAME, "time").text) for li in rows)
    assert buttons(card) == ["cancel"]  # no trip with a truck missing

    card.find_element(By.CSS_SELECTOR, "button[data-action='cancel']").click()
    cancelled = f"#broadcast-booking-{booking['id']}[data-status='cancelled']"
    card = WebDriverWait(browser, WAIT).until(ec.visibility_of_element_located((By.CSS_SELECTOR, cancelled)))
    last = f"#broadcast-booking-{booking['id']} .timeline li[data-version='5']"
    WebDriverWait(browser, WAIT).until(lambda _: browser.find_element(By.CSS_SELECTOR, last).get_attribute(
        "data-event") == "BROADCAST_STATE_CHANGED BOOKING_CANCELLED")
    assert len(card.find_elements(By.CSS_SELECTOR, ".timeline li")) == 5
    WebDriverWait(browser, WAIT).until(lambda _: buttons(card) == [])

    browser.find_element(By.ID, "trucks").clear()
    browser.find_element(By.ID, "trucks").send_keys("1")
    browser.find_element(By.ID, "vehicle-type").send_keys("truck")  # offered to t-4, not to t-1
    browser.find_element(By.ID, "create-booking-submit").click()
    second = WebDriverWait(browser, WAIT).until(ec.visibility_of_element_located(
        (By.CSS_SELECTOR, "#broadcasts > article.broadcast[data-status='active']")))
    assert re.fullmatch(r"closes in \d+:\d\d", second.find_element(By.CSS_SELECTOR, ".deadline").text)
    WebDriverWait(browser, WAIT).until(lambda _: buttons(second) == ["cancel"])

    browser.find_element(By.ID, "vehicle-type").send_keys("trailer")  # nobody near drives one
    browser.find_element(By.ID, "create-booking-submit").click()
    error = WebDriverWait(browser, WAIT).until(ec.visibility_of_element_located((By.ID, "error")))
    assert error.text.startswith("Could not broadcast the booking: no transporter with a trailer"), error.text
    screenshot(browser, tmp_path, "customer-view")

    browser.switch_to.window(transporter_tab)
    WebDriverWait(browser, WAIT).until(ec.invisibility_of_element_located((By.ID, offer_id)))
    assert browser.find_elements(By.ID, offer_id) == []
    assert browser.find_element(By.ID, "offers-empty").is_displayed()

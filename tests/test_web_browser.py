"""A real headless Chromium on the running web app: rendered DOM, widths, clicks, screenshots.

Screenshots go to ``tests/_artifacts/`` (git-ignored) for a human to look at.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from newsletter import app
from newsletter.app import Context, login, users
from newsletter.app.confirmations import deliver_confirmations
from newsletter.models import SubscriberState
from newsletter.store import subscribers as rows
from newsletter.subscribers import add_subscriber
from newsletter.web import create_app
from tests.admin_login import PASSWORD, cheap_passwords
from tests.browser import chromium, live_server, screenshot
from tests.conftest import SEEDS
from tests.smtp_servers import SmtpTestServer

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("cheap_passwords")]
__all__ = ["cheap_passwords"]

WAIT = 10  # seconds for anything to appear in the browser


@pytest.fixture
def articles(tmp_path: Path) -> Path:
    folder = tmp_path / "articles"
    shutil.copytree(SEEDS, folder)
    return folder


@pytest.fixture
def ctx(
    make_context: Callable[..., Context], articles: Path, smtp_server: SmtpTestServer
) -> Context:
    return make_context(sources={"articles_dir": str(articles)}, smtp={"port": smtp_server.port})


@pytest.fixture
def site(ctx: Context) -> Iterator[str]:
    users.add_user(ctx, "ada", PASSWORD)
    with live_server(create_app(ctx)) as base:
        yield base


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


def state_of(ctx: Context, email: str) -> SubscriberState | None:
    with ctx.store.atomic() as conn:
        found = rows.get_by_email(conn, email)
    return found.state if found else None


def wait(driver: WebDriver) -> WebDriverWait:
    """A wait that looks again while a page is being replaced: Chromium then answers for an
    element of the old page with a stale reference or "node does not belong to the document"."""
    return WebDriverWait(driver, WAIT, ignored_exceptions=(WebDriverException,))


def in_email_frame(driver: WebDriver) -> None:
    frame = wait(driver).until(ec.presence_of_element_located((By.ID, "email-frame")))
    driver.switch_to.frame(frame)
    wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, "h2.headline")))


def log_in(driver: WebDriver, site: str, *, password: str = PASSWORD) -> None:
    """Fill in and send the login form like a person."""
    driver.get(f"{site}/login")
    driver.find_element(By.ID, "username").send_keys("ada")
    driver.find_element(By.ID, "password").send_keys(password)
    form = driver.find_element(By.ID, "login-button")
    form.click()
    # The answer's page replaced the form (logged in or not): the next step starts after it.
    WebDriverWait(driver, 3 * WAIT).until(lambda _: gone(form))  # argon2 takes a while


def gone(element: WebElement) -> bool:
    """Whether ``element``'s page was replaced (Chromium says so in more than one way)."""
    try:
        element.is_enabled()
    except WebDriverException:  # stale, or "node does not belong to the document"
        return True
    return False


def test_preview_at_desktop_and_phone_widths(ctx, site, browser):
    upcoming, _ = app.preview_digest(ctx)
    assert upcoming is not None
    log_in(browser, site)
    browser.get(f"{site}/preview")
    assert browser.find_element(By.ID, "subject").text == upcoming.rendered.subject
    assert "KB" in browser.find_element(By.ID, "size").text

    in_email_frame(browser)
    headlines = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "h2.headline")]
    desktop_width = browser.execute_script("return document.documentElement.clientWidth")
    card_width = browser.execute_script(
        "return document.querySelector('table.card').getBoundingClientRect().width"
    )
    greeting = browser.find_element(By.CSS_SELECTOR, "p.greeting").text
    browser.switch_to.default_content()
    screenshot(browser, "preview_desktop")

    assert headlines == [a.title for a in upcoming.articles]
    assert desktop_width == 600
    assert card_width == 600  # the 600px layout, not squeezed
    assert greeting == "Hello Alex Reader,"

    browser.find_element(By.CSS_SELECTOR, "[data-view=phone]").click()
    frame = browser.find_element(By.ID, "email-frame")
    wait(browser).until(lambda _: frame.size["width"] == 375)  # after a short CSS transition
    assert "view=phone" in browser.current_url
    in_email_frame(browser)
    phone_width = browser.execute_script("return document.documentElement.clientWidth")
    phone_card = browser.execute_script(
        "return document.querySelector('table.card').getBoundingClientRect().width"
    )
    phone_headlines = len(browser.find_elements(By.CSS_SELECTOR, "h2.headline"))
    browser.switch_to.default_content()
    screenshot(browser, "preview_phone")

    assert phone_width == 375
    assert phone_card <= 375  # the media query made the layout fluid
    assert phone_headlines == len(upcoming.articles)
    text_part = browser.find_element(By.ID, "text-part").text
    assert upcoming.articles[0].title.split()[0] in text_part


def test_preview_reloads_when_an_article_changes(site, browser, articles):
    log_in(browser, site)
    browser.get(f"{site}/preview?view=phone")
    wait(browser).until(ec.presence_of_element_located((By.ID, "email-frame")))
    browser.execute_script("window.beforeReload = true")
    (articles / "zz_breaking.md").write_text(
        "---\ntitle: Breaking news from the test\ndate: 2026-11-26\n---\nIt just happened.\n"
    )

    wait(browser).until(lambda d: d.execute_script("return window.beforeReload") is None)
    in_email_frame(browser)
    titles = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "h2.headline")]
    browser.switch_to.default_content()

    assert "Breaking news from the test" in titles
    assert "view=phone" in browser.current_url  # the chosen width survives the reload
    assert browser.find_element(By.ID, "email-frame").size["width"] == 375


def test_unsubscribe_click_through(ctx, site, browser, clock):
    ada = add_subscriber(ctx.store, "ada.lovelace@example.org", "Ada", now=clock())
    link = ctx.unsubscribe_url(ada.public_id).replace(ctx.settings.web.base_url, site)

    browser.get(link)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Unsubscribe?"
    assert "ad***@example.org" in browser.find_element(By.ID, "unsubscribe").text
    screenshot(browser, "unsubscribe_ask")
    assert state_of(ctx, ada.email) is SubscriberState.ACTIVE

    browser.find_element(By.ID, "unsubscribe-button").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "unsubscribed"))
    screenshot(browser, "unsubscribe_done")

    assert browser.find_element(By.TAG_NAME, "h1").text == "You're unsubscribed"
    assert state_of(ctx, ada.email) is SubscriberState.UNSUBSCRIBED
    browser.get(link)  # the same link again
    assert browser.find_element(By.TAG_NAME, "h1").text == "Already unsubscribed"


def test_subscribe_in_the_browser_then_confirm_from_the_email(
    ctx, site, browser, smtp_server: SmtpTestServer, tmp_path
):
    browser.get(f"{site}/subscribe")
    screenshot(browser, "subscribe_form")
    browser.find_element(By.ID, "email").send_keys("zoe@example.com")
    browser.find_element(By.ID, "name").send_keys("Zoë")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "subscribed")))
    screenshot(browser, "subscribe_sent")
    deliver_confirmations(ctx)  # what serve's confirmation queue does in the background

    [message] = smtp_server.messages()
    part = message.get_body(("plain",))
    assert part is not None
    found = re.search(r"https://news\.example\.org(/confirm/\S+)", part.get_content())
    assert found is not None
    html_part = message.get_body(("html",))
    assert html_part is not None
    email_file = tmp_path / "confirm_email.html"
    email_file.write_text(html_part.get_content(), encoding="utf-8")
    browser.get(email_file.as_uri())
    button = browser.find_element(By.LINK_TEXT, "Confirm my subscription")
    assert button.get_attribute("href") == "https://news.example.org" + found.group(1)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Please confirm your subscription"
    screenshot(browser, "confirm_email")

    browser.get(site + found.group(1))
    browser.find_element(By.ID, "confirm-button").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "subscribed"))
    screenshot(browser, "confirm_done")

    assert state_of(ctx, "zoe@example.com") is SubscriberState.ACTIVE


def test_archive_in_the_browser(ctx, site, browser, clock):
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())
    summary = app.send_now(ctx)
    assert summary.subject is not None

    browser.get(f"{site}/archive")
    screenshot(browser, "archive_list")
    browser.find_element(By.LINK_TEXT, summary.subject).click()
    in_email_frame(browser)
    greeting = browser.find_element(By.CSS_SELECTOR, "p.greeting").text
    browser.switch_to.default_content()
    screenshot(browser, "archive_digest", full_page=False)

    assert greeting == "Hello reader,"
    frame_height = browser.find_element(By.ID, "email-frame").size["height"]
    assert frame_height > 1200  # grown to the email's height: no inner scroll bar


# --- the admin pages --------------------------------------------------------------------


ADMIN_URLS = ["/admin", "/admin/subscribers", "/admin/digests/1", "/preview"]


def test_each_admin_url_without_a_session_leads_to_the_login_form(site, browser):
    for path in ADMIN_URLS:
        browser.get(site + path)
        assert browser.current_url.startswith(f"{site}/login?next=")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Log in"


def test_log_in_search_unsubscribe_and_see_the_preview(ctx, site, browser, clock):
    for n in range(60):
        add_subscriber(ctx.store, f"reader{n:02d}@example.org", f"Reader {n:02d}", now=clock())
    add_subscriber(ctx.store, "grace.hopper@example.org", "Grace Hopper", now=clock())

    browser.get(f"{site}/admin/subscribers")  # asked for a private page: the login comes first
    browser.find_element(By.ID, "username").send_keys("ada")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-button").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "subscribers")))
    assert browser.current_url == f"{site}/admin/subscribers"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#subscribers tbody tr")) == 50
    browser.find_element(By.ID, "older").click()  # the next page, by keyset
    wait(browser).until(ec.url_contains("before="))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#subscribers tbody tr")) == 11

    search = browser.find_element(By.ID, "q")
    search.clear()
    search.send_keys("hopper")
    browser.find_element(By.ID, "search-button").click()
    wait(browser).until(ec.url_contains("q=hopper"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#subscribers tbody tr")
    assert [r.get_attribute("data-email") for r in rows] == ["grace.hopper@example.org"]
    screenshot(browser, "admin_subscribers_search")

    rows[0].find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "notice")))
    screenshot(browser, "admin_unsubscribed")

    assert browser.find_element(By.ID, "notice").text == "Unsubscribed grace.hopper@example.org."
    assert state_of(ctx, "grace.hopper@example.org") is SubscriberState.UNSUBSCRIBED
    assert state_of(ctx, "reader00@example.org") is SubscriberState.ACTIVE

    browser.find_element(By.LINK_TEXT, "Preview").click()
    in_email_frame(browser)
    assert browser.find_element(By.CSS_SELECTOR, "p.greeting").text == "Hello Alex Reader,"
    browser.switch_to.default_content()
    browser.find_element(By.LINK_TEXT, "Dashboard").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "subscriber-counts")))
    screenshot(browser, "admin_dashboard")

    browser.find_element(By.ID, "logout-button").click()
    wait(browser).until(ec.url_to_be(f"{site}/login"))
    browser.get(f"{site}/admin")
    assert browser.current_url.startswith(f"{site}/login?next=")


@pytest.mark.parametrize("token", ["", "forged"], ids=["missing", "wrong"])
def test_a_form_with_a_missing_or_wrong_csrf_token_is_refused_and_changes_nothing(
    ctx, site, browser, clock, token
):
    add_subscriber(ctx.store, "grace.hopper@example.org", "Grace Hopper", now=clock())
    log_in(browser, site)
    wait(browser).until(ec.url_to_be(f"{site}/admin"))
    browser.get(f"{site}/admin/subscribers?q=grace")
    browser.execute_script(
        "document.querySelectorAll('input[name=csrf_token]')"
        ".forEach(function (field) { field.value = arguments[0]; });",
        token,
    )

    browser.find_element(By.CSS_SELECTOR, "#subscribers button[type=submit]").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "forbidden")))

    assert browser.find_element(By.TAG_NAME, "h1").text == "Not allowed"
    assert state_of(ctx, "grace.hopper@example.org") is SubscriberState.ACTIVE


def test_repeated_wrong_passwords_make_the_login_wait(site, browser):
    for _ in range(login.FREE_FAILURES + 1):
        log_in(browser, site, password="not the password")
        error = wait(browser).until(ec.presence_of_element_located((By.ID, "login-error")))
        assert error.text == "Wrong user name or password."

    log_in(browser, site)  # the right password, too soon

    error = wait(browser).until(ec.presence_of_element_located((By.ID, "login-error")))
    assert error.text.startswith("Too many failed attempts: try again in")
    screenshot(browser, "login_throttled")
    browser.get(f"{site}/admin")
    assert browser.current_url.startswith(f"{site}/login?next=")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """chromedriver talks to 127.0.0.1; a proxy from the environment must not get in between."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert "NO_PROXY" in os.environ

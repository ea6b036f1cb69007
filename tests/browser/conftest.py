"""Pages in a real headless Chromium: Debian's /usr/bin/chromium driven by Playwright's sync API,
against pytest-django's `live_server` (a real HTTP server in a thread, on the test database).

One browser per session; each test gets a fresh context (cookies, permissions) and page. Nothing is
mocked. Playwright's own browser builds are not used (they cannot be downloaded here): when Debian's
Chromium is missing, every test of this folder is skipped with the reason.

Screenshots go to var/screenshots/ (kept between runs, overwritten) so that a person can look at the
pages; `screenshot(page, "name")` takes one."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
HERE = Path(__file__).resolve().parent
SCREENSHOTS_DIR = django_settings.BASE_DIR / "var" / "screenshots"
# A public address unlike the live server's, so that a callback URL built from anything else shows.
PUBLIC_BASE_URL = "https://omnichannel.example.test"
# Playwright's waits, in milliseconds: everything is on loopback, a slow answer is a failure.
TIMEOUT_MS = 10_000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder's tests, with the reason, when Debian's Chromium is not installed."""
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(
        reason=f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium "
        "(apt-get install chromium); Playwright's own browsers are not downloaded here."
    )
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)


@pytest.fixture(scope="package")
def browser() -> Iterator:
    """Headless Chromium, one for all the tests of this folder (starting it is the slow part).

    Package scope, not session: while Playwright's sync API is started, its asyncio loop counts as
    running in this thread, so it must stop before the other folders' tests run."""
    from playwright.sync_api import sync_playwright

    # Django's async-safety check would take that loop for an async context and refuse every query of
    # the tests (SynchronousOnlyOperation); the test code itself is plain synchronous code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(autouse=True)
def _plain_http_on_loopback(settings) -> None:
    """The live server speaks plain http: no https redirect, no secure-only cookies (the local env
    file says the same; CI's environment may not)."""
    settings.SECURE_SSL_REDIRECT = False
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    settings.SECURE_HSTS_SECONDS = 0
    settings.PUBLIC_BASE_URL = PUBLIC_BASE_URL


@pytest.fixture
def context(browser, live_server) -> Iterator:
    """A fresh browser profile on the live server, allowed to use the clipboard."""
    browser_context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 800})
    browser_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    browser_context.set_default_timeout(TIMEOUT_MS)
    try:
        yield browser_context
    finally:
        browser_context.close()


@pytest.fixture
def page(context) -> Iterator:
    """A page that fails the test on any uncaught JavaScript error."""
    new_page = context.new_page()
    errors: list[str] = []
    new_page.on("pageerror", lambda error: errors.append(str(error)))
    yield new_page
    assert errors == [], f"JavaScript errors on {new_page.url}: {errors}"


@pytest.fixture
def login_as(context, live_server) -> Callable[[AbstractBaseUser], None]:
    """Sign a user in by handing the browser a session cookie (the login page has its own tests)."""

    def login(user: AbstractBaseUser) -> None:
        client = Client()
        client.force_login(user)
        cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
        context.add_cookies(
            [{"name": cookie.key, "value": cookie.value, "url": live_server.url, "httpOnly": True}]
        )

    return login


@pytest.fixture(scope="session")
def screenshot() -> Callable:
    """`screenshot(page, "name")` saves var/screenshots/name.png (whole page) and returns its path."""
    SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = SCREENSHOTS_DIR / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def stylesheet_rules(page, file_name: str) -> int:
    """How many CSS rules the page got from its stylesheet named `file_name` (0 when the sheet did not
    load: a 404, or a wrong MIME type under nosniff, leaves no rules)."""
    return page.evaluate(
        """(fileName) => Array.from(document.styleSheets)
             .filter((sheet) => sheet.href && new URL(sheet.href).pathname.endsWith("/" + fileName))
             .reduce((count, sheet) => {
               try { return count + sheet.cssRules.length; } catch (error) { return count; }
             }, 0)""",
        file_name,
    )


@pytest.fixture
def css_rules() -> Callable:
    """`css_rules(page, "omnichannel.css")`: see stylesheet_rules."""
    return stylesheet_rules

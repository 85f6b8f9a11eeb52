"""Browser fixtures: one headless system Chromium per module, a fresh page per test, and the
login form filled like a person would."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import pytest

try:
    from playwright.sync_api import Browser, Page, sync_playwright
    from playwright.sync_api import Error as PlaywrightError
except ImportError as exc:  # pragma: no cover - exercised only on a broken test environment
    _PLAYWRIGHT_IMPORT_ERROR: ImportError | None = exc
    Browser = Page = object  # type: ignore[misc,assignment]
    PlaywrightError = Exception  # type: ignore[misc,assignment]
    sync_playwright = None  # type: ignore[assignment]
else:
    _PLAYWRIGHT_IMPORT_ERROR = None

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DEMO_PASSWORD = "demo"
NAV_TIMEOUT_MS = 30_000

def _require_playwright() -> None:
    """Fail, never skip: a missing Playwright means the browser tests did not run."""
    if _PLAYWRIGHT_IMPORT_ERROR is not None:
        pytest.fail(
            "Playwright for Python cannot be imported "
            f"({type(_PLAYWRIGHT_IMPORT_ERROR).__name__}: {_PLAYWRIGHT_IMPORT_ERROR}). "
            "Install the test extra into the virtualenv (.venv/bin/pip install -e '.[test]'); "
            "the browser tests use /usr/bin/chromium, so `playwright install` is not needed. "
            "These tests are required and are never skipped.",
            pytrace=False,
        )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing or not executable; the browser tests need a system Chromium.",
                    pytrace=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser | None]:
    """One headless Chromium for the module; None when Playwright is missing (each test then fails)."""
    if _PLAYWRIGHT_IMPORT_ERROR is not None or not os.access(CHROMIUM, os.X_OK):
        yield None
        return
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@contextlib.contextmanager
def fresh_page(browser: Browser | None) -> Iterator[tuple[Page, list[str]]]:
    """A page in its own context (own cookies), closed afterwards, and the page's errors and warnings."""
    _require_playwright()
    assert browser is not None
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        context.set_default_navigation_timeout(NAV_TIMEOUT_MS)
        context.set_default_timeout(NAV_TIMEOUT_MS)
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: problems.append(f"console.{msg.type}: {msg.text}")
                if msg.type in ("error", "warning") else None)
        yield page, problems
    finally:
        context.close()


def log_in(page: Page, base_url: str, username: str, password: str):
    """Fill and submit the login form like a person would; returns the POST's response."""
    page.goto(f"{base_url}/login")
    form = page.locator("main form")
    form.locator("input[name=username]").fill(username)
    form.locator("input[name=password]").fill(password)
    with page.expect_navigation() as nav:
        form.locator("button[type=submit]").click()
    return nav.value

"""Headless Chromium for tests that look at what people see (admin page, report email).

Debian's ``chromium`` (installed by scripts/browser.sh, as scripts/postgres.sh installs Postgres)
driven by Playwright through ``executable_path``; ``playwright install`` is never needed.
Screenshots are kept as test artifacts under ``.local/test-artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ARTIFACTS_DIR = Path(__file__).resolve().parents[1] / ".local" / "test-artifacts" / "screenshots"

# Root in a container needs --no-sandbox; the rest keep Chromium off the (closed) network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str | None:
    for candidate in (
        os.environ.get("CHROMIUM_PATH"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium per test worker. Skips where there is none, except in CI."""
    path = chromium_path()
    if path is None:
        message = "no chromium: run the suite with scripts/test.sh (scripts/browser.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API leaves an event loop marked running in this thread for the session;
    # Django (the registry stand-in of later fixtures and tests) would then refuse its ORM here.
    # Nothing asynchronous touches that ORM, so its guard is off for this worker.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (own cookies) and page for one test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    yield tab
    context.close()


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact and return its path."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

"""/docs and /redoc in a real Chromium, with every request off 127.0.0.1 refused: the pages work
from the service alone (no CDN), under the Content-Security-Policy the service sends.

    .venv/bin/python -m pytest tests/e2e/test_docs.py
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Route, expect

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent / "data"
DIGIT_2 = DATA / "mnist-t10k-00001-label-2.png"
REDOC_CREDIT_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


class Offline:
    """A browser context that aborts every request not for the service, and records them all,
    with the page's console errors (a CSP violation is one)."""

    def __init__(self, context: BrowserContext, service_url: str) -> None:
        self.context = context
        self.host = urlsplit(service_url).netloc
        self.requested: list[str] = []
        self.refused: list[str] = []
        self.problems: list[str] = []
        self.blocked_by_policy: list[str] = []
        context.route("**/*", self._route)

    def _route(self, route: Route) -> None:
        url = route.request.url
        self.requested.append(url)
        if urlsplit(url).netloc == self.host:
            route.continue_()
        else:
            self.refused.append(url)
            route.abort()

    def page(self) -> Page:
        tab = self.context.new_page()

        def on_console(message: ConsoleMessage) -> None:
            if message.type != "error":
                return
            if "violates the following Content Security Policy" in message.text:
                self.blocked_by_policy.append(message.text)
            else:
                self.problems.append(f"console error: {message.text}")

        tab.on("console", on_console)
        tab.on("pageerror", lambda exc: self.problems.append(f"uncaught exception: {exc}"))
        return tab


@pytest.fixture
def offline(browser: Browser, service_url: str) -> Iterator[Offline]:
    context = browser.new_context(base_url=service_url, viewport={"width": 1280, "height": 900})
    watch = Offline(context, service_url)
    try:
        yield watch
    finally:
        context.close()
    assert watch.refused == [], "requests left the service's host"
    assert watch.problems == [], "the page reported errors:\n" + "\n".join(watch.problems)
    # The one thing our policy blocks: ReDoc's sidebar credit shows its vendor's logo from their
    # CDN (no option turns it off); it stays blank. Nothing else on either page is blocked.
    for blocked in watch.blocked_by_policy:
        assert blocked.startswith(f"Loading the image '{REDOC_CREDIT_LOGO}'"), blocked
    assert all(urlsplit(url).hostname == "127.0.0.1" for url in watch.requested)


def test_swagger_ui_lists_the_operations_and_tries_a_real_prediction(
    offline: Offline, service_url: str, artifacts_dir: Path
) -> None:
    page = offline.page()
    response = page.goto("/docs")
    assert response is not None
    assert response.status == 200
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "http" not in policy  # no other origin is named
    for path in ("/predict", "/predict/batch", "/health/live", "/health/ready", "/model"):
        expect(page.locator(f'.opblock-summary-path[data-path="{path}"]')).to_be_visible()

    operation = page.locator(".opblock-post").filter(
        has=page.locator('.opblock-summary-path[data-path="/predict"]')
    )
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator('input[type="file"]').set_input_files(DIGIT_2)
    number = operation.locator('[data-param-name="number"] input, tr:has-text("number") input')
    number.first.fill("3")
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status")
    expect(status).to_have_text("200", timeout=30_000)
    body = operation.locator(".live-responses-table .response-col_description pre").first
    expect(body).to_contain_text('"digit": 2')
    page.screenshot(path=str(artifacts_dir / "docs-try-it-out.png"), full_page=False)
    assert any(urlsplit(url).path == "/predict" for url in offline.requested)


def test_redoc_renders_the_operations(offline: Offline, artifacts_dir: Path) -> None:
    page = offline.page()
    response = page.goto("/redoc")
    assert response is not None
    assert response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    summary = "Read the digit in an image and add a number to it"
    expect(page.get_by_role("heading", name=summary)).to_be_visible(timeout=30_000)
    expect(page.get_by_role("heading", name=re.compile(r"^digitsum \("))).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "redoc.png"), full_page=False)

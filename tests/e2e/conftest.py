"""Fixtures for the browser tests: the real service on a loopback port, and Debian's Chromium.

    .venv/bin/python -m pytest tests/e2e

The service runs as `python -m app`, exactly as `make serve` starts it, on a free port of
127.0.0.1, and is stopped with SIGTERM at the end. The browser is Debian's Chromium
(`apt-get install chromium`), driven by Playwright; nothing is downloaded. Without
/usr/bin/chromium these tests are skipped with the reason, except under CI (env CI set),
where they fail: a CI run must not pass without having opened the page.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, sync_playwright
from playwright.sync_api import Error as PlaywrightError

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path(os.environ.get("DIGITSUM_E2E_CHROMIUM", "/usr/bin/chromium"))
# Headless, and nothing that phones home: the machines that run this have no open network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# Every page in these tests is served under this policy, so that an inline script or style, or a
# resource from elsewhere, shows up as a console error (and fails the test) even before the
# service sends a CSP of its own.
STRICT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# A machine busy with other work (training, other tests) can take minutes to import torch.
READY_TIMEOUT_S = float(os.environ.get("DIGITSUM_E2E_READY_TIMEOUT_S", "120"))
STOP_TIMEOUT_S = 30.0


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _wait_until_ready(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the service exited with status {process.returncode} before it was ready; "
                f"last lines of {log_path}:\n{_log_tail(log_path)}",
                pytrace=False,
            )
        try:
            if httpx.get(f"{base_url}/health/ready", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)
    pytest.fail(
        f"the service was not ready within {READY_TIMEOUT_S:.0f} s; "
        f"last lines of {log_path}:\n{_log_tail(log_path)}",
        pytrace=False,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """tests/e2e/artifacts/: screenshots and the service's log (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# Package scope: Playwright's sync API keeps an event loop running in this thread while it is
# open, which would break later tests (outside tests/e2e) that call asyncio.run().
@pytest.fixture(scope="package")
def service_url(artifacts_dir: Path) -> Iterator[str]:
    """Base URL of the real service, started as `python -m app` on a free loopback port."""
    port = _free_loopback_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DIGITSUM_HOST": "127.0.0.1",
        "DIGITSUM_PORT": str(port),
        "DIGITSUM_WORKERS": "1",
        # The machines that run the tests are small and shared.
        "DIGITSUM_TORCH_THREADS": "1",
    }
    log_path = artifacts_dir / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_ready(process, base_url, log_path)
        yield base_url
    finally:
        _stop(process)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Debian's Chromium under Playwright; skipped without it, except under CI."""
    if not CHROMIUM.is_file():
        reason = (
            f"no Chromium at {CHROMIUM}: install Debian's (`apt-get install chromium`) "
            "to run the browser tests"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
        except PlaywrightError as exc:
            pytest.fail(f"Chromium at {CHROMIUM} did not start: {exc}", pytrace=False)
        try:
            yield launched
        finally:
            launched.close()


def _with_strict_csp(route: Route) -> None:
    response = route.fetch()
    route.fulfill(
        response=response,
        headers={**response.headers, "content-security-policy": STRICT_CSP},
    )


@contextmanager
def _strict_page(browser: Browser, service_url: str) -> Iterator[Page]:
    context = browser.new_context(base_url=service_url, viewport={"width": 1100, "height": 820})
    context.route(f"{service_url}/", _with_strict_csp)
    tab = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console error: {message.text}")

    tab.on("console", on_console)
    tab.on("pageerror", lambda exc: problems.append(f"uncaught exception: {exc}"))
    try:
        yield tab
    finally:
        context.close()
    assert problems == [], "the page reported errors:\n" + "\n".join(problems)


@pytest.fixture
def page(browser: Browser, service_url: str) -> Iterator[Page]:
    """A fresh desktop-sized tab on the service, under a strict CSP.

    Fails the test at teardown if the page threw, or logged an error other than the browser's
    own note on an HTTP error status (which the error-path tests provoke on purpose).
    """
    with _strict_page(browser, service_url) as tab:
        yield tab


@pytest.fixture(scope="module")
def module_page(browser: Browser, service_url: str) -> Iterator[Page]:
    """Like `page`, but one tab for a whole module: for long sessions that several tests read."""
    with _strict_page(browser, service_url) as tab:
        yield tab

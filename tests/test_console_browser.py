"""The console in a real browser: Debian's chromium driven by Playwright (PyPI), against a real daemon.

Locally these skip when chromium or Playwright is absent; under ``CI=true`` they must run (.ci/run
installs chromium). Each page state is saved as a screenshot in ``$SIPSERVER_ARTIFACTS/console/``
(default: pytest's temporary directory); docs/console.md shows copies of them.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sipserver.client import SIPClient
from tests.console_daemon import ADMIN, ADMIN_PASSWORD, start, url
from tests.daemon import Daemon

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Milliseconds the page may take to show what the daemon saw (it polls every 2 s).
SHOWN_WITHIN = 15_000


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("Playwright is not installed (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            raise AssertionError(f"CI=true needs chromium at {CHROMIUM} (.ci/run installs it)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _playwright()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("SIPSERVER_ARTIFACTS")
    folder = Path(root) / "console" if root else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = start(tmp_path, server={"name": "Demo Library SIP2 server", "login_timeout": 30, "idle_timeout": 60,
                                      "lockout": {"failures": 4, "window": 60, "duration": 300}})  # fmt: skip
    yield running
    running.stop()


def console_page(browser: Any, daemon: Daemon, password: str = ADMIN_PASSWORD) -> Any:
    context = browser.new_context(
        http_credentials={"username": ADMIN, "password": password}, viewport={"width": 1400, "height": 1000}
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.errors = errors
    return page


def test_a_terminal_appears_while_connected_and_goes_when_it_leaves(browser, daemon, shots):
    page = console_page(browser, daemon)
    response = page.goto(url(daemon))
    assert response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#terminal-empty:not(.hidden)", timeout=SHOWN_WITHIN)
    with SIPClient("127.0.0.1", daemon.port("raw")) as client:
        assert client.login("sco", "scpass")
        client.sc_status()
        row = page.locator("#terminal-rows tr[data-login='sco']")
        row.wait_for(timeout=SHOWN_WITHIN)
        assert "sc_status" in row.inner_text() and "127.0.0.1" in row.inner_text()
        page.screenshot(path=str(shots / "terminals.png"), full_page=True)
    row.wait_for(state="detached", timeout=SHOWN_WITHIN)
    assert page.errors == []  # no script error, no CSP violation


def test_an_address_not_allowed_refusal_shows_its_fix(browser, daemon, shots):
    with SIPClient("127.0.0.1", daemon.port("raw")) as client:
        assert not client.login("faraway", "farpass")  # allowed from 10.0.0.0/8 only
    page = console_page(browser, daemon)
    page.goto(url(daemon))
    fix = page.locator("#account-rows tr[data-login='faraway'] .fix-line")
    fix.wait_for(timeout=SHOWN_WITHIN)
    assert fix.inner_text() == "allow_from: [10.0.0.0/8, 127.0.0.1/32]"
    assert "address_not_allowed" in page.locator("#refusal-rows").inner_text()
    assert "never seen since start" in page.locator("#account-rows tr[data-login='telnet']").inner_text()
    page.locator("#accounts").screenshot(path=str(shots / "accounts.png"))
    page.locator("#refusals").screenshot(path=str(shots / "refusals.png"))
    page.locator("#filter").fill("faraway")
    assert page.locator("#account-rows tr").count() == 1
    assert "farpass" not in page.content()


def test_the_test_form_runs_the_check_against_a_demo_account(browser, daemon, shots):
    page = console_page(browser, daemon)
    page.goto(url(daemon))
    page.fill("#test-login", "sco")
    page.fill("#test-password", "scpass")
    page.fill("#test-patron", "21000000000001")  # Jane, a demo patron
    page.click("#test-run")
    line = page.locator("#test-line")
    from playwright.sync_api import expect

    expect(line).to_have_text(re.compile(r"^(OK|FAIL)"), timeout=SHOWN_WITHIN)
    assert re.match(r"OK: 127\.0\.0\.1:\d+ \(raw\) connected", line.inner_text()), line.inner_text()
    frames = page.locator("#test-frames li")
    assert frames.count() == 6  # 93/94, 99/98, 23/24
    assert "CO***" in frames.nth(0).inner_text() and "scpass" not in page.content()
    assert page.input_value("#test-password") == ""  # typed for this test only
    page.locator("#activity-rows tr").first.wait_for(timeout=SHOWN_WITHIN)  # the next poll counts the test
    page.locator("#activity").screenshot(path=str(shots / "activity.png"))
    page.locator("#test").screenshot(path=str(shots / "test-a-terminal.png"))
    page.screenshot(path=str(shots / "console.png"), full_page=True)


def test_a_wrong_console_password_is_refused(browser, daemon, shots):
    page = console_page(browser, daemon, password="not the password")
    response = page.goto(url(daemon))
    assert response.status == 401
    assert "Login refused" in page.content()
    assert "Terminals now" not in page.content()
    page.screenshot(path=str(shots / "refused.png"), clip={"x": 0, "y": 0, "width": 480, "height": 48})

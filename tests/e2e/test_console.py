"""The operators' console in a real headless browser (Debian's chromium driven by Playwright): it refuses
without the operators' key, shows a job submitted here with its attempts, and updates as a queue fills.

Skips, saying why, when Playwright or a chromium binary is missing (``ops/bootstrap.sh`` installs
chromium when it runs as root). Playwright never downloads a browser here: it is pointed at the
system's chromium. ``GATEWAY_CONSOLE_SCREENSHOT=path`` saves the filled console as a PNG (the README's).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, Stack, hold_leader_lease, wait_for_status

ADMIN_KEY = ADMIN["Authorization"].removeprefix("Bearer ")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
WAIT_MS = 20_000


def _chromium() -> str | None:
    named = os.environ.get("GATEWAY_TEST_CHROMIUM")
    return named or shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium on PATH: apt-get install chromium (ops/bootstrap.sh does it as root)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    context = browser.new_context(base_url=stack.url, viewport={"width": 1400, "height": 1800})
    context.set_default_timeout(WAIT_MS)
    yield context.new_page()
    context.close()


def _log_in(page: Any, key: str = ADMIN_KEY) -> Any:
    page.goto("/console")
    page.get_by_test_id("login-key").fill(key)
    page.get_by_test_id("login-submit").click()
    return page


def test_the_console_refuses_without_the_operators_key(page: Any, stack: Stack) -> None:
    answer = page.goto("/console")
    assert answer.status == 401
    assert page.get_by_test_id("login-form").is_visible()
    assert page.locator("[data-testid=queues]").count() == 0  # nothing of the console without a session
    _log_in(page, stack.keys["acme"])  # a tenant's key is not the operators'
    assert page.get_by_test_id("login-message").inner_text() == "That is not the operators' key."
    assert page.locator("[data-testid=queues]").count() == 0
    assert httpx.get(f"{stack.url}/v1/admin/overview").status_code == 401


def test_a_session_cookie_needs_its_csrf_token(page: Any, stack: Stack) -> None:
    _log_in(page).get_by_test_id("queues").wait_for()
    session = next(c["value"] for c in page.context.cookies() if c["name"] == "gw_console")
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    with httpx.Client(base_url=stack.url, cookies={"gw_console": session}) as client:
        assert client.get("/v1/admin/overview").status_code == 403
        assert client.get("/v1/admin/overview", headers={"x-gateway-csrf": "forged"}).status_code == 403
        assert client.get("/v1/admin/overview", headers={"x-gateway-csrf": csrf}).status_code == 200
        assert client.post("/console/login", data={"key": ADMIN_KEY, "csrf": "guessed"}).status_code == 403
    with httpx.Client(base_url=stack.url, cookies={"gw_console": session[:-4] + "0000"}) as client:
        assert client.get("/v1/admin/overview", headers={"x-gateway-csrf": csrf}).status_code == 401


def test_the_console_shows_a_job_submitted_here_and_its_attempts(page: Any, stack: Stack) -> None:
    with stack.client("globex") as c:
        job = c.post("/v1/jobs", json={"model": "gpt-4o-mini", "feature": "metrics-batch", "priority": "batch",
                                       "max_tokens": 8, "messages": [{"role": "user", "content": "Hello"}]}).json()
        wait_for_status(c, job["id"], {"succeeded"})
    _log_in(page)
    page.get_by_test_id("filter-tenant").fill("globex")
    row = page.locator(f"[data-testid=jobs] tr[data-job='{job['id']}']")
    row.wait_for()
    assert "metrics-batch" in row.inner_text() and "succeeded" in row.inner_text()
    row.click()
    detail = page.get_by_test_id("job-detail")
    detail.locator("tbody tr").first.wait_for()
    assert "gpt-4o-mini@sim" in detail.inner_text() and "succeeded" in detail.inner_text()
    page.locator("[data-testid=cost] tr[data-tenant=globex][data-feature=metrics-batch]").wait_for()
    assert page.locator("[data-testid=deployments] [data-deployment='gpt-4o-mini@sim']").count() == 1


def test_the_console_updates_when_a_queue_fills(page: Any, stack: Stack) -> None:
    _log_in(page).get_by_test_id("queues-empty").wait_for()
    queue = page.locator("[data-testid=queues] tr[data-lane=batch][data-tenant=initech]")
    assert queue.count() == 0
    with stack.client("initech") as c:
        with hold_leader_lease():  # no scheduler admits: the queue fills
            jobs = [c.post("/v1/jobs", json={"model": "gpt-4o-mini", "feature": "reports", "priority": "batch",
                                             "max_tokens": 8, "messages": [{"role": "user", "content": f"Report {i}"}]})
                    for i in range(5)]
            assert {r.status_code for r in jobs} == {202}
            queue.wait_for()  # the page polls: no reload
            page.wait_for_function("document.querySelector(\"[data-testid=queues] tr[data-tenant=initech] "
                                   "[data-testid=waiting]\").textContent === '5'", timeout=WAIT_MS)
            if path := os.environ.get("GATEWAY_CONSOLE_SCREENSHOT"):
                page.screenshot(path=path, full_page=True)
        for r in jobs:
            wait_for_status(c, r.json()["id"], {"succeeded"})
    queue.wait_for(state="detached")  # drained once the scheduler leads again

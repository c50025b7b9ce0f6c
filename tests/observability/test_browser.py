"""The dashboard in a real headless Chromium: numbers on the first paint, charts that move with
traffic, tables that stay inside 1400 px, no console errors.

Needs Debian's ``chromium`` and ``chromium-driver`` (``scripts/browser.sh`` installs
them where it can). Without them the test skips with a message, except under
``CI=true``, where a missing browser is a failure. The screenshot goes to
``tests/artifacts/dashboard.png``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.observability.servers import ROOT, serve

pytestmark = pytest.mark.e2e

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


def _missing(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        _missing("chromium and chromedriver are not installed; run scripts/browser.sh (as root on Debian)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1700",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def dashboard_server(tmp_path_factory: pytest.TempPathFactory, refresh: str) -> Iterator[str]:
    env = {
        "BASTION_OBSERVABILITY__DASHBOARD__ENABLED": "true",
        "BASTION_OBSERVABILITY__DASHBOARD__REFRESH": refresh,
        "BASTION_ERRORS__FRAMEWORK_ADAPTERS": "false",
    }
    with serve(env, tmp_path_factory.mktemp("dashboard") / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from dashboard_server(tmp_path_factory, "1s")


@pytest.fixture
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Polls a minute apart: what the page shows is its first paint, for the whole test.
    yield from dashboard_server(tmp_path_factory, "60s")


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def series_peaks(driver: Any, chart: str) -> dict[str, float]:
    """The highest point of each line of ``chart``, as a share of the chart's height (0 = flat).

    Read in one script run: the page redraws its charts every second, so elements found
    in one WebDriver call may be gone by the next.
    """
    points: dict[str, str] = driver.execute_script(
        "const out = {};"
        "for (const line of document.querySelectorAll(arguments[0])) {"
        "  out[line.getAttribute('data-series')] = line.getAttribute('points') || '';"
        "}"
        "return out;",
        f'svg[data-chart="{chart}"] polyline',
    )
    peaks: dict[str, float] = {}
    for series, text in points.items():
        ys = [float(point.split(",")[1]) for point in text.split()]
        peaks[series] = (140 - min(ys)) / 140 if ys else 0.0
    return peaks


def last_values(driver: Any, chart: str) -> dict[str, float]:
    """The latest value of each line of ``chart`` (the rate of the last poll), in one script run."""
    values: dict[str, str] = driver.execute_script(
        "const out = {};"
        "for (const line of document.querySelectorAll(arguments[0])) {"
        "  out[line.getAttribute('data-series')] = line.getAttribute('data-last');"
        "}"
        "return out;",
        f'svg[data-chart="{chart}"] polyline',
    )
    return {series: float(value) for series, value in values.items()}


def text_of(driver: Any, element_id: str) -> str:
    """The rendered text of one element, looked up and read in a single script run."""
    text: str = driver.execute_script(
        "const node = document.getElementById(arguments[0]); return node ? node.innerText : '';", element_id
    )
    return text


def table_rows(driver: Any, table_id: str) -> list[list[str]]:
    """The cells of each body row of one table, read in a single script run."""
    rows: list[list[str]] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr'),"
        " tr => Array.from(tr.cells, td => td.textContent));",
        table_id,
    )
    return rows


LONG_OPERATION = "listCustomerSubscriptionInvoiceLineItemsWithExtendedPaginationAndFilteringV2" * 2


def test_the_first_paint_shows_rates_latency_errors_and_clients(browser: Any, slow_server: str) -> None:
    with httpx.Client(base_url=slow_server, timeout=5) as http:
        for i in range(8):
            assert http.get(f"/items/{i}").status_code == 200
        assert http.get("/limited").status_code == 429
        assert http.post("/invalid", json={}).status_code == 422
        boom = http.get("/boom")
        assert boom.status_code == 500
        http.post("/guards/validation", params={"operation": LONG_OPERATION, "code": "INVALID_FORMAT"})
    trace_id = boom.json()["trace_id"]

    browser.get(slow_server + "/_bastion/dashboard")
    wait_for(
        lambda: browser.execute_script("return document.body.dataset.updates") == "1", 15, "the first poll"
    )
    for tile in ("tile-rps", "tile-4xx", "tile-5xx"):
        text = text_of(browser, tile)
        assert float(text) > 0, (tile, text)
    latency = {row[1]: row for row in table_rows(browser, "table-latency")}
    items = latency["/items/{item_id}"]
    assert items[0] == "GET" and items[2] == "9"  # 8 and the readiness probe
    assert all(cell.endswith(("ms", " s")) for cell in items[3:]), items
    assert [row[4] for row in table_rows(browser, "table-5xx")] == [trace_id]
    assert table_rows(browser, "table-clients-429") == [["ip:127.0.0.1", "1"]]
    assert table_rows(browser, "table-clients-validation") == [["ip:127.0.0.1", "1"]]

    # 1400 px wide: a long operation id is cut with an ellipsis, whole in its tooltip, and
    # no table is wider than its card.
    overflow = browser.execute_script(
        "const wide = Array.from(document.querySelectorAll('table'))"
        "  .filter(t => t.scrollWidth > t.parentElement.clientWidth).map(t => t.id);"
        "return {page: document.documentElement.scrollWidth - window.innerWidth, tables: wide};"
    )
    # (Negative when a vertical scroll bar takes its width from the viewport: no overflow either.)
    assert overflow["page"] <= 0 and overflow["tables"] == [], overflow
    cell = browser.execute_script(
        "const td = Array.from(document.querySelectorAll('#table-validation td'))"
        "  .find(td => td.title === arguments[0]);"
        "return td ? [td.scrollWidth > td.clientWidth, getComputedStyle(td).textOverflow] : null;",
        LONG_OPERATION,
    )
    assert cell == [True, "ellipsis"]


def send_traffic(base: str, wave: int) -> None:
    with httpx.Client(base_url=base, timeout=5) as http:
        for i in range(12 + 4 * wave):
            http.get(f"/items/{i}")
        for _ in range(2 + wave):
            http.get("/limited")
            http.get("/missing")
        http.get("/boom")
        http.post("/invalid", json={})
        http.post("/guards/idempotency", params={"event": "replayed"})
        http.post("/guards/idempotency", params={"event": "mismatch" if wave % 2 else "in_progress"})
        http.post("/guards/validation", params={"operation": "createOrder", "code": "INVALID_FORMAT"})
        http.post("/guards/validation", params={"operation": LONG_OPERATION, "code": "OUT_OF_RANGE"})
        http.post("/guards/ratelimit", params={"rule": "per-client", "outcome": "limited"})


def test_dashboard_renders_without_errors_and_follows_traffic(browser: Any, server: str) -> None:
    browser.get(server + "/_bastion/dashboard")
    assert browser.title == "bastion dashboard"
    updates = lambda: int(browser.execute_script("return document.body.dataset.updates || 0"))  # noqa: E731
    wait_for(lambda: updates() >= 2, 15, "the first two polls")
    assert text_of(browser, "tile-total") == "1"  # the readiness probe
    # The rate is over the last 10 s: only the readiness probe, in the second or more since start-up.
    before = last_values(browser, "requests")
    assert set(before) == {"all"} and before["all"] <= 1.0

    for wave in range(4):
        send_traffic(server, wave)
        time.sleep(1.0)
    wait_for(lambda: last_values(browser, "requests").get("all", 0) > 5, 10, "the request rate to rise")
    wait_for(lambda: "/email" in text_of(browser, "table-fields"), 10, "the field table")

    errors = series_peaks(browser, "errors")
    assert errors["4xx"] > 0 and errors["5xx"] > 0
    assert series_peaks(browser, "ratelimited")["429"] > 0
    assert set(series_peaks(browser, "idempotency")) >= {"replayed", "mismatch"}
    assert int(text_of(browser, "tile-429")) == 2 + 3 + 4 + 5
    assert "createOrder" in text_of(browser, "table-validation")
    assert "INTERNAL_ERROR" in text_of(browser, "table-problems")
    assert "live" in text_of(browser, "status")
    assert len(table_rows(browser, "table-5xx")) == 4
    assert table_rows(browser, "table-clients-429")[0] == ["ip:127.0.0.1", str(2 + 3 + 4 + 5)]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "dashboard.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000

    console = browser.get_log("browser")
    severe = [entry for entry in console if entry["level"] == "SEVERE"]
    assert severe == [], severe


def test_a_remote_looking_request_cannot_open_it(server: str) -> None:
    # The real server sees a loopback peer; a forwarding header marks a proxied outsider.
    response = httpx.get(server + "/_bastion/dashboard/data", headers={"x-forwarded-for": "198.51.100.7"})
    assert response.status_code == 404
    assert Path(ARTIFACTS).parent.is_dir()

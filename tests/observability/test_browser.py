"""The dashboard in a real headless Chromium: no console errors, charts that move with traffic.

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
        "--window-size=1280,1100",
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        "BASTION_OBSERVABILITY__DASHBOARD__ENABLED": "true",
        "BASTION_OBSERVABILITY__DASHBOARD__REFRESH": "1s",
        "BASTION_ERRORS__FRAMEWORK_ADAPTERS": "false",
    }
    with serve(env, tmp_path_factory.mktemp("dashboard") / "server.log") as base:
        yield base


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


def text_of(driver: Any, element_id: str) -> str:
    """The rendered text of one element, looked up and read in a single script run."""
    text: str = driver.execute_script(
        "const node = document.getElementById(arguments[0]); return node ? node.innerText : '';", element_id
    )
    return text


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
        http.post("/guards/ratelimit", params={"rule": "per-client", "outcome": "limited"})


def test_dashboard_renders_without_errors_and_follows_traffic(browser: Any, server: str) -> None:
    browser.get(server + "/_bastion/dashboard")
    assert browser.title == "bastion dashboard"
    updates = lambda: int(browser.execute_script("return document.body.dataset.updates || 0"))  # noqa: E731
    wait_for(lambda: updates() >= 2, 15, "the first two polls")
    assert text_of(browser, "tile-total") == "1"  # the readiness probe
    before = series_peaks(browser, "requests")
    assert before == {"all": 0.0}

    for wave in range(4):
        send_traffic(server, wave)
        time.sleep(1.0)
    wait_for(
        lambda: series_peaks(browser, "requests").get("all", 0) > 0.3, 10, "the request rate line to rise"
    )
    wait_for(lambda: "/email" in text_of(browser, "table-fields"), 10, "the field table")

    errors = series_peaks(browser, "errors")
    assert errors["4xx"] > 0 and errors["5xx"] > 0
    assert series_peaks(browser, "ratelimited")["429"] > 0
    assert set(series_peaks(browser, "idempotency")) >= {"replayed", "mismatch"}
    assert int(text_of(browser, "tile-429")) == 2 + 3 + 4 + 5
    assert "createOrder" in text_of(browser, "table-validation")
    assert "INTERNAL_ERROR" in text_of(browser, "table-problems")
    assert "live" in text_of(browser, "status")

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

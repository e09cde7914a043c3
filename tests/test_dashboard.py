"""The dashboard (`GET /`) in a real browser: Debian's Chromium, headless, driven by Selenium
through Debian's chromedriver (/usr/bin/chromium, /usr/bin/chromedriver; Selenium Manager is never
asked, nothing is downloaded). `.ci/run` installs both when they are missing.

The page lists the profiles (an invalid file with its error), a click on a switch button starts
the switch, the progress shows its phases and the container's log line, the active model changes
without a reload, a model's log tail comes on request; with MODELCTL_API_TOKEN the page asks for
the token once and then works. No errors in the browser's console. The time from the click to the
first progress event on the page is measured and printed; a screenshot is taken during the switch
(docs/dashboard.png when MODELCTL_SCREENSHOT names it: `MODELCTL_SCREENSHOT=docs/dashboard.png`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, unavailable
from test_service import start_service, until  # noqa: F401 (start_service: a fixture)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1400",
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """A function that starts a headless Chromium (fresh profile each); all are quit afterwards."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service as DriverService
    except ImportError:
        unavailable("selenium is not installed: pip install -e '.[test]'")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            unavailable(f"{path} is missing: apt-get install chromium chromium-driver (.ci/run does)")
    started: list[Any] = []

    def start(width: int = 1280, height: int = 1400) -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={width},{height}")
        options.add_argument(f"--user-data-dir={tmp_path / f'chromium-{len(started)}'}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(30)
        started.append(driver)
        return driver

    yield start
    for driver in started:
        driver.quit()


def text(driver: Any, element_id: str) -> str:
    return driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.textContent : ''", element_id
    )


def visible(driver: Any, element_id: str) -> bool:
    return driver.execute_script("const e = document.getElementById(arguments[0]); return !!e && !e.hidden", element_id)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def click(driver: Any, selector: str, what: str) -> None:
    """Click the element once it is there and enabled (the page may draw it again meanwhile)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def clicked() -> bool:
        try:
            element = driver.find_element(By.CSS_SELECTOR, selector)
            if not element.is_enabled():
                return False
            element.click()
            return True
        except StaleElementReferenceException:
            return False

    until(clicked, what, 10)


def click_switch(driver: Any, name: str) -> None:
    click(driver, f'button.switch[data-profile="{name}"]', f"a click on the switch button of {name}")


@pytest.mark.engine
def test_the_dashboard_lists_switches_and_follows_a_switch_live(engine, workspace, start_service, browser, tmp_path):
    workspace.profile("demo-a")
    workspace.profile("slow", env={"STANDIN_LOAD_SECONDS": "4"})
    (workspace.profiles_dir / "broken.yaml").write_text("name: broken\nmodel: m\nvram_gib: lots\n")
    service = start_service()
    service.wait_idle()
    driver = browser()
    driver.get(service.url + "/")
    driver.execute_script("window.__sameDocument = true")

    until(lambda: "slow" in text(driver, "profiles") and "demo-a" in text(driver, "profiles"), "the profiles", 10)
    profiles = text(driver, "profiles")
    assert "broken.yaml" in profiles and "invalid" in profiles and "vram_gib" in profiles  # the file's error
    assert text(driver, "active-name") == "none"
    until(lambda: text(driver, "conn") == "live", "the event stream to be live", 10)

    click_switch(driver, "slow")
    until(lambda: visible(driver, "progress"), "the progress panel", 5)
    until(lambda: text(driver, "progress-phase") == "load", "the load phase on the page", 10)
    until(lambda: text(driver, "progress-log").strip(), "the container's log line on the page", 10)
    phases = text(driver, "progress-phases")
    for phase in ("plan", "lock", "start", "load"):
        assert phase in phases, phases
    assert text(driver, "progress-title") == "Switch to slow"
    shot = Path(os.environ.get("MODELCTL_SCREENSHOT") or tmp_path / "dashboard.png")
    if not shot.is_absolute():
        shot = REPO / shot
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(shot))

    until(lambda: text(driver, "active-name") == "slow", "slow to become the active model on the page", 20)
    assert driver.execute_script("return window.__sameDocument === true"), "the page was reloaded"
    until(lambda: "switched" in text(driver, "swaps"), "the swap in the last swaps", 10)
    assert "load" in text(driver, "swaps")  # its phase times
    clicks = driver.execute_script("return window.modelctl.clicks")
    assert len(clicks) == 1 and clicks[0]["target"] == "slow"
    first_event_ms = clicks[0]["firstEventAt"] - clicks[0]["clickAt"]
    print(f"\nclick to first progress event: {first_event_ms:.0f} ms")
    (tmp_path / "click-to-first-event-ms").write_text(f"{first_event_ms:.1f}\n")
    assert first_event_ms < 1000, first_event_ms

    # A model's log tail, on request.
    click(driver, '.profile[data-profile="slow"] button.ghost', "a click on the log button of slow")
    until(lambda: "modelctl-slow" in text(driver, "log-title"), "the log panel of slow", 10)
    assert text(driver, "log-text").strip() and text(driver, "log-text") != "reading..."

    # Stop, from the page.
    click(driver, "#stop", "a click on the stop button")
    until(lambda: text(driver, "active-name") == "none", "no active model after the stop", 20)
    assert console_errors(driver) == []

    # A phone (a window cannot be that narrow: the device is emulated): nothing wider than the screen.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
    )
    time.sleep(0.3)
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390, width
    driver.save_screenshot(str(tmp_path / "phone.png"))


@pytest.mark.engine
def test_with_a_token_the_page_asks_for_it_once_and_then_works(engine, workspace, start_service, browser):
    from selenium.webdriver.common.by import By

    workspace.profile("demo-a")
    token = "dashboard-test-token"
    service = start_service({"MODELCTL_API_TOKEN": token})
    service.wait_idle()
    driver = browser()
    driver.get(service.url + "/")
    until(lambda: visible(driver, "login"), "the page to ask for the token", 10)
    assert not visible(driver, "main")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    until(lambda: "demo-a" in text(driver, "profiles"), "the profiles after the token", 10)
    until(lambda: text(driver, "conn") == "live", "the event stream to be live", 10)
    assert driver.execute_script("return sessionStorage.getItem('modelctl-token')") == token
    assert token not in driver.current_url
    click_switch(driver, "demo-a")
    until(lambda: text(driver, "active-name") == "demo-a", "demo-a to become active", 20)

    # Kept for the tab: a reload does not ask again.
    driver.refresh()
    until(lambda: "demo-a" in text(driver, "profiles"), "the profiles after a reload", 10)
    assert not visible(driver, "login")
    assert console_errors(driver) == []

"""End to end in a real browser: `streamlit run app.py`, every page in headless Chromium, an upload.

Uses Debian's Chromium through Playwright (a test tool's own browser download fails offline); skips
where Chromium is not installed. Screenshots go to screenshots/ for a person to look at.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from conftest import ROOT, TINY_CLASSES, make_photo

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGES = ["", "overview", "curves", "confusion", "attention", "statistics", "classify", "data"]
SHOTS = ROOT / "screenshots"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tiny_results):
    port = free_port()
    env = {**os.environ, "FRUITVEG_ARTIFACTS": str(tiny_results)}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
         "--server.headless", "true", "--server.address", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        browser.close()


def settle(page, timeout_s: float = 90) -> None:
    """Wait until Streamlit has finished running the page script."""
    page.wait_for_selector('[data-testid="stMain"]', timeout=timeout_s * 1000)
    deadline = time.time() + timeout_s
    time.sleep(1.5)
    while time.time() < deadline and page.locator('[data-testid="stStatusWidget"]').count():
        time.sleep(0.5)
    time.sleep(1.0)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_without_an_error_box(app_url, browser, path):
    page = browser.new_page(viewport={"width": 1280, "height": 2400})
    page.goto(f"{app_url}/{path}")
    settle(page)
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{path or 'overview'}.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.all_inner_texts()
    assert page.locator("h1").count() >= 1
    page.close()


def test_uploading_a_photo_shows_six_results(app_url, browser, tmp_path):
    photo = tmp_path / "my banana.png"
    make_photo(TINY_CLASSES["banana"], np.random.default_rng(9), size=120).save(photo)
    page = browser.new_page(viewport={"width": 1280, "height": 2400})
    page.goto(f"{app_url}/classify")
    settle(page)
    page.locator('input[type="file"]').first.set_input_files(str(photo))
    settle(page)
    page.screenshot(path=str(SHOTS / "classify-upload.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Models agreeing with the average" in page.inner_text("body")
    # Each model card shows its heatmap overlay; with the uploaded photo above, 7 images at least.
    assert page.locator('[data-testid="stImage"]').count() >= 7
    page.close()


@pytest.mark.parametrize("name", ["phone 108MP.jpg", "phone.heic"])
def test_uploading_a_phone_photo_shows_results(app_url, browser, tmp_path, name):
    # A 108 MP JPEG (decoded at half size) and a HEIC, what phones save.
    photo = make_photo(TINY_CLASSES["banana"], np.random.default_rng(9), size=120)
    path = tmp_path / name
    if name.endswith(".jpg"):
        photo.resize((12000, 9000)).save(path, quality=10)
    else:
        photo.resize((1200, 900)).save(path, quality=80)
    page = browser.new_page(viewport={"width": 1280, "height": 2400})
    page.goto(f"{app_url}/classify")
    settle(page)
    page.locator('input[type="file"]').first.set_input_files(str(path))
    settle(page)
    page.screenshot(path=str(SHOTS / f"classify-{path.suffix[1:]}.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.all_inner_texts()
    assert "Models agreeing with the average" in page.inner_text("body")
    page.close()


@pytest.mark.parametrize("width", [1400, 800])
def test_every_page_at_desktop_and_narrow_width(app_url, browser, width):
    """Issue 15: screenshots at 1400 and 800 px; /overview is the Overview page; no None in its table."""
    for path in PAGES:
        page = browser.new_page(viewport={"width": width, "height": 1600})
        page.goto(f"{app_url}/{path}")
        settle(page)
        page.screenshot(path=str(SHOTS / f"{width}-{path or 'home'}.png"), full_page=True)
        body = page.inner_text("body")
        assert "Page not found" not in body, path
        assert page.locator('[data-testid="stException"]').count() == 0, path
        if path in ("", "overview"):
            assert page.locator("h1").first.inner_text() == "Overview"
            cells = page.locator('[data-testid="stDataFrame"]').first.inner_text()
            assert "None" not in cells
        page.close()

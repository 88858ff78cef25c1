"""End to end in a real browser: `streamlit run app.py`, every page in headless Chromium, an upload.

Uses Debian's Chromium through Playwright (a test tool's own browser download fails offline); skips
where Chromium is not installed. Screenshots go to screenshots/ for a person to look at.
"""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, TINY_CLASSES, make_photo
from core import images

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGES = ["", "overview", "curves", "confusion", "attention", "statistics", "classify", "data"]
SHOTS = ROOT / "screenshots"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(results):
    """`streamlit run app.py` on ``results``, on a free port; yields its address once it answers."""
    port = free_port()
    env = {**os.environ, "FRUITVEG_ARTIFACTS": str(results)}
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
def app_url(tiny_results):
    with serve(tiny_results) as url:
        yield url


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
    # Between reruns the status widget can be gone while elements are still placeholders: wait for both.
    busy = '[data-testid="stStatusWidget"], [data-testid="stSkeleton"]'
    while time.time() < deadline and page.locator(busy).count():
        time.sleep(0.5)
    time.sleep(1.0)


# Text the reader cannot read whole: cut with an ellipsis, a word broken across two lines (a break at a hyphen
# or a slash is fine), a chart's axis or legend text outside the chart. Tables draw on a canvas and code may
# break anywhere, so both are left out.
CUT_TEXT = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const skip = '[data-testid="stDataFrame"], [data-testid="stCode"], code, pre, svg';
  const found = [];
  for (const element of main.querySelectorAll('*')) {
    if (element.closest(skip) || !element.textContent.trim()) continue;
    if (getComputedStyle(element).textOverflow === 'ellipsis' && element.scrollWidth > element.clientWidth + 1)
      found.push('cut: ' + element.textContent.trim().slice(0, 80));
  }
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    if (node.parentElement.closest(skip)) continue;
    for (const word of node.textContent.matchAll(/[^\\s\\-–—\\/]+/g)) {
      const range = document.createRange();
      range.setStart(node, word.index);
      range.setEnd(node, word.index + word[0].length);
      const lines = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.bottom)));
      if (lines.size > 1) found.push('broken: ' + word[0]);
    }
  }
  for (const chart of main.querySelectorAll('[data-testid="stPlotlyChart"]')) {
    const box = chart.getBoundingClientRect();
    for (const text of chart.querySelectorAll('.g-xtitle text, .g-ytitle text, .xtick text, .ytick text, .legendtext')) {
      const b = text.getBoundingClientRect();
      if (b.width && (b.left < box.left - 1 || b.right > box.right + 1 || b.top < box.top - 1 || b.bottom > box.bottom + 1))
        found.push('outside its chart: ' + text.textContent);
    }
  }
  return found;
}"""


def cut_text(page) -> list[str]:
    charts = '[...document.querySelectorAll(\'[data-testid="stPlotlyChart"]\')].every(c => c.querySelector(".main-svg"))'
    page.wait_for_function(charts, timeout=30_000)  # Plotly draws after the script has finished
    return page.evaluate(CUT_TEXT)


def table_cells(page) -> list[str]:
    """The cells of every table on the page, from the grid's accessible copy (the grid itself is a canvas)."""
    page.locator('[data-testid="stDataFrame"] table td').first.wait_for(state="attached", timeout=30_000)
    return page.locator('[data-testid="stDataFrame"] table td').evaluate_all("cells => cells.map(c => c.textContent)")


def test_a_restarted_server_first_opened_at_a_page_address_shows_the_app_navigation(tiny_results, browser):
    # A browser tab left open on /data reconnects to a restarted server before anyone opens "/". Streamlit
    # then reads a folder named pages/ beside app.py as the old kind of multipage app: its files (helpers
    # included) became the navigation and app.py's own never ran. Hence views/.
    with serve(tiny_results) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/data")
        settle(page)
        links = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
        page.close()
    titles = [re.sub(r"^\w+\n+", "", link).strip() for link in links]  # drop the icon's ligature name
    assert titles == ["Overview", "Training curves", "Confusion", "Attention maps", "Statistics", "Classify", "Data"]


@pytest.mark.parametrize("width", [1400, 800])
def test_every_page_at_desktop_and_narrow_width(app_url, browser, width):
    """Every page renders without an error box, at 1400 and 800 px (screenshots for a person to look at).
    Issue 15: /overview is the Overview page; its tables show formatted strings and fit a 1400 px screen; no
    page cuts a label or breaks a word."""
    for path in PAGES:
        page = browser.new_page(viewport={"width": width, "height": 1600})
        page.goto(f"{app_url}/{path}")
        settle(page)
        page.screenshot(path=str(SHOTS / f"{width}-{path or 'home'}.png"), full_page=True)
        body = page.inner_text("body")
        assert "Page not found" not in body, path
        assert page.locator('[data-testid="stException"]').count() == 0, path
        errors = page.locator('[data-testid="stAlertContentError"]')
        assert errors.count() == 0, (path, errors.all_inner_texts())
        assert page.locator("h1").count() >= 1, path
        assert cut_text(page) == [], path
        if path in ("", "overview"):
            assert page.locator("h1").first.inner_text() == "Overview"
            cells = table_cells(page)
            # The accessible copy holds the cells in view: on a narrow screen, not every column.
            assert len(cells) >= 6 * 5, "the tables' cells are not in the page"
            assert not [c for c in cells if c in ("None", "nan") or re.fullmatch(r"-?\d+\.\d{4,}", c)]
            if width == 1400:  # no sideways scrolling for any column
                widths = page.locator('[data-testid="stDataFrame"] .dvn-scroller').evaluate_all(
                    "grids => grids.map(g => g.scrollWidth - g.clientWidth)")
                assert widths and max(widths) <= 1, widths
        page.close()


def test_the_result_set_survives_three_page_changes(app_url, browser, tiny_results, tmp_path):
    """Issue 15, finding 1: a folder typed on one page stays chosen, and shown, through the sidebar's links."""
    second = tmp_path / "second set"
    shutil.copytree(tiny_results, second)
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.goto(app_url)
    settle(page)
    chosen = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelectTagsContainer"] '
                          'button[aria-label^="Remove"]')  # one per chosen set
    assert chosen.count() == 1
    typed = page.get_by_role("textbox", name="Add a result-set folder")
    typed.fill(str(second))
    typed.press("Enter")
    settle(page)
    assert chosen.count() == 2 and str(second) in page.inner_text('[data-testid="stMain"]')
    for title in ("Training curves", "Confusion", "Overview"):
        page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
        settle(page)
        assert page.locator("h1").first.inner_text() == title
        assert chosen.count() == 2, title
        assert "Not added" not in page.inner_text("body"), title
    assert str(second) in page.inner_text('[data-testid="stMain"]')  # the Overview still shows the typed set
    page.close()


def test_uploading_a_photo_shows_six_results(app_url, browser, tmp_path):
    photo = tmp_path / "my banana.png"
    make_photo(TINY_CLASSES["banana"], np.random.default_rng(9), size=120).save(photo)
    # 800 px: the narrow screen where the model cards' labels were clipped (issue 15, finding 9).
    page = browser.new_page(viewport={"width": 800, "height": 2400})
    page.goto(f"{app_url}/classify")
    settle(page)
    page.locator('input[type="file"]').first.set_input_files(str(photo))
    settle(page)
    page.screenshot(path=str(SHOTS / "classify-upload.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Models agreeing with the average" in page.inner_text("body")
    # Each model card shows its heatmap overlay; with the uploaded photo above, 7 images at least.
    assert page.locator('[data-testid="stImage"]').count() >= 7
    assert cut_text(page) == []
    page.close()


@pytest.mark.parametrize("name", ["phone 108MP.jpg", "phone.heic"])
def test_uploading_a_phone_photo_shows_results(app_url, browser, tmp_path, name):
    # A 108 MP JPEG (decoded at half size) and a HEIC, what phones save.
    photo = make_photo(TINY_CLASSES["banana"], np.random.default_rng(9), size=120)
    path = tmp_path / name
    if name.endswith(".jpg"):
        # As heavy as a phone's: sensor noise at quality 95 makes it about 28 MB, over the 20 MB the uploader
        # once allowed. (JPEG codes 8x8 blocks alone, so a tiled noise costs what fresh noise would.)
        pixels = np.asarray(photo.resize((12000, 9000)), np.int16)
        pixels += np.tile(np.random.default_rng(0).integers(-7, 8, (900, 1200, 3), dtype=np.int16), (10, 10, 1))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=95)
        assert 20 * 2**20 < path.stat().st_size <= images.MAX_FILE_BYTES
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

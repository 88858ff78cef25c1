"""Hostile uploads in a real browser: `streamlit run app.py`, the Classify page in headless Chromium.

One file after the other in the same page: each ends in either one error alert with a one-line message or
six model results, never an exception box, and a normal photo still classifies at the end. Screenshots of
an error and of the final success go to screenshots/. The page's answer to every file of the battery is
tested in-process (test_reliability's AppTest run); through the browser go one file of each format the
uploader offers, both outcomes among them.
"""

import os
import re

import pytest

from test_browser import CHROMIUM, SHOTS, app_url, browser, settle  # noqa: F401  (app_url, browser: fixtures)
from test_reliability import hostile_uploads

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")
PREFIX = "This file cannot be classified: "
# One file of each format the uploader offers (jpg, png, webp, bmp): two refused, three classified. The file
# over the size limit, which Streamlit itself refuses before the page sees it, has its own test below.
BATTERY = ["notes.jpg", "bomb.png", "animated.webp", "photo.bmp", "photo.jpg"]
# Counts the app script's state changes: a run that starts and ends between two polls still leaves a count.
# The previous upload's observer is disconnected first, so that a late change of its run counts for no one.
WATCH_RUNS = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (window.scriptStateObserver) window.scriptStateObserver.disconnect();
    window.scriptStateChanges = 0;
    window.scriptStateObserver = new MutationObserver(records => { window.scriptStateChanges += records.length; });
    window.scriptStateObserver.observe(app, {attributes: true, attributeFilter: ["data-test-script-state"]});
}"""


def upload(page, name: str, data: bytes, mime: str) -> None:
    page.evaluate(WATCH_RUNS)
    page.locator('input[type="file"]').first.set_input_files(files=[{"name": name, "mimeType": mime, "buffer": data}])
    # Under load the upload, and so the rerun it triggers, can start seconds later, and the models can run for
    # minutes: wait for the app's script to have started, then to end, not only for a quiet moment.
    page.wait_for_function("() => window.scriptStateChanges > 0", timeout=60_000)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', state="attached",
                           timeout=300_000)
    settle(page)


def test_hostile_uploads_one_after_the_other_then_a_photo_still_classifies(app_url, browser):
    battery = {u.name: u for u in hostile_uploads(huge=False, gif=False)}
    page = browser.new_page(viewport={"width": 1280, "height": 2000})
    page.goto(f"{app_url}/classify")
    settle(page)
    SHOTS.mkdir(exist_ok=True)
    error_shot = SHOTS / "classify-hostile-error.png"
    shot_taken = False
    for name in BATTERY:
        item = battery[name]
        upload(page, item.name, item.data, item.mime)
        assert page.locator('[data-testid="stException"]').count() == 0, name
        errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
        body = page.inner_text("body")
        if item.error:
            assert len(errors) == 1, (name, errors)
            message = errors[0].strip()
            assert "\n" not in message and message.startswith(PREFIX), (name, message)
            assert re.search(item.error, message[len(PREFIX):]), (name, message)
            assert "Models agreeing with the average" not in body, name
            if not shot_taken:
                page.screenshot(path=str(error_shot), full_page=True)
                shot_taken = True
        else:
            assert errors == [], (name, errors)
            assert "Models agreeing with the average" in body, name
            assert page.locator('[data-testid="stImage"]').count() >= 7, name  # the photo and six overlays
    page.screenshot(path=str(SHOTS / "classify-hostile-success.png"), full_page=True)
    assert error_shot.exists()
    page.close()


def test_a_file_over_the_upload_limit_is_refused_and_the_page_keeps_working(app_url, browser, tmp_path):
    battery = {u.name: u for u in hostile_uploads(gif=False)}
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(f"{app_url}/classify")
    settle(page)
    huge = battery["huge.jpg"]  # 65 MB: over server.maxUploadSize = 64
    on_disk = tmp_path / huge.name  # Playwright takes buffers up to 50 MB only
    on_disk.write_bytes(huge.data)
    page.locator('input[type="file"]').first.set_input_files(str(on_disk))
    # Streamlit's own check, in the browser: the file never reaches the server, so no script runs.
    refusal = re.compile(r"File must be 64(\.0)?\s?MB or smaller")
    page.get_by_text(refusal).first.wait_for(timeout=60_000)
    settle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Models agreeing with the average" not in page.inner_text("body")
    photo = battery["photo.jpg"]
    upload(page, photo.name, photo.data, photo.mime)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Models agreeing with the average" in page.inner_text("body")
    page.close()

"""The web page, driven by a real browser: Playwright (the Python package) with Debian's chromium, no browser
download. CI installs chromium with apt-get and sets VITKIT_BROWSER=1, which turns a missing browser into a
failure instead of a skip."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from tests.serving import CLASSES, LiveServer, chromium, sample_photos, write_checkpoint  # noqa: E402
from vitkit.serve import ServeOptions, create_app, open_model  # noqa: E402

REQUIRED = os.environ.get("VITKIT_BROWSER") == "1"
SCREENSHOT = Path(__file__).parent.parent / "docs" / "serve-page.png"


@pytest.fixture(scope="module")
def browser():
    if chromium() is None or not shutil.which("true"):
        if REQUIRED:
            pytest.fail("VITKIT_BROWSER=1 but no chromium found (apt-get install chromium)")
        pytest.skip("no chromium; apt-get install chromium (CI does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip("playwright is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield browser
        browser.close()


def test_the_page_classifies_a_photo_and_shows_an_error_for_a_non_image(browser, tmp_path):
    run = write_checkpoint(tmp_path / "run")
    photo = sample_photos(tmp_path / "photos")[1]  # scikit-learn's flower.jpg
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    model = open_model(run, backend="torch", device="cpu")
    with LiveServer(create_app(model, ServeOptions(max_batch=2))) as server:
        page = browser.new_page(viewport={"width": 820, "height": 760})
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('vit_cifar')")
        page.set_input_files("#files", [str(photo), str(notes)])
        page.wait_for_selector(".result .row", timeout=30_000)
        page.wait_for_selector(".result .error", timeout=30_000)
        cards = page.query_selector_all(".result")
        assert len(cards) == 2
        by_name = {card.query_selector(".name").inner_text(): card for card in cards}
        labels = [el.inner_text() for el in by_name["flower.jpg"].query_selector_all(".label")]
        assert len(labels) == 5 and set(labels) == set(CLASSES)
        assert "ms" in by_name["flower.jpg"].query_selector(".time").inner_text()
        assert by_name["flower.jpg"].query_selector("img").get_attribute("src").startswith("blob:")
        error = by_name["notes.txt"].query_selector(".error").inner_text()
        assert "is not an image" in error and "text/plain" in error
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        if os.environ.get("VITKIT_SCREENSHOT") == "1":  # refresh the README's picture
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copy(tmp_path / "page.png", SCREENSHOT)

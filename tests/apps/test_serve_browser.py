"""parsenet serve in a real browser: headless Debian chromium driven by Playwright.

Uploads a real SiftFlow image, waits for the result, checks the overlay and the legend,
shows a bad upload's message, runs a bundled example, and checks that no request the page
made left the machine. ``PARSENET_UPDATE_SCREENSHOT=1`` serves the demo's trained models
(``make demo``) and writes the README's docs/images/serve.png; otherwise tiny untrained
models and a screenshot in tmp_path.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("fastapi")

from serve_helpers import running_server, write_tiny_pair  # noqa: E402

from parsenet.apps.serve import create_app, load_served_models, named_checkpoints  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SIFTFLOW = ROOT.parent / "shared" / "data" / "siftflow"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
UPDATE_SCREENSHOT = os.environ.get("PARSENET_UPDATE_SCREENSHOT") == "1"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is not installed"),
    pytest.mark.skipif(not (SIFTFLOW / "images").is_dir(), reason=f"{SIFTFLOW} is absent"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if UPDATE_SCREENSHOT:
        try:
            pairs = named_checkpoints("demo", demo_dir=ROOT / "runs" / "demo")
        except ValueError as e:
            pytest.fail(f"PARSENET_UPDATE_SCREENSHOT=1 needs the demo models: {e}")
        return load_served_models(pairs)
    classes = (SIFTFLOW / "classes.txt").read_text().split()
    paths = write_tiny_pair(tmp_path_factory.mktemp("ckpt"), classes)
    return load_served_models([(None, p) for p in paths])


def _wait_for_result(page, name: str) -> None:
    page.wait_for_function("n => document.getElementById('summary').textContent"
                           ".startsWith(n + ':')", arg=name, timeout=20_000)


def test_page_segments_an_uploaded_photo_offline(served, tmp_path):
    photo = sorted((SIFTFLOW / "images").glob("*/*.jpg"))[0]
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not pixels\n")
    requests: list[str] = []
    with running_server(create_app(served)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1420, "height": 1000})
        context.on("request", lambda request: requests.append(request.url))
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("#examples button.example")

        page.set_input_files("#file", str(photo))
        _wait_for_result(page, photo.name)
        cards = page.locator("#panels .model")
        assert cards.count() == len(served)
        overlay = cards.first.locator("img.overlay")
        assert overlay.is_visible()
        assert overlay.get_attribute("src").startswith("data:image/png;base64,")
        assert overlay.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [256, 256]
        legend = cards.first.locator(".legend li").all_inner_texts()
        assert legend and all(text.split()[0] in served[0].classes for text in legend)
        assert page.locator("#disagreement .disagree-share").inner_text().startswith(
            "the models name different classes on ")

        page.set_input_files("#file", str(not_an_image))
        page.wait_for_selector("#error:not([hidden])")
        assert page.inner_text("#error").startswith("notes.txt: not an image")

        page.locator("#examples button.example").first.click()
        example = page.locator("#examples button.example").first.inner_text()
        _wait_for_result(page, example + ".png")
        assert page.is_hidden("#error")
        shot = (ROOT / "docs" / "images" / "serve.png" if UPDATE_SCREENSHOT
                else tmp_path / "serve.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    # The page made its requests (so the check below is not vacuous), all to this machine.
    paths = {urlsplit(u).path for u in requests if urlsplit(u).scheme in ("http", "https")}
    assert {"/", "/static/app.js", "/static/style.css", "/api/info",
            "/api/predict"} <= paths
    outside = [u for u in requests if urlsplit(u).scheme not in ("data", "blob")
               and urlsplit(u).hostname not in LOOPBACK]
    assert not outside, outside

"""parsenet serve in a real browser: headless Debian chromium driven by Playwright.

Uploads a real SiftFlow image, waits for the result, checks the overlay and the legend,
shows a bad upload's message, switches the model picker to the released Stanford Background
pair (whose examples come from its own dataset), runs one of its examples, and checks that
no request the page made left the machine. ``PARSENET_UPDATE_SCREENSHOT=1`` serves what
``parsenet serve`` serves by default and writes the README's docs/images/serve.png;
otherwise tiny untrained models on SiftFlow's classes come first, and the screenshot goes
to tmp_path.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("fastapi")

from serve_helpers import running_server, write_tiny_pair  # noqa: E402

from parsenet.apps.serve import create_app  # noqa: E402
from parsenet.apps.serve.registry import ModelChoice, ModelRegistry  # noqa: E402
from parsenet.apps.serve.server import model_choices  # noqa: E402
from parsenet.models.released import released  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SIFTFLOW = ROOT.parent / "shared" / "data" / "siftflow"
STANFORD_TITLES = ["stanford_baseline (baseline)", "stanford"]
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
def served(tmp_path_factory, monkeypatch_module):
    # The released models' configs name their data as ../shared/data/<name>, from the root.
    monkeypatch_module.chdir(ROOT)
    if UPDATE_SCREENSHOT:
        return ModelRegistry(model_choices(None, []))
    classes = (SIFTFLOW / "classes.txt").read_text().split()
    paths = write_tiny_pair(tmp_path_factory.mktemp("ckpt"), classes, data={
        "root": SIFTFLOW, "val_split": "trainval", "holdout_every": 10})
    stanford = tuple((f"{name} (baseline)" if name.endswith("_baseline") else name,
                      released(name)) for name in ("stanford_baseline", "stanford"))
    return ModelRegistry([ModelChoice("tiny", tuple((None, p) for p in paths)),
                          ModelChoice("stanford", stanford)])


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


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
        first = served.models()

        page.set_input_files("#file", str(photo))
        _wait_for_result(page, photo.name)
        cards = page.locator("#panels .model")
        assert cards.count() == len(first)
        overlay = cards.first.locator("img.overlay")
        assert overlay.is_visible()
        assert overlay.get_attribute("src").startswith("data:image/png;base64,")
        assert overlay.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [256, 256]
        legend = cards.first.locator(".legend li").all_inner_texts()
        assert legend and all(text.split()[0] in first[0].classes for text in legend)
        assert page.locator("#disagreement .disagree-share").inner_text().startswith(
            "the models name different classes on ")

        page.set_input_files("#file", str(not_an_image))
        page.wait_for_selector("#error:not([hidden])")
        assert page.inner_text("#error").startswith("notes.txt: not an image")

        if not UPDATE_SCREENSHOT:  # switch to the released pair: the photo is segmented again
            page.select_option("#model-picker", "stanford")
            page.wait_for_function(
                "names => [...document.querySelectorAll('#panels .model .model-name')]"
                ".map(e => e.textContent).join('|') === names", arg="|".join(STANFORD_TITLES),
                timeout=60_000)
            legend = page.locator("#panels .model").last.locator(".legend li").all_inner_texts()
            assert legend and all(t.split()[0] in served.models("stanford")[1].classes
                                  for t in legend)
        picked = page.eval_on_selector("#model-picker", "s => s.selectedOptions[0].text")
        assert picked == "Stanford Background: " + " vs ".join(STANFORD_TITLES)
        assert page.inner_text("#models-line") == "released/stanford_baseline, released/stanford"
        examples = page.locator("#examples button.example")
        assert examples.count() == 3
        assert all(name.startswith("stanford_background ") for name in examples.all_inner_texts())
        assert page.inner_text("#examples-source").startswith("from the validation split of ")

        example = examples.nth(1).inner_text()
        examples.nth(1).click()
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

"""serve's model picker: the choices offered, loading on first use, and predicting with the
picked models on images from their own dataset."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import image_bytes, write_tiny_checkpoint, write_tiny_folder  # noqa: E402

from parsenet.apps.serve import create_app, load_served_models  # noqa: E402
from parsenet.apps.serve.registry import ModelChoice, ModelRegistry  # noqa: E402
from parsenet.apps.serve.server import model_choices  # noqa: E402
from parsenet.models.released import ReleasedWeights  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/conftest.py

ROADS = ["road", "car", "sky"]
FIELDS = ["grass", "cow", "sky", "tree"]


@pytest.fixture(scope="module")
def registry_and_loads(tmp_path_factory):
    root = tmp_path_factory.mktemp("picker")
    roads = write_tiny_checkpoint(root / "roads.pt", ROADS, seed=1, name="roads-net",
                                  data={"root": write_tiny_folder(root / "roads", ROADS, count=3)})
    fields = write_tiny_checkpoint(root / "fields.pt", FIELDS, seed=2, name="fields-net",
                                   data={"root": write_tiny_folder(root / "fields", FIELDS,
                                                                   size=(40, 60))})
    loads: list[str] = []

    def loader(sources):
        loads.extend(str(source) for _, source in sources)
        return load_served_models(sources)

    registry = ModelRegistry([ModelChoice("roads", ((None, roads),)),
                              ModelChoice("fields", ((None, fields),))], loader=loader)
    return registry, loads


def _predict(client, choice: str | None):
    url = "/api/predict?images=false" + (f"&choice={choice}" if choice else "")
    return client.post(url, files={"image": ("p.png", image_bytes(30, 40), "image/png")})


def test_the_picker_switches_models_and_examples_loading_each_on_first_use(
        registry_and_loads):
    registry, loads = registry_and_loads
    with TestClient(create_app(registry)) as client:
        info = client.get("/api/info").json()
        assert [c["key"] for c in info["choices"]] == ["roads", "fields"]
        assert info["key"] == "roads" and [m["name"] for m in info["models"]] == ["roads-net"]
        assert [e["name"] for e in info["examples"]] == ["roads v0", "roads v1", "roads v2"]
        assert len(loads) == 1 and loads[0].endswith("roads.pt")  # fields: not yet

        result = _predict(client, None).json()
        assert [m["name"] for m in result["models"]] == ["roads-net"]
        assert {e["name"] for e in result["models"][0]["legend"]} <= set(ROADS)

        fields = client.get("/api/choices/fields").json()
        assert [m["name"] for m in fields["models"]] == ["fields-net"]
        assert fields["models"][0]["classes"] == FIELDS
        assert [e["name"] for e in fields["examples"]] == ["fields v0", "fields v1",
                                                           "fields v3"]
        example = client.get(fields["examples"][0]["url"])
        assert example.status_code == 200 and example.content[:4] == b"\x89PNG"
        result = _predict(client, "fields").json()
        assert [m["name"] for m in result["models"]] == ["fields-net"]
        assert {e["name"] for e in result["models"][0]["legend"]} <= set(FIELDS)

        assert client.get("/api/choices/fields").status_code == 200
        assert len(loads) == 2  # each choice loaded once

        missing = client.get("/api/choices/nonesuch")
        assert missing.status_code == 404
        assert missing.json()["detail"].startswith("model choice 'nonesuch': not served here")
        assert _predict(client, "nonesuch").status_code == 404


def test_choices_offer_what_was_asked_first_then_every_released_pair(tmp_path):
    released = [m.value.name for m in ReleasedWeights.available()]
    pairs = [n for n in released if not n.endswith("_baseline")]
    choices = model_choices(None, [tmp_path / "a.pt"], demo_dir=tmp_path / "no-demo")
    assert [c.key for c in choices] == ["checkpoints", *pairs]
    assert choices[0].sources == ((None, tmp_path / "a.pt"),)
    if "stanford" in pairs:
        stanford = next(c for c in choices if c.key == "stanford")
        assert [t for t, _ in stanford.sources] == ["stanford_baseline (baseline)", "stanford"]
        assert ModelRegistry(choices).title("stanford") == (
            "Stanford Background: stanford_baseline (baseline) vs stanford")

    demo = tmp_path / "demo"
    for name in ("baseline", "parsenet"):
        (demo / name / "checkpoints").mkdir(parents=True)
        (demo / name / "checkpoints" / "last.pt").write_bytes(b"")
    keys = [c.key for c in model_choices(pairs[0] if pairs else "demo", [], demo_dir=demo)]
    assert keys[0] == (pairs[0] if pairs else "demo") and "demo" in keys
    assert len(keys) == len(set(keys))

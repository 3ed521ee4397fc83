"""parsenet serve at the HTTP level: predictions, limits, bad uploads, concurrency, CLI."""

import base64
import io
import json
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx2")  # what starlette's TestClient uses

from bad_input_data import bomb_jpeg, short_png  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import (  # noqa: E402
    image_bytes,
    running_server,
    write_tiny_folder,
    write_tiny_pair,
)

from parsenet.apps.serve import (  # noqa: E402
    ServeSettings,
    UploadLimits,
    create_app,
    load_served_models,
    named_checkpoints,
)
from parsenet.apps.serve.app import STATIC  # noqa: E402
from parsenet.cli import main  # noqa: E402
from parsenet.engine.inference import predict_logits  # noqa: E402

CLASSES = ["sky", "ground", "thing", "water"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    # A 40 px window makes a 100 x 100 image take 3 x 3 sliding windows.
    data = write_tiny_folder(tmp_path_factory.mktemp("data") / "tiny", CLASSES)
    paths = write_tiny_pair(tmp_path_factory.mktemp("ckpt"), CLASSES, eval_window=40,
                            eval_stride=30, data={"root": data})
    return load_served_models([(None, p) for p in paths])


@pytest.fixture(scope="module")
def client(models):
    with TestClient(create_app(models)) as c:
        yield c


def _decode_png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _expected_labels(served, data: bytes, mode: str = "whole") -> np.ndarray:
    rgb = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB")))
    x = served.model.preprocessing(rgb.permute(2, 0, 1)).unsqueeze(0)
    with torch.inference_mode():
        # the served runtime (eager: channels_last on the CPU), as predict runs it
        return predict_logits(served.inferencer.run, x, mode,
                              **served.options).argmax(1)[0].numpy()


def _post(client, data: bytes, name: str = "photo.png", url: str = "/api/predict"):
    return client.post(url, files={"image": (name, data, "application/octet-stream")})


def test_info_names_models_limits_and_examples(client):
    info = client.get("/api/info").json()
    assert [m["name"] for m in info["models"]] == ["tiny-baseline", "tiny-parsenet"]
    assert info["models"][0]["classes"] == CLASSES
    assert info["limits"]["max_bytes"] == 20_000_000
    assert info["limits"]["max_pixels"] == 40_000_000
    # Examples from the models' own dataset: spread over the 4 images of its val split.
    assert [e["name"] for e in info["examples"]] == ["tiny v0", "tiny v1", "tiny v3"]
    assert info["examples_source"].startswith("the validation split of ")
    example = client.get(info["examples"][2]["url"])
    assert example.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(example.content)))
    on_disk = np.asarray(Image.open(Path(info["examples_source"].split(" of ", 1)[1])
                                    / "images" / "val" / "v3.png"))
    assert np.array_equal(shown, on_disk)
    assert client.get("/api/examples/9.png").status_code == 404


def test_page_and_its_files_reference_nothing_outside_the_server(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="drop"' in page.text
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path.name
        assert client.get(f"/static/{path.name}").status_code == 200
    # FastAPI's interactive docs load scripts from a CDN: they are switched off.
    assert client.get("/docs").status_code == 404


def test_prediction_matches_the_models_and_draws_everything(client, models):
    data = image_bytes(72, 96, seed=3)
    result = _post(client, data).json()
    assert (result["width"], result["height"], result["mode"]) == (96, 72, "whole")
    labels = []
    for served, entry in zip(models, result["models"], strict=True):
        expected = _expected_labels(served, data)
        label_png = _decode_png(entry["label_png"])
        assert label_png.mode == "P"  # pixel values are class ids, the palette colours them
        np.testing.assert_array_equal(np.asarray(label_png), expected)
        assert np.asarray(label_png.getpalette()[:3 * len(CLASSES)]).reshape(-1, 3).tolist() \
            == served.palette.tolist()
        for key in ("color_png", "overlay_png"):
            assert _decode_png(entry[key]).size == (96, 72)
        counts = np.bincount(expected.ravel(), minlength=len(CLASSES))
        assert {e["name"]: e["share"] for e in entry["legend"]} == {
            CLASSES[k]: counts[k] / expected.size for k in np.flatnonzero(counts)}
        labels.append(expected)
    differ = labels[0] != labels[1]
    assert result["disagreement"]["share"] == pytest.approx(differ.mean())
    picture = np.asarray(_decode_png(result["disagreement"]["png"]))
    assert np.all((picture == (255, 0, 255)).all(axis=2) == differ)


def test_serve_labels_a_data_resize_checkpoints_image_as_predict_does(tmp_path):
    """A checkpoint trained with data.resize: serve warps the upload as predict does (one
    Inferencer path), so the page's labels are predict's label PNG."""
    from serve_helpers import write_tiny_checkpoint

    from parsenet.apps.tasks import predict_images

    ckpt = write_tiny_checkpoint(tmp_path / "warped.pt", CLASSES, seed=2, name="warped",
                                 data={"resize": [32, 48]})
    data = image_bytes(45, 61, seed=6)
    (tmp_path / "im.png").write_bytes(data)
    written = predict_images(ckpt, [tmp_path / "im.png"], tmp_path / "out", backend="eager",
                             progress=False)["outputs"][0][0]
    expected = np.asarray(Image.open(written))
    served = load_served_models([(None, ckpt)])
    with TestClient(create_app(served)) as client:
        result = _post(client, data).json()
        png = _post(client, data, url="/api/predict.png?model=0")
        info = client.get("/api/info").json()
    assert not np.array_equal(expected, _expected_labels(served[0], data))  # the warp shows
    np.testing.assert_array_equal(np.asarray(_decode_png(result["models"][0]["label_png"])),
                                  expected)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png.content))), expected)
    # Every image runs at 32 x 48, whole: none slides however large.
    assert info["limits"]["slide_above_pixels"] == info["limits"]["max_pixels"]


def test_serve_gives_a_300_class_models_ids_in_a_16_bit_png(tmp_path):
    """uint8 ids would wrap class 299 to 43 without a word: a model of more than 256
    classes gets 16-bit label PNGs of its true ids, in the JSON and from predict.png."""
    from serve_helpers import write_tiny_checkpoint

    classes = [f"class{k}" for k in range(300)]
    ckpt = write_tiny_checkpoint(tmp_path / "many.pt", classes, seed=3, name="many")
    served = load_served_models([(None, ckpt)])
    data = image_bytes(40, 56, seed=7)
    expected = _expected_labels(served[0], data)
    assert expected.max() > 255  # ids a byte cannot hold
    with TestClient(create_app(served)) as client:
        entry = _post(client, data).json()["models"][0]
        png = Image.open(io.BytesIO(_post(client, data, url="/api/predict.png?model=0").content))
    for label_png in (_decode_png(entry["label_png"]), png):
        print("serve label PNG:", label_png.mode, int(np.asarray(label_png).max()))
        assert label_png.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(label_png), expected)
    assert {e["name"] for e in entry["legend"]} == {classes[k] for k in np.unique(expected)}


def test_png_endpoint_returns_the_second_models_label_map(client, models):
    data = image_bytes(50, 64, seed=4)
    response = _post(client, data, name="my photo é.jpg", url="/api/predict.png?model=1")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert 'filename="my_photo___labels.png"' in response.headers["content-disposition"]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(response.content))),
                                  _expected_labels(models[1], data))
    bad = _post(client, data, url="/api/predict.png?model=2")
    assert bad.status_code == 400 and "models 0..1" in bad.json()["detail"]


def test_big_images_slide_and_stream_one_progress_line_per_window(models):
    # A budget that a 60 x 60 image fits whole and a 100 x 100 one does not.
    settings = ServeSettings(memory_budget_gb=models[0].inferencer.memory.whole(60, 60) / 1e9)
    with TestClient(create_app(models, settings)) as client:
        data = image_bytes(100, 100, seed=5)
        response = client.post("/api/predict?stream=true", files={"image": ("big.png", data)})
    events = [json.loads(line) for line in response.text.splitlines()]
    progress = [e for e in events if "progress" in e]
    # 3 x 3 windows of 40 px every 30 px, for each of the two models.
    assert [(e["progress"], e["total"]) for e in progress] == [(i, 18) for i in range(1, 19)]
    result = events[-1]["result"]
    assert result["mode"] == "slide"
    np.testing.assert_array_equal(np.asarray(_decode_png(result["models"][1]["label_png"])),
                                  _expected_labels(models[1], data, "slide"))


def _flat_png(height: int, width: int) -> bytes:
    buffer = io.BytesIO()  # a few hundred bytes however many pixels
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def _truncated_jpeg() -> bytes:
    data = image_bytes(120, 160, fmt="JPEG")
    return data[: len(data) // 2]


@pytest.mark.parametrize("name, data, status, message", [
    ("notes.txt", b"these are not pixels\n", 415, "notes.txt: not an image (or not a format "
                                                  "Pillow reads: JPEG, PNG, WebP, BMP, TIFF, "
                                                  "GIF, ...)"),
    ("cut.jpg", _truncated_jpeg(), 422, "cut.jpg: cannot decode image (Image is incomplete "
                                        "or truncated)"),
    ("short.png", short_png(), 422, "short.png: cannot decode image (not enough image data: "
                                    "301 of 30100 bytes; the file is truncated or corrupt)"),
    ("bomb.jpg", bomb_jpeg(), 413, "bomb.jpg: 40000 x 40000 is 1600.0 megapixels, over the "
                                   "limit of 0.05"),
    ("empty.png", b"", 400, "empty.png: the file is empty"),
    ("huge.png", _flat_png(300, 300), 413, "huge.png: 300 x 300 is 0.1 megapixels, over "
                                             "the limit of 0.05"),
    ("heavy.bmp", image_bytes(100, 100, fmt="BMP"), 413, "heavy.bmp: 0.0 MB is over the "
                                                         "upload limit of 0.02 MB"),
])
def test_bad_uploads_get_a_4xx_with_one_clear_line(models, name, data, status, message):
    limits = UploadLimits(max_bytes=20_000, max_pixels=50_000)
    with TestClient(create_app(models, ServeSettings(limits=limits)),
                    raise_server_exceptions=False) as client:
        for url in ("/api/predict", "/api/predict?stream=true", "/api/predict.png"):
            response = _post(client, data, name=name, url=url)
            assert response.status_code == status, (url, response.text)
            assert response.json()["detail"] == message, response.json()
            assert "Traceback" not in response.text


def test_upload_over_the_byte_limit_is_refused_before_it_is_read(models):
    limits = UploadLimits(max_bytes=20_000)
    with TestClient(create_app(models, ServeSettings(limits=limits))) as client:
        big = _post(client, image_bytes(300, 300, fmt="BMP"))  # 270 kB, over limit + slack
        assert big.status_code == 413
        assert big.json()["detail"] == "upload: 0.3 MB is over the upload limit of 0.02 MB"
        chunked = client.post("/api/predict", content=iter([b"--x\r\n"]),
                              headers={"content-type": "multipart/form-data; boundary=x"})
        assert chunked.status_code == 411
        missing = client.post("/api/predict", files={"photo": ("a.png", b"123")})
        assert missing.status_code == 400
        assert "multipart form field 'image'" in missing.json()["detail"]


def test_uploads_leave_no_file_behind(client, tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    monkeypatch.chdir(tmp_path)
    data = image_bytes(700, 700, fmt="BMP")  # 1.5 MB: past the 1 MB kept in memory
    assert _post(client, data, url="/api/predict?images=false").status_code == 200
    assert list(tmp_path.rglob("*")) == [spool]


def test_eight_concurrent_requests_each_get_their_own_result(models):
    # Different sizes and contents: a mixed-up answer shows in the size and the labels.
    sizes = [(40 + 8 * i, 96 - 4 * i) for i in range(8)]
    uploads = [image_bytes(h, w, seed=10 + i) for i, (h, w) in enumerate(sizes)]
    with running_server(create_app(models)) as url, httpx.Client(base_url=url,
                                                                 timeout=60) as http:
        def ask(data: bytes) -> dict:
            response = http.post("/api/predict", files={"image": ("x.png", data)})
            response.raise_for_status()
            return response.json()

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(ask, uploads))
    for (h, w), data, result in zip(sizes, uploads, results, strict=True):
        assert (result["height"], result["width"]) == (h, w)
        for served, entry in zip(models, result["models"], strict=True):
            np.testing.assert_array_equal(np.asarray(_decode_png(entry["label_png"])),
                                          _expected_labels(served, data))


def test_demo_lookup_finds_the_pair_or_says_how_to_get_it(tmp_path):
    with pytest.raises(ValueError, match=r"run `make demo` first .* or pass --checkpoint"):
        named_checkpoints("demo", demo_dir=tmp_path)
    for name in ("baseline", "parsenet"):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / "checkpoints" / "last.pt").write_bytes(b"")
    pairs = named_checkpoints("demo", demo_dir=tmp_path)
    assert [t for t, _ in pairs] == ["baseline", "ParseNet"]
    assert pairs[1][1] == tmp_path / "parsenet" / "checkpoints" / "last.pt"


@pytest.mark.parametrize("argv, message", [
    (["--model", "demo"], "the demo models are not there (runs/demo/baseline/checkpoints/last.pt"),
    (["--model", "released"], "--model 'released': no such released model (available: "),
    (["--model", "demo", "--checkpoint", "a.pt"], "give --model NAME or --checkpoint PATH"),
    (["--checkpoint", "a.pt", "--checkpoint", "b.pt", "--checkpoint", "c.pt"],
     "serve compares at most two models"),
    # port 0: any free port, so that a server of another test run cannot be in the way
    (["--checkpoint", "missing.pt", "--port", "0"], "missing.pt: no such checkpoint file"),
])
def test_cli_serve_refuses_with_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)  # no runs/demo here
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"parsenet: error: {message}") and "\n" not in err


def test_served_title_comes_from_the_run_name(models):
    assert [m.name for m in models] == ["tiny-baseline", "tiny-parsenet"]
    assert models[0].checkpoint.name == "baseline.pt" and Path(models[1].checkpoint).is_file()


def test_cli_serve_on_a_taken_port_is_one_line(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--checkpoint", "a.pt", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"parsenet: error: cannot listen on 127.0.0.1:{port} (")


def test_released_models_are_served_beside_their_baseline_and_are_the_default():
    from parsenet.apps.serve.models import default_model, known_models
    from parsenet.errors import ParseNetError
    from parsenet.models.released import Release, ReleasedWeights

    shipped = [m.value.name for m in ReleasedWeights.available()]
    if "stanford" not in shipped:
        pytest.skip("the released Stanford Background models are not in this install")
    assert default_model() == "stanford" and set(shipped) <= set(known_models())
    pairs = named_checkpoints("stanford")
    assert [title for title, _ in pairs] == ["stanford_baseline (baseline)", "stanford"]
    assert all(isinstance(source, Release) for _, source in pairs)
    served = load_served_models(pairs)
    assert [m.name for m in served] == ["stanford_baseline (baseline)", "stanford"]
    assert served[0].classes == served[1].classes and len(served[1].classes) == 8
    with pytest.raises(ParseNetError, match="no such released model .*stanford.*; serve also "
                       "takes --model demo or --checkpoint PATH"):
        named_checkpoints("nonesuch")

"""Bad-input catalogue, hostile image files: each case as a user meets it through
``parsenet.cli.main`` in train, eval and predict, with the one line it prints and its exit
status. The files are written by the tests (tests/bad_input_data.py): the 70-byte PNG whose
IDAT is too short (it killed torchvision's decode_png with SIGSEGV), a palette PNG and a
JPEG whose headers claim 30000 x 30000 and 40000 x 40000 pixels. serve's answers to the same
uploads are rows of tests/apps/test_serve.py's bad-upload table; its port, here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input_data import CLASSES, bomb_jpeg, bomb_png, short_png, write_dataset
from PIL import Image

from parsenet.cli import main
from parsenet.config import Config, config_to_dict
from parsenet.engine import checkpoint as ckpt
from parsenet.models import parsenet_vgg16

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/conftest.py

SHORT = ("cannot decode image (not enough image data: 301 of 30100 bytes; the file is "
         "truncated or corrupt)")
BOMB_PNG = "30000 x 30000 is 900.0 megapixels, over the limit of 40 (--max-megapixels raises it)"
BOMB_JPEG = ("40000 x 40000 is 1600.0 megapixels, over the limit of 40 (--max-megapixels "
             "raises it)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("ckpt")
    config = Config()
    config.model.args = {"width": 0.0625}
    config.data.root = str(write_dataset(base / "data"))
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=len(CLASSES), width=0.0625)
    state = {"format": ckpt.CHECKPOINT_FORMAT, "iteration": 1, "model": model.state_dict(),
             "config": config_to_dict(config), "classes": CLASSES, "palette": None,
             "preprocessing": model.preprocessing.to_dict()}
    return ckpt.save_checkpoint(base / "checkpoints" / "last.pt", state)


def train_config(tmp_path: Path, data: Path, workers: int = 0) -> Path:
    config = {"model": {"name": "parsenet_vgg16", "args": {"width": 0.0625}},
              "data": {"root": str(data), "crop_size": 32, "scale_range": [1.0, 1.0],
                       "workers": workers},
              "train": {"iterations": 1, "batch_size": 1, "device": "cpu", "amp": "off",
                        "progress": False, "checkpoint_every": 1, "log_every": 1,
                        "out_dir": str(tmp_path / "run")}}
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("where, content, problem", [
    ("images/train/im0.png", short_png, SHORT),
    ("images/train/im0.png", bomb_png, BOMB_PNG),
    ("labels/train/im0.png", bomb_png, BOMB_PNG),
    ("images/train/im0.png", bomb_jpeg, BOMB_JPEG),  # a JPEG named .png: the bytes decide
])
def test_train_on_a_hostile_file_is_one_line(tmp_path, capsys, workers, where, content,
                                              problem):
    data = write_dataset(tmp_path / "data", n=1)
    bad = data / where
    bad.write_bytes(content())
    assert main(["train", "--config", str(train_config(tmp_path, data, workers))]) == 2
    worker = " (in DataLoader worker process 0)" if workers else ""
    assert error_line(capsys) == f"parsenet: error: {bad}: {problem}{worker}"


def test_eval_on_a_hostile_file_is_one_line_and_the_limit_can_be_raised(
        tmp_path, checkpoint, capsys):
    data = write_dataset(tmp_path / "data", n=1)
    bad = data / "images" / "val" / "im0.png"
    bad.write_bytes(short_png())
    argv = ["eval", "--checkpoint", str(checkpoint), "--data-root", str(data), "--no-progress",
            "--out", str(tmp_path / "eval.json")]
    assert main(argv) == 2
    assert error_line(capsys) == f"parsenet: error: {bad}: {SHORT}"
    photo = data / "images" / "val" / "im0.png"
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(photo)  # 1,920 pixels
    assert main([*argv, "--max-megapixels", "0.001"]) == 2
    assert error_line(capsys) == (f"parsenet: error: {photo}: 48 x 40 is 0.0 megapixels, over "
                                  f"the limit of 0.001 (--max-megapixels raises it)")
    assert main([*argv, "--max-megapixels", "0.002"]) == 0


def test_predict_a_folder_continues_past_hostile_files_and_says_so(tmp_path, checkpoint,
                                                                   capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(folder / "a.png")
    for name, content in (("b.png", short_png), ("c.png", bomb_png), ("d.jpg", bomb_jpeg)):
        (folder / name).write_bytes(content())
    argv = ["predict", str(folder), "--checkpoint", str(checkpoint), "--out",
            str(tmp_path / "pred"), "--backend", "eager", "--no-progress"]
    assert main(argv) == 2  # without --skip-errors: the first bad file stops the run
    assert error_line(capsys) == f"parsenet: error: {folder / 'b.png'}: {SHORT}"
    # the stopped run wrote a.png's outputs already: predicting again replaces them on request
    assert main([*argv, "--skip-errors", "--overwrite"]) == 2
    printed = capsys.readouterr()
    assert printed.out.startswith("1 image(s), backend eager")
    assert printed.err.splitlines() == ["parsenet: skipped 3 of 4 image(s):",
                                        f"  {folder / 'b.png'}: {SHORT}",
                                        f"  {folder / 'c.png'}: {BOMB_PNG}",
                                        f"  {folder / 'd.jpg'}: {BOMB_JPEG}"]
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.png")) == ["a.png"]
    out = tmp_path / "pred2"  # one bad file and nothing else: nothing is written
    assert main(["predict", str(folder / "b.png"), "--checkpoint", str(checkpoint), "--out",
                 str(out), "--backend", "eager", "--no-progress", "--skip-errors"]) == 2
    printed = capsys.readouterr()
    assert printed.out == f"0 image(s), backend eager, mode auto: labels and overlays in {out}\n"
    assert printed.err.splitlines() == ["parsenet: skipped 1 of 1 image(s):",
                                        f"  {folder / 'b.png'}: {SHORT}"]
    assert not any(out.iterdir())


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_predict_max_megapixels_must_be_positive(tmp_path, checkpoint, capsys, value):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    assert main(["predict", str(image), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "pred"), "--max-megapixels", value]) == 2
    assert error_line(capsys) == (f"parsenet: error: --max-megapixels must be a number > 0, "
                                  f"got {float(value)}")


def _phone_photo(path: Path) -> Path:
    """A 56 x 40 JPEG stored sideways: EXIF orientation 6 shows it 40 wide, 56 high."""
    exif = Image.Exif()
    exif[0x0112] = 6
    rng = np.random.default_rng(3)
    pixels = np.kron(rng.integers(0, 256, (5, 7, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    return path


def test_predict_applies_exif_orientation_as_serve_does(tmp_path, checkpoint, capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx2")
    from fastapi.testclient import TestClient

    from parsenet.apps.serve import create_app, load_served_models

    photo = _phone_photo(tmp_path / "phone.jpg")
    assert main(["predict", str(photo), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "pred"), "--backend", "eager", "--no-progress"]) == 0
    predicted = np.asarray(Image.open(tmp_path / "pred" / "phone.png"))
    assert predicted.shape == (56, 40)  # as displayed, not as stored (40 x 56)
    with TestClient(create_app(load_served_models([(None, checkpoint)]))) as client:
        response = client.post("/api/predict.png",
                               files={"image": ("phone.jpg", photo.read_bytes())})
    served = np.asarray(Image.open(io.BytesIO(response.content)))
    np.testing.assert_array_equal(predicted, served)


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_serve_refuses_a_port_out_of_range(capsys, port):
    assert main(["serve", "--checkpoint", "a.pt", "--port", port]) == 2
    assert error_line(capsys) == (f"parsenet: error: --port {port}: a TCP port is 0..65535 "
                                  f"(0: any free port)")


def test_serve_refuses_a_negative_queue(capsys):
    assert main(["serve", "--checkpoint", "a.pt", "--max-waiting", "-1"]) == 2
    assert error_line(capsys) == "parsenet: error: --max-waiting must be >= 0, got -1"

"""`parsenet export --format openvino [--int8 --calibration DIR]`, `export --model NAME`, and
predict on the openvino backend: the files, their agreement with eager, the one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from parsenet.apps.tasks import export_checkpoint, predict_images
from parsenet.cli import main
from parsenet.config import Config, config_to_dict
from parsenet.engine.checkpoint import CHECKPOINT_FORMAT, load_model, save_checkpoint
from parsenet.models import parsenet_vgg16

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.openvino]
CLASSES = ["sky", "ground", "thing"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = Config()
    config.model.args = {"width": 0.0625}
    model = parsenet_vgg16(num_classes=len(CLASSES), width=0.0625)
    state = {"format": CHECKPOINT_FORMAT, "iteration": 1, "model": model.state_dict(),
             "config": config_to_dict(config), "classes": CLASSES, "palette": None,
             "preprocessing": model.preprocessing.to_dict()}
    return save_checkpoint(tmp_path_factory.mktemp("run") / "last.pt", state)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (48 + 8 * i, 64, 3), np.uint8)).save(
            folder / f"im{i}.png")
    return folder


def _agreement(xml: Path, checkpoint: Path) -> float:
    from parsenet.engine.backends import OpenVinoPredictor

    model = load_model(checkpoint).model
    run = OpenVinoPredictor(xml, "f32")
    x = torch.randn(1, 3, 57, 85)
    with torch.no_grad():
        expected = model(x)
    got = run(x)
    assert got.shape == expected.shape  # dynamic height and width survive the conversion
    return float((got.argmax(1) == expected.argmax(1)).float().mean())


@pytest.mark.slow
def test_openvino_export_fp32_and_int8_follow_the_eager_model(checkpoint, images, tmp_path):
    pytest.importorskip("openvino")
    result = export_checkpoint(checkpoint, "openvino", tmp_path / "model.xml")
    assert result["precision"] == "f32" and (tmp_path / "model.bin").is_file()
    assert _agreement(tmp_path / "model.xml", checkpoint) == 1.0
    pytest.importorskip("nncf")
    result = export_checkpoint(checkpoint, "openvino", tmp_path / "int8.xml", int8=True,
                               calibration=images)
    assert result["precision"] == "int8" and result["calibration_images"] == 4
    assert _agreement(tmp_path / "int8.xml", checkpoint) >= 0.9  # quantised, not identical
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.bin", "int8.xml", "model.bin",
                                                         "model.xml"]


def test_int8_quantises_the_dynamo_export(checkpoint, images, tmp_path, onnx_exporters):
    """NNCF quantises the traced export badly (its size arithmetic: 60.7% of the released
    camvid's pixels labelled as eager fp32, against 98.9% from the dynamo export), so --int8
    exports with dynamo; fp32 keeps the cached auto export."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    export_checkpoint(checkpoint, "openvino", tmp_path / "int8.xml", int8=True,
                      calibration=images, export_cache=tmp_path / "cache")
    export_checkpoint(checkpoint, "openvino", tmp_path / "f32.xml",
                      export_cache=tmp_path / "cache")
    assert onnx_exporters == ["dynamo", "auto"]


def test_export_takes_a_released_model_by_name(monkeypatch, tmp_path, capsys):
    import parsenet.apps.tasks as tasks
    from parsenet.models.released import Release

    seen = {}

    def fake_export(source, fmt, out, **kwargs):
        seen.update(source=source, fmt=fmt, **kwargs)
        return {"path": str(out), "format": fmt, "exporter": "x", "diffs": {}}

    monkeypatch.setattr(tasks, "export_checkpoint", fake_export)
    assert main(["export", "--model", "camvid", "--format", "onnx", "--out",
                 str(tmp_path / "c.onnx")]) == 0
    assert isinstance(seen["source"], Release) and seen["source"].name == "camvid"
    assert seen["fmt"] == "onnx" and seen["int8"] is False


@pytest.mark.parametrize(("argv", "message"), [
    (["--format", "onnx", "--int8", "--calibration", "."],
     "--int8 is an OpenVINO export: use --format openvino"),
    (["--format", "openvino", "--int8"], "--int8 needs --calibration DIR"),
    (["--format", "openvino", "--calibration", "."], "--calibration calibrates an --int8 "
                                                      "export; add --int8"),
])
def test_int8_options_are_checked_in_one_line(checkpoint, tmp_path, capsys, argv, message):
    pytest.importorskip("openvino")
    code = main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.xml"),
                 *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("native_bf16", ["0", "1"])
def test_predict_on_openvino_agrees_with_eager(checkpoint, images, tmp_path, monkeypatch,
                                               native_bf16):
    pytest.importorskip("openvino")
    monkeypatch.setenv("PARSENET_CPU_BF16", native_bf16)
    monkeypatch.delenv("PARSENET_BACKEND")  # auto: the fastest installed
    fast = predict_images(checkpoint, [images], tmp_path / "auto", progress=False,
                          export_cache=tmp_path / "cache")
    assert fast["backend"] == "openvino-f32"  # on every CPU kind
    eager = predict_images(checkpoint, [images], tmp_path / "eager", backend="eager",
                           progress=False)
    same = total = 0
    for (png, _), (ref, _) in zip(fast["outputs"], eager["outputs"], strict=True):
        a, b = np.asarray(Image.open(png)), np.asarray(Image.open(ref))
        same, total = same + int((a == b).sum()), total + a.size
    assert same / total >= 0.99

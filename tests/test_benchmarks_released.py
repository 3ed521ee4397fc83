"""The ``released`` benchmark section's INT8 row: the IR ``parsenet export --format openvino
--int8`` writes (NNCF on the dynamo export), not a quantisation of the traced export the other
rows run (NNCF labelled 60.7% of the released camvid's pixels as eager fp32 on that one)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from parsenet.models import parsenet_vgg16

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level package of the repository

import benchmarks.released as released  # noqa: E402


@pytest.mark.openvino
def test_the_int8_row_quantises_the_dynamo_export(tmp_path, onnx_exporters):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    rng = np.random.default_rng(0)
    images = []
    for i in range(2):
        images.append(tmp_path / f"train{i}.png")
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images[-1])
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=3, width=0.0625).eval()
    runs, skipped, setup = {}, {}, {}
    released._add_int8(runs, skipped, setup, model, images, tmp_path / "int8.xml")
    assert onnx_exporters == ["dynamo"] and skipped == {}
    x = torch.randn(1, 3, 48, 64)
    assert runs["OpenVINO INT8"](x).shape == model(x).shape
    assert setup["OpenVINO INT8 export and quantisation"] > 0


def test_the_int8_row_says_why_it_is_skipped(monkeypatch):
    runs, skipped = {}, {}
    released._add_int8(runs, skipped, {}, torch.nn.Identity(), [], Path("unused.xml"))
    assert runs == {} and skipped["OpenVINO INT8"] in (
        "no calibration images", "nncf is not installed",
        "openvino is not installed (pip install 'parsenet[openvino]')")


class _Images:
    def __len__(self) -> int:
        return 10

    def image_path(self, index: int) -> Path:
        return Path(f"{index}.png")


def test_calibration_images_are_files_spread_over_the_split():
    assert released._spread_paths(_Images(), 3) == [Path("0.png"), Path("4.png"),
                                                    Path("9.png")]
    assert released._spread_paths(_Images(), 20) == [Path(f"{i}.png") for i in range(10)]
    assert released._spread_paths(None, 3) == []


def test_exported_runtimes_records_no_int8_entry_when_not_asked(monkeypatch):
    """_one_release asks exported_runtimes for no INT8 row and builds its own (_add_int8):
    no "not asked" entry that a row which then ran would have to take back. The ONNX and
    OpenVINO runtimes are stood in for: nothing is exported or compiled here."""
    import benchmarks.runtimes as runtimes
    import parsenet.engine.backends as backends
    import parsenet.engine.export as export

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(export, "OnnxPredictor", lambda path: ("onnx", path))
    monkeypatch.setattr(backends, "OpenVinoPredictor", lambda path, precision: (path, precision))
    for onnx in (Path("m.onnx"), None):
        runs, skipped, _ = runtimes.exported_runtimes(onnx, [], int8=False)
        print(onnx, "skipped:", skipped)
        assert "OpenVINO INT8" not in runs and "OpenVINO INT8" not in skipped
    assert set(runs) | set(skipped) == set(runtimes.RUNTIMES[4:-1])


def test_an_int8_row_that_ran_is_not_listed_as_skipped(monkeypatch):
    # _add_int8 adds the row from the library's export to what exported_runtimes (asked
    # for no INT8 row) left. The export and the runtime are stood in for: nothing is
    # quantised here.
    import parsenet.engine.backends as backends
    import parsenet.engine.openvino_export as openvino_export

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(openvino_export, "export_openvino_checked",
                        lambda *args, **kwargs: {"path": "int8.xml"})
    monkeypatch.setattr(backends, "OpenVinoPredictor", lambda path, precision: (path, precision))
    runs, skipped = {}, {"OpenVINO bf16": "kept"}
    released._add_int8(runs, skipped, {}, torch.nn.Identity(), [Path("a.png")],
                       Path("int8.xml"))
    assert runs["OpenVINO INT8"] == ("int8.xml", "f32")
    assert skipped == {"OpenVINO bf16": "kept"}

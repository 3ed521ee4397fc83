"""``benchmarks.backend_accuracy`` scores a release's runtimes against eager fp32 on its val
split with the release's eval: run on two real CamVid val images (skipped without the data)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level package of the repository

import benchmarks.backend_accuracy as backend_accuracy  # noqa: E402
from benchmarks.released import SHARED  # noqa: E402


@pytest.mark.openvino
def test_openvino_float32_labels_the_val_images_as_eager_does(tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    if not (SHARED / "camvid" / "classes.txt").is_file():
        pytest.skip("no CamVid under ../shared/data")
    out = tmp_path / "accuracy.json"
    assert backend_accuracy.main(["--model", "camvid", "--backends", "openvino",
                                  "--images", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["val_images"] == 2 and result["eval_mode"] == "multiscale"
    assert result["eval"] == {"scales": [1.0, 1.25, 1.5], "flip": True}
    eager, openvino = result["accuracy"]["eager fp32"], result["accuracy"]["openvino"]
    assert eager["agreement"] == 1.0 and eager["mean_iu_change"] == 0.0
    assert 30 < eager["mean_iu"] <= 100
    assert openvino["agreement"] >= 0.999 and abs(openvino["mean_iu_change"]) < 0.1
    assert openvino["holds"] is True
    assert result["meta"]["command"].startswith("python -m benchmarks.backend_accuracy --model")

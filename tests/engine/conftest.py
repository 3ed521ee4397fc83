"""Fixtures shared by the engine tests: a tiny dataset (trainer tests, in-process and
multi-process) and a tiny exported model (the OpenVINO predictors' tests)."""

import pytest
import torch
from trainer_fixtures import write_tiny_dataset

from parsenet.engine.export import export_onnx
from parsenet.models import parsenet_vgg16


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny_vgg_export(tmp_path_factory):
    """make(num_classes) -> (model, ONNX file) of a ParseNet-VGG at 1/16 width with taps
    conv4 and fc7; skips without ONNX Runtime or OpenVINO."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")

    def make(num_classes: int):
        torch.manual_seed(0)
        model = parsenet_vgg16(num_classes=num_classes, width=0.0625,
                               features=("conv4", "fc7")).eval()
        path = tmp_path_factory.mktemp("onnx") / "model.onnx"
        export_onnx(model, path, sample_size=(64, 64))
        return model, path

    return make

"""Every model variant through the shared checks (one small class per variant)."""

import pytest
import torch

from parsenet.models import (
    parsenet_efficientnet_lite0,
    parsenet_efficientnet_lite2,
    parsenet_resnet50,
    parsenet_vgg16,
)

from model_test_base import ModelTestBase

TINY = dict(num_classes=ModelTestBase.num_classes, width=0.0625)


class TestLargeFOVBaseline(ModelTestBase):
    def build(self):
        return parsenet_vgg16(**TINY, context=False, normalize=False)


class TestParseNetLate(ModelTestBase):
    def build(self):
        return parsenet_vgg16(**TINY, context=True, fusion="late")

    def test_torch_compile_matches_eager(self, model):
        model.eval()
        x = torch.randn(1, 3, 41, 57)
        compiled = torch.compile(model, dynamic=False)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


class TestParseNetEarlyFiveLayers(ModelTestBase):
    def build(self):
        return parsenet_vgg16(**TINY, features=("conv3", "conv4", "conv5", "fc7"), fusion="early")


class TestParseNetConv1x1Pyramid(ModelTestBase):
    # 8 x 8 cells: the 2 x 2 and 4 x 4 pyramid cells split them evenly, hence symmetrically.
    symmetric_size = (57, 57)

    def build(self):
        return parsenet_vgg16(**TINY, fusion="conv1x1", pyramid=(1, 2, 4))


class TestParseNetBatchNorm(ModelTestBase):
    onnx = False

    def build(self):
        return parsenet_vgg16(**TINY, batch_norm=True, features=("conv5", "fc7"))


class TestFCN32sBaseline(ModelTestBase):
    symmetric_size = (64, 96)
    onnx = False

    def build(self):
        return parsenet_vgg16(**TINY, base="fcn32s", context=False, normalize=False)


class TestParseNetFCN32sMultiLayer(ModelTestBase):
    symmetric_size = (64, 96)

    def build(self):
        return parsenet_vgg16(**TINY, base="fcn32s", features=("conv3", "conv4", "fc7"))


@pytest.mark.slow
class TestParseNetResNet50(ModelTestBase):
    sizes = [(33, 47), (64, 64)]
    onnx = False

    def build(self):
        return parsenet_resnet50(num_classes=self.num_classes, features=("layer3", "layer4"))


@pytest.mark.slow
class TestParseNetEfficientNetLite0MultiTap(ModelTestBase):
    flip_symmetric = False

    def build(self):
        return parsenet_efficientnet_lite0(num_classes=self.num_classes, output_stride=16,
                                           features=("stride8", "stride16", "head"))


@pytest.mark.slow
class TestParseNetEfficientNetLite2MultiTap(ModelTestBase):
    flip_symmetric = False
    onnx = False  # exported like Lite0 (same layers), whose export test runs

    def build(self):
        return parsenet_efficientnet_lite2(num_classes=self.num_classes, output_stride=16,
                                           features=("stride8", "stride16", "head"))

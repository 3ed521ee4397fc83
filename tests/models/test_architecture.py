"""The paper's architectures, layer by layer."""

import pytest
import torch
from torch import nn

from parsenet.layers import GlobalContext, L2Norm
from parsenet.models import build_model, parsenet_vgg16


def _convs(seq):
    return [m for m in seq if isinstance(m, nn.Conv2d)]


def test_largefov_baseline_is_deeplab_largefov():
    model = parsenet_vgg16(num_classes=21, context=False, normalize=False)
    n_params = sum(p.numel() for p in model.parameters())
    assert 20.4e6 < n_params < 20.6e6  # DeepLab-LargeFOV: 20.5 M
    assert not any(isinstance(m, (L2Norm, GlobalContext)) for m in model.modules())
    layers = model.backbone.layers
    assert [layers[f"pool{i}"].stride for i in range(1, 6)] == [2, 2, 2, 1, 1]
    assert all(c.dilation == (2, 2) for c in _convs(layers["conv5"]))
    fc6, fc7 = model.backbone.fc_layers()
    assert (fc6.kernel_size, fc6.dilation, fc6.out_channels) == ((3, 3), (12, 12), 1024)
    assert (fc7.kernel_size, fc7.out_channels) == ((1, 1), 1024)
    assert model.backbone.output_stride == 8
    assert len(model.backbone.conv_layers()) == 13


def test_fcn32s_layers():
    model = parsenet_vgg16(num_classes=21, base="fcn32s", context=False, normalize=False,
                           width=0.25)
    fc6, fc7 = model.backbone.fc_layers()
    assert fc6.kernel_size == (7, 7) and fc6.out_channels == 1024  # 4096 * 0.25
    assert model.backbone.output_stride == 32


def test_parsenet_has_pool6_and_branch_norms():
    model = parsenet_vgg16(num_classes=5, width=0.125, features=("conv4", "fc7"),
                           scale_init=20.0)
    assert isinstance(model.context, GlobalContext)
    norms = [m for m in model.modules() if isinstance(m, L2Norm)]
    assert len(norms) == 3  # conv4, fc7, pool6
    assert all(torch.all(n.weight == 20.0) for n in norms)


def test_fixed_scale_option():
    model = parsenet_vgg16(num_classes=5, width=0.125, scale_init=1.0, learn_scale=False)
    norms = [m for m in model.modules() if isinstance(m, L2Norm)]
    assert norms and all(not isinstance(n.weight, nn.Parameter) for n in norms)


def test_width_scales_channels():
    model = parsenet_vgg16(num_classes=3, width=0.5, context=False, normalize=False)
    widths = [c.out_channels for c in model.backbone.conv_layers()]
    assert widths == [32, 32, 64, 64] + [128] * 3 + [256] * 6


def test_registry_and_bad_arguments():
    assert build_model("parsenet_vgg16", num_classes=3, width=0.0625).num_classes == 3
    with pytest.raises(ValueError, match="'segnet' is not a known model"):
        build_model("segnet", num_classes=3)
    with pytest.raises(ValueError, match="base"):
        parsenet_vgg16(num_classes=3, base="fcn8s")
    with pytest.raises(ValueError, match="taps"):
        parsenet_vgg16(num_classes=3, features=("conv2",))
    with pytest.raises(TypeError):
        parsenet_vgg16(3)  # keyword-only, as torchvision's builders


def test_feature_maps_for_fig2():
    model = parsenet_vgg16(num_classes=3, width=0.0625, context=False, normalize=False).eval()
    maps = model.feature_maps(torch.randn(1, 3, 65, 65))
    assert set(maps) == {"conv4", "conv5", "fc7", "pool6"}
    assert maps["pool6"].shape == maps["fc7"].shape
    torch.testing.assert_close(maps["pool6"][..., 0, 0], maps["fc7"].mean(dim=(2, 3)))

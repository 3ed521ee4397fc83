"""The dilated ResNet's taps are named for the stage they are read after."""

import pytest
import torch

from parsenet.backbones.resnet import TAPS, ResNetBackbone


def test_taps_are_the_stages_on_one_stride_8_grid():
    torch.manual_seed(0)
    net = ResNetBackbone(50, taps=TAPS).eval()
    assert net.out_channels == {"layer2": 512, "layer3": 1024, "layer4": 2048}
    with torch.no_grad():
        maps = net(torch.randn(1, 3, 33, 47))
    assert list(maps) == ["layer2", "layer3", "layer4"]
    for tap, fmap in maps.items():
        assert fmap.shape == (1, net.out_channels[tap], 5, 6), tap


def test_the_old_vgg_style_tap_names_are_refused_with_their_new_names():
    with pytest.raises(ValueError, match="fc7 is layer4, conv3 is layer2"):
        ResNetBackbone(50, taps=("fc7", "conv3"))

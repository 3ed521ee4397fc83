from functools import partial

import pytest
import torch
from torch import nn

from parsenet.layers import FUSION_MODES, ContextFusion, GlobalContext, L2Norm


@pytest.mark.parametrize("mode", FUSION_MODES)
@pytest.mark.parametrize("bins", [(1,), (1, 2, 4)])
def test_bias_trick_equals_literal_replicate_and_concatenate(mode, bins):
    torch.manual_seed(0)
    local = [torch.randn(2, 6, 9, 13), torch.randn(2, 4, 9, 13)]
    ctx_layer = GlobalContext(4, bins=bins, dropout=0.0)
    context = ctx_layer(local[1])
    fusion = ContextFusion([6, 4], [4] * len(bins), num_classes=5, mode=mode)
    out = fusion(local, context)
    assert out.shape == (2, 5, 9, 13)
    torch.testing.assert_close(out, fusion.forward_literal(local, context), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["early", "late"])
def test_linear_fusion_context_is_a_per_image_bias(mode):
    torch.manual_seed(0)
    fusion = ContextFusion([4], [4], num_classes=3, mode=mode)
    local = [torch.randn(1, 4, 5, 5)]
    a = fusion(local, [torch.randn(1, 4, 1, 1)])
    b = fusion(local, [torch.randn(1, 4, 1, 1)])
    diff = a - b
    torch.testing.assert_close(diff, diff[..., :1, :1].expand_as(diff))


def test_per_branch_norms_have_own_scales():
    fusion = ContextFusion([3, 5], [5], num_classes=2, norm_layer=partial(L2Norm, scale_init=7.0))
    scales = [n.weight for n in fusion.norms]
    assert [s.numel() for s in scales] == [3, 5]
    assert all(torch.all(s == 7.0) for s in scales)


def test_without_normalize_no_l2norm():
    fusion = ContextFusion([3], [], num_classes=2, norm_layer=nn.Identity)
    assert all(isinstance(n, torch.nn.Identity) for n in fusion.norms)


def test_rejects_unknown_mode():
    with pytest.raises(ValueError, match="fusion mode"):
        ContextFusion([3], [], num_classes=2, mode="sideways")

from functools import partial

import pytest
import torch
from torch import nn

from parsenet.layers import GlobalContext, L2Norm, global_pool, unpool


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (33, 17)])
def test_global_pool_is_exact_mean_any_size_batch_one(size):
    x = torch.randn(1, 6, *size, dtype=torch.float64)
    ctx = GlobalContext(6, norm_layer=nn.Identity, dropout=0.0)
    (pooled,) = ctx(x)
    torch.testing.assert_close(pooled[0, :, 0, 0], x[0].reshape(6, -1).mean(dim=1))


def test_unpool_replicates_to_every_position():
    x = torch.randn(2, 3, 9, 11)
    rep = unpool(global_pool(x), x.shape[-2:])
    assert rep.shape == x.shape
    torch.testing.assert_close(rep, x.mean(dim=(2, 3), keepdim=True).expand_as(x))


def test_pyramid_bins_and_replication_regions():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    ctx = GlobalContext(1, bins=(1, 2, 4), norm_layer=nn.Identity, dropout=0.0)
    p1, p2, p4 = ctx(x)
    assert p1.shape[-2:] == (1, 1) and p2.shape[-2:] == (2, 2) and p4.shape[-2:] == (4, 4)
    torch.testing.assert_close(p2[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    up = unpool(p2, (4, 4))
    torch.testing.assert_close(up[0, 0, :2, :2], torch.full((2, 2), 2.5))
    torch.testing.assert_close(up[0, 0, 2:, 2:], torch.full((2, 2), 12.5))
    torch.testing.assert_close(p4, x)


def test_normalised_context_has_scale_norm():
    ctx = GlobalContext(8, norm_layer=partial(L2Norm, scale_init=10.0), dropout=0.0)
    (pooled,) = ctx(torch.rand(3, 8, 5, 5) * 50)
    torch.testing.assert_close(pooled.norm(dim=1), torch.full((3, 1, 1), 10.0))


def test_no_batchnorm_and_dropout_only_in_train():
    ctx = GlobalContext(4, dropout=0.3)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ctx.modules())
    x = torch.rand(1, 4, 3, 3)
    ctx.eval()
    assert torch.equal(ctx(x)[0], ctx(x)[0])


def test_bad_bins_rejected():
    with pytest.raises(ValueError, match="bins"):
        GlobalContext(4, bins=(0,))


@pytest.mark.parametrize("size", [(4, 4), (9, 7), (13, 21)])
@pytest.mark.parametrize("bins", [2, 3, 4])
def test_pyramid_cells_match_adaptive_avg_pool(size, bins):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, bins)
    torch.testing.assert_close(global_pool(x, bins), expected)


# ---- context that padding cannot dilute ------------------------------------------------

from parsenet.layers.context import mask_to_grid  # noqa: E402
from parsenet.layers.resample import Grid  # noqa: E402


@pytest.mark.parametrize("normalize", [False, True])
def test_pool6_of_a_padded_map_equals_pool6_of_the_unpadded_map(normalize):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 9, dtype=torch.float64) + 3
    padded = torch.nn.functional.pad(x, (0, 4, 0, 3), value=-50.0)  # any padding value
    valid = torch.zeros(2, 10, 13, dtype=torch.bool)
    valid[:, :7, :9] = True
    ctx = GlobalContext(5, norm_layer=L2Norm if normalize else nn.Identity,
                        dropout=0.0).double()
    weight = mask_to_grid(valid, Grid(1, 0.0), padded.shape[-2:])
    (ours,) = ctx(padded, weight)
    (unpadded,) = ctx(x)
    torch.testing.assert_close(ours, unpadded, rtol=1e-12, atol=1e-12)
    (diluted,) = ctx(padded)
    assert not torch.allclose(diluted, unpadded)  # without the mask the padding counts


def test_mask_to_grid_is_the_real_fraction_of_each_cell():
    valid = torch.zeros(1, 20, 16, dtype=torch.bool)
    valid[:, :12, :] = True  # 12 real rows of 20
    # stride 8, offset 0 (LargeFOV): cell i holds pixels 8i-4 .. 8i+3
    w = mask_to_grid(valid, Grid(8, 0.0), (3, 2))
    # cells hold rows 0-3, 4-11 and 12-19 (the last one to the end)
    torch.testing.assert_close(w[0, 0, :, 0], torch.tensor([1.0, 1.0, 0.0]))
    # stride 32, offset 15.5 (FCN-32s): cell 0 holds pixels 0..31, here only 20 rows exist
    w = mask_to_grid(valid, Grid(32, 15.5), (1, 1))
    torch.testing.assert_close(w.flatten(), torch.tensor([12 / 20]))
    ones = mask_to_grid(torch.ones(2, 37, 41, dtype=torch.bool), Grid(8, 0.0), (5, 6))
    assert torch.equal(ones, torch.ones(2, 1, 5, 6))


def test_weighted_pyramid_cells_skip_padding_and_empty_cells_are_zero():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    weight = torch.zeros(1, 1, 4, 4)
    weight[..., :2, :] = 1.0  # top half real
    p2 = global_pool(x, 2, weight)
    torch.testing.assert_close(p2[0, 0], torch.tensor([[2.5, 4.5], [0.0, 0.0]]))

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.graph import saved_tensors_hooks

from parsenet.layers import L2Norm, l2_normalize, l2_normalize_reference


def test_formula_eps_inside_root():
    x = torch.tensor([[[[3.0]], [[4.0]]]])  # one pixel, two channels, norm 5
    layer = L2Norm(2, scale_init=10.0, eps=11.0)
    y = layer(x)
    expected = 10.0 * x / torch.sqrt(torch.tensor(25.0 + 11.0))
    torch.testing.assert_close(y, expected)


def test_per_pixel_unit_norm_times_gamma():
    x = torch.randn(2, 16, 5, 7) * 100
    layer = L2Norm(16, scale_init=20.0)
    y = layer(x)
    torch.testing.assert_close(y.norm(dim=1), torch.full((2, 5, 7), 20.0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("across_spatial,channel_shared", [(False, False), (True, False),
                                                           (False, True), (True, True)])
def test_gradcheck_custom_backward(across_spatial, channel_shared):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    shape = (1, 1, 1, 1) if channel_shared else (1, 4, 1, 1)
    gamma = (torch.rand(shape, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, g: l2_normalize(a, g, 1e-10, across_spatial), (x, gamma))


def test_custom_backward_matches_autograd_of_reference():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 6, 6, requires_grad=True)
    gamma = torch.rand(1, 8, 1, 1, requires_grad=True)
    g = torch.randn(3, 8, 6, 6)
    gx, gg = torch.autograd.grad((l2_normalize(x, gamma) * g).sum(), (x, gamma))
    rx, rg = torch.autograd.grad((l2_normalize_reference(x, gamma) * g).sum(), (x, gamma))
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gg, rg)


def test_zero_gamma_gives_finite_gradients():
    x = torch.randn(1, 4, 3, 3, requires_grad=True)
    gamma = torch.zeros(1, 4, 1, 1, requires_grad=True)
    l2_normalize(x, gamma).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(gamma.grad).all()


def test_zero_pixel_gives_zero_not_nan():
    x = torch.zeros(1, 8, 2, 2, requires_grad=True)
    layer = L2Norm(8)
    y = layer(x)
    y.sum().backward()
    assert torch.equal(y, torch.zeros_like(y))
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_large_values_finite_and_dtype_kept(dtype):
    x = (torch.rand(2, 512, 4, 4) * 2e4 + 1e4).to(dtype)
    layer = L2Norm(512, scale_init=10.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == dtype
    assert torch.isfinite(y.float()).all()
    torch.testing.assert_close(y.float().norm(dim=1), torch.full((2, 4, 4), 10.0),
                               rtol=2e-2, atol=0.1)


def test_fixed_scale_is_a_buffer():
    layer = L2Norm(4, scale_init=1.0, learn_scale=False)
    assert not any(True for _ in layer.parameters())
    assert "weight" in layer.state_dict()


def test_saves_input_and_norm_only():
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    layer = L2Norm(32)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    # The feature map once, the per-pixel norm, and gamma; nothing else.
    assert sorted(saved) == sorted([x.numel(), 2 * 8 * 8, 32])


def test_learned_scale_receives_gradient():
    layer = L2Norm(6)
    x = torch.randn(2, 6, 3, 3)
    layer(x).pow(2).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_matches_f_normalize():
    x = torch.randn(2, 10, 4, 4)
    gamma = torch.full((1, 10, 1, 1), 3.0)
    torch.testing.assert_close(L2Norm(10, 3.0)(x), F.normalize(x, dim=1) * gamma)

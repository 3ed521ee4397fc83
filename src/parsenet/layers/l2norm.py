"""L2 normalisation with a learned per-channel scale (ParseNet, Sec. 3.2, Eq. 1-6).

    x_hat = x / sqrt(sum_c x_c^2 + eps)        (per pixel, across channels; eps inside the root)
    y_c   = gamma_c * x_hat_c

The backward pass is written out (Eq. 4-6) as a custom autograd Function that keeps only the
input and the per-pixel reciprocal norm: autograd's own graph for ``F.normalize(x) * gamma``
keeps the input, the normalised map and the output of the division, and walks three kernels
back. Each pass makes one full-size temporary (``benchmarks/l2norm_bench.py`` times it
against ``F.normalize``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["L2Norm", "NormLayer", "l2_normalize", "l2_normalize_reference",
           "compiled_l2_normalize"]

# What a layer's ``norm_layer=`` takes (timm style): a callable that builds the normaliser
# of a C-channel branch from C, e.g. ``L2Norm``, ``partial(L2Norm, scale_init=20.0)`` or
# ``nn.Identity`` (which ignores C).
NormLayer = Callable[[int], nn.Module]


def _reduce_dims(x: Tensor, across_spatial: bool) -> tuple[int, ...]:
    return tuple(range(1, x.dim())) if across_spatial else (1,)


def l2_normalize_reference(
    x: Tensor, gamma: Tensor, eps: float = 1e-10, across_spatial: bool = False
) -> Tensor:
    """The formula with plain autograd ops: the path used for export, scripting and inference."""
    dims = _reduce_dims(x, across_spatial)
    norm = torch.sqrt(x.pow(2).sum(dim=dims, keepdim=True) + eps)
    return x / norm * gamma


def _inverse_norm(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    """1 / sqrt(sum x^2 + eps) over ``dims``: one reduction, then work on the small map only."""
    return torch.linalg.vector_norm(x, 2, dim=dims, keepdim=True).square_().add_(eps).rsqrt_()


def _weighted_channel_sum(t: Tensor, gamma: Tensor, dims: tuple[int, ...]) -> Tensor:
    """sum over ``dims`` of gamma * t, shaped like the norm."""
    if dims == (1,) and t.dim() == 4 and gamma.shape[1] == t.shape[1] > 1:
        # Per pixel: a batched matrix-vector product, with no full-size temporary.
        n, c = t.shape[:2]
        row = gamma.reshape(1, 1, c).expand(n, 1, c)
        return torch.bmm(row, t.reshape(n, c, -1)).reshape(n, 1, *t.shape[2:])
    return (t * gamma).sum(dim=dims, keepdim=True)


class _L2NormFunction(torch.autograd.Function):
    # Saves x, the reciprocal norm (N x 1 x H x W) and gamma. Backward (Eq. 4-6, regrouped
    # so that each pass makes one full-size temporary and updates it in place):
    #     t = g * x * inv;  dgamma = sum t;  dot = sum_c gamma_c t_c
    #     dx = g * gamma * inv - x * dot * inv^2
    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, eps: float, across_spatial: bool) -> Tensor:
        dims = _reduce_dims(x, across_spatial)
        inv = _inverse_norm(x, dims, eps)
        ctx.save_for_backward(x, inv, gamma)
        ctx.dims = dims
        return torch.mul(x, inv).mul_(gamma)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        return _L2NormFunction.backward_from(ctx, grad_out, *ctx.saved_tensors)

    @staticmethod
    def backward_from(ctx, grad_out: Tensor, x: Tensor, inv: Tensor, gamma: Tensor):
        """The backward from explicit tensors (``ctx`` gives ``dims``, ``needs_input_grad``)."""
        t = torch.mul(grad_out, x).mul_(inv)
        grad_x = grad_gamma = None
        if ctx.needs_input_grad[1]:
            # gamma broadcasts over every dim where it has size 1.
            sum_dims = [d for d in range(x.dim()) if gamma.shape[d] == 1]
            grad_gamma = t.sum(dim=sum_dims, keepdim=True)
        if ctx.needs_input_grad[0]:
            dot = _weighted_channel_sum(t, gamma, ctx.dims)
            del t
            grad_x = torch.mul(grad_out, gamma).mul_(inv)
            grad_x.addcmul_(x, dot.mul_(inv).mul_(inv), value=-1)
        return grad_x, grad_gamma, None, None


def l2_normalize(
    x: Tensor, gamma: Tensor, eps: float = 1e-10, across_spatial: bool = False
) -> Tensor:
    """Functional L2Norm: ``gamma * x / sqrt(sum x^2 + eps)``, backward by Eq. 4-6.

    ``gamma`` broadcasts against ``x`` (shape (1, C, 1, 1) or (1, 1, 1, 1)).
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return l2_normalize_reference(x, gamma, eps, across_spatial)
    if not torch.is_grad_enabled() or not (x.requires_grad or gamma.requires_grad):
        return l2_normalize_reference(x, gamma, eps, across_spatial)
    return _L2NormFunction.apply(x, gamma, eps, across_spatial)


_compiled = None


def compiled_l2_normalize(
    x: Tensor, gamma: Tensor, eps: float = 1e-10, across_spatial: bool = False
) -> Tensor:
    """Opt-in: the reference formula through ``torch.compile`` (fused kernels, one pass).

    Compiles on first call (tens of seconds on CPU); worth it for long runs, not for tests.
    """
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(l2_normalize_reference, dynamic=True)
    return _compiled(x, gamma, eps, across_spatial)


class L2Norm(nn.Module):
    """ParseNet's L2 normalisation layer (the Caffe ``Normalize`` layer).

    Args:
        channels: number of input channels.
        scale_init: initial value of the scale gamma (the paper uses 10 or 20).
        learn_scale: learn gamma by back-propagation (Eq. 6); else it stays at ``scale_init``.
        eps: added to the sum of squares inside the square root.
        across_spatial: normalise over C x H x W per sample instead of per pixel (SSD/Caffe).
        channel_shared: one gamma for all channels instead of one per channel.
        compiled: use :func:`compiled_l2_normalize` (opt-in; needs a working torch.compile).

    Under autocast it computes in float32 and returns the input's dtype: squares of
    half-precision activations around 1e4 would overflow otherwise.
    """

    def __init__(
        self,
        channels: int,
        scale_init: float = 10.0,
        learn_scale: bool = True,
        eps: float = 1e-10,
        across_spatial: bool = False,
        channel_shared: bool = False,
        compiled: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.across_spatial = across_spatial
        self.channel_shared = channel_shared
        self.scale_init = scale_init
        self.compiled = compiled
        shape = (1, 1, 1, 1) if channel_shared else (1, channels, 1, 1)
        gamma = torch.full(shape, float(scale_init))
        if learn_scale:
            self.weight = nn.Parameter(gamma)
        else:
            self.register_buffer("weight", gamma)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(self.scale_init)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            with torch.autocast(device_type=x.device.type, enabled=False):
                y = l2_normalize(x.float(), self.weight.float(), self.eps, self.across_spatial)
            return y.to(x.dtype)
        fn = compiled_l2_normalize if self.compiled else l2_normalize
        return fn(x, self.weight.to(x.dtype), self.eps, self.across_spatial)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, scale_init={self.scale_init}, eps={self.eps}, "
            f"across_spatial={self.across_spatial}, channel_shared={self.channel_shared}, "
            f"learn_scale={isinstance(self.weight, nn.Parameter)}"
        )


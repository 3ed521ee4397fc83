"""Global context: ParseNet's pool6 and its "unpooling" (Sec. 3.1).

pool6 averages a feature map over the whole image; unpooling replicates that vector back to
every position, so a classifier sees the image's context at each pixel. With ``bins`` > 1
the map is also pooled over a b x b grid (the spatial pyramid the paper compares) and each
cell's mean is replicated over the cell.

The module returns the *pooled* maps (N x C x b x b). Replicating them to H x W is left to
whoever consumes them: a linear classifier applied to a replicated vector equals the
classifier applied once at b x b and replicated, which is what :mod:`parsenet.layers.fusion`
does. :meth:`GlobalContext.unpool` gives the literal replicated map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from parsenet.layers.l2norm import L2Norm

__all__ = ["GlobalContext", "global_pool", "unpool"]


def global_pool(x: Tensor, bins: int = 1) -> Tensor:
    """Mean over each of ``bins`` x ``bins`` cells; bins=1 is the exact image mean.

    Cell (i, j) spans rows floor(i*H/b) .. ceil((i+1)*H/b) - 1, as ``adaptive_avg_pool2d``;
    written with explicit slices because exporters mishandle adaptive pooling whose input
    size is symbolic.
    """
    if bins == 1:
        return x.mean(dim=(2, 3), keepdim=True)
    H, W = x.shape[-2], x.shape[-1]
    # Ceilings as (a + b - 1) // b: exported integer division truncates, which floors only
    # non-negative numbers.
    rows = []
    for i in range(bins):
        h0, h1 = (i * H) // bins, ((i + 1) * H + bins - 1) // bins
        cells = []
        for j in range(bins):
            w0, w1 = (j * W) // bins, ((j + 1) * W + bins - 1) // bins
            cells.append(x[:, :, h0:h1, w0:w1].mean(dim=(2, 3), keepdim=True))
        rows.append(torch.cat(cells, dim=3))
    return torch.cat(rows, dim=2)


def unpool(pooled: Tensor, size: tuple[int, int] | Sequence[int]) -> Tensor:
    """Replicate each cell of a pooled map over the region it covers in an H x W map."""
    if pooled.shape[-2:] == (1, 1):
        return pooled.expand(-1, -1, size[0], size[1])
    return F.interpolate(pooled, size=(size[0], size[1]), mode="nearest")


class GlobalContext(nn.Module):
    """pool6: global (or pyramid) average pooling, optional L2Norm and dropout.

    Args:
        channels: channels of the pooled feature map (fc7's in ParseNet).
        bins: pyramid levels; ``(1,)`` is ParseNet's pool6, ``(1, 2, 4)`` the pyramid variant.
        normalize: L2-normalise each pooled level with its own learned scale.
        scale_init, learn_scale: see :class:`~parsenet.layers.L2Norm`.
        dropout: dropout on the pooled features (the original prototxt used 0.3).

    ``forward`` returns one N x C x b x b tensor per level, in the order of ``bins``.
    """

    def __init__(
        self,
        channels: int,
        bins: Sequence[int] = (1,),
        normalize: bool = True,
        scale_init: float = 10.0,
        learn_scale: bool = True,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if not bins or any(int(b) < 1 for b in bins):
            raise ValueError(f"bins must be positive integers, got {tuple(bins)}")
        self.channels = channels
        self.bins = tuple(int(b) for b in bins)
        self.norms = nn.ModuleList(
            [L2Norm(channels, scale_init, learn_scale) if normalize else nn.Identity()
             for _ in self.bins]
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for b, norm in zip(self.bins, self.norms, strict=True):
            out.append(self.dropout(norm(global_pool(x, b))))
        return out

    @staticmethod
    def unpool(pooled: Tensor, size: Sequence[int]) -> Tensor:
        return unpool(pooled, size)

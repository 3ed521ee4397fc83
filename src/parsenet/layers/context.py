"""Global context: ParseNet's pool6 and its "unpooling" (Sec. 3.1).

pool6 averages a feature map over the whole image; unpooling replicates that vector back to
every position, so a classifier sees the image's context at each pixel. With ``bins`` > 1
the map is also pooled over a b x b grid (the spatial pyramid the paper compares) and each
cell's mean is replicated over the cell.

The module returns the *pooled* maps (N x C x b x b). Replicating them to H x W is left to
whoever consumes them: a linear classifier applied to a replicated vector equals the
classifier applied once at b x b and replicated, which is what :mod:`parsenet.layers.fusion`
does. :func:`unpool` gives the literal replicated map.

Padding. When a training crop (or an evaluation window) pads an image, the padded pixels are
not part of the image and must not dilute its context. A validity mask (1 on real pixels)
travels with the batch; :func:`mask_to_grid` turns it into per-cell weights on the feature
grid (the fraction of each cell's pixels that are real) and pool6 becomes the weighted mean,
so a padded image's pool6 is the unpadded one's wherever the feature map itself is. An
all-real mask is the plain mean, bit for bit (the weights are skipped).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from parsenet.layers.l2norm import L2Norm, NormLayer
from parsenet.layers.resample import Grid

__all__ = ["GlobalContext", "global_pool", "unpool", "mask_to_grid"]


def _cell_of_pixel(n_pixels: int, n_cells: int, stride: int, offset: float,
                   like: Tensor) -> Tensor:
    """One-hot n_cells x n_pixels: the cell whose centre is nearest to each pixel."""
    pixels = torch.arange(n_pixels, device=like.device, dtype=torch.float64)
    cell = torch.floor((pixels - offset) / stride + 0.5).clamp(0, n_cells - 1).long()
    return F.one_hot(cell, n_cells).T.to(like.dtype)


def mask_to_grid(valid: Tensor, grid: Grid, size: Sequence[int]) -> Tensor:
    """Validity mask N x H x W (1 = real pixel) -> weights N x 1 x h x w on ``grid``: the
    fraction of real pixels among the pixels nearest to each cell (0 for a cell with none)."""
    v = valid.reshape(valid.shape[0], valid.shape[-2], valid.shape[-1]).to(torch.float32)
    rows = _cell_of_pixel(v.shape[-2], size[0], grid.stride, grid.offset, v)
    cols = _cell_of_pixel(v.shape[-1], size[1], grid.stride, grid.offset, v)
    real = rows @ v @ cols.T
    area = rows.sum(1, keepdim=True) @ cols.sum(1, keepdim=True).T
    return (real / area.clamp(min=1)).unsqueeze(1)


def _weighted_pool(x: Tensor, bins: int, weight: Tensor) -> Tensor:
    # Ratio of cell means = ratio of cell sums: sum(w x) / sum(w) over each cell.
    num = global_pool(x * weight, bins)
    den = global_pool(weight, bins)
    return torch.where(den > 0, num / den.clamp(min=torch.finfo(den.dtype).tiny), 0.0)


def global_pool(x: Tensor, bins: int = 1, weight: Tensor | None = None) -> Tensor:
    """Mean over each of ``bins`` x ``bins`` cells; bins=1 is the exact image mean.

    Cell (i, j) spans rows floor(i*H/b) .. ceil((i+1)*H/b) - 1, as ``adaptive_avg_pool2d``;
    written with explicit slices because exporters mishandle adaptive pooling whose input
    size is symbolic. ``weight`` (N x 1 x H x W, e.g. from :func:`mask_to_grid`) makes it a
    weighted mean; the pyramid cells are then still cells of the whole (padded) map.
    """
    if weight is not None:
        return _weighted_pool(x, bins, weight.to(x.dtype))
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
    """pool6: global (or pyramid) average pooling, then a normaliser and dropout per level.

    Args:
        channels: channels of the pooled feature map (fc7's in ParseNet).
        bins: pyramid levels; ``(1,)`` is ParseNet's pool6, ``(1, 2, 4)`` the pyramid variant.
        norm_layer: builds the normaliser of one level from its channel count; each level
            gets its own (ParseNet: :class:`~parsenet.layers.L2Norm` with its learned scale;
            ``nn.Identity`` for none).
        dropout: dropout on the pooled features (the original prototxt used 0.3).

    ``forward`` returns one N x C x b x b tensor per level, in the order of ``bins``.
    """

    def __init__(self, channels: int, *, bins: Sequence[int] = (1,),
                 norm_layer: NormLayer = L2Norm, dropout: float = 0.3) -> None:
        super().__init__()
        if not bins or any(int(b) < 1 for b in bins):
            raise ValueError(f"bins must be positive integers, got {tuple(bins)}")
        self.channels = channels
        self.bins = tuple(int(b) for b in bins)
        self.norms = nn.ModuleList([norm_layer(channels) for _ in self.bins])
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, weight: Tensor | None = None) -> list[Tensor]:
        """Pooled levels of ``x``; ``weight`` (N x 1 x h x w, see :func:`mask_to_grid`)
        leaves padding out of the averages."""
        out = []
        for b, norm in zip(self.bins, self.norms, strict=True):
            out.append(self.dropout(norm(global_pool(x, b, weight))))
        return out

"""Effective receptive field (Luo et al. 2016) of one feature map, measured on real images.

Luo et al. set the gradient of one output cell to 1 (all channels), 0 elsewhere, and look at
the gradient it sends back to the input: its magnitude, averaged over images, is the ERF,
roughly Gaussian and much smaller than the theoretical receptive field. ParseNet's Sec. 3.1
leans on exactly that (the "actual sizes are about 25% of the theoretical ones"), so claim
2's x axis, image side over ERF, is measured with :func:`effective_receptive_field`.

The size we report is the side of the smallest square, centred on the output cell's input
pixel, that holds ``fraction`` (default 95%) of the |gradient| mass found in the image. If
the image is smaller than the ERF, the mass outside it is lost and the side is a lower
bound; ``clipped`` says when the square reached (touched or crossed) the image border.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor, nn

__all__ = ["ErfResult", "effective_receptive_field", "mass_square_side",
           "theoretical_receptive_field"]


@dataclass(frozen=True)
class ErfResult:
    """``grad_map``: H x W mean |d cell / d input| (summed over RGB), over ``images``."""

    grad_map: np.ndarray
    centre: tuple[int, int]
    side: int
    fraction: float
    images: int
    clipped: bool

    def as_dict(self) -> dict[str, Any]:
        """The figures, without the map (for results.json)."""
        return {"erf_side": self.side, "fraction": self.fraction, "images": self.images,
                "centre_yx": list(self.centre), "clipped": self.clipped,
                "image_hw": list(self.grad_map.shape)}


def mass_square_side(grad_map: np.ndarray, centre: tuple[int, int], fraction: float = 0.95
                     ) -> tuple[int, bool]:
    """Side ``2r + 1`` of the smallest square centred on ``centre`` holding ``fraction`` of
    ``grad_map``'s total, and whether that square reaches the map's border."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    mass = np.abs(np.asarray(grad_map, dtype=np.float64))
    total = mass.sum()
    if total <= 0:
        raise ValueError("the gradient map is all zero: the cell does not see the input")
    h, w = mass.shape
    cy, cx = centre
    # Summed-area table: each square's mass in O(1), so every radius is tried.
    table = np.pad(mass.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    for r in range(max(h, w) + 1):
        y0, y1 = max(cy - r, 0), min(cy + r + 1, h)
        x0, x1 = max(cx - r, 0), min(cx + r + 1, w)
        inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
        # The tolerance absorbs float rounding when the square holds exactly `fraction`.
        if inside >= fraction * total * (1 - 1e-12):
            clipped = cy - r <= 0 or cx - r <= 0 or cy + r >= h - 1 or cx + r >= w - 1
            return 2 * r + 1, clipped
    raise AssertionError("unreachable: the largest square holds the whole map")


def effective_receptive_field(
    feature_map: Callable[[Tensor], Tensor],
    images: Iterable[Tensor],
    *,
    stride: int,
    offset: float,
    fraction: float = 0.95,
) -> ErfResult:
    """Mean |gradient| of the centre cell of ``feature_map(image)`` w.r.t. the image.

    Args:
        feature_map: normalised 1 x 3 x H x W -> 1 x C x h x w (e.g. one backbone tap, the
            model in eval mode so BatchNorm uses its running statistics).
        images: normalised 3 x H x W or 1 x 3 x H x W tensors, all of one size.
        stride, offset: the map's grid: cell i sits on input pixel ``stride * i + offset``.
        fraction: mass share that defines the reported square.
    """
    acc: Tensor | None = None
    count = 0
    size: tuple[int, int] | None = None
    cell: tuple[int, int] = (0, 0)
    for image in images:
        x = (image.unsqueeze(0) if image.dim() == 3 else image).detach().float().clone()
        if size is None:
            size = (x.shape[-2], x.shape[-1])
        elif (x.shape[-2], x.shape[-1]) != size:
            raise ValueError(f"images must share one size: {size} then {tuple(x.shape[-2:])}")
        x.requires_grad_(True)
        out = feature_map(x)
        cell = (out.shape[-2] // 2, out.shape[-1] // 2)
        # Gradient 1 on every channel of the one cell (Luo et al.'s setting).
        out[:, :, cell[0], cell[1]].sum().backward()
        grad = x.grad.detach().abs().sum(dim=(0, 1))
        acc = grad if acc is None else acc + grad
        count += 1
    if acc is None or size is None:
        raise ValueError("no images")
    centre = (min(round(stride * cell[0] + offset), size[0] - 1),
              min(round(stride * cell[1] + offset), size[1] - 1))
    grad_map = (acc / count).numpy()
    side, clipped = mass_square_side(grad_map, centre, fraction)
    return ErfResult(grad_map, centre, side, fraction, count, clipped)


def theoretical_receptive_field(layers: Iterable[nn.Module]) -> int:
    """Side of the theoretical receptive field of a chain of convs and pools.

    ``layers``: modules in the order the data goes through them (e.g. ``model.modules()``
    of a sequential trunk); Conv2d, MaxPool2d and AvgPool2d count, everything else is
    pointwise. Residual branches of a block never see further than its main path, so a
    trunk like EfficientNet's is a chain here.
    """
    side, jump = 1, 1
    for m in layers:
        if isinstance(m, nn.Conv2d):
            kernel, step, dil = m.kernel_size[0], m.stride[0], m.dilation[0]
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            kernel, step = _first(m.kernel_size), _first(m.stride)
            dil = _first(getattr(m, "dilation", 1))
        else:
            continue
        side += dil * (kernel - 1) * jump
        jump *= step
    return side


def _first(v: int | tuple[int, ...]) -> int:
    return v if isinstance(v, int) else int(v[0])

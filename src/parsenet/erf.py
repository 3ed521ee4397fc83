"""Effective receptive field (Luo et al. 2016): where an output cell really looks.

Luo et al. set the gradient of one output cell to 1, 0 elsewhere, and look at the gradient
it sends back to the input: its magnitude is the ERF, roughly Gaussian and much smaller than
the theoretical receptive field. ParseNet's Sec. 3.1 leans on exactly that (the "actual
sizes are about 25% of the theoretical ones").

The size of the ERF is the extent around the cell's input pixel that holds ``fraction`` of
the |gradient| mass found in the image, in one of two shapes (:func:`mass_extent`): the side
of the smallest centred square, or the radius of the smallest centred disc. If the image is
smaller than the ERF, the mass outside it is lost and the size is a lower bound; ``clipped``
says when the shape reached (touched or crossed) the image border.

    input_gradient(model, image, cell=(h // 2, w // 2), channels="argmax")  # one map
    effective_receptive_field(tap, images, stride=16, offset=7.5)  # mean map, 95% square
    effective_receptive_field(model, images, stride=1, offset=0.0, fraction=0.9,
                              shape="disc", channels="argmax", average="extents")  # the demo's
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from torch import Tensor, nn

__all__ = ["ErfResult", "effective_receptive_field", "input_gradient", "mass_extent",
           "mass_disc_radius", "mass_square_side", "theoretical_receptive_field"]

Shape = Literal["square", "disc"]
Channels = Literal["all", "argmax"]


@dataclass(frozen=True)
class ErfResult:
    """``grad_map``: H x W mean |d cell / d input| (summed over RGB), over ``images``."""

    grad_map: np.ndarray
    centre: tuple[int, int]
    side: float  # the square's side, or the disc's radius (``shape="disc"``)
    fraction: float
    images: int
    clipped: bool  # the shape reached the border (of any image, with average="extents")

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


def mass_disc_radius(grad_map: np.ndarray, centre: tuple[int, int], fraction: float = 0.9
                     ) -> tuple[float, bool]:
    """Radius (px) of the smallest disc centred on ``centre`` holding ``fraction`` of
    ``grad_map``'s total (pixels taken by distance), and whether it reaches the border."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    h, w = grad_map.shape
    cy, cx = centre
    yy, xx = np.indices(grad_map.shape)
    dist = np.hypot(yy - cy, xx - cx).ravel()
    order = np.argsort(dist)
    cumulative = np.cumsum(np.abs(grad_map).ravel()[order])
    inside = np.searchsorted(cumulative, fraction * cumulative[-1])
    radius = float(dist[order][min(inside, len(order) - 1)])
    return radius, radius >= min(cy, cx, h - 1 - cy, w - 1 - cx)


def mass_extent(grad_map: np.ndarray, centre: tuple[int, int], fraction: float,
                shape: Shape = "square") -> tuple[float, bool]:
    """The size of the ERF in ``grad_map``: the side of the smallest centred square
    (``"square"``) or the radius of the smallest centred disc (``"disc"``) that holds
    ``fraction`` of its mass, and whether that shape reaches the map's border."""
    if shape == "square":
        return mass_square_side(grad_map, centre, fraction)
    if shape == "disc":
        return mass_disc_radius(grad_map, centre, fraction)
    raise ValueError(f"shape must be 'square' or 'disc', got {shape!r}")


def input_gradient(feature_map: Callable[[Tensor], Tensor], image: Tensor,
                   cell: tuple[int, int] | None = None,
                   channels: Channels = "all"
                   ) -> tuple[np.ndarray, tuple[int, int]]:
    """|d output cell / d image| summed over RGB (H x W), and the cell (default: the map's
    centre). ``channels``: every channel of the cell gets gradient 1 (Luo et al.), or only
    its highest-scoring one (the class the cell predicts)."""
    x = (image.unsqueeze(0) if image.dim() == 3 else image).detach().float().clone()
    x.requires_grad_(True)
    out = feature_map(x)
    if cell is None:
        cell = (out.shape[-2] // 2, out.shape[-1] // 2)
    scores = out[0, :, cell[0], cell[1]]
    (scores.sum() if channels == "all" else scores[scores.argmax()]).backward()
    return x.grad.detach()[0].abs().sum(0).numpy(), cell


def effective_receptive_field(
    feature_map: Callable[[Tensor], Tensor],
    images: Iterable[Tensor],
    *,
    stride: int,
    offset: float,
    fraction: float = 0.95,
    shape: Shape = "square",
    channels: Channels = "all",
    average: Literal["map", "extents"] = "map",
) -> ErfResult:
    """Mean |gradient| of the centre cell of ``feature_map(image)`` w.r.t. the image, and
    the size of the ERF (:func:`mass_extent`).

    Args:
        feature_map: normalised 1 x 3 x H x W -> 1 x C x h x w (e.g. one backbone tap, the
            model in eval mode so BatchNorm uses its running statistics).
        images: normalised 3 x H x W or 1 x 3 x H x W tensors, all of one size.
        stride, offset: the map's grid: cell i sits on input pixel ``stride * i + offset``.
        fraction, shape: the mass share and the shape that define the reported size.
        channels: the cell's channels that get gradient 1 (:func:`input_gradient`); "all"
            is Luo et al.'s setting, "argmax" follows the class the cell predicts.
        average: the size of the mean map ("map"), or the mean of each image's own size
            ("extents": one image's ERF, averaged, where the images differ in content).
    """
    if average not in ("map", "extents"):
        raise ValueError(f"average must be 'map' or 'extents', got {average!r}")
    acc: np.ndarray | None = None
    count = 0
    extents: list[tuple[float, bool]] = []
    cell: tuple[int, int] = (0, 0)
    for image in images:
        grad, cell = input_gradient(feature_map, image, channels=channels)
        if acc is not None and grad.shape != acc.shape:
            raise ValueError(f"images must share one size: {acc.shape} then {grad.shape}")
        acc = grad if acc is None else acc + grad
        count += 1
        if average == "extents":
            extents.append(mass_extent(grad, _centre(cell, grad, stride, offset), fraction,
                                       shape))
    if acc is None:
        raise ValueError("no images")
    centre = _centre(cell, acc, stride, offset)
    grad_map = acc / count
    if average == "map":
        size, clipped = mass_extent(grad_map, centre, fraction, shape)
    else:
        size = float(np.mean([s for s, _ in extents]))
        clipped = any(c for _, c in extents)
    return ErfResult(grad_map, centre, size, fraction, count, clipped)


def _centre(cell: tuple[int, int], grad: np.ndarray, stride: int, offset: float
            ) -> tuple[int, int]:
    """The input pixel under ``cell`` of a map on the grid ``stride * i + offset``."""
    return (min(round(stride * cell[0] + offset), grad.shape[0] - 1),
            min(round(stride * cell[1] + offset), grad.shape[1] - 1))


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

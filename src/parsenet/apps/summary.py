"""Parameters and FLOPs of a model, and the table of the paper's main variants.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix
products, a multiply-add counted as 2 FLOPs. Element-wise work (ReLU, pooling, L2Norm,
bilinear upsampling) is not counted; it is well under 1% of a VGG-16's convolutions.
Models are built and run on the ``meta`` device, so no memory is allocated and no
arithmetic is done: the table takes well under a second even at full width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from parsenet.apps.tables import format_text_table
from parsenet.models import parsenet_vgg16

__all__ = ["model_summary", "paper_variants", "variants_table", "format_variants"]


def model_summary(model: nn.Module, size: int | tuple[int, int] = 500) -> dict[str, Any]:
    """Parameters and forward FLOPs of ``model`` on one 3 x H x W image.

    Returns ``params``, ``trainable_params``, ``flops`` (multiply-add = 2), ``gflops``,
    ``input`` (H, W) and ``output`` (shape of the logits). The model runs on the device its
    parameters are on (use the meta device for a free count) in eval mode, restored after.
    """
    h, w = (size, size) if isinstance(size, int) else size
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = torch.empty(1, 3, h, w, device=device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter, torch.no_grad():
            out = model(x)
    finally:
        model.train(was_training)
    flops = int(counter.get_total_flops())
    return {"params": params, "trainable_params": trainable, "flops": flops,
            "gflops": flops / 1e9, "input": (h, w), "output": tuple(out.shape)}


def paper_variants() -> dict[str, dict[str, Any]]:
    """The paper's main VGG-16 variants as ``parsenet_vgg16`` keyword arguments."""
    baseline = {"context": False, "normalize": False, "features": ("fc7",)}
    return {
        "FCN-32s": {"base": "fcn32s", **baseline},
        "DeepLab-LargeFOV (baseline)": {"base": "largefov", **baseline},
        "ParseNet: pool6 + fc7, late": {
            "base": "largefov", "context": True, "normalize": True, "features": ("fc7",),
            "fusion": "late"},
        "ParseNet: pool6 + fc7 + conv5 + conv4 + conv3, early": {
            "base": "largefov", "context": True, "normalize": True,
            "features": ("conv3", "conv4", "conv5", "fc7"), "fusion": "early"},
    }


def variants_table(size: int = 500, num_classes: int = 21,
                   builder: Callable[..., nn.Module] = parsenet_vgg16
                   ) -> list[dict[str, Any]]:
    """One row (``name`` + :func:`model_summary`) per paper variant, counted on ``meta``."""
    rows = []
    for name, kwargs in paper_variants().items():
        with torch.device("meta"):
            model = builder(num_classes=num_classes, **kwargs)
        rows.append({"name": name, **model_summary(model, size)})
    return rows


def format_variants(rows: list[dict[str, Any]]) -> str:
    """Rows of :func:`variants_table` as a fixed-width text table."""
    h, w = rows[0]["input"] if rows else (0, 0)
    cells = [[r["name"], f"{r['params'] / 1e6:.2f}", f"{r['gflops']:.1f}"] for r in rows]
    lines = format_text_table(["variant", "params (M)", f"GFLOPs @{h}x{w}"], cells,
                              [None, 10, 14], rule="columns")
    lines.append("FLOPs: convolutions and matrix products, multiply-add = 2 FLOPs "
                 "(FlopCounterMode); element-wise ops not counted.")
    return "\n".join(lines)

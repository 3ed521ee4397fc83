"""Section 6: our dilated ResNet-50 ParseNet against torchvision's fcn_resnet50 and
deeplabv3_resnet50 (random weights, no auxiliary head), forward and train step, batch 1.

All three use the same dilated ResNet-50 trunk (output stride 8); they differ in the head:
ParseNet's is L2Norm + pool6 + two 1x1 classifiers, FCN's a 3x3 conv 2048->512, DeepLabv3's
ASPP. DeepLabv3's image-pooling branch has a BatchNorm over a 1x1 map, which cannot train
on a batch of one; that one BatchNorm is kept in eval mode during its train step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.common import (
    Section,
    Settings,
    count_flops,
    interleave,
    make_forward,
    make_train_step,
    median,
    paired_ratio,
)
from parsenet.models import parsenet_resnet50

__all__ = ["run"]

NUM_CLASSES = 21


class _Logits(nn.Module):
    """torchvision's segmentation models return {"out": logits}; this returns the logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _builders() -> dict[str, Callable[[], nn.Module]]:
    from torchvision.models.segmentation import deeplabv3_resnet50, fcn_resnet50

    kw: dict[str, Any] = {
        "weights": None,
        "weights_backbone": None,
        "num_classes": NUM_CLASSES,
        "aux_loss": False,
    }
    return {
        "ours": lambda: parsenet_resnet50(num_classes=NUM_CLASSES),
        "fcn_resnet50": lambda: _Logits(fcn_resnet50(**kw)),
        "deeplabv3_resnet50": lambda: _Logits(deeplabv3_resnet50(**kw)),
    }


def _pooling_bn_eval(model: nn.Module) -> None:
    from torchvision.models.segmentation.deeplabv3 import ASPPPooling

    for m in model.modules():
        if isinstance(m, ASPPPooling):
            for bn in m.modules():
                if isinstance(bn, nn.BatchNorm2d):
                    bn.eval()


def run(settings: Settings, shared: dict[str, Any]) -> list[Section]:
    size = settings.peer_size
    torch.manual_seed(0)
    builders = _builders()
    models = {k: b() for k, b in builders.items()}
    x = torch.randn(1, 3, size, size)
    flops = {k: count_flops(b, size, train=False) for k, b in builders.items()}
    fwd = interleave(
        {k: make_forward(m, x) for k, m in models.items()},
        min_rounds=settings.slow_rounds,
        max_rounds=settings.slow_rounds,
        budget_s=settings.budget_s,
        desc="peers forward",
    )
    steps = {
        k: make_train_step(
            m, x, NUM_CLASSES, prepare=_pooling_bn_eval if k.startswith("deeplab") else None
        )
        for k, m in models.items()
    }
    train = interleave(
        steps,
        min_rounds=settings.peer_train_rounds,
        max_rounds=settings.peer_train_rounds,
        budget_s=0.0,
        desc="peers train",
    )
    times = {"forward": fwd, "train": train}
    ratios = {
        kind: {peer: paired_ratio(t["ours"], t[peer]) for peer in models if peer != "ours"}
        for kind, t in times.items()
    }
    section = Section(
        "peers",
        f"6. Dilated ResNet-50 ParseNet vs torchvision at 1x3x{size}x{size}",
        details={"flops_forward": flops, "seconds": times, "ratios": ratios},
    )
    for kind in ("forward", "train"):
        section.add(
            f"{kind} ms: " + " / ".join(models),
            " / ".join(f"{median(times[kind][k]) * 1e3:.0f}" for k in models),
            note=f"{len(times[kind]['ours'])} rounds",
        )
    section.add(
        "forward GFLOPs: " + " / ".join(models), " / ".join(f"{flops[k] / 1e9:.0f}" for k in models)
    )
    for peer in ("fcn_resnet50", "deeplabv3_resnet50"):
        for kind in ("forward", "train"):
            section.add(
                f"ours / {peer}, {kind}",
                ratios[kind][peer],
                "{:.3f}",
                note=f"FLOP ratio {flops['ours'] / flops[peer]:.3f}",
            )
    return [section]

"""Section "precision": does bf16 autocast pay for training on this CPU?

Train step (SGD, cross-entropy, the trainer's autocast + fp32 loss) under bf16 autocast and
in float32, interleaved in the same rounds, for the LargeFOV baseline and ParseNet (fc7 +
pool6, L2Norm, late fusion):

    full width   1 x 3 x 320 x 320, VGG-16 LargeFOV as the paper's
    demo shape   4 x 3 x 320 x 320, width 0.125 + BatchNorm (configs/demo.yaml)

The ratio is fp32 time / bf16 time (> 1: bf16 is faster). ``train.amp: auto`` picks bf16 on
a CPU with native bf16 for every model, the small demo model included, because this section
measured it faster at both shapes there (docs/PERFORMANCE.md); on a CPU without native bf16
the section still runs (emulated bf16 kernels), which shows why auto stays in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import Section, Settings, interleave, median, paired_ratio, ratio_range
from parsenet.engine.precision import cpu_has_native_bf16
from parsenet.models import parsenet_vgg16

__all__ = ["run", "SHAPES"]

NUM_CLASSES = 21
# name: (batch, side, width, batch_norm); --quick shrinks the full-width side
SHAPES = {
    "full width 1x320²": (1, 320, 1.0, False),
    "demo shape 4x320² w0.125+BN": (4, 320, 0.125, True),
}
HEAD_VARIANTS = {"baseline": dict(context=False, normalize=False), "ParseNet": dict()}
GOAL = 1.6  # bf16 at least 1.6x faster at full width on a native-bf16 CPU


def _train_step(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None
                ) -> Callable[[], object]:
    target = torch.randint(0, NUM_CLASSES, (x.shape[0], *x.shape[-2:]),
                           generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)

    def step() -> object:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), target, ignore_index=255)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def run(settings: Settings, shared: dict[str, Any]) -> list[Section]:
    native = cpu_has_native_bf16()
    section = Section("precision", "bf16 autocast vs float32 train step (img/s ratio)")
    section.details["native_bf16"] = native
    for shape, (batch, side, width, batch_norm) in SHAPES.items():
        if settings.quick:
            side, width = min(side, settings.size), min(width, settings.width)
        x = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(1))
        fns: dict[str, Callable[[], object]] = {}
        for name, kw in HEAD_VARIANTS.items():
            torch.manual_seed(0)
            fp32 = parsenet_vgg16(num_classes=NUM_CLASSES, width=width, batch_norm=batch_norm,
                                  **kw)
            torch.manual_seed(0)
            bf16 = parsenet_vgg16(num_classes=NUM_CLASSES, width=width, batch_norm=batch_norm,
                                  **kw)
            fns[f"{name} fp32"] = _train_step(fp32, x, None)
            fns[f"{name} bf16"] = _train_step(bf16, x, torch.bfloat16)
        times = interleave(fns, min_rounds=settings.min_rounds, max_rounds=settings.max_rounds,
                           budget_s=settings.budget_s, desc=f"precision {shape}")
        for name in HEAD_VARIANTS:
            fp32_t, bf16_t = times[f"{name} fp32"], times[f"{name} bf16"]
            ratio = paired_ratio(fp32_t, bf16_t)
            note = (f"{batch / median(fp32_t):.2f} -> {batch / median(bf16_t):.2f} img/s; "
                    f"{ratio_range(fp32_t, bf16_t)}")
            metric = f"{name}, {shape}: bf16 speed-up"
            if shape.startswith("full") and native and not settings.quick:
                section.add_goal(metric, ratio, ">=", GOAL, note=note)
            else:
                section.add(metric, ratio, "{:.3f}", note=note)
            section.details[f"{name} {shape}"] = {
                "fp32_s": fp32_t, "bf16_s": bf16_t, "batch": batch, "side": side,
                "width": width}
    return [section]

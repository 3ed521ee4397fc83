"""EfficientNet-Lite0/1/2 (Tan & Le; the TF "lite" variants) as dense feature extractors.

An exact port of the TensorFlow model: no squeeze-excite, ReLU6, BatchNorm eps 1e-3,
residual when a block has stride 1 and equal in/out channels, and TensorFlow "SAME"
padding, which is asymmetric on stride-2 convs (on an even input: nothing before, the rest
after). Inputs are RGB pixels mapped by (x - 127) / 128 (:data:`LITE_PREPROCESSING`).

Grid. Every stride-2 conv on an even input centres output cell i on input 2i + 1, so the
final cell i sits on input pixel ``output_stride * i + output_stride - 1``
(``grid_offset = output_stride - 1``). ``forward`` pads the input at the bottom/right to a
multiple of the output stride so that every strided conv sees an even size and that grid
holds for any input; on sizes already a multiple (224 for ImageNet) nothing is padded and
the computation is TensorFlow's.

Output stride 16 or 8: the last one or two stride-2 stages run at stride 1 and their later
depthwise convs are dilated (the torchvision ResNet convention: the block that lost its
stride keeps the previous dilation).

Variants. Lite1 and Lite2 scale Lite0's channels and repeats as EfficientNet-B1/B2 do
(width x1.0 / x1.1, depth x1.1 / x1.2), but keep the stem, the head and the repeats of the
first and last stages fixed: TensorFlow's ``efficientnet_lite_builder`` (``fix_head_stem``).
Their ImageNet resolutions are 240 and 260.

Taps, named for where they are read: ``stride4`` (stage 2), ``stride8`` (stage 3),
``stride16`` (stage 5), ``stride32`` (stage 7) and ``head`` (1280 ch, the 1x1 head conv);
on Lite0 24, 40, 112 and 320 channels (:func:`lite_stages` for the others). A tap finer
than the output grid is brought onto it by a (2r - 1)-wide average over its r x r-subsampled
cells, centred on the coarse cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from parsenet.preprocessing import Preprocessing

__all__ = ["EfficientNetLite", "LITE_PREPROCESSING", "LITE0_STAGES", "LITE_VARIANTS", "TAPS",
           "lite_stages", "round_filters"]

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, EfficientNet-B0
# = Lite0. The stem has 32 channels, the head 1280.
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
                (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
                (1, 3, 1, 6, 192, 320))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
# Variant -> (width, depth) multipliers (TF efficientnet_lite_builder.efficientnet_lite_params).
LITE_VARIANTS = {"lite0": (1.0, 1.0), "lite1": (1.0, 1.1), "lite2": (1.1, 1.2)}
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TF's BN: eps 1e-3, moving-average decay 0.99
TAPS = ("stride4", "stride8", "stride16", "stride32", "head")
# Tap -> (index of the last stage it follows (-1: the head), nominal stride).
_TAP_AT = {"stride4": (1, 4), "stride8": (2, 8), "stride16": (4, 16), "stride32": (6, 32),
           "head": (-1, 32)}

# (x - 127) / 128 on [0, 255] pixels = (x/255 - 127/255) / (128/255) on [0, 1].
LITE_PREPROCESSING = Preprocessing(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0),
                                   pixel_max=255.0)


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's ``round_filters``: ``channels * width`` to the nearest multiple of
    ``divisor``, never more than 10% below it."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def lite_stages(variant: str = "lite0") -> tuple[tuple[int, int, int, int, int, int], ...]:
    """:data:`LITE0_STAGES` scaled to ``variant``: channels by its width, repeats by its
    depth (rounded up), the first and last stages' repeats and the stem's 32 channels fixed."""
    if variant not in LITE_VARIANTS:
        raise ValueError(f"variant must be one of {tuple(LITE_VARIANTS)}, got {variant!r}")
    width, depth = LITE_VARIANTS[variant]
    last = len(LITE0_STAGES) - 1
    return tuple(
        (repeats if i in (0, last) else math.ceil(depth * repeats), kernel, stride, expand,
         STEM_CHANNELS if i == 0 else round_filters(in_ch, width), round_filters(out_ch, width))
        for i, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(LITE0_STAGES))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size ceil(in / stride), the extra pad
    pixel (if any) after the image. Symmetric, hence static, when stride is 1."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1) -> None:
        pad = dilation * (kernel - 1) // 2 if stride == 1 else 0
        super().__init__(in_ch, out_ch, kernel, stride, padding=pad, dilation=dilation,
                         groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        stride = self.stride[0]
        if stride > 1:
            # TF's total pad, max((ceil(size / s) - 1) * s + span - size, 0), in integer
            # arithmetic on the size that exporters record as graph ops (a float ceil is
            # frozen at the sample's size by tracing, and makes torch.export's symbolic shapes
            # grow with every stage); floor division, not %, which torch.compile's symbolic
            # shapes cannot lower (it fails at the second input size).
            span = self.dilation[0] * (self.kernel_size[0] - 1) + 1
            pads = []
            for size in (x.shape[-1], x.shape[-2]):  # F.pad wants (left, right, top, bottom)
                total = (size + stride - 1) // stride * stride - size + span - stride
                if span < stride:  # only then can the formula go negative
                    total = max(total, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1,
             groups: int = 1, act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [SameConv2d(in_ch, out_ch, kernel, stride, dilation, groups),
                               nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return layers


class MBConv(nn.Module):
    """Inverted residual without squeeze-excite: expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int,
                 dilation: int = 1) -> None:
        super().__init__()
        mid = in_ch * expand
        self.expand = nn.Sequential(*_conv_bn(in_ch, mid, 1)) if expand != 1 else nn.Identity()
        self.depthwise = nn.Sequential(*_conv_bn(mid, mid, kernel, stride, dilation, groups=mid))
        self.project = nn.Sequential(*_conv_bn(mid, out_ch, 1, act=False))
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite trunk; ``forward`` returns the requested taps on one grid.

    Args:
        taps: subset of :data:`TAPS`.
        output_stride: 32, 16 or 8.
        variant: ``lite0``, ``lite1`` or ``lite2`` (:data:`LITE_VARIANTS`).
    """

    def __init__(self, taps: Sequence[str] = ("head",), output_stride: int = 32,
                 variant: str = "lite0") -> None:
        super().__init__()
        unknown = [t for t in taps if t not in TAPS]
        if unknown or not taps:
            raise ValueError(f"taps must be a non-empty subset of {TAPS}, got {tuple(taps)}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        stages = lite_stages(variant)
        self.variant = variant
        self.taps = tuple(taps)
        self.output_stride = output_stride
        self.grid_offset = float(output_stride - 1)
        self.stem = nn.Sequential(*_conv_bn(3, STEM_CHANNELS, 3, stride=2))
        self.stages = nn.ModuleList()
        self._stage_stride: list[int] = []  # stride of each stage's output, after dilation
        stride, dilation = 2, 1
        for repeats, kernel, s, expand, in_ch, out_ch in stages:
            first_dilation = dilation
            if s > 1 and stride * s > output_stride:
                dilation, s = dilation * s, 1
            stride *= s
            blocks = [MBConv(in_ch if i == 0 else out_ch, out_ch, kernel, s if i == 0 else 1,
                             expand, first_dilation if i == 0 else dilation)
                      for i in range(repeats)]
            self.stages.append(nn.Sequential(*blocks))
            self._stage_stride.append(stride)
        self.head = nn.Sequential(*_conv_bn(stages[-1][5], HEAD_CHANNELS, 1))
        channels = [st[5] for st in stages]
        self.out_channels = {t: HEAD_CHANNELS if _TAP_AT[t][0] < 0 else channels[_TAP_AT[t][0]]
                             for t in self.taps}
        self.input_multiple = stride * 1  # product of the strides actually applied

    def named_stages(self) -> dict[str, nn.Module]:
        """Stage name -> module (``stem``, ``stage1`` ... ``stage7``, ``head``), for weights'
        ``fills`` and ``model.freeze``."""
        return {"stem": self.stem, **{f"stage{i + 1}": s for i, s in enumerate(self.stages)},
                "head": self.head}

    def tap_stages(self) -> dict[str, str]:
        """Tap -> the stage whose output it is read from (a frozen prefix caches these)."""
        names = list(self.named_stages())[1:]
        return {t: "head" if _TAP_AT[t][0] < 0 else names[_TAP_AT[t][0]] for t in self.taps}

    def tap_stride(self, tap: str) -> int:
        """Stride of ``tap`` before it is brought onto the output grid."""
        i = _TAP_AT[tap][0]
        return self._stage_stride[i] if i >= 0 else self._stage_stride[-1]

    def _to_grid(self, x: Tensor, tap: str) -> Tensor:
        r = self.output_stride // self.tap_stride(tap)
        if r == 1:
            return x
        # Fine cell r*i + r - 1 sits on coarse cell i; average the 2r - 1 cells centred there.
        x = F.pad(x, (0, r - 1, 0, r - 1), mode="replicate")
        return F.avg_pool2d(x, 2 * r - 1, stride=r)

    def forward(self, x: Tensor, taps: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Feature maps of ``taps`` (default: the taps given at construction)."""
        taps = self.taps if taps is None else tuple(taps)
        m = self.input_multiple
        h, w = x.shape[-2], x.shape[-1]
        pad_h, pad_w = (h + m - 1) // m * m - h, (w + m - 1) // m * m - w  # no %: see SameConv2d
        # A trace keeps the pad (zero for sizes that need none), not the sample's branch.
        if pad_h or pad_w or torch.jit.is_tracing():
            x = F.pad(x, (0, pad_w, 0, pad_h))
        wanted = {_TAP_AT[t][0]: t for t in taps}
        last = len(self.stages) if -1 in wanted else max(wanted)
        out: dict[str, Tensor] = {}
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i > last:
                break
            x = stage(x)
            if i in wanted:
                out[wanted[i]] = self._to_grid(x, wanted[i])
        if -1 in wanted:
            out["head"] = self.head(x)
        return {t: out[t] for t in taps}

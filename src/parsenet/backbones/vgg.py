"""VGG-16 as a dense feature extractor: DeepLab-LargeFOV, DeepLab and FCN-32s.

LargeFOV (output stride 8): pool1-3 are 3x3/2 (padding 1), pool4 and pool5 are 3x3/1, conv5
is dilated by 2, fc6 is a 3x3 conv with 1024 channels and dilation 12, fc7 a 1x1 conv with
1024 channels. DeepLab (the non-LargeFOV model of ParseNet's Tables 2 and 5; "DeepLab-CRF"
without CRF in Chen et al., ICLR 2015, Table 2: 4x4 kernel, input stride 4, 4096 channels,
65.1M parameters): the same trunk with fc6 a 4x4 conv, dilation 4, 4096 channels, and fc7
1x1 with 4096. FCN-32s (output stride 32): 2x2 pools, fc6 a 7x7 conv with 4096 channels,
fc7 1x1 with 4096.

Padding. By default every conv is 'same'-padded, so any input of at least 32 x 32 gives a
map whose cells sit on a known grid (see :mod:`parsenet.layers.resample`). ``conv1_pad``
(FCN-32s only) sets conv1_1's padding; FCN's value is 100, and with it fc6 is unpadded as in
FCN's net.py (``fc6 ... ks=7, pad=0``: the 100 pixels are what let a valid 7x7 fc6 run on
small images). The grid of every layer is computed from the layers' kernels, strides and
paddings (:meth:`VGGBackbone.grid`), so the crop back to the input follows from it.

Named taps: ``conv3``, ``conv4``, ``conv5`` (the ReLU outputs of conv3_3, conv4_3, conv5_3)
and ``fc7``, returned on one common grid. LargeFOV/DeepLab: conv3_3 is taken after pool3
(stride 4 -> 8), the others are at stride 8 already. FCN-32s, ``fusion_grid="coarsest"``
(default): conv3_3, conv4_3 and conv5_3 are max-pooled by 8, 4 and 2 with 'ceil' windows,
which is exactly what the chain of 2x2 pools after them computes, onto fc7's stride 32.
``fusion_grid="finest"``: every tap is brought to the stride of the finest requested tap
(conv3_3: 4) by bilinear upsampling, the lower layers keeping their "more detailed
information" (ParseNet Sec. 4.2) at the cost of classifying a map 64x larger for conv3.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from parsenet.layers.resample import Grid, align_to_grid, shift_crop

__all__ = ["VGGBackbone", "VGG16_STAGES", "BASES", "FUSION_GRIDS"]

# (name, convs, channels) of VGG-16's five conv stages.
VGG16_STAGES = (("conv1", 2, 64), ("conv2", 2, 128), ("conv3", 3, 256), ("conv4", 3, 512),
                ("conv5", 3, 512))
BASES = ("largefov", "deeplab", "fcn32s")
FUSION_GRIDS = ("coarsest", "finest")
# base -> (fc6 kernel, fc6 dilation, fc6/fc7 channels): DeepLab's prototxts / FCN's net.py
_FC6 = {"largefov": (3, 12, 1024), "deeplab": (4, 4, 4096), "fcn32s": (7, 1, 4096)}
TAPS = ("conv3", "conv4", "conv5", "fc7")


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _conv_block(
    in_ch: int, out_ch: int, kernel: int, dilation: int, batch_norm: bool,
    pad: int | None = None,
) -> list[nn.Module]:
    pad = dilation * (kernel - 1) // 2 if pad is None else pad
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, padding=pad, dilation=dilation)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return layers


class VGGBackbone(nn.Module):
    """VGG-16 trunk with fc6/fc7 as convolutions; ``forward`` returns the requested taps.

    Args:
        base: ``"largefov"``, ``"deeplab"`` or ``"fcn32s"``.
        taps: which of ``conv3``, ``conv4``, ``conv5``, ``fc7`` to return.
        width: multiplies every layer's channels (for small, from-scratch models).
        batch_norm: BatchNorm after every conv, fc6 and fc7 included.
        dropout: dropout after fc6 and fc7 (0.5 in DeepLab and FCN).
        fc_channels: channels of fc6/fc7 before ``width`` (default 1024 LargeFOV, 4096
            DeepLab and FCN).
        conv1_pad: conv1_1's padding (FCN-32s only; FCN uses 100, see the module docstring).
        fusion_grid: ``"coarsest"`` or ``"finest"``, the common grid of the taps (FCN-32s;
            LargeFOV and DeepLab have one stride-8 grid already).
        pool_ceil: LargeFOV/DeepLab's 3x3 pools count output cells as Caffe does (rounding
            up: an even-sized input gets one more cell, its window half in the padding), so
            a model converted from Caffe sees the maps Caffe computed. FCN-32s's 2x2 pools
            always round up.
    """

    def __init__(
        self,
        base: str = "largefov",
        taps: Sequence[str] = ("fc7",),
        width: float = 1.0,
        batch_norm: bool = False,
        dropout: float = 0.5,
        fc_channels: int | None = None,
        conv1_pad: int = 1,
        fusion_grid: str = "coarsest",
        pool_ceil: bool = False,
    ) -> None:
        super().__init__()
        self._check_args(base, taps, width, conv1_pad, fusion_grid)
        self.base = base
        self.taps = tuple(taps)
        self.width = width
        self.conv1_pad = int(conv1_pad)
        self.fusion_grid = fusion_grid
        self.pool_ceil = bool(pool_ceil)
        fcn = base == "fcn32s"
        layers, channels = self._trunk(fcn, width, batch_norm)
        # fc6/fc7 after the trunk: the order in which their weights are drawn
        layers["fc6"], layers["fc7"] = self._fc_layers(channels["conv5"], fc_channels,
                                                       batch_norm, dropout)
        channels["fc7"] = layers["fc7"][0].out_channels
        self.layers = nn.ModuleDict(layers)
        self.out_channels = {t: channels[t] for t in self.taps}

        self._read_after, self.to_grid = self._tap_reading(fcn)
        self._grids = self._layer_grids()
        self._target = self._target_tap()
        target = self.tap_grid(self._target)
        self.output_stride = target.stride
        # Input coordinate of the centre of output cell 0 (see layers/resample.py).
        self.grid_offset = target.offset
        self.reset_parameters()

    @staticmethod
    def _tap_reading(fcn: bool) -> tuple[dict[str, str], nn.ModuleDict]:
        """The layer each tap is read after, and the pools that bring FCN's finer taps onto
        fc7's stride-32 grid (LargeFOV and DeepLab read conv3_3 after pool3: no pools)."""
        if not fcn:
            return ({"conv3": "pool3", "conv4": "conv4", "conv5": "conv5", "fc7": "fc7"},
                    nn.ModuleDict())
        pools = {t: nn.MaxPool2d(k, k, ceil_mode=True)
                 for t, k in (("conv3", 8), ("conv4", 4), ("conv5", 2))}
        return {t: t for t in TAPS}, nn.ModuleDict(pools)

    def _fc_layers(self, in_ch: int, fc_channels: int | None, batch_norm: bool,
                   dropout: float) -> tuple[nn.Sequential, nn.Sequential]:
        """fc6 and fc7 as convolutions, each followed by dropout (``_FC6`` per base)."""
        k6, d6, fc_default = _FC6[self.base]
        fc = _scaled(fc_channels or fc_default, self.width)
        pad6 = 0 if (self.base == "fcn32s" and self.conv1_pad != 1) else None  # FCN: pad 0
        fc6 = nn.Sequential(*_conv_block(in_ch, fc, k6, d6, batch_norm, pad6),
                            nn.Dropout(dropout) if dropout > 0 else nn.Identity())
        fc7 = nn.Sequential(*_conv_block(fc, fc, 1, 1, batch_norm),
                            nn.Dropout(dropout) if dropout > 0 else nn.Identity())
        return fc6, fc7

    @staticmethod
    def _check_args(base: str, taps: Sequence[str], width: float, conv1_pad: int,
                    fusion_grid: str) -> None:
        if base not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {base!r}")
        unknown = [t for t in taps if t not in TAPS]
        if unknown or not taps:
            raise ValueError(f"taps must be a non-empty subset of {TAPS}, got {tuple(taps)}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        if fusion_grid not in FUSION_GRIDS:
            raise ValueError(f"fusion_grid must be one of {FUSION_GRIDS}, got {fusion_grid!r}")
        if base != "fcn32s" and (conv1_pad != 1 or fusion_grid != "coarsest"):
            raise ValueError(f"conv1_pad and fusion_grid='finest' are FCN-32s knobs; base "
                             f"{base!r} has one stride-8 grid (got conv1_pad={conv1_pad}, "
                             f"fusion_grid={fusion_grid!r})")
        if conv1_pad < 1:
            raise ValueError(f"conv1_pad must be at least 1, got {conv1_pad}")

    def _trunk(self, fcn: bool, width: float, batch_norm: bool
               ) -> tuple[dict[str, nn.Module], dict[str, int]]:
        layers: dict[str, nn.Module] = {}
        channels: dict[str, int] = {}
        in_ch = 3
        for i, (name, n_convs, ch) in enumerate(VGG16_STAGES):
            out_ch = _scaled(ch, width)
            dilation = 2 if (not fcn and name == "conv5") else 1
            block: list[nn.Module] = []
            for j in range(n_convs):
                pad = self.conv1_pad if (i == 0 and j == 0) else None
                block += _conv_block(in_ch, out_ch, 3, dilation, batch_norm, pad)
                in_ch = out_ch
            layers[name] = nn.Sequential(*block)
            channels[name] = out_ch
            stride = 2 if (fcn or i < 3) else 1
            layers[f"pool{i + 1}"] = (
                nn.MaxPool2d(2, 2, ceil_mode=True) if fcn
                else nn.MaxPool2d(3, stride, padding=1, ceil_mode=self.pool_ceil)
            )
        return layers, channels

    def _layer_grids(self) -> dict[str, Grid]:
        """The grid after each named layer, from kernels, strides, paddings and dilations:
        a layer with kernel k, dilation d, padding p moves cell centres by (d(k-1)/2 - p)
        cells of its input grid, and multiplies the stride by its own."""
        stride, offset = 1, 0.0
        grids = {}
        for name, block in self.layers.items():
            for m in block.modules() if isinstance(block, nn.Sequential) else [block]:
                if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
                    k, s, p, d = (_pair(m.kernel_size), _pair(m.stride), _pair(m.padding),
                                  _pair(m.dilation))
                    offset += stride * (d * (k - 1) / 2 - p)
                    stride *= s
            grids[name] = Grid(stride, offset)
        return grids

    def tap_grid(self, tap: str, pooled: bool = False) -> Grid:
        """The grid ``tap`` is read on; ``pooled``: after its max pool towards stride 32."""
        grid = self._grids[self._read_after[tap]]
        if pooled and tap in self.to_grid:
            k = self.to_grid[tap].kernel_size
            grid = Grid(grid.stride * k, grid.offset + grid.stride * (k - 1) / 2)
        return grid

    def _target_tap(self) -> str:
        """The tap whose grid is the common one: fc7's stride for "coarsest", the finest
        requested tap for "finest"."""
        if self.fusion_grid == "coarsest":
            return "fc7"
        return min(self.taps, key=lambda t: self.tap_grid(t).stride)

    def reset_parameters(self) -> None:
        """Xavier for convs, as the paper's new layers; pretrained weights overwrite them."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def conv_layers(self) -> list[nn.Conv2d]:
        """The 13 VGG-16 convolutions conv1_1 ... conv5_3, in order."""
        return [m for name, _, _ in VGG16_STAGES for m in self.layers[name]
                if isinstance(m, nn.Conv2d)]

    def named_stages(self) -> dict[str, nn.Module]:
        """Stage name -> module, for weights' ``fills`` and ``model.freeze``."""
        return {name: self.layers[name] for name in (*(s for s, _, _ in VGG16_STAGES),
                                                     "fc6", "fc7")}

    def tap_stages(self) -> dict[str, str]:
        """Tap -> the stage whose output it is read from (a frozen prefix caches these); a
        pool after the stage may come between (conv3 is read after pool3)."""
        return {t: t for t in self.taps}

    def fc_layers(self) -> tuple[nn.Conv2d, nn.Conv2d]:
        return self.layers["fc6"][0], self.layers["fc7"][0]

    def _native(self, x: Tensor, reads: set[str]) -> dict[str, Tensor]:
        order = list(self.layers)
        last = max(order.index(name) for name in reads)
        out: dict[str, Tensor] = {}
        for i, (name, layer) in enumerate(self.layers.items()):
            x = layer(x)
            if name in reads:
                out[name] = x
            if i == last:
                break
        return out

    def _coarsest(self, tap: str, x: Tensor) -> Tensor:
        if tap in self.to_grid:
            x = self.to_grid[tap](x)
        target = self.tap_grid("fc7")
        grid = self.tap_grid(tap, pooled=True)
        if grid == target:  # the default geometry: nothing to crop (today's output)
            return x
        # FCN's 100-pixel padding with a valid fc6: fc7 lost (fc6 kernel - 1) / 2 cells on
        # each side, so the pooled map is cropped by as many (FCN-16s's score_pool4c crop).
        start = int((target.offset - grid.offset) / target.stride)
        h, w = x.shape[-2:]
        return shift_crop(x, start, (h - 2 * start, w - 2 * start))

    def forward(self, x: Tensor, taps: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Feature maps of ``taps`` (default: the taps given at construction), on the
        common grid."""
        taps = self.taps if taps is None else tuple(taps)
        if self.fusion_grid == "coarsest":
            native = self._native(x, {self._read_after[t] for t in taps})
            return {t: self._coarsest(t, native[self._read_after[t]]) for t in taps}
        native = self._native(x, {self._read_after[t] for t in (*taps, self._target)})
        target_grid = self.tap_grid(self._target)
        size = native[self._read_after[self._target]].shape[-2:]
        out = {}
        for t in taps:
            feat, grid = native[self._read_after[t]], self.tap_grid(t)
            if grid.stride < target_grid.stride:  # finer than the common grid: pool first
                feat, grid = self.to_grid[t](feat), self.tap_grid(t, pooled=True)
            out[t] = align_to_grid(feat, grid, target_grid, size)
        return out


def _pair(v: int | tuple[int, ...]) -> int:
    """One axis of a (square) kernel/stride/padding/dilation setting."""
    return v[0] if isinstance(v, tuple) else int(v)

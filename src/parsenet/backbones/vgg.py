"""VGG-16 as a dense feature extractor: DeepLab-LargeFOV and FCN-32s.

LargeFOV (output stride 8): pool1-3 are 3x3/2 (padding 1), pool4 and pool5 are 3x3/1, conv5
is dilated by 2, fc6 is a 3x3 conv with 1024 channels and dilation 12, fc7 a 1x1 conv with
1024 channels. FCN-32s (output stride 32): 2x2/2 pools, fc6 a 7x7 conv with 4096 channels,
fc7 1x1 with 4096. Neither pads the input by 100 pixels: every conv is 'same'-padded, so any
input of at least 32 x 32 gives a map whose cells sit on a known grid (see
:mod:`parsenet.layers.resample`).

Named taps: ``conv3``, ``conv4``, ``conv5`` (the ReLU outputs of conv3_3, conv4_3, conv5_3)
and ``fc7``. Taps finer than the output grid are brought onto it by the backbone's own
pooling: in LargeFOV conv3_3 is taken after pool3 (stride 4 -> 8); in FCN-32s conv3_3,
conv4_3 and conv5_3 are max-pooled by 8, 4 and 2 with 'ceil' windows, which is exactly what
the chain of 2x2 pools after them computes.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["VGGBackbone", "VGG16_STAGES", "BASES"]

# (name, convs, channels) of VGG-16's five conv stages.
VGG16_STAGES = (("conv1", 2, 64), ("conv2", 2, 128), ("conv3", 3, 256), ("conv4", 3, 512),
                ("conv5", 3, 512))
BASES = ("largefov", "fcn32s")
TAPS = ("conv3", "conv4", "conv5", "fc7")


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _conv_block(
    in_ch: int, out_ch: int, kernel: int, dilation: int, batch_norm: bool
) -> list[nn.Module]:
    pad = dilation * (kernel - 1) // 2
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, padding=pad, dilation=dilation)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return layers


class VGGBackbone(nn.Module):
    """VGG-16 trunk with fc6/fc7 as convolutions; ``forward`` returns the requested taps.

    Args:
        base: ``"largefov"`` or ``"fcn32s"``.
        taps: which of ``conv3``, ``conv4``, ``conv5``, ``fc7`` to return.
        width: multiplies every layer's channels (for small, from-scratch models).
        batch_norm: BatchNorm after every conv, fc6 and fc7 included.
        dropout: dropout after fc6 and fc7 (0.5 in DeepLab and FCN).
        fc_channels: channels of fc6/fc7 before ``width`` (default 1024 LargeFOV, 4096 FCN).
    """

    def __init__(
        self,
        base: str = "largefov",
        taps: Sequence[str] = ("fc7",),
        width: float = 1.0,
        batch_norm: bool = False,
        dropout: float = 0.5,
        fc_channels: int | None = None,
    ) -> None:
        super().__init__()
        if base not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {base!r}")
        unknown = [t for t in taps if t not in TAPS]
        if unknown or not taps:
            raise ValueError(f"taps must be a non-empty subset of {TAPS}, got {tuple(taps)}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.base = base
        self.taps = tuple(taps)
        self.width = width
        largefov = base == "largefov"
        self.output_stride = 8 if largefov else 32
        # Input coordinate of the centre of output cell 0 (see layers/resample.py).
        self.grid_offset = 0.0 if largefov else (self.output_stride - 1) / 2

        layers: dict[str, nn.Module] = {}
        channels: dict[str, int] = {}
        in_ch = 3
        for i, (name, n_convs, ch) in enumerate(VGG16_STAGES):
            out_ch = _scaled(ch, width)
            dilation = 2 if (largefov and name == "conv5") else 1
            block: list[nn.Module] = []
            for _ in range(n_convs):
                block += _conv_block(in_ch, out_ch, 3, dilation, batch_norm)
                in_ch = out_ch
            layers[name] = nn.Sequential(*block)
            channels[name] = out_ch
            stride = 2 if (not largefov or i < 3) else 1
            layers[f"pool{i + 1}"] = (
                nn.MaxPool2d(3, stride, padding=1) if largefov
                else nn.MaxPool2d(2, 2, ceil_mode=True)
            )
        fc = _scaled(fc_channels or (1024 if largefov else 4096), width)
        k6, d6 = (3, 12) if largefov else (7, 1)
        layers["fc6"] = nn.Sequential(*_conv_block(in_ch, fc, k6, d6, batch_norm),
                                      nn.Dropout(dropout) if dropout > 0 else nn.Identity())
        layers["fc7"] = nn.Sequential(*_conv_block(fc, fc, 1, 1, batch_norm),
                                      nn.Dropout(dropout) if dropout > 0 else nn.Identity())
        channels["fc7"] = fc
        self.layers = nn.ModuleDict(layers)
        self.out_channels = {t: channels[t] for t in self.taps}

        # Where each tap is read, and how it reaches the output grid.
        if largefov:
            self._read_after = {"conv3": "pool3", "conv4": "conv4", "conv5": "conv5", "fc7": "fc7"}
            self.to_grid = nn.ModuleDict()
        else:
            self._read_after = {t: t for t in TAPS}
            self.to_grid = nn.ModuleDict(
                {t: nn.MaxPool2d(k, k, ceil_mode=True)
                 for t, k in (("conv3", 8), ("conv4", 4), ("conv5", 2))}
            )
        self.all_channels = {t: channels[t] for t in TAPS}
        self.reset_parameters()

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

    def fc_layers(self) -> tuple[nn.Conv2d, nn.Conv2d]:
        return self.layers["fc6"][0], self.layers["fc7"][0]

    def forward(self, x: Tensor, taps: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Feature maps of ``taps`` (default: the taps given at construction)."""
        taps = self.taps if taps is None else tuple(taps)
        wanted = {self._read_after[t]: t for t in taps}
        order = list(self.layers)
        last = max(order.index(name) for name in wanted)
        out: dict[str, Tensor] = {}
        for i, (name, layer) in enumerate(self.layers.items()):
            x = layer(x)
            if name in wanted:
                tap = wanted[name]
                out[tap] = self.to_grid[tap](x) if tap in self.to_grid else x
            if i == last:
                break
        return out

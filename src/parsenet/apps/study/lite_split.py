"""The EfficientNet-Lite split for the cached study (claim 2): the frozen ImageNet trunk
(image -> ``head`` tap, 1280 channels) and the trainable ParseNet head on it (the model's own
:class:`~parsenet.layers.GlobalContext` and :class:`~parsenet.layers.fusion.ContextFusion`:
L2Norm, pool6, late fusion, 1x1 classifiers), both taken from a model that the public
builder made, so that the rows are the released lite models' head. In eval mode trunk +
head compute what ``ParseNet.forward`` computes before the final upsampling (tested).

The cached engine's ``SPLITS`` maps ``parsenet_efficientnet_lite0`` (1, 2) to :func:`split_lite`.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["LiteTrunk", "ParseNetHead", "split_lite"]


class LiteTrunk(nn.Module):
    """A ParseNet Lite backbone, frozen: BatchNorm in eval, no parameter trained."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.taps = tuple(backbone.taps)
        self.out_channels = dict(backbone.out_channels)
        self.output_stride = backbone.output_stride
        self.grid_offset = backbone.grid_offset
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LiteTrunk:
        # Frozen means BatchNorm keeps its running statistics whatever the caller asks.
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.backbone(x)


class ParseNetHead(nn.Module):
    """A ParseNet's context branch and fusion, applied to precomputed taps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.features = model.features
        self.context_source = model.context_source
        self.context = model.context
        self.fusion = model.head

    def forward(self, taps: dict[str, Tensor]) -> Tensor:
        local = [taps[f] for f in self.features]
        context = [] if self.context is None else self.context(taps[self.context_source])
        return self.fusion(local, context)


def split_lite(model: nn.Module) -> tuple[LiteTrunk, ParseNetHead]:
    """(frozen trunk, trainable head) of a ``parsenet_efficientnet_lite0`` (1, 2) model."""
    return LiteTrunk(model.backbone), ParseNetHead(model)

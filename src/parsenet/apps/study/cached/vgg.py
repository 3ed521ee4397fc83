"""The VGG-16 split for the cached study: frozen conv1-conv5 (trunk), trainable fc6 -> fc7
-> ParseNet context + fusion + classifier (head), both taken from a model the public
builder made, so that the study's rows are our library's model rows.

The trunk returns ``conv3`` (conv3_3 after pool3: stride 4 -> 8, the LargeFOV backbone's
own reading point), ``conv4`` and ``conv5`` (stride 8 already) on one stride-8 grid. The
head applies pool5 (3x3/1), fc6 (3x3, dilation 12) and fc7 (1x1) to the cached conv5, then
the model's own :class:`~parsenet.layers.GlobalContext` and
:class:`~parsenet.layers.fusion.ContextFusion`. In eval mode, trunk + head compute exactly
what ``ParseNet.forward`` computes before the final upsampling (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from parsenet.backbones.vgg import VGG16_STAGES
from parsenet.models import build_model

__all__ = ["VGGTrunk", "VGGHead", "TRUNK_TAPS", "build_vgg_parts"]

TRUNK_TAPS = ("conv3", "conv4", "conv5")



def _stage_channels(stage: nn.Module) -> int:
    """Output channels of a VGG stage: its last convolution's (a tap need not be one of
    the backbone's own taps, so ``backbone.out_channels`` may not list it)."""
    return [m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels

class VGGTrunk(nn.Module):
    """Frozen conv1..conv5 of a ParseNet VGG-16 backbone: image -> {conv3, conv4, conv5}."""

    def __init__(self, backbone: nn.Module, taps: Sequence[str] = TRUNK_TAPS) -> None:
        super().__init__()
        self.backbone = backbone
        self.taps = tuple(taps)
        self.out_channels = {t: _stage_channels(backbone.layers[t]) for t in self.taps}
        self.output_stride = backbone.output_stride
        self.grid_offset = backbone.grid_offset
        # Only conv1-conv5 freeze: fc6/fc7 live in the same backbone but belong to the head.
        for name, _, _ in VGG16_STAGES:
            backbone.layers[name].requires_grad_(False)
        self.eval()

    def identity_state(self, keep_vars: bool = False) -> dict[str, Tensor]:
        """The parameters the trunk computes with (conv1-conv5), without the backbone's
        fc6/fc7, which the head owns: what identifies the trunk's cache."""
        kept = tuple(f"layers.{name}." for name, _, _ in VGG16_STAGES)
        state = self.backbone.state_dict(keep_vars=keep_vars)
        return {k: v for k, v in state.items() if k.startswith(kept)}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        # The backbone stops after the last requested layer: fc6/fc7 are not computed.
        return self.backbone(x, self.taps)


class VGGHead(nn.Module):
    """pool5 -> fc6 -> fc7 on the cached conv5, then the model's context and fusion."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        layers = model.backbone.layers
        self.pool5, self.fc6, self.fc7 = layers["pool5"], layers["fc6"], layers["fc7"]
        self.features = model.features
        self.context_source = model.context_source
        self.context = model.context
        self.fusion = model.head

    def feature_maps(self, taps: dict[str, Tensor]) -> dict[str, Tensor]:
        """fc7 and pool6 (fc7's global mean, replicated) before any L2Norm: the paper's
        Fig. 2 quantities the cache does not hold."""
        fc7 = self.fc7(self.fc6(self.pool5(taps["conv5"])))
        return {"fc7": fc7, "pool6": fc7.mean((-2, -1), keepdim=True).expand_as(fc7)}

    def forward(self, taps: dict[str, Tensor]) -> Tensor:
        taps = {**taps, "fc7": self.fc7(self.fc6(self.pool5(taps["conv5"])))}
        local = [taps[f] for f in self.features]
        context = [] if self.context is None else self.context(taps[self.context_source])
        return self.fusion(local, context)


def build_vgg_parts(*, num_classes: int, weights: Any = "hed", **model_args: Any
                    ) -> tuple[VGGTrunk, VGGHead, nn.Module]:
    """Trunk, head and the full model, from ``build_model('parsenet_vgg16', ...)``.

    ``model_args`` are the builder's (``features``, ``context``, ``fusion``, ``normalize``,
    ``scale_init``, ``learn_scale``, ``fc_channels``, ...); ``base`` is LargeFOV.
    """
    model = build_model("parsenet_vgg16", num_classes=num_classes, base="largefov",
                        weights=weights, **model_args)
    return VGGTrunk(model.backbone), VGGHead(model), model

"""The ParseNet head's options, declared once for every builder.

Each builder (:mod:`parsenet.models.builders`) takes its backbone's own arguments, the taps
(``features``, named in its backbone's vocabulary) and ``**head``: the fields below, which a
config gives under ``model.args`` beside the backbone's. The builder turns them into the
head's parts with :meth:`HeadOptions.norm_layer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from torch import nn

from parsenet.layers.l2norm import L2Norm, NormLayer

__all__ = ["HeadOptions"]


@dataclass(frozen=True, kw_only=True)
class HeadOptions:
    """The ParseNet head on top of any backbone.

    Attributes:
        context: add pool6 (global average of the context source tap) as a branch.
        fusion: ``"late"``, ``"early"`` or ``"conv1x1"`` (see :mod:`parsenet.layers.fusion`).
        normalize: L2Norm on every branch, each with its own scale.
        scale_init: initial L2Norm scale (the paper uses 10 or 20; Table 7 also 1).
        learn_scale: learn the scale (Eq. 6); else it stays at ``scale_init``.
        pyramid: pooling bins of the context branch; ``(1,)`` is pool6.
        context_dropout: dropout on the pooled context (0.3 in the original prototxt).
        hidden_channels: width of the ``"conv1x1"`` fusion's hidden 1x1 conv (default: the
            last local branch's channels).
        init: initialiser of the head's convolutions (:mod:`parsenet.layers.init`).
        norm_across_spatial: L2Norm over C x H x W per image instead of per pixel (the
            Caffe Normalize layer's default; ParseNet turns it off).
        norm_channel_shared: one L2Norm scale per branch instead of one per channel (the
            Caffe default; ParseNet learns one per channel).

    ``context=False, normalize=False`` is the paper's baseline.
    """

    context: bool = True
    fusion: str = "late"
    normalize: bool = True
    scale_init: float = 10.0
    learn_scale: bool = True
    pyramid: Sequence[int] = (1,)
    context_dropout: float = 0.3
    hidden_channels: int | None = None
    init: str = "xavier_uniform"
    norm_across_spatial: bool = False
    norm_channel_shared: bool = False

    def norm_layer(self) -> NormLayer:
        """The normaliser every branch gets: L2Norm with these scale options, or none."""
        if not self.normalize:
            return nn.Identity
        return partial(L2Norm, scale_init=self.scale_init, learn_scale=self.learn_scale,
                       across_spatial=self.norm_across_spatial,
                       channel_shared=self.norm_channel_shared)

"""ParseNet: backbone taps -> L2Norm -> pool6 + unpool -> fusion -> classifier -> upsample."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from parsenet.layers.context import GlobalContext, global_pool, mask_to_grid
from parsenet.layers.fusion import ContextFusion
from parsenet.layers.resample import Grid, resize_to_input
from parsenet.preprocessing import IMAGENET, Preprocessing

__all__ = ["ParseNet"]


class ParseNet(nn.Module):
    """A segmentation model made of a backbone with named taps and a ParseNet head.

    Args:
        backbone: module returning ``{tap: N x C x h x w}`` on one output grid, with
            ``out_channels``, ``output_stride`` and ``grid_offset`` attributes.
        num_classes: number of output classes.
        features: taps used as local branches, e.g. ``("fc7",)`` or
            ``("conv3", "conv4", "conv5", "fc7")``.
        context: add pool6 (global average of ``context_source``) as a branch.
        fusion: ``"late"``, ``"early"`` or ``"conv1x1"`` (see :mod:`parsenet.layers.fusion`).
        normalize: L2Norm on every branch, each with its own learned scale.
        pyramid: pooling bins of the context branch; ``(1,)`` is pool6.
        context_dropout: dropout on the pooled context (0.3 in the original prototxt).
        init: initialiser of the head's convolutions (:mod:`parsenet.layers.init`).

    ``forward`` maps N x 3 x H x W to N x num_classes x H x W logits, pixel-aligned. Its
    optional ``valid`` (N x H x W, true on real pixels, false on padding) keeps padding out
    of pool6 (see :mod:`parsenet.layers.context`).
    """

    accepts_valid_mask = True  # inference passes the mask of the padding it adds

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        features: Sequence[str] = ("fc7",),
        context: bool = True,
        context_source: str = "fc7",
        fusion: str = "late",
        normalize: bool = True,
        scale_init: float = 10.0,
        learn_scale: bool = True,
        pyramid: Sequence[int] = (1,),
        context_dropout: float = 0.3,
        hidden_channels: int | None = None,
        preprocessing: Preprocessing = IMAGENET,
        init: str = "xavier_uniform",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.features = tuple(features)
        self.context_source = context_source if context else None
        self.preprocessing = preprocessing
        ch = backbone.out_channels
        missing = [f for f in self.features + ((context_source,) if context else ())
                   if f not in ch]
        if missing:
            raise ValueError(f"backbone does not provide taps {missing}; it has {tuple(ch)}")
        self.context = (
            GlobalContext(ch[context_source], pyramid, normalize, scale_init, learn_scale,
                          context_dropout) if context else None
        )
        n_ctx = len(self.context.bins) if self.context is not None else 0
        self.head = ContextFusion(
            [ch[f] for f in self.features], [ch[context_source]] * n_ctx, num_classes,
            mode=fusion, normalize=normalize, scale_init=scale_init, learn_scale=learn_scale,
            hidden_channels=hidden_channels, init=init,
        )

    def forward_branches(self, x: Tensor, valid: Tensor | None = None
                         ) -> tuple[list[Tensor], list[Tensor]]:
        """Local branches (on the output grid) and pooled context branches, before fusion."""
        taps = self.backbone(x)
        local = [taps[f] for f in self.features]
        if self.context is None:
            return local, []
        source = taps[self.context_source]
        weight = None
        if valid is not None and not bool(valid.all()):  # all real: the plain mean
            grid = Grid(self.backbone.output_stride, self.backbone.grid_offset)
            weight = mask_to_grid(valid, grid, source.shape[-2:])
        return local, self.context(source, weight)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        local, context = self.forward_branches(x, valid)
        scores = self.head(local, context)
        return resize_to_input(
            scores, x.shape[-2:], self.backbone.output_stride, self.backbone.grid_offset
        )

    def feature_maps(self, x: Tensor, taps: Sequence[str] = ("conv4", "conv5", "fc7")
                     ) -> dict[str, Tensor]:
        """Raw tap maps and ``pool6`` (global mean of the context source, replicated), all
        un-normalised: the quantities of the paper's Fig. 2."""
        source = self.context_source or self.features[-1]
        maps = self.backbone(x, tuple(dict.fromkeys(tuple(taps) + (source,))))
        out = {t: maps[t] for t in taps}
        out["pool6"] = global_pool(maps[source]).expand_as(maps[source])
        return out

"""ParseNet: backbone taps -> L2Norm -> pool6 + unpool -> fusion -> classifier -> upsample."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from parsenet.layers.context import GlobalContext, global_pool, mask_to_grid
from parsenet.layers.fusion import ContextFusion
from parsenet.layers.l2norm import L2Norm
from parsenet.layers.resample import Grid, resize_to_input, resize_to_pixels
from parsenet.preprocessing import IMAGENET, Preprocessing

__all__ = ["ParseNet"]


class ParseNet(nn.Module):
    """A segmentation model made of a backbone with named taps and a ParseNet head.

    Built from its parts (the builders in :mod:`parsenet.models.builders` assemble them):

    Args:
        backbone: module returning ``{tap: N x C x h x w}`` on one output grid, with
            ``out_channels``, ``output_stride`` and ``grid_offset`` attributes.
        context: pool6 (:class:`~parsenet.layers.GlobalContext`) over the tap
            ``context_source``, or None for no context branch.
        head: normalises, fuses and classifies the local and context branches
            (:class:`~parsenet.layers.ContextFusion`); it fixes ``num_classes``.
        features: taps used as local branches, in the head's order, e.g. ``("fc7",)`` or
            ``("conv3", "conv4", "conv5", "fc7")``.
        context_source: the tap pool6 averages (needed with a context).
        preprocessing: how an image becomes the model's input.

    ``forward`` maps N x 3 x H x W to N x num_classes x H x W logits, pixel-aligned. Its
    optional ``valid`` (N x H x W, true on real pixels, false on padding) keeps padding out
    of pool6 (see :mod:`parsenet.layers.context`). Its optional ``pixels`` = (first, step)
    returns the logits at pixels ``first + step * j`` of each row and column only (the
    training loss's sample, ``train.loss_stride``), upsampled to those pixels alone.
    """

    accepts_valid_mask = True  # inference passes the mask of the padding it adds
    samples_pixels = True  # forward takes ``pixels``: the loss's sample, upsampled alone

    def __init__(
        self,
        backbone: nn.Module,
        context: GlobalContext | None,
        head: ContextFusion,
        *,
        features: Sequence[str],
        context_source: str | None = None,
        preprocessing: Preprocessing = IMAGENET,
    ) -> None:
        super().__init__()
        self.features = tuple(features)
        self.context_source = context_source if context is not None else None
        _check_parts(backbone, context, head, self.features, self.context_source)
        self.backbone = backbone
        self.num_classes = head.num_classes
        self.preprocessing = preprocessing
        self.context = context
        self.head = head

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

    def forward(self, x: Tensor, valid: Tensor | None = None,
                pixels: tuple[int, int] | None = None) -> Tensor:
        local, context = self.forward_branches(x, valid)
        scores = self.head(local, context)
        grid = (self.backbone.output_stride, self.backbone.grid_offset)
        if pixels is not None:
            return resize_to_pixels(scores, x.shape[-2:], *grid, pixels)
        return resize_to_input(scores, x.shape[-2:], *grid)

    def feature_maps(self, x: Tensor, taps: Sequence[str] = ("conv4", "conv5", "fc7")
                     ) -> dict[str, Tensor]:
        """Raw tap maps and ``pool6`` (global mean of the context source, replicated), all
        un-normalised: the quantities of the paper's Fig. 2."""
        source = self.context_source or self.features[-1]
        maps = self.backbone(x, tuple(dict.fromkeys(tuple(taps) + (source,))))
        out = {t: maps[t] for t in taps}
        out["pool6"] = global_pool(maps[source]).expand_as(maps[source])
        return out

    def branch_norms(self) -> dict[str, L2Norm]:
        """The L2Norm layer of each normalised branch, by branch name: a local branch by its
        tap name, a context level as ``pool6`` (bins 1) or ``pool6_{b}x{b}``. Branches
        without L2Norm (the baseline's) are left out."""
        names = list(self.features)
        if self.context is not None:
            names += ["pool6" if b == 1 else f"pool6_{b}x{b}" for b in self.context.bins]
        norms = list(self.head.norms) + (list(self.context.norms) if self.context else [])
        return {n: m for n, m in zip(names, norms, strict=True) if isinstance(m, L2Norm)}


def _check_parts(backbone: nn.Module, context: GlobalContext | None, head: ContextFusion,
                 features: tuple[str, ...], context_source: str | None) -> None:
    """The parts fit: taps the backbone has, and the channels the head expects."""
    ch = backbone.out_channels
    if context is not None and context_source is None:
        raise ValueError("a context branch needs context_source, the tap it pools")
    taps = features + ((context_source,) if context_source is not None else ())
    missing = [t for t in taps if t not in ch]
    if missing:
        raise ValueError(f"backbone does not provide taps {missing}; it has {tuple(ch)}")
    context_channels = (ch[context_source],) * len(context.bins) if context is not None else ()
    if context is not None and context.channels != ch[context_source]:
        raise ValueError(f"context pools {context.channels} channels, tap {context_source!r} "
                         f"has {ch[context_source]}")
    expected = (tuple(ch[f] for f in features), context_channels)
    if (head.local_channels, head.context_channels) != expected:
        raise ValueError(f"head expects (local, context) channels "
                         f"{(head.local_channels, head.context_channels)}, the parts give "
                         f"{expected}")

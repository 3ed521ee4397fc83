"""Fusing local feature maps with global context (ParseNet Sec. 3.1-3.3, Tables 6 and 7).

Strategies:
    early    concatenate all branches, then one 1x1 classifier
    late     one 1x1 classifier per branch, scores summed
    conv1x1  concatenate, 1x1 conv + ReLU, then a 1x1 classifier

Local branches are maps on the output grid (N x C_i x h x w). Context branches are pooled
maps (N x C_j x b x b) that the paper replicates ("unpools") to h x w before fusing. A 1x1
convolution is linear and pointwise, so its response to a replicated map is the replicated
response at b x b: for b = 1 a per-image bias. We compute it that way and never materialise
the replicated features; :meth:`ContextFusion.forward_literal` is the paper's literal
replicate-and-concatenate form, kept to test that both give the same output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from parsenet.layers.context import unpool
from parsenet.layers.init import INITS, init_conv_
from parsenet.layers.l2norm import L2Norm, NormLayer

__all__ = ["ContextFusion", "FUSION_MODES"]

FUSION_MODES = ("early", "late", "conv1x1")


def _split_conv(weight: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    return list(torch.split(weight, list(sizes), dim=1))


def _add_context(acc: Tensor, ctx_response: Tensor) -> Tensor:
    """acc + ctx_response replicated to acc's size (broadcast when the context is 1 x 1)."""
    if ctx_response.shape[-2:] != (1, 1):
        ctx_response = unpool(ctx_response, acc.shape[-2:])
    return acc + ctx_response


class ContextFusion(nn.Module):
    """Normalise, fuse and classify local and context branches.

    Args:
        local_channels: channels of each local map (e.g. conv4_3, fc7).
        context_channels: channels of each context map (pool6, or one per pyramid level).
        num_classes: output channels.
        mode: ``"early"``, ``"late"`` or ``"conv1x1"``.
        norm_layer: builds the normaliser of one local branch from its channel count; each
            branch gets its own (ParseNet: :class:`~parsenet.layers.L2Norm`; ``nn.Identity``
            for none). Context branches are normalised by
            :class:`~parsenet.layers.GlobalContext`.
        hidden_channels: width of the 1x1 conv for ``"conv1x1"`` (default: the last local
            branch's channels).
        init: initialiser of the convolutions, one of :data:`~parsenet.layers.init.INITS`.
    """

    def __init__(
        self,
        local_channels: Sequence[int],
        context_channels: Sequence[int],
        num_classes: int,
        *,
        mode: str = "late",
        norm_layer: NormLayer = L2Norm,
        hidden_channels: int | None = None,
        init: str = "xavier_uniform",
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.init = init
        if mode not in FUSION_MODES:
            raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got {mode!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if not local_channels:
            raise ValueError("at least one local feature map is needed")
        self.mode = mode
        self.num_classes = num_classes
        self.local_channels = tuple(local_channels)
        self.context_channels = tuple(context_channels)
        self.norms = nn.ModuleList([norm_layer(c) for c in self.local_channels])
        total = sum(self.local_channels) + sum(self.context_channels)
        if mode == "late":
            self.classifiers = nn.ModuleList(
                [nn.Conv2d(c, num_classes, 1)
                 for c in self.local_channels + self.context_channels]
            )
        elif mode == "early":
            self.classifier = nn.Conv2d(total, num_classes, 1)
        else:
            hidden = hidden_channels or self.local_channels[-1]
            self.mix = nn.Conv2d(total, hidden, 1)
            self.classifier = nn.Conv2d(hidden, num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init_conv_(m, self.init)

    def _normalized(self, local: Sequence[Tensor]) -> list[Tensor]:
        if len(local) != len(self.norms):
            raise ValueError(f"expected {len(self.norms)} local maps, got {len(local)}")
        return [norm(x) for norm, x in zip(self.norms, local, strict=True)]

    def _linear(self, local: list[Tensor], context: Sequence[Tensor], conv: nn.Conv2d) -> Tensor:
        """``conv`` over the concatenation [local..., replicated context...], without the copy."""
        n_local = sum(self.local_channels)
        w_local, w_ctx = torch.split(conv.weight, [n_local, sum(self.context_channels)], dim=1)
        x = local[0] if len(local) == 1 else torch.cat(local, dim=1)
        out = F.conv2d(x, w_local, conv.bias)
        for c, w in zip(context, _split_conv(w_ctx, self.context_channels), strict=True):
            out = _add_context(out, F.conv2d(c, w))
        return out

    def forward(self, local: Sequence[Tensor], context: Sequence[Tensor] = ()) -> Tensor:
        feats = self._normalized(local)
        if self.mode == "late":
            scores = None
            heads = list(self.classifiers)
            for x, head in zip(feats, heads[: len(feats)], strict=True):
                scores = head(x) if scores is None else scores + head(x)
            for c, head in zip(context, heads[len(feats):], strict=True):
                scores = _add_context(scores, head(c))
            return scores
        if self.mode == "early":
            return self._linear(feats, context, self.classifier)
        return self.classifier(F.relu(self._linear(feats, context, self.mix)))

    def forward_literal(self, local: Sequence[Tensor], context: Sequence[Tensor] = ()) -> Tensor:
        """The paper's form: replicate context to h x w, concatenate, classify."""
        feats = self._normalized(local)
        size = feats[0].shape[-2:]
        branches = feats + [unpool(c, size) for c in context]
        if self.mode == "late":
            return sum(head(x) for head, x in zip(self.classifiers, branches, strict=True))
        x = torch.cat(branches, dim=1)
        if self.mode == "early":
            return self.classifier(x)
        return self.classifier(F.relu(self.mix(x)))
